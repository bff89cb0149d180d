"""Imported by Python at start-up when this folder is on PYTHONPATH: see tests/helpers/without_tensorflow.py."""

from tests.helpers.without_tensorflow import block

block()
