"""The shapes every pipeline component has: factories, receivers, consumers, exporters.

The service builds components from factories (see _registry.py) and wires them:
receiver -> Consumer (the pipelines' fan-out) -> flushcontrol -> exporters.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from collector._signals import Payload, Signal
from collector.errors import ConfigError, ConfigProblem


class Kind(enum.Enum):
    RECEIVER = "receivers"
    PROCESSOR = "processors"
    EXPORTER = "exporters"
    EXTENSION = "extensions"


@runtime_checkable
class Consumer(Protocol):
    """What a receiver hands decoded data to.

    consume() returns once the data is accepted (buffered, or exported when the pipeline has
    no flushcontrol). It raises BackpressureError when there is no room and ExportError when a
    pass-through export failed; the receiver turns those into the protocol's answer.
    """

    async def consume(self, payload: Payload) -> None: ...


class Component(Protocol):
    """Lifecycle: start() returns quickly and owns its background tasks; shutdown() is
    idempotent and safe without start()."""

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...


class Receiver(Component, Protocol):
    """Listens for data and hands it to the consumer of its signal."""


class Outcome(enum.Enum):
    SUCCESS = "success"  # the backend took the data (some items may still be rejected)
    RETRYABLE = "retryable"  # not sent now; keep the data and try again in a later drain
    PERMANENT = "permanent"  # the backend refused it for good; drop it and count why


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What one export (with all its retries) came to."""

    outcome: Outcome
    # Items the backend reported as rejected in a partial success (already delivered data
    # that the backend will not keep); counted as dropped with reason "rejected_by_backend".
    rejected: int = 0
    # One line for logs and Status: never contains header values.
    error: str = ""
    # With PERMANENT: the reason key the dropped items are counted under, e.g. "http 400".
    reason: str = ""

    @classmethod
    def success(cls, rejected: int = 0, error: str = "") -> ExportResult:
        return cls(Outcome.SUCCESS, rejected=rejected, error=error)


class Exporter(Component, Protocol):
    """Sends payloads to a backend.

    export() sends one payload, retrying as its retry_on_failure settings allow, and never
    past `deadline` (an absolute asyncio loop time). It returns a result; it does not raise
    for backend failures. Exporters keep connections open across exports.
    """

    @property
    def id(self) -> str: ...

    async def export(self, payload: Payload, deadline: float) -> ExportResult: ...


@dataclass(frozen=True)
class BuildContext:
    """What a factory gets besides its config: the component id and, for receivers, one
    consumer per signal the receiver feeds (signals no pipeline uses are absent)."""

    id: str
    consumers: dict[Signal, Consumer]


class Factory(Protocol):
    """Knows a component type: its name, its Config dataclass and how to build it."""

    type_name: str
    kind: Kind
    config_type: type[Any]
    # Signals the component supports (receivers and exporters).
    signals: frozenset[Signal]

    def default_config(self) -> Any: ...

    def create(self, config: Any, context: BuildContext) -> Any: ...


def config_problems(config: Any) -> list[tuple[str, str]]:
    """Every validate() problem of a config dataclass and of the dataclasses nested in it,
    with key paths relative to the config."""
    problems: list[tuple[str, str]] = []
    validate = getattr(config, "validate", None)
    if callable(validate):
        problems += validate()
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            problems += [
                (f"{field.name}::{path}" if path else field.name, message)
                for path, message in config_problems(value)
            ]
    return problems


@dataclass(frozen=True)
class ComponentFactory:
    """A Factory from its parts: create() checks the config again (a config built in code has
    not been through the decoder) and then calls `build`."""

    type_name: str
    kind: Kind
    config_type: type[Any]
    build: Callable[[Any, BuildContext], Any]
    signals: frozenset[Signal] = frozenset(Signal)
    default: Callable[[], Any] | None = None

    def default_config(self) -> Any:
        return self.default() if self.default is not None else self.config_type()

    def create(self, config: Any, context: BuildContext) -> Any:
        problems = config_problems(config)
        if problems:
            raise ConfigError(
                [ConfigProblem(f"{self.kind.value}::{context.id}::{path}", message)
                 for path, message in problems]
            )
        return self.build(config, context)
