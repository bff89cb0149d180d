"""Tests of the device software (edge/): engine, sources, events, outputs, daemon, releases, CLI. No TensorFlow."""
