"""`--demo`: the configuration `crackd run --demo` runs and `crackd homeassistant --demo` describes.

The synthetic camera, the shipped bundle, ./crackd-state and an MQTT broker on localhost (port 1883, or the
private one `scripts/demo.sh` starts on a free port when nothing answers there: `--mqtt-port`). One definition,
so `homeassistant show --demo` prints exactly the configs the demo daemon announces.
"""

from __future__ import annotations

import argparse

from edge.config import Config, config_from_dict
from edge.layout import DEMO_STATE_DIR, SHIPPED_BUNDLE

DEMO_DEVICE_ID = "demo"
DEMO_MQTT_PORT = 1883


def demo_config(state_dir: str = DEMO_STATE_DIR, mqtt_port: int = DEMO_MQTT_PORT) -> Config:
    """Synthetic camera, shipped bundle, local state, MQTT on localhost:`mqtt_port` if one answers."""
    return config_from_dict(
        {
            "device_id": DEMO_DEVICE_ID,
            "source": {"type": "synthetic", "synthetic": {"fps": 10, "crack_probability": 0.3, "hold_frames": 8}},
            "model": {"bundle": str(SHIPPED_BUNDLE)},
            "storage": {"state_dir": state_dir, "retention_days": 7, "max_db_mb": 200, "snapshot_budget_mb": 100},
            "mqtt": {"enabled": True, "host": "localhost", "port": mqtt_port, "reconnect_max_s": 30},
            "logging": {"journald": False},
            "stats_interval_s": 10,
        },
        "<demo>",
    )


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 1-65535, got {text!r}")
    return port


def add_demo_args(parser: argparse.ArgumentParser, help: str) -> None:
    """--demo (the demo's configuration instead of --config) and --mqtt-port (the demo broker's port)."""
    parser.add_argument("--demo", action="store_true", help=help)
    parser.add_argument(
        "--mqtt-port",
        type=_port,
        default=None,
        metavar="PORT",
        help=f"with --demo: the broker's port on localhost (default {DEMO_MQTT_PORT}; scripts/demo.sh passes the "
        "private broker's)",
    )


def demo_mqtt_port(args: argparse.Namespace) -> int:
    """The demo broker's port; ValueError when --mqtt-port comes without --demo (a config file sets mqtt.port)."""
    if args.mqtt_port is not None and not args.demo:
        raise ValueError("--mqtt-port: only with --demo (a config file sets mqtt.port)")
    return args.mqtt_port or DEMO_MQTT_PORT
