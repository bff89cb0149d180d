"""Which state directory a command uses when none is given: one rule, for every `crackd` command and the docs.

1. `--state-dir DIR`
2. `--config FILE`: its `storage.state_dir` (and `storage.db`)
3. `$CRACKD_STATE_DIR`
4. `/etc/crackd/crackd.yaml` (an installed device): its `storage.state_dir`
5. `./crackd-state` when it exists (what `crackd run --demo` writes)
6. `/var/lib/crackd` (where deploy/install.sh puts it)

Steps 2 and 4 read the config, so this module sits above edge.config (which imports edge.layout for its paths);
it loads the config only when a step needs it, so that `--help` stays light.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edge.layout import DEFAULT_CONFIG, DEMO_STATE_DIR, INSTALLED_STATE_DIR, StateLayout

STATE_DIR_ENV = "CRACKD_STATE_DIR"
RULE = (
    f"--state-dir, else --config's storage.state_dir, else ${STATE_DIR_ENV}, else {DEFAULT_CONFIG}'s, "
    f"else {DEMO_STATE_DIR} when it exists, else {INSTALLED_STATE_DIR}"
)


@dataclass(frozen=True)
class StateLocation:
    state_dir: Path
    db: Path
    because: str  # which step of the rule chose it, for messages

    @property
    def layout(self) -> StateLayout:
        return StateLayout(self.state_dir)


def locate_state(state_dir: str | Path | None = None, config: str | Path | None = None) -> StateLocation:
    """Apply the rule above; raises edge.config.ConfigError for a config that does not validate."""
    if state_dir is not None:
        return _at(Path(state_dir), "--state-dir")
    if config is not None:
        return _from_config(Path(config), "--config")
    env = os.environ.get(STATE_DIR_ENV)
    if env:
        return _at(Path(env), f"${STATE_DIR_ENV}")
    if DEFAULT_CONFIG.is_file():
        return _from_config(DEFAULT_CONFIG, str(DEFAULT_CONFIG))
    demo = Path(DEMO_STATE_DIR)
    if demo.is_dir():
        return _at(demo.resolve(), f"{DEMO_STATE_DIR} (the demo's)")
    return _at(INSTALLED_STATE_DIR, "the installed default")


def _at(state_dir: Path, because: str) -> StateLocation:
    return StateLocation(state_dir, StateLayout(state_dir).default_db, because)


def _from_config(path: Path, because: str) -> StateLocation:
    from edge.config import load_config  # here, not at the top: `crackd --help` does not load the config machinery

    cfg = load_config(path)
    return StateLocation(cfg.state_dir, cfg.db_path, because)
