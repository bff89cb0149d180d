"""Data provenance for reports: which folders a bundle was trained on, their licences and citations.

Each real data folder carries a `SOURCE.txt` with `KEY: value` blocks (a value may
continue on indented lines). The bundle manifest records the folders each run
used (`data.runs.<run>.data`); this module reads the SOURCE.txt of each of them
where the folder is present on this machine, and falls back to what the manifest
itself stored (`data.sources`) where it is not.
"""

from __future__ import annotations

import re
from pathlib import Path

SOURCE_FILE = "SOURCE.txt"
_KEY = re.compile(r"^([A-Z][A-Z /_-]*[A-Z]):\s*(.*)$")


def read_source_txt(path: Path) -> dict[str, str]:
    """Parse a SOURCE.txt into {lower-case key: text}; continuation lines are joined; '---' ends the header part."""
    fields: dict[str, list[str]] = {}
    key = None
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("---"):
            break
        match = _KEY.match(line)
        if match:
            key = match.group(1).strip().lower()
            fields[key] = [match.group(2).strip()] if match.group(2).strip() else []
        elif key and line.strip():
            fields[key].append(line.strip())
    return {k: " ".join(v) for k, v in fields.items()}


def data_folders(manifest_raw: dict) -> list[str]:
    """Every data folder any run in the bundle's provenance used, in first-seen order."""
    seen: list[str] = []
    for run in (manifest_raw.get("data", {}).get("runs") or {}).values():
        for folder in run.get("data", []):
            if folder not in seen:
                seen.append(folder)
    return seen


def source_entry(folder: str | Path, stored: dict | None = None) -> dict:
    """folder, dataset, content, licence, citation, source_repo
    and `from` (where the text came from) for one data folder."""
    name = Path(folder).name
    source_txt = Path(folder) / SOURCE_FILE
    if source_txt.is_file():
        f = read_source_txt(source_txt)
        return {
            "folder": name,
            "path": str(folder),
            "dataset": f.get("dataset", ""),
            "content": f.get("content", ""),
            "licence": f.get("licence", ""),
            "citation": f.get("citation", ""),
            "source_repo": f.get("source repo", ""),
            "from": str(source_txt),
        }
    if stored:
        return {
            "folder": name,
            "path": str(folder),
            "dataset": stored.get("dataset", ""),
            "content": stored.get("content", ""),
            "licence": stored.get("licence", ""),
            "citation": stored.get("citation", ""),
            "source_repo": "",
            "from": "manifest.json data.sources",
        }
    return {
        "folder": name,
        "path": str(folder),
        "dataset": "",
        "content": "",
        "licence": "",
        "citation": "",
        "source_repo": "",
        "from": f"not recorded (no {SOURCE_FILE} in the folder)",
    }


def bundle_sources(manifest_raw: dict) -> list[dict]:
    """One entry per data folder the bundle's training runs used."""
    stored = {s.get("folder"): s for s in manifest_raw.get("data", {}).get("sources", []) if isinstance(s, dict)}
    return [source_entry(folder, stored.get(Path(folder).name)) for folder in data_folders(manifest_raw)]


def bundle_runs(manifest_raw: dict) -> list[dict]:
    """The training runs recorded in the manifest, summarised for a report table."""
    rows = []
    for name, run in (manifest_raw.get("data", {}).get("runs") or {}).items():
        train = run.get("train", {})
        rows.append(
            {
                "run": name,
                "kind": run.get("kind", ""),
                "spec": run.get("spec", {}),
                "data": [Path(d).name for d in run.get("data", [])],
                "holdout": run.get("holdout", []),
                "synthetic": run.get("synthetic", 0),
                "epochs": train.get("epochs"),
                "counts": run.get("counts", {}),
            }
        )
    return rows
