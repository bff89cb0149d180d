"""Where the daemon's state directory is, for every command that reads or changes it (one rule).

`crackd status`, `crackd events ...` and `crackd models ...` all find the state the same way, first match wins:

1. `--state-dir DIR`
2. `--config FILE`: its `storage.state_dir` (and `storage.db`)
3. `$CRACKD_STATE_DIR`
4. `/etc/crackd/crackd.yaml` (an installed device): its `storage.state_dir`
5. `./crackd-state` when it exists (what `crackd run --demo` writes)
6. `/var/lib/crackd` (where deploy/install.sh puts it)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

DEFAULT_CONFIG = Path("/etc/crackd/crackd.yaml")
INSTALLED_STATE_DIR = Path("/var/lib/crackd")
DEMO_STATE_DIR = "./crackd-state"
STATE_DIR_ENV = "CRACKD_STATE_DIR"
RULE = (f"--state-dir, else --config's storage.state_dir, else ${STATE_DIR_ENV}, else {DEFAULT_CONFIG}'s, "
        f"else {DEMO_STATE_DIR} when it exists, else {INSTALLED_STATE_DIR}")


@dataclass(frozen=True)
class StateLocation:
    state_dir: Path
    db: Path
    because: str  # which step of the rule chose it, for messages


def locate_state(state_dir: Optional[str | Path] = None, config: Optional[str | Path] = None) -> StateLocation:
    """Apply the rule above; raises edge.config.ConfigError for a config that does not validate."""
    if state_dir is not None:
        return StateLocation(Path(state_dir), Path(state_dir) / "crackd.db", "--state-dir")
    if config is not None:
        return _from_config(Path(config), "--config")
    env = os.environ.get(STATE_DIR_ENV)
    if env:
        return StateLocation(Path(env), Path(env) / "crackd.db", f"${STATE_DIR_ENV}")
    if DEFAULT_CONFIG.is_file():
        return _from_config(DEFAULT_CONFIG, str(DEFAULT_CONFIG))
    demo = Path(DEMO_STATE_DIR)
    if demo.is_dir():
        demo = demo.resolve()
        return StateLocation(demo, demo / "crackd.db", f"{DEMO_STATE_DIR} (the demo's)")
    return StateLocation(INSTALLED_STATE_DIR, INSTALLED_STATE_DIR / "crackd.db", "the installed default")


def _from_config(path: Path, because: str) -> StateLocation:
    from edge.config import load_config

    cfg = load_config(path)
    return StateLocation(cfg.state_dir, cfg.db_path, because)
