"""`crackd homeassistant show | remove`: the Home Assistant
discovery configs of this device (edge.outputs.homeassistant)."""

from __future__ import annotations

from edge.cli.common import add_config_arg, fail, print_json
from edge.cli.demo import add_demo_args, demo_config, demo_mqtt_port
from edge.config import ConfigError, load_config
from edge.layout import DEFAULT_CONFIG


def cmd_homeassistant(args) -> int:
    from edge.outputs import homeassistant

    if args.demo and args.config:
        return fail(f"homeassistant {args.action}: give either --config FILE or --demo")
    source = "--demo" if args.demo else args.config or str(DEFAULT_CONFIG)
    try:
        mqtt_port = demo_mqtt_port(args)
    except ValueError as exc:
        return fail(f"homeassistant {args.action}: {exc}")
    try:
        cfg = demo_config(mqtt_port=mqtt_port) if args.demo else load_config(source)
        password = cfg.mqtt_password() if args.action == "remove" else None
    except ConfigError as exc:
        return fail(str(exc))
    if args.action == "show":
        for e in homeassistant.entities(cfg):
            print_json(
                {"topic": homeassistant.config_topic(cfg, e.component, e.object_id), "config": e.config},
                ensure_ascii=False,
            )
        return 0
    if not cfg.mqtt.enabled:
        return fail(f"{source}: mqtt.enabled is false: no broker to remove the configs from")
    try:
        n = homeassistant.remove_now(cfg, password, timeout=args.timeout)
    except ConnectionError as exc:
        return fail(str(exc), 1)
    print(
        f"removed: {n} empty retained configs published under {cfg.homeassistant.discovery_prefix}/ "
        f"for device {cfg.device_id} (set homeassistant.discovery: false, or the daemon announces "
        "the device again at its next connection)"
    )
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "homeassistant", help="Home Assistant MQTT discovery: show the configs, or remove the device from HA"
    )
    p.add_argument(
        "action",
        choices=("show", "remove"),
        help="show: print each config topic and payload; remove: publish empty retained configs",
    )
    add_config_arg(p, help=f"daemon config (default {DEFAULT_CONFIG})", metavar=None)
    add_demo_args(p, help="the demo's device (`crackd run --demo`) instead of a config file")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker")
    p.set_defaults(func=cmd_homeassistant)
