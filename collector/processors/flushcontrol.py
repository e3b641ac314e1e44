"""The flushcontrol processor: accept at once, hold in a bounded buffer, export when drained.

A pipeline's HoldBuffer keeps serialized requests in arrival order; FlushController drains
every pipeline's buffer to its exporters when the control endpoint (or the high-water mark)
says so.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from collector._component import (
    ComponentFactory,
    Exporter,
    ExportResult,
    Kind,
    Outcome,
)
from collector._signals import Payload, Signal
from collector.control import DEFAULT_CONTROL_ENDPOINT
from collector.errors import BackpressureError
from collector.processors._spool import Spool, SpoolFullError

log = logging.getLogger("collector.flushcontrol")

MIB = 1024 * 1024
# Serialized OTLP that one spill line holds at most, so the deadline is checked between lines.
SPILL_CHUNK_BYTES = 64 * 1024
# How fast serialized OTLP turns into OTLP JSON on a third of a core (measured: ~3 MB/s on a
# full core); a drain that spills keeps back this much time for it.
SPILL_BYTES_PER_S = 1_000_000
# Exporters may overrun their deadline by a few milliseconds; a spill always keeps this much.
SPILL_MIN_RESERVE_S = 0.05


@dataclass(frozen=True, kw_only=True)
class FlushControlConfig:
    # Bytes of serialized OTLP the collector holds, shared by every pipeline that uses this
    # processor id. Over it, receivers answer with backpressure. Must be > 0.
    max_buffer_size_mib: int = 16
    # Fill level (percent of max_buffer_size_mib) above which the collector starts
    # exporting on its own, without waiting for a drain: while data arrives the environment is
    # running. 0 turns it off; otherwise 1-100.
    high_water_mark_percent: int = 80
    # Where the FlushControl service listens (unix:///absolute/path). The environment variable
    # AFTERFLUSH_CONTROL_ENDPOINT, when set, overrides it.
    control_endpoint: str = DEFAULT_CONTROL_ENDPOINT
    # Largest coalesced request one export sends, in MiB of serialized OTLP (a single request
    # larger than this is sent alone). Must be > 0.
    max_request_size_mib: int = 3
    # What receivers tell senders to wait when the buffer is full.
    retry_after: timedelta = timedelta(seconds=1)
    # Deadline of a drain that has no gRPC deadline, and of an export started by the
    # high-water mark.
    default_drain_timeout: timedelta = timedelta(seconds=5)
    # Drain deadline when the collector is stopped by SIGTERM/SIGINT.
    shutdown_timeout: timedelta = timedelta(milliseconds=1500)
    # Write every accepted request to a spool on local disk before answering the sender, so
    # that a collector that crashed (or an environment that was reset) replays it on start.
    spool: bool = True
    # Where the spool lives; empty = a `spool` directory beside the control socket.
    spool_directory: str = ""

    def validate(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if self.max_buffer_size_mib <= 0:
            problems.append(("max_buffer_size_mib", "must be > 0"))
        if not 0 <= self.high_water_mark_percent <= 100:
            problems.append(("high_water_mark_percent", "must be between 0 and 100"))
        if self.max_request_size_mib <= 0:
            problems.append(("max_request_size_mib", "must be > 0"))
        if not self.control_endpoint.startswith("unix:///") or len(self.control_endpoint) <= 8:
            problems.append(("control_endpoint", "must be unix:///absolute/path"))
        for name in ("retry_after", "default_drain_timeout", "shutdown_timeout"):
            if getattr(self, name) <= timedelta(0):
                problems.append((name, "must be > 0"))
        return problems


@dataclass(frozen=True, kw_only=True)
class DecoupleConfig:
    """The ADOT Lambda collector's `decouple` processor: accepted, and run as flushcontrol
    with its defaults (flushcontrol does what decouple did, and holds the freeze too)."""

    max_queue_size: int = field(
        default=200, metadata={"ignored": "flushcontrol bounds its buffer in bytes"}
    )


# The service builds the buffers itself (they need the pipeline's exporters): a holding
# processor's config is all it takes from these. `decouple` runs as flushcontrol's defaults.
FACTORY = ComponentFactory(
    "flushcontrol", Kind.PROCESSOR, FlushControlConfig, lambda config, context: config
)
DECOUPLE_FACTORY = ComponentFactory(
    "decouple", Kind.PROCESSOR, DecoupleConfig, lambda config, context: FlushControlConfig()
)


def as_flushcontrol(config: Any) -> FlushControlConfig:
    """The flushcontrol settings a holding processor's config stands for."""
    return config if isinstance(config, FlushControlConfig) else FlushControlConfig()


class Budget:
    """Bytes held, shared by the buffers of one flushcontrol processor id."""

    def __init__(self, capacity: int, high_water: int) -> None:
        self.capacity = capacity
        self.high_water = high_water  # 0 = off
        self.used = 0

    def fits(self, size: int) -> bool:
        # An empty buffer takes one request of any size so that a request larger than the
        # whole budget is not refused forever.
        return self.used == 0 or self.used + size <= self.capacity

    @property
    def above_high_water(self) -> bool:
        return self.high_water > 0 and self.used >= self.high_water


@dataclass
class SignalTally:
    """Counts for one signal, the numbers a DrainReply or StatusReply carries."""

    exported: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    buffered: int = 0
    buffered_bytes: int = 0
    spilled: int = 0

    def drop(self, reason: str, items: int) -> None:
        if items:
            self.dropped[reason] = self.dropped.get(reason, 0) + items

    def add(self, other: SignalTally) -> None:
        self.exported += other.exported
        for reason, items in other.dropped.items():
            self.drop(reason, items)
        self.spilled += other.spilled


@dataclass
class DrainOutcome:
    """What one drain did, per signal, and whether it finished everything it was given."""

    tallies: dict[Signal, SignalTally] = field(
        default_factory=lambda: {signal: SignalTally() for signal in Signal}
    )
    complete: bool = True
    last_error: str = ""
    duration_s: float = 0.0


@dataclass(slots=True)
class _Entry:
    seq: int
    payload: Payload
    pending: set[str]  # ids of the exporters that still have to send it
    checked: bool = False  # its ids were checked before its first export


class HoldBuffer:
    """One pipeline's held requests, in arrival order, and what each exporter still owes."""

    def __init__(
        self,
        pipeline_id: str,
        signal: Signal,
        exporters: list[Exporter],
        budget: Budget,
        *,
        max_request_bytes: int,
        max_request_items: int = 0,
    ) -> None:
        self.pipeline_id = pipeline_id
        self.signal = signal
        self.exporters = exporters
        self.budget = budget
        self.max_request_bytes = max_request_bytes
        self.max_request_items = max_request_items  # 0 = no limit
        self._entries: collections.deque[_Entry] = collections.deque()
        # Called with the seq of each request this buffer no longer holds.
        self.on_release: Callable[[int], None] = lambda seq: None

    @property
    def items(self) -> int:
        return sum(e.payload.items for e in self._entries)

    @property
    def size(self) -> int:
        return sum(e.payload.size for e in self._entries)

    def append(self, seq: int, payload: Payload) -> None:
        """Holds payload; the caller has checked the budget (see Fanout)."""
        self._entries.append(_Entry(seq, payload, {e.id for e in self.exporters}))
        self.budget.used += payload.size

    async def drain(self, cutoff: int, deadline: float, outcome: DrainOutcome) -> None:
        """Sends every entry with seq <= cutoff to each exporter that still owes it, the
        exporters concurrently, each in order; stops an exporter at its first retryable
        failure so that what is left keeps its order for the next drain."""
        self._drop_invalid(cutoff, outcome)
        async with asyncio.TaskGroup() as group:
            for exporter in self.exporters:
                group.create_task(self._drain_exporter(exporter, cutoff, deadline, outcome))
        self._release_done()

    def _drop_invalid(self, cutoff: int, outcome: DrainOutcome) -> None:
        """Drops, alone and counted as `invalid_ids`, a request with a trace or span id of the
        wrong length: coalesced, it would make a backend refuse everything sent with it. The
        check runs here, after the response, rather than on the sender's path."""
        tally = outcome.tallies[self.signal]
        for entry in self._entries:
            if entry.checked or entry.seq > cutoff or not entry.pending:
                continue
            entry.checked = True
            problem = self.signal.id_problem(self.signal.decode(entry.payload.data))
            if problem is not None:
                entry.pending.clear()
                tally.drop("invalid_ids", entry.payload.items)
                outcome.last_error = f"{self.pipeline_id}: {problem}"

    async def _drain_exporter(
        self, exporter: Exporter, cutoff: int, deadline: float, outcome: DrainOutcome
    ) -> None:
        tally = outcome.tallies[self.signal]
        owed = [e for e in self._entries if e.seq <= cutoff and exporter.id in e.pending]
        for batch in self._batches(owed):
            if asyncio.get_running_loop().time() >= deadline:
                outcome.complete = False
                return
            payload = Payload.join([e.payload for e in batch]) if len(batch) > 1 else batch[0].payload
            try:
                result = await exporter.export(payload, deadline)
            except Exception as exc:  # an exporter bug must not lose the data or the drain
                log.exception("exporter %s failed unexpectedly", exporter.id)
                result = ExportResult(Outcome.RETRYABLE, error=f"{exporter.id}: {exc!r}")
            if result.outcome is Outcome.RETRYABLE:
                outcome.complete = False
                outcome.last_error = result.error or f"{exporter.id}: export failed"
                return
            for entry in batch:
                entry.pending.discard(exporter.id)
            if result.outcome is Outcome.SUCCESS:
                rejected = min(result.rejected, payload.items)
                tally.exported += payload.items - rejected
                tally.drop("rejected_by_backend", rejected)
                if result.error:
                    outcome.last_error = result.error
            else:
                tally.drop(result.reason or "permanent_error", payload.items)
                outcome.last_error = result.error or f"{exporter.id}: refused ({result.reason})"

    def _batches(self, entries: list[_Entry], max_bytes: int = 0) -> Iterable[list[_Entry]]:
        limit = max_bytes or self.max_request_bytes
        batch: list[_Entry] = []
        size = items = 0
        for entry in entries:
            over_bytes = size + entry.payload.size > limit
            over_items = self.max_request_items and items + entry.payload.items > self.max_request_items
            if batch and (over_bytes or over_items):
                yield batch
                batch, size, items = [], 0, 0
            batch.append(entry)
            size += entry.payload.size
            items += entry.payload.items
        if batch:
            yield batch

    def _release_done(self) -> None:
        # Entries are removed only once every exporter has sent or dropped them.
        kept: collections.deque[_Entry] = collections.deque()
        for entry in self._entries:
            if entry.pending:
                kept.append(entry)
            else:
                self.budget.used -= entry.payload.size
                self.on_release(entry.seq)
        self._entries = kept

    def spill(
        self, write: Callable[[Payload], None], tally: SignalTally, deadline: float
    ) -> None:
        """Hands every held request to `write` in chunks (the last resort at shutdown) and
        forgets them. What the deadline leaves no time to write is dropped and counted as
        `shutdown_deadline`: the caller's reply must not come late."""
        loop = asyncio.get_running_loop()
        entries = list(self._entries)
        self._entries.clear()
        for batch in self._batches(entries, max_bytes=SPILL_CHUNK_BYTES):
            items = sum(e.payload.items for e in batch)
            if loop.time() < deadline:
                write(Payload.join([e.payload for e in batch]))
                tally.spilled += items
            else:
                tally.drop("shutdown_deadline", items)
            for entry in batch:
                self.budget.used -= entry.payload.size
                self.on_release(entry.seq)

    def held(self) -> list[Payload]:
        return [e.payload for e in self._entries]


class FlushController:
    """Every pipeline's HoldBuffer behind one Drain: what the control endpoint calls."""

    def __init__(
        self, buffers: list[HoldBuffer], *, default_timeout: float, spool: Spool | None = None
    ) -> None:
        self.buffers: list[HoldBuffer] = []
        self.default_timeout = default_timeout
        self.spool = spool
        self.totals: dict[Signal, SignalTally] = {signal: SignalTally() for signal in Signal}
        self.last_export_error = ""
        self._seq = 0
        self._holders: dict[int, int] = {}  # seq -> buffers still holding it
        self._lock = asyncio.Lock()
        self._failing = False
        for buffer in buffers:
            self.add_buffer(buffer)

    def add_buffer(self, buffer: HoldBuffer) -> None:
        buffer.on_release = self._release
        self.buffers.append(buffer)

    def hold(self, receiver_id: str, payload: Payload, buffers: list[HoldBuffer]) -> None:
        """Spools the request, then appends it to each buffer; the caller checked the budget.
        Raises BackpressureError when the spool has no room (nothing is held then)."""
        self._seq += 1
        seq = self._seq
        if self.spool is not None:
            try:
                self.spool.append(seq, receiver_id, payload)
            except SpoolFullError as exc:
                raise BackpressureError(str(exc)) from exc
        for buffer in buffers:
            buffer.append(seq, payload)
        self._holders[seq] = len(buffers)

    def _release(self, seq: int) -> None:
        left = self._holders.get(seq, 1) - 1
        if left > 0:
            self._holders[seq] = left
            return
        self._holders.pop(seq, None)
        if self.spool is not None:
            self.spool.ack(seq)

    async def drain(
        self,
        *,
        timeout: float | None,
        reason: str = "manual",
        request_id: str = "",
        spill: Callable[[Payload], None] | None = None,
    ) -> DrainOutcome:
        """Exports everything accepted before the call, within `timeout` seconds. With
        `spill`, whatever is still held afterwards goes to it and is counted as spilled."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + (self.default_timeout if timeout is None else max(timeout, 0.0))
        cutoff = self._seq
        outcome = DrainOutcome()
        try:
            async with asyncio.timeout_at(deadline):
                await self._lock.acquire()
        except TimeoutError:
            outcome.complete = False
            outcome.last_error = "another drain was still running at the deadline"
        else:
            try:
                # A spill must be written before the caller's deadline too: exports stop
                # early enough to leave it the time it is expected to take.
                export_deadline = deadline
                if spill is not None:
                    held = sum(b.size for b in self.buffers)
                    reserve = min(
                        max(held / SPILL_BYTES_PER_S, SPILL_MIN_RESERVE_S), (deadline - started) / 2
                    )
                    export_deadline = deadline - reserve
                async with asyncio.TaskGroup() as group:
                    for buffer in self.buffers:
                        group.create_task(buffer.drain(cutoff, export_deadline, outcome))
                if spill is not None:
                    for buffer in self.buffers:
                        buffer.spill(spill, outcome.tallies[buffer.signal], deadline)
            finally:
                self._lock.release()
        outcome.duration_s = loop.time() - started
        for signal, tally in outcome.tallies.items():
            self.totals[signal].add(tally)
        self._fill_buffered(outcome.tallies)
        if outcome.last_error:
            self.last_export_error = outcome.last_error
        self._log(outcome, reason, request_id)
        return outcome

    def buffered(self) -> dict[Signal, SignalTally]:
        tallies = {signal: SignalTally() for signal in Signal}
        self._fill_buffered(tallies)
        return tallies

    def _fill_buffered(self, tallies: dict[Signal, SignalTally]) -> None:
        for tally in tallies.values():
            tally.buffered = tally.buffered_bytes = 0
        for buffer in self.buffers:
            tallies[buffer.signal].buffered += buffer.items
            tallies[buffer.signal].buffered_bytes += buffer.size

    def _log(self, outcome: DrainOutcome, reason: str, request_id: str) -> None:
        # One line when exports start failing, when they recover, and whenever data is
        # dropped or spilled; per-drain detail only at debug.
        summary = describe(outcome)
        dropped_or_spilled = any(t.dropped or t.spilled for t in outcome.tallies.values())
        if reason in CALLER_REPORTED:
            # The companion logs these drains itself (one line, repeats folded).
            self._failing = not outcome.complete
            log.debug("drain (%s) %s in %.1f ms: %s; last error: %s", reason, request_id,
                      outcome.duration_s * 1e3, summary, outcome.last_error)
            return
        if not outcome.complete and not self._failing:
            self._failing = True
            log.warning("drain (%s) incomplete: %s; last error: %s", reason, summary, outcome.last_error)
        elif outcome.complete and self._failing:
            self._failing = False
            log.info("exports recovered: %s", summary)
        elif dropped_or_spilled:
            log.warning("drain (%s): %s; last error: %s", reason, summary, outcome.last_error)
        else:
            log.debug("drain (%s) %s in %.1f ms: %s", reason, request_id, outcome.duration_s * 1e3, summary)


# Drain reasons whose caller reports the outcome (see control.proto's DrainRequest.reason).
CALLER_REPORTED = frozenset({"invoke", "next-invoke", "shutdown"})


def describe(outcome: DrainOutcome) -> str:
    """`exported 20 spans, 3 metric points; dropped 2 log records (http 400); 5 spans buffered`."""
    exported, dropped, held, spilled = [], [], [], []
    for signal, tally in outcome.tallies.items():
        if tally.exported:
            exported.append(f"{tally.exported} {signal.item_name}")
        for reason, items in sorted(tally.dropped.items()):
            dropped.append(f"{items} {signal.item_name} ({reason})")
        if tally.buffered:
            held.append(f"{tally.buffered} {signal.item_name}")
        if tally.spilled:
            spilled.append(f"{tally.spilled} {signal.item_name}")
    parts = [f"exported {', '.join(exported) or 'nothing'}"]
    if dropped:
        parts.append(f"dropped {', '.join(dropped)}")
    if spilled:
        parts.append(f"spilled {', '.join(spilled)} to stdout")
    if held:
        parts.append(f"{', '.join(held)} still buffered")
    return "; ".join(parts)

