"""The closed sets of names that cross layers, each spelt once: as a Literal type for mypy, and as the tuple of its
values (in the order help texts and error messages list them) for config validation, CLI choices and checks.

A misspelt value is then a mypy error where it is written, and a new value is added here and nowhere else (the docs
and JSON Schemas that list a set are checked against it by the tests). Only `typing` is imported: the config, the
CLI's `--help` and the device's smallest commands load this module.
"""

from __future__ import annotations

from typing import Literal, get_args

# When the cascade runs the segmenter (model.segment, `crackd infer --segment`).
SegmentMode = Literal["on-crack", "never", "always"]
SEGMENT_MODES: tuple[SegmentMode, ...] = get_args(SegmentMode)

# The TFLite runtimes edge.engine.runtime can load, by preference; `auto` takes the first one installed.
RuntimeName = Literal["ai-edge-litert", "tflite-runtime", "tensorflow"]
RUNTIME_NAMES: tuple[RuntimeName, ...] = get_args(RuntimeName)
RuntimeChoice = Literal["auto", RuntimeName]
RUNTIME_CHOICES: tuple[RuntimeChoice, ...] = get_args(RuntimeChoice)

# An operator's verdict on an event (`crackd events label`), kept in the journal's labels table.
Label = Literal["crack", "no-crack"]
LABELS: tuple[Label, ...] = get_args(Label)

# What a row of the journal's events table is (its `kind` column): an event the daemon decided, or a frame it kept
# to be labelled (edge.daemon.samples): a sampled crack-free frame, one near the gate threshold, or one of the last
# seconds before an operator's `crackd events flag-missed` (a crack the model missed: labelled crack).
RecordKind = Literal["event", "crack-free", "uncertain", "missed"]
RECORD_KINDS: tuple[RecordKind, ...] = get_args(RecordKind)
SAMPLE_KINDS: tuple[RecordKind, ...] = RECORD_KINDS[1:]

# The camera's state (edge.sources.resilient, edge.daemon.capture): status.json, the MQTT camera and stats
# messages (docs/schemas/camera.schema.json), the Prometheus gauge crackd_camera_state.
CameraState = Literal["starting", "ok", "stalled", "reconnecting", "failed", "finished"]
CAMERA_STATES: tuple[CameraState, ...] = get_args(CameraState)
