"""The door out: what the pipeline hands to every output, the interface an event output implements, its registry.

The pipeline turns each event record into an `EventOut` (the record, what the journal stores with
it, its pictures) and asks every output it was given for the outbox messages that announce it;
they are written in the detection's own transaction, each row tagged with its output's name. Each
output then delivers its own rows at its own pace (its own thread, retries, back-off) and deletes
a row only once it was delivered: a slow or dead consumer holds back no other and loses nothing.

An output is one module that registers its factory here under its name (`@register("webhook")`);
the supervisor builds every registered output the config switches on (`build_outputs`). What an
output needs from the daemon comes in `OutputContext`. Payloads are built from the typed objects
(`EventOut`, `Pictures`) in one place per output, never by mutating a dict on the way.

Event outputs: `mqtt` (edge.outputs.mqtt_events: JSON or Sparkplug B, delivered by
edge.outputs.publisher, which Home Assistant discovery also rides on; the output owns that
connection) and `webhook` (edge.outputs.webhook). Prometheus (edge.outputs.metrics) is scraped, not pushed: it reads the
daemon's status and frame figures and has no outbox rows.
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from edge.daemon_status import OutputStatus
from edge.events.journal import OutboxMessage
from edge.outputs.payloads import EventOut, Pictures

if TYPE_CHECKING:
    from edge.config import Config
    from edge.events.journal import Journal

log = logging.getLogger(__name__)

__all__ = ["EventOut", "EventOutput", "OutputContext", "Pictures", "build_outputs", "register"]


@dataclass(frozen=True)
class OutputContext:
    """What the daemon gives an output's factory."""

    cfg: Config
    journal: Journal
    identity: dict  # who is speaking: version, bundle_version, bundle_sha256, started_at (the MQTT birth)


class EventOutput(ABC):
    """An output of events: builds its outbox messages for each event, and delivers its own outbox rows."""

    name: ClassVar[str]  # its outbox rows' `output`

    @abstractmethod
    def messages(self, event: EventOut) -> list[OutboxMessage]:
        """The outbox messages announcing `event` (inference thread; written in the event's transaction)."""

    def start(self) -> None:
        """Start delivering (its own thread); the default delivers nothing by itself."""
        return None  # an output delivered by another part (mqtt: edge.outputs.publisher) has nothing to do

    def notify(self) -> None:
        """New outbox rows were committed."""
        return None  # an output delivered by another part (mqtt: edge.outputs.publisher) has nothing to do

    def flush(self, timeout: float) -> bool:
        """Wait until its outbox rows are delivered (True) or `timeout` passes (False)."""
        return True

    @abstractmethod
    def status(self) -> OutputStatus:
        """Its delivery now (status.json `outputs`, `crackd status`)."""

    _waiting = 0

    def waiting(self, journal: Journal) -> int:
        """Its outbox rows not delivered yet; while the journal cannot be read (being reopened after a full disk)
        the last figure stands, since the status writer must not fail over a figure."""
        try:
            self._waiting = journal.outbox_depth(self.name)
        except Exception:
            pass
        return self._waiting

    def stop(self, timeout: float) -> None:
        """Stop delivering; undelivered rows stay in the outbox for the next start."""
        return None  # an output delivered by another part (mqtt: edge.outputs.publisher) has nothing to do


OutputFactory = Callable[[OutputContext], "EventOutput | None"]
_FACTORIES: dict[str, OutputFactory] = {}
# The modules that register an output; importing each runs its @register.
OUTPUT_MODULES = ("edge.outputs.mqtt_events", "edge.outputs.webhook")


def register(name: str) -> Callable[[OutputFactory], OutputFactory]:
    """Class or function decorator: `factory(context)` builds the output, or None when the config leaves it off."""

    def add(factory: OutputFactory) -> OutputFactory:
        _FACTORIES[name] = factory
        return factory

    return add


def build_outputs(context: OutputContext) -> list[EventOutput]:
    """Every registered output the config switches on, in OUTPUT_MODULES order."""
    for module in OUTPUT_MODULES:
        importlib.import_module(module)

    def rank(factory: OutputFactory) -> int:
        module = getattr(factory, "__module__", "")
        return OUTPUT_MODULES.index(module) if module in OUTPUT_MODULES else len(OUTPUT_MODULES)

    built = [factory(context) for factory in sorted(_FACTORIES.values(), key=rank)]
    return [o for o in built if o is not None]
