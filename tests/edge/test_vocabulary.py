"""Each closed set of names (edge/vocabulary.py) is the one the config, the command lines, the runtime loader, the
status file and the JSON Schemas use: a value added or misspelt in one place and not the others fails here."""

from __future__ import annotations

import argparse
import json

import pytest

from edge.cli import build_parser
from edge.config import ConfigError, config_from_dict
from edge.daemon_status import DaemonStatus
from edge.engine.runtime import RUNTIMES
from edge.vocabulary import CAMERA_STATES, LABELS, RUNTIME_CHOICES, RUNTIME_NAMES, SEGMENT_MODES
from tests.helpers import SCHEMAS

# Each option of the command lines that takes a vocabulary's values, by its dest.
OPTION_VOCABULARY = {"segment": SEGMENT_MODES, "runtime": RUNTIME_CHOICES, "label": LABELS}


def _choices(parser: argparse.ArgumentParser, path: str = "crackd"):
    """(command path, dest, choices) of every option with choices, subcommands included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _choices(sub, f"{path} {name}")
        elif action.choices is not None:
            yield path, action.dest, tuple(action.choices)


def test_the_command_lines_offer_exactly_the_vocabularies():
    from trainer.cli import build_parser as train_parser

    seen = []
    for parser in (build_parser(), train_parser()):
        for path, dest, choices in _choices(parser, parser.prog):
            if dest in OPTION_VOCABULARY:
                seen.append(dest)
                expected = OPTION_VOCABULARY[dest]
                assert choices in (expected, (*expected, "none")), f"{path} --{dest}: {choices}"
    assert set(seen) == set(OPTION_VOCABULARY)  # the walk found each of them


@pytest.mark.parametrize(
    ("key", "values"), [("segment", SEGMENT_MODES), ("runtime", RUNTIME_CHOICES)], ids=["segment", "runtime"]
)
def test_the_config_accepts_each_value_and_names_them_all_for_a_wrong_one(key, values):
    for value in values:
        assert getattr(config_from_dict({"model": {key: value}}).model, key) == value
    with pytest.raises(ConfigError, match=f"model.{key}: expected one of {', '.join(values)}, got 'sometimes'"):
        config_from_dict({"model": {key: "sometimes"}})


def test_the_runtime_loader_knows_each_runtime_name_in_order_of_preference():
    assert tuple(RUNTIMES) == RUNTIME_NAMES and ("auto", *RUNTIME_NAMES) == RUNTIME_CHOICES


def test_the_json_schemas_list_exactly_the_camera_states():
    def enum(name: str, *keys: str) -> tuple:
        node = json.loads((SCHEMAS / name).read_text())["properties"]
        for key in keys:
            node = node[key]
        return tuple(node["enum"])

    assert enum("camera.schema.json", "state") == CAMERA_STATES
    assert enum("stats.schema.json", "camera_state") == CAMERA_STATES
    assert enum("state/status.schema.json", "camera_state") == CAMERA_STATES


def test_a_status_with_a_camera_state_this_reader_does_not_know_still_reads_but_a_number_does_not():
    """A newer daemon may report a state an older CLI does not know: it is shown, not refused."""
    assert DaemonStatus.from_json({"camera_state": "rebooting"}).camera_state == "rebooting"
    with pytest.raises(ValueError, match="camera_state: expected a string, got 3"):
        DaemonStatus.from_json({"camera_state": 3})
