"""One identifier rule (edge.identifiers) for every config value that becomes a topic level, a prefix or a name."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from edge.config import Config, ConfigError, config_from_dict, parse_config
from edge.events.journal import Journal
from edge.identifiers import MQTT_MAX_TOPIC_BYTES
from edge.outputs.homeassistant import discovery_messages
from edge.outputs.sparkplug import SparkplugPublisher
from tests.helpers.cli import crackd

# Every key whose value ends up in a topic or is shown as a name, and the rule it follows.
IDENTIFIER_KEYS = {
    "device_id": "topic_level",
    "mqtt.client_id": "client_id",
    "mqtt.topic_prefix": "topic_prefix",
    "mqtt.sparkplug.group_id": "topic_level",
    "mqtt.sparkplug.edge_node_id": "topic_level",
    "mqtt.sparkplug.device_id": "topic_level",
    "homeassistant.discovery_prefix": "topic_prefix",
    "homeassistant.device_name": "name",
}


def _declared(cls=Config, prefix=""):
    """(key path, field metadata) of every leaf key."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        path = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _declared(hints[f.name], path)
        else:
            yield path, f.metadata


def _yaml(path: str, value: str) -> str:
    """`path: value` as nested YAML, the value double-quoted with escapes (so NUL and newlines can be written)."""
    *parents, leaf = path.split(".")
    quoted = '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\x{ord(c):02x}" for c in value) + '"'
    return "".join(f"{'  ' * i}{p}:\n" for i, p in enumerate(parents)) + f"{'  ' * len(parents)}{leaf}: {quoted}\n"


def test_every_topic_and_name_key_follows_the_identifier_rule_with_a_length_bound():
    declared = dict(_declared())
    assert {path: meta["ident"] for path, meta in declared.items() if "ident" in meta} == IDENTIFIER_KEYS
    for path in IDENTIFIER_KEYS:
        assert 23 <= declared[path]["max_len"] <= 128, path


CONTROL = "expected printable text (U+{code} at character {at} is a control or invisible character), got {shown}"
LEVEL = "expected one MQTT topic level, without /, + or #, got {shown}"
DOLLAR = (
    "expected a topic prefix not starting with $ (the broker reserves $ topics such as $SYS and drops what "
    "clients publish there), got {shown}"
)
WILDCARD = "expected a topic prefix without the wildcards + and #, got {shown}"
EMPTY_LEVEL = "expected topic levels joined by single / (no empty level, no leading or trailing /), got {shown}"


@pytest.mark.parametrize(
    "path, value, expected",
    [
        ("device_id", "cam\x00", CONTROL.format(shown=r"'cam\x00'", code="0000", at=4)),
        ("device_id", "cam\n1", CONTROL.format(shown=r"'cam\n1'", code="000A", at=4)),
        ("device_id", "line/3", LEVEL.format(shown="'line/3'")),
        ("device_id", "cam+1", LEVEL.format(shown="'cam+1'")),
        ("device_id", "#", LEVEL.format(shown="'#'")),
        ("device_id", "x" * 65, "expected at most 64 characters, got 65"),
        ("mqtt.client_id", "crackd\x00", CONTROL.format(shown=r"'crackd\x00'", code="0000", at=7)),
        ("mqtt.client_id", "c" * 129, "expected at most 128 characters, got 129"),
        ("mqtt.topic_prefix", "$SYS", DOLLAR.format(shown="'$SYS'")),
        ("mqtt.topic_prefix", "$share/crackd", DOLLAR.format(shown="'$share/crackd'")),
        ("mqtt.topic_prefix", "", "expected a non-empty string"),
        ("mqtt.topic_prefix", "a//b", EMPTY_LEVEL.format(shown="'a//b'")),
        ("mqtt.topic_prefix", "/crackd", EMPTY_LEVEL.format(shown="'/crackd'")),
        ("mqtt.topic_prefix", "crackd/", EMPTY_LEVEL.format(shown="'crackd/'")),
        ("mqtt.topic_prefix", "a/+/b", WILDCARD.format(shown="'a/+/b'")),
        ("mqtt.topic_prefix", "a/#", WILDCARD.format(shown="'a/#'")),
        ("mqtt.topic_prefix", "p" * 70000, "expected at most 128 characters, got 70000"),
        ("mqtt.topic_prefix", "plant\x7f", CONTROL.format(shown=r"'plant\x7f'", code="007F", at=6)),
        ("homeassistant.discovery_prefix", "$SYS", DOLLAR.format(shown="'$SYS'")),
        ("homeassistant.discovery_prefix", "ha//x", EMPTY_LEVEL.format(shown="'ha//x'")),
        ("homeassistant.discovery_prefix", "ha/#", WILDCARD.format(shown="'ha/#'")),
        ("homeassistant.device_name", "Line 3\x1b[2J", CONTROL.format(shown=r"'Line 3\x1b[2J'", code="001B", at=7)),
        ("mqtt.sparkplug.group_id", "line/3", LEVEL.format(shown="'line/3'")),
        ("mqtt.sparkplug.edge_node_id", "pi\x00", CONTROL.format(shown=r"'pi\x00'", code="0000", at=3)),
        ("mqtt.sparkplug.device_id", "cam#1", LEVEL.format(shown="'cam#1'")),
    ],
)
def test_a_bad_identifier_is_refused_naming_its_key_and_line(path, value, expected):
    text = "# crackd\n" + _yaml(path, value)
    with pytest.raises(ConfigError) as info:
        parse_config(text, "cfg.yaml")
    assert str(info.value) == f"cfg.yaml:{path.count('.') + 2}: {path}: {expected}"


@pytest.mark.parametrize(
    "path, value",
    [
        ("device_id", "line 3.cam:1"),
        ("device_id", "Kamera-Süd_2$"),
        ("mqtt.client_id", "crackd/line3+cam#1"),
        ("mqtt.topic_prefix", "factory/line-3/crackd"),
        ("mqtt.topic_prefix", "crackd$"),
        ("homeassistant.discovery_prefix", "ha/discovery"),
        ("homeassistant.device_name", "Line 3 / Caméra #1 (+ overlay)"),
        ("mqtt.sparkplug.group_id", "Plant A$"),
    ],
)
def test_ordinary_identifiers_stay_valid(path, value):
    cfg = parse_config(_yaml(path, value))
    for part in path.split("."):
        cfg = getattr(cfg, part)
    assert cfg == value


@pytest.mark.parametrize(
    "path, value",
    [("device_id", "cam\x00"), ("mqtt.topic_prefix", "$SYS"), ("mqtt.topic_prefix", "p" * 70000)],
)
def test_check_config_refuses_a_bad_identifier_in_one_line(tmp_path, path, value):
    cfg = tmp_path / "crackd.yaml"
    cfg.write_text(_yaml(path, value))
    result = crackd("check-config", str(cfg))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"crackd: {cfg}:{path.count('.') + 1}: {path}: expected ")


def test_the_longest_identifiers_build_topics_within_mqtt_s_limit(tmp_path):
    """The per-key bounds keep every topic crackd builds below MQTT's 65,535 bytes, even with 4-byte characters."""
    longest = {}
    for path, meta in _declared():
        if "ident" in meta:
            node = longest
            *parents, leaf = path.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = "\U0001f6a7" * meta["max_len"]  # U+1F6A7, 4 bytes in UTF-8
    longest["storage"] = {"state_dir": str(tmp_path)}
    cfg = config_from_dict(longest)
    topics = [cfg.topic(name) for name in ("status", "camera", "event", "stats", "frame", "snapshot")]
    topics += [topic for topic, _ in discovery_messages(cfg)] + [f"{cfg.homeassistant.discovery_prefix}/status"]
    with Journal(tmp_path / "crackd.db") as journal:
        sparkplug = SparkplugPublisher(cfg, journal, {"bundle_version": "1.0.0"})
        topics += [sparkplug.sp_topic(kind, device=True) for kind in ("NBIRTH", "DBIRTH", "DDATA", "NDEATH", "NCMD")]
    assert max(len(t.encode()) for t in topics) <= MQTT_MAX_TOPIC_BYTES
