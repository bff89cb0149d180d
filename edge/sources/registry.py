"""The camera registry: which adapter each `source.type` names.

edge.config builds `source.type`'s choices and the option sections `source.<name>` from `ADAPTERS`, the daemon
builds its source with `make_source` and asks the adapter (`adapter_for`) for its nominal rate and whether it is
live. The order of `ADAPTERS` is the order the choices are listed in config errors.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Protocol

from edge.sources.base import FrameSource, SourceAdapter
from edge.sources.folder import FolderSource
from edge.sources.opencv import OpenCVSource
from edge.sources.picamera2 import Picamera2Source
from edge.sources.synthetic import SyntheticSource

ADAPTERS: tuple[type[SourceAdapter], ...] = (
    SyntheticSource,
    FolderSource,
    OpenCVSource,
    Picamera2Source,
)


def _check_declarations(adapters: tuple[type[SourceAdapter], ...]) -> None:
    """Refuse, at import rather than at a device's start, an adapter that lacks what the config and daemon use."""
    names = [adapter.name for adapter in adapters]
    for adapter in adapters:
        missing = sorted(getattr(adapter, "__abstractmethods__", ()))
        missing += [attr for attr in ("Options", "live") if not hasattr(adapter, attr)]
        problems = [f"does not define {', '.join(missing)}"] if missing else []
        if hasattr(adapter, "Options") and not dataclasses.is_dataclass(adapter.Options):
            problems.append("Options is not a dataclass")
        if names.count(adapter.name) > 1 or adapter.name == FrameSource.name:
            problems.append(f"its name {adapter.name!r} is taken")
        if problems:
            raise TypeError(f"source adapter {adapter.__name__}: {'; '.join(problems)}")


_check_declarations(ADAPTERS)


def adapter_for(type_name: str) -> type[SourceAdapter]:
    """The adapter class registered as `type_name` (a `source.type` value)."""
    for adapter in ADAPTERS:
        if adapter.name == type_name:
            return adapter
    raise ValueError(f"unknown source type {type_name!r}")


class SourceSettings(Protocol):
    """What `make_source` reads of edge.config's SourceConfig. That class is built from this registry (edge.config
    imports it), so the registry names only the fields it needs rather than importing it back."""

    @property
    def type(self) -> str: ...

    @property
    def read_timeout_s(self) -> float: ...

    @property
    def options(self) -> Any: ...


def make_source(cfg: SourceSettings, stop: threading.Event | None = None) -> FrameSource:
    """The adapter for a `SourceConfig` (edge.config), built from its option section `source.<type>`."""
    adapter = adapter_for(cfg.type)
    return adapter.from_config(cfg.options, read_timeout_s=cfg.read_timeout_s, stop=stop)
