"""crackd's test suite: tests/edge (the device), tests/trainer, tests/deploy, and tests/helpers (shared plumbing).

A package so that the helpers import as `tests.helpers` from every area and from tools/soak.py, and so that test
modules of different areas may share a file name.
"""
