"""The daemon config: strict YAML validation with key paths and line numbers, documented defaults, secrets."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import yaml

from edge.config import (
    MAX_CONFIG_BYTES,
    Config,
    ConfigError,
    config_from_dict,
    describe_defaults,
    load_config,
    parse_config,
)
from tests.helpers import REPO
from tests.helpers.cli import crackd

EXAMPLE = REPO / "config" / "crackd.example.yaml"


def test_empty_file_gives_the_documented_defaults():
    cfg = parse_config("")
    assert cfg == Config()
    assert cfg.db_path == Path("/var/lib/crackd/crackd.db")
    assert cfg.client_id == "crackd-crackd-1"
    assert cfg.topic("event") == "crackd/crackd-1/event"


def test_example_config_is_valid_and_documents_every_key():
    cfg = load_config(EXAMPLE)
    assert cfg.source.type == "picamera2"
    documented = set()

    def walk(node, prefix=""):
        for k, v in node.items():
            path = f"{prefix}.{k}" if prefix else k
            documented.add(path)
            if isinstance(v, dict):
                walk(v, path)

    walk(yaml.safe_load(EXAMPLE.read_text()))
    keys = {path for path, _default, _doc in describe_defaults()}
    assert keys - documented == set(), "keys missing from config/crackd.example.yaml"
    assert documented - keys == set()


def test_example_values_are_the_defaults_except_the_device_specific_ones():
    example = load_config(EXAMPLE)
    defaults = Config()
    assert example.decision == defaults.decision
    assert example.storage == defaults.storage
    assert example.mqtt == defaults.mqtt
    assert example.model == defaults.model


@pytest.mark.parametrize(
    "text, expected",
    [
        ("mqtt:\n  host: broker\n  prot: 1883\n", "cfg.yaml:3: mqtt.prot: unknown key (did you mean 'port'?)"),
        ("mqtt:\n  port: eighty\n", "cfg.yaml:2: mqtt.port: expected an integer from 1 to 65535, got 'eighty'"),
        ("mqtt:\n  port: 70000\n", "cfg.yaml:2: mqtt.port: expected an integer from 1 to 65535, got 70000"),
        (
            "\n\nsource:\n  type: webcam\n",
            "cfg.yaml:4: source.type: expected one of synthetic, folder, opencv, picamera2, got 'webcam'",
        ),
        ("model:\n  threads: 2.5\n", "cfg.yaml:2: model.threads: expected an integer from 1 to 16, got 2.5"),
        ("decision:\n  hysteresis: 2\n", "cfg.yaml:2: decision.hysteresis: expected a number from 0 to 1, got 2"),
        (
            "mqtt:\n  tls:\n    enabled: yes please\n",
            "cfg.yaml:3: mqtt.tls.enabled: expected true or false, got 'yes please'",
        ),
        (
            "source:\n  picamera2:\n    lores: [320]\n",
            "cfg.yaml:3: source.picamera2.lores: expected a list of 2 integers, got 1 items",
        ),
        ("storage: 5\n", "cfg.yaml:1: storage: expected a mapping of keys"),
        ("device_id: a\ndevice_id: b\n", "cfg.yaml:2: device_id: duplicate key (first set on line 1)"),
    ],
)
def test_bad_values_are_reported_with_key_path_and_line(text, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(text, "cfg.yaml")
    assert str(info.value) == expected
    assert "\n" not in str(info.value)


def test_invalid_yaml_names_the_line():
    with pytest.raises(ConfigError, match=r"^cfg.yaml:2: not valid YAML"):
        parse_config("mqtt:\n  host: a: b\n", "cfg.yaml")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("source:\n  type: folder\n", "source.folder.path: required when source.type is folder"),
        (
            "source:\n  type: opencv\n  opencv:\n    url: rtsp://x\n    index: 0\n",
            "source.opencv: set exactly one of url or index",
        ),
        ("decision:\n  start_k: 4\n  start_n: 3\n", "decision.start_k: k (4) cannot exceed n (3)"),
        (
            "model:\n  cracks:\n    min_length_mm: 2\n",
            "model.cracks.min_length_mm: a length in millimetres needs the camera's scale: set model.mm_per_pixel",
        ),
        (
            "model:\n  mm_per_pixel: 0.1\n  cracks:\n    min_length_px: 20\n    min_length_mm: 2\n",
            "model.cracks.min_length_mm: set the minimum length in pixels or in millimetres, not both",
        ),
        ("mqtt:\n  password_env: X\n", "mqtt.username: a password is configured but no username"),
        (
            "mqtt:\n  tls:\n    enabled: true\n    ca: /nonexistent/ca.crt\n",
            "mqtt.tls.ca: file not found: /nonexistent/ca.crt",
        ),
    ],
)
def test_rules_across_keys(text, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        parse_config(text, "cfg.yaml")


def test_numeric_device_id_is_accepted_as_text():
    assert parse_config("device_id: 42\n").device_id == "42"


def test_password_comes_from_the_environment(monkeypatch):
    cfg = parse_config("mqtt:\n  username: cam\n  password_env: CRACKD_TEST_PW\n")
    monkeypatch.setenv("CRACKD_TEST_PW", "hunter2")
    assert cfg.mqtt_password() == "hunter2"
    monkeypatch.delenv("CRACKD_TEST_PW")
    with pytest.raises(ConfigError, match="environment variable CRACKD_TEST_PW is not set"):
        cfg.mqtt_password()


def test_password_comes_from_a_file(tmp_path):
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    cfg = parse_config(f"mqtt:\n  username: cam\n  password_file: {secret}\n")
    assert cfg.mqtt_password() == "s3cret"
    assert parse_config("").mqtt_password() is None


def test_bundle_defaults_to_installed_current_then_shipped(tmp_path):
    from edge.config import SHIPPED_BUNDLE

    cfg = config_from_dict({"storage": {"state_dir": str(tmp_path)}})
    assert cfg.bundle_dir() == SHIPPED_BUNDLE
    (tmp_path / "models" / "releases" / "1.0").mkdir(parents=True)
    (tmp_path / "models" / "current").symlink_to("releases/1.0")
    assert cfg.bundle_dir() == tmp_path / "models" / "current"
    assert config_from_dict({"model": {"bundle": "/x"}}).bundle_dir() == Path("/x")


def test_check_config_accepts_the_example():
    result = crackd("check-config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_check_config_rejects_a_bad_file_with_exit_2_and_one_line(tmp_path):
    bad = tmp_path / "crackd.yaml"
    bad.write_text("device_id: x\nsource:\n  type: folder\n  folder:\n    path: /tmp\n    fsp: 5\n")
    result = crackd("check-config", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"crackd: {bad}:6: source.folder.fsp: unknown key (did you mean 'fps'?)"
    ]


# --------------------------------------------------------------------------- hostile values


@pytest.mark.parametrize("written", [".nan", ".NaN", ".inf", "-.inf", "+.Inf"])
@pytest.mark.parametrize(
    "key, section, expected",
    [
        ("threshold", "decision", "expected a finite number from 0 to 1"),
        ("reconnect_min_s", "mqtt", "expected a finite number above 0 and at most 600"),
        ("retention_days", "storage", "expected a finite number > 0"),
    ],
)
def test_nan_and_infinity_are_refused_for_every_number_setting(written, key, section, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(f"{section}:\n  {key}: {written}\n", "cfg.yaml")
    assert str(info.value) == f"cfg.yaml:2: {section}.{key}: {expected}, got {written}"


def test_no_float_setting_takes_nan_or_infinity():
    """Every float key of the config, including list items, refuses .nan and .inf (none has a use for them)."""
    floats = [
        path
        for path, default, _ in describe_defaults()
        if isinstance(default, float)
        or path in ("decision.threshold", "model.mm_per_pixel", "max_fps", "releases.max_latency_ms")
    ]
    assert len(floats) > 20
    for path in floats:
        *parents, leaf = path.split(".")
        for written in (".nan", ".inf"):
            text = (
                "".join(f"{'  ' * i}{p}:\n" for i, p in enumerate(parents))
                + f"{'  ' * len(parents)}{leaf}: {written}\n"
            )
            with pytest.raises(ConfigError, match=f"{leaf}: expected a finite number"):
                parse_config(text, "cfg.yaml")
    with pytest.raises(ConfigError, match=r"cfg.yaml:2: storage.outbox_warn_levels\[1\]: expected a finite number"):
        parse_config("storage:\n  outbox_warn_levels: [0.5, .nan]\n", "cfg.yaml")


def test_check_config_refuses_a_nan_threshold_in_one_line(tmp_path):
    cfg = tmp_path / "crackd.yaml"
    cfg.write_text("decision:\n  threshold: .nan\n")
    result = crackd("check-config", str(cfg))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"crackd: {cfg}:2: decision.threshold: expected a finite number from 0 to 1, got .nan"
    ]


@pytest.mark.parametrize(
    "text",
    [
        "mqtt: " + "[" * 5000 + "]" * 5000 + "\n",
        "".join(f"{'  ' * i}k{i}:\n" for i in range(700)),  # 2 frames a level: past the recursion limit, under 1 MiB
        "a: &x " + "{b: " * 5000 + "1" + "}" * 5000 + "\n",
    ],
)
def test_deeply_nested_yaml_is_one_line_not_a_recursion_error(tmp_path, text):
    cfg = tmp_path / "crackd.yaml"
    cfg.write_text(text)
    result = crackd("check-config", str(cfg))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nested more than" in lines[0] and lines[0].startswith(f"crackd: {cfg}:"), result.stderr[
        -500:
    ]


def test_the_example_marks_every_value_that_is_not_the_default():
    """The example is installed as /etc/crackd/crackd.yaml, so a few values are set for a real camera; each such line
    says what the default is, and the header says so, so the file never passes one of them off as a default."""
    lines = EXAMPLE.read_text().splitlines()
    root = yaml.compose(EXAMPLE.read_text(), Loader=yaml.SafeLoader)
    example, defaults = load_config(EXAMPLE), Config()
    differing = []
    for path, default, _doc in describe_defaults():
        value = example
        for part in path.split("."):
            value = getattr(value, part)
        if dataclasses.is_dataclass(value) or value == default:
            continue
        node = root
        for part in path.split("."):
            node = next(v for k, v in node.value if k.value == part)
        comment = lines[node.start_mark.line].partition("#")[2]
        shown = "null" if default is None else str(default)
        assert f"default: {shown}" in comment, (
            f"{path}: example {value!r} differs from the default {default!r} without saying so"
        )
        differing.append(path)
    assert set(differing) == {"device_id", "source.type"}
    assert defaults.device_id == "crackd-1" and defaults.source.type == "synthetic"
    assert "marked `default:`" in EXAMPLE.read_text()


# --------------------------------------------------------------------------- what the config file may be


@pytest.mark.parametrize("special", ["/dev/zero", "/dev/null", "directory", "fifo"])
def test_check_config_refuses_what_is_not_a_regular_file_without_reading_it(tmp_path, special):
    """/dev/zero would otherwise be read until memory runs out, and a FIFO would block the start forever."""
    if special == "directory":
        path = str(tmp_path)
    elif special == "fifo":
        path = str(tmp_path / "crackd.yaml")
        os.mkfifo(path)
    else:
        path = special
    kind = {"/dev/zero": "a character device", "/dev/null": "a character device", "directory": "a directory"}
    result = crackd("check-config", path, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"crackd: {path}: is {kind.get(special, 'a named pipe')}; expected a YAML config file"
    ]


def test_the_daemon_refuses_dev_zero_as_its_config_in_one_line():
    result = crackd("run", "--config", "/dev/zero", timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "crackd: /dev/zero: is a character device; expected a YAML config file"
    ]


def test_a_config_file_over_1_mib_is_refused_in_one_line(tmp_path):
    big = tmp_path / "crackd.yaml"
    big.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10) + "device_id: cam1\n")
    assert MAX_CONFIG_BYTES == 2**20 and big.stat().st_size > MAX_CONFIG_BYTES
    with pytest.raises(ConfigError) as info:
        load_config(big)
    assert str(info.value) == f"{big}: is larger than 1 MiB; expected a YAML config file"
    big.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 - 2) + "device_id: cam1\n")
    assert load_config(big).device_id == "cam1"


def test_a_config_file_that_is_not_utf8_is_refused_in_one_line(tmp_path):
    latin1 = tmp_path / "crackd.yaml"
    latin1.write_bytes("device_id: cam1\nhomeassistant:\n  device_name: Caméra\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(latin1)
    assert str(info.value) == f"{latin1}:3: not UTF-8 text (byte 50); expected a YAML config file"
