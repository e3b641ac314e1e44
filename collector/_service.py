"""Builds the collector from its config and runs it: pipelines, control endpoint, lifecycle.

Start order: control endpoint, exporters, receivers (then ready); stop in reverse, draining
what is held in between and spilling what cannot be sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from collector._component import BuildContext, Exporter, Kind
from collector._config import CollectorConfig
from collector._control_server import ControlServer
from collector._pipeline import Fanout
from collector._signals import Payload, Signal
from collector.control import CONTROL_ENDPOINT_ENV, socket_path
from collector.processors._spool import Spool
from collector.processors.batch import BatchConfig
from collector.processors.flushcontrol import (
    MIB,
    Budget,
    DrainOutcome,
    FlushControlConfig,
    FlushController,
    HoldBuffer,
    as_flushcontrol,
)
from collector.proto import control_pb2

log = logging.getLogger("collector")

HOLDING_TYPES = ("flushcontrol", "decouple")

Registry = Mapping[Kind, Mapping[str, Any]]


def _type_of(component_id: str) -> str:
    return component_id.split("/", 1)[0]


class Service:
    """One collector: receivers -> Fanout -> HoldBuffer / pass-through -> exporters."""

    def __init__(
        self,
        config: CollectorConfig,
        registry: Registry,
        *,
        env: Mapping[str, str] | None = None,
        spill_stream: TextIO | None = None,
        started_at: float | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.env = os.environ if env is None else env
        self.spill_stream = spill_stream if spill_stream is not None else sys.stdout
        self.ready = False
        self.started_at = time.monotonic() if started_at is None else started_at
        self.accepted = dict.fromkeys(Signal, 0)
        self.exporters: dict[str, Exporter] = {}
        self.receivers: dict[str, Any] = {}
        self.fanouts: dict[str, dict[Signal, Fanout]] = {}
        self._rejected_seen: dict[str, int] = {}
        self.flush = self._holding_config()
        self.controller = FlushController(
            [], default_timeout=self.flush.default_drain_timeout.total_seconds()
        )
        self.control_endpoint = self.env.get(CONTROL_ENDPOINT_ENV) or self.flush.control_endpoint
        self.control = ControlServer(self.control_endpoint, self)
        self._high_water = asyncio.Event()
        self._stopped = False

    def _holding_config(self) -> FlushControlConfig:
        # All holding processors share one control endpoint; the first one's settings name it.
        for component_id, component in self.config.processors.items():
            if _type_of(component_id) in HOLDING_TYPES:
                return as_flushcontrol(component.config)
        return FlushControlConfig()

    async def start(self) -> None:
        """Starts everything; raises on a component that cannot start (fail loud at start)."""
        await self.control.start()
        try:
            self._build()
            self._open_spool()
            for exporter in self.exporters.values():
                await exporter.start()
            for receiver in self.receivers.values():
                await receiver.start()
        except BaseException:
            await self.shutdown(drain=False)
            raise
        self.ready = True
        endpoints = "; ".join(
            f"{rid} {', '.join(f'{k} {v}' for k, v in getattr(r, 'endpoints', {}).items())}"
            for rid, r in self.receivers.items()
        )
        log.info(
            "ready in %.0f ms: %s; %s",
            (time.monotonic() - self.started_at) * 1e3, endpoints, self.config.summary(),
        )

    def _build(self) -> None:
        exporter_factories = self.registry[Kind.EXPORTER]
        receiver_factories = self.registry[Kind.RECEIVER]
        budgets: dict[str, Budget] = {}
        held: dict[Signal, dict[str, list[HoldBuffer]]] = {s: {} for s in Signal}
        passthrough: dict[Signal, dict[str, list[list[Exporter]]]] = {s: {} for s in Signal}

        for pipeline in self.config.pipelines.values():
            exporters = [self._exporter(e, exporter_factories) for e in pipeline.exporters]
            holder = next((p for p in pipeline.processors if _type_of(p) in HOLDING_TYPES), None)
            for receiver_id in pipeline.receivers:
                held[pipeline.signal].setdefault(receiver_id, [])
                passthrough[pipeline.signal].setdefault(receiver_id, [])
            if holder is None:
                for receiver_id in pipeline.receivers:
                    passthrough[pipeline.signal][receiver_id].append(exporters)
                continue
            settings = as_flushcontrol(self.config.processors[holder].config)
            if holder not in budgets:
                capacity = settings.max_buffer_size_mib * MIB
                budgets[holder] = Budget(capacity, capacity * settings.high_water_mark_percent // 100)
            buffer = HoldBuffer(
                pipeline.id,
                pipeline.signal,
                exporters,
                budgets[holder],
                max_request_bytes=settings.max_request_size_mib * MIB,
                max_request_items=self._batch_limit(pipeline.processors),
            )
            self.controller.add_buffer(buffer)
            for receiver_id in pipeline.receivers:
                held[pipeline.signal][receiver_id].append(buffer)

        receiver_ids = {r for p in self.config.pipelines.values() for r in p.receivers}
        for receiver_id in sorted(receiver_ids):
            consumers: dict[Signal, Any] = {}
            for signal in Signal:
                if receiver_id in held[signal]:
                    consumers[signal] = Fanout(
                        receiver_id,
                        signal,
                        held[signal][receiver_id],
                        passthrough[signal][receiver_id],
                        self.controller,
                        retry_after=self.flush.retry_after.total_seconds(),
                        on_accept=self._count_accepted,
                        on_high_water=self._high_water.set,
                    )
            self.fanouts[receiver_id] = consumers
            factory = receiver_factories[_type_of(receiver_id)]
            component = self.config.receivers[receiver_id]
            self.receivers[receiver_id] = factory.create(
                component.config, BuildContext(receiver_id, consumers)
            )

    def _open_spool(self) -> None:
        """Takes back what a collector before this one accepted and did not finish."""
        if not self.flush.spool or not self.controller.buffers:
            return
        directory = self.flush.spool_directory or os.path.join(
            os.path.dirname(socket_path(self.control_endpoint)), "spool"
        )
        capacity = sum({id(b.budget): b.budget.capacity for b in self.controller.buffers}.values())
        spool = Spool(directory, max_bytes=2 * capacity)
        try:
            found = spool.open()
        except OSError as exc:
            log.warning("running without a spool: %s", exc)
            return
        self.controller.spool = spool
        replayed = dict.fromkeys(Signal, 0)
        orphaned = dict.fromkeys(Signal, 0)
        for request in found:
            fanout = self.fanouts.get(request.receiver_id, {}).get(request.payload.signal)
            if fanout is None or not fanout.held:
                orphaned[request.payload.signal] += request.payload.items
                self.controller.totals[request.payload.signal].drop(
                    "no_pipeline_after_restart", request.payload.items
                )
                continue
            self.controller.hold(request.receiver_id, request.payload, fanout.held)
            replayed[request.payload.signal] += request.payload.items
        if any(replayed.values()):
            log.info("replayed from the spool: %s", _count_text(replayed))
        if any(orphaned.values()):
            log.warning(
                "dropped from the spool, no pipeline takes them now: %s", _count_text(orphaned)
            )

    def _exporter(self, exporter_id: str, factories: Mapping[str, Any]) -> Exporter:
        if exporter_id not in self.exporters:
            factory = factories[_type_of(exporter_id)]
            config = self.config.exporters[exporter_id].config
            self.exporters[exporter_id] = factory.create(config, BuildContext(exporter_id, {}))
        return self.exporters[exporter_id]

    def _batch_limit(self, processors: tuple[str, ...]) -> int:
        for processor_id in processors:
            config = self.config.processors[processor_id].config
            if isinstance(config, BatchConfig) and config.send_batch_max_size:
                return config.send_batch_max_size
        return 0

    def _count_accepted(self, payload: Payload) -> None:
        self.accepted[payload.signal] += payload.items

    async def high_water_loop(self) -> None:
        """Exports on its own while the buffer is above its high-water mark."""
        while True:
            await self._high_water.wait()
            self._high_water.clear()
            await self.controller.drain(timeout=None, reason="high-water")

    async def drain(
        self,
        *,
        timeout: float | None,
        reason: str = "manual",
        request_id: str = "",
        spill_remaining: bool = False,
    ) -> DrainOutcome:
        spill = self._spill if spill_remaining else None
        return await self.controller.drain(
            timeout=timeout, reason=reason, request_id=request_id, spill=spill
        )

    def _spill(self, payload: Payload) -> None:
        """The last resort: OTLP JSON lines on stdout, which Lambda keeps in CloudWatch Logs."""
        from collector import _otlpjson

        line = _otlpjson.encode(payload.signal, payload.signal.decode(payload.data))
        self.spill_stream.write(line + "\n")
        self.spill_stream.flush()

    def status_reply(self) -> Any:
        buffered = self.controller.buffered()

        def counts(signal: Signal) -> Any:
            total = self.controller.totals[signal]
            return control_pb2.SignalCounts(
                exported=total.exported,
                dropped=total.dropped,
                buffered=buffered[signal].buffered,
                buffered_bytes=buffered[signal].buffered_bytes,
                spilled=total.spilled,
            )

        return control_pb2.StatusReply(
            traces=counts(Signal.TRACES),
            metrics=counts(Signal.METRICS),
            logs=counts(Signal.LOGS),
            ready=self.ready,
            last_export_error=self.controller.last_export_error,
            uptime_ms=int((time.monotonic() - self.started_at) * 1e3),
            accepted_traces=self.accepted[Signal.TRACES],
            accepted_metrics=self.accepted[Signal.METRICS],
            accepted_logs=self.accepted[Signal.LOGS],
            pid=os.getpid(),
            rejected_requests=self.rejected_requests(),
        )

    def rejected_since_last_drain(self) -> dict[str, int]:
        """Refused requests by reason since the previous call (each drain reply carries them)."""
        now = self.rejected_requests()
        since = {r: n - self._rejected_seen.get(r, 0) for r, n in now.items()}
        self._rejected_seen = now
        return {r: n for r, n in since.items() if n}

    def rejected_requests(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for receiver in self.receivers.values():
            for reason, count in getattr(receiver, "rejected", {}).items():
                totals[reason] = totals.get(reason, 0) + count
        return totals

    async def shutdown(self, *, drain: bool = True) -> DrainOutcome | None:
        """Stops receiving, drains within shutdown_timeout, spills what is left, stops the
        exporters and the control endpoint. Idempotent."""
        if self._stopped:
            return None
        self._stopped = True
        self.ready = False
        errors: list[BaseException] = []
        for receiver in reversed(list(self.receivers.values())):
            try:
                await receiver.shutdown()
            except Exception as exc:
                errors.append(exc)
        outcome = None
        if drain and self.controller.buffers:
            outcome = await self.drain(
                timeout=self.flush.shutdown_timeout.total_seconds(),
                reason="collector-shutdown",
                spill_remaining=True,
            )
        for exporter in reversed(list(self.exporters.values())):
            try:
                await exporter.shutdown()
            except Exception as exc:
                errors.append(exc)
        if self.controller.spool is not None:
            held = any(b.items for b in self.controller.buffers)
            self.controller.spool.close(empty=not held)
        with contextlib.suppress(Exception):
            await self.control.shutdown()
        for error in errors:
            log.warning("error while stopping: %s", error)
        return outcome


def _count_text(counts: dict[Signal, int]) -> str:
    return ", ".join(f"{n} {signal.item_name}" for signal, n in counts.items() if n)


async def run(service: Service, stop: asyncio.Event) -> None:
    """Runs the service until `stop` is set, then shuts it down."""
    await service.start()
    try:
        async with asyncio.TaskGroup() as group:
            high_water = group.create_task(service.high_water_loop())
            await stop.wait()
            high_water.cancel()
    finally:
        outcome = await service.shutdown()
        if outcome is not None:
            from collector.processors.flushcontrol import describe

            log.info("stopped: %s", describe(outcome))
