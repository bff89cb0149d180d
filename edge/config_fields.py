"""How a config key is declared: a dataclass field with its default, a doc line and its checks.

Kept apart from `edge.config` (which validates YAML against these declarations) so that modules the config is
built from, such as the camera adapters that own their option sections (`edge.sources`), can declare keys
without importing the config they are part of.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any


def option(default: Any, doc: str, **checks: Any) -> Any:
    """A field with a default, a doc line, and optional checks (min, max, gt, min_len, max_len, and `ident`: the
    `edge.identifiers` rule a string obeys because it becomes a topic or a name)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc, **checks})
    return field(default=default, metadata={"doc": doc, **checks})


def section(cls: type, doc: str) -> Any:
    """A nested mapping of keys, built from dataclass `cls` (its defaults when absent)."""
    return field(default_factory=cls, metadata={"doc": doc})
