"""Files that readers must never see half-written (status.json, the deploy lock holder)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path


def write_json_atomic(path: Path, data: dict) -> None:
    """Write `data` as JSON to a temporary file beside `path`, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # one per writing process and thread
    try:
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=1)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not collect half-written temporaries
        raise
