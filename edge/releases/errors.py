"""The base of every model-release error, in its own module so the lock and the manager share it without a cycle.

The command line maps a ReleaseError to exit code 1 and its message to one line (edge.cli.models).
"""

from __future__ import annotations


class ReleaseError(Exception):
    """A release operation that cannot be done; the message says why and what to do."""
