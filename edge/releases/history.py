"""STATE/models/deployments.jsonl: one JSON line per stage, activate, rollback, confirm (and what went wrong)."""

from __future__ import annotations

import contextlib
import json
import os
import time

from edge.layout import StateLayout
from edge.timestamps import iso_utc


class DeploymentHistory:
    def __init__(self, layout: StateLayout):
        self.layout = layout

    def record(self, action: str, version: str | None, outcome: str, who: str, **extra) -> dict:
        """Append one line (time, action, version, who, outcome, ...), on disk before this returns."""
        entry = {
            "time": iso_utc(time.time(), "seconds"),
            "action": action,
            "version": version,
            "who": who,
            "outcome": outcome,
        }
        entry.update({k: v for k, v in extra.items() if v is not None})
        self.layout.models.mkdir(parents=True, exist_ok=True)
        with open(self.layout.history, "a") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return entry

    def read(self, limit: int | None = None) -> list[dict]:
        """The last `limit` records (all when None), oldest first; a torn last line is skipped."""
        try:
            lines = self.layout.history.read_text().splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in lines[-limit:] if limit else lines:
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return records
