"""STATE/models/deployments.jsonl: one JSON line per stage, activate, rollback, confirm (and what went wrong)."""

from __future__ import annotations

import contextlib
import json
import os
import time

from edge.layout import StateLayout
from edge.releases.answers import DeploymentRecord
from edge.timestamps import iso_utc


class DeploymentHistory:
    def __init__(self, layout: StateLayout):
        self.layout = layout

    def record(self, action: str, version: str | None, outcome: str, who: str, **extra) -> DeploymentRecord:
        """Append one line (time, action, version, who, outcome, and the `extra` fields of DeploymentRecord that
        are set), on disk before this returns."""
        entry = DeploymentRecord(iso_utc(time.time(), "seconds"), action, version, who, outcome, **extra)
        self.layout.models.mkdir(parents=True, exist_ok=True)
        with open(self.layout.history, "a") as fh:
            fh.write(json.dumps(entry.to_json()) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return entry

    def read(self, limit: int | None = None) -> list[DeploymentRecord]:
        """The last `limit` records (all when None), oldest first; a torn or foreign line is skipped."""
        try:
            lines = self.layout.history.read_text().splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in lines[-limit:] if limit else lines:
            with contextlib.suppress(ValueError):
                records.append(DeploymentRecord.from_json(json.loads(line)))
        return records
