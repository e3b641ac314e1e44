"""Fan-out from a receiver to the pipelines of one signal: hold, or export right away.

A pipeline with flushcontrol holds (HoldBuffer); one without it (the synchronous mode the
benchmark compares against) exports before the sender gets its answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from collector._component import Exporter, Outcome
from collector._signals import Payload, Signal
from collector.errors import BackpressureError, ExportError, PermanentExportError
from collector.processors.flushcontrol import Budget, FlushController, HoldBuffer

# How long a synchronous (pass-through) export may take: the OTel SDK's own export timeout.
PASSTHROUGH_TIMEOUT_S = 10.0


class Fanout:
    """The Consumer a receiver gets for one signal: every pipeline of that signal that lists
    the receiver. Admission is all-or-nothing, so a sender that is told to retry never
    leaves a copy behind in some pipelines."""

    def __init__(
        self,
        receiver_id: str,
        signal: Signal,
        held: list[HoldBuffer],
        passthrough: list[list[Exporter]],
        controller: FlushController,
        *,
        retry_after: float,
        on_accept: Callable[[Payload], None],
        on_high_water: Callable[[], None],
    ) -> None:
        self.receiver_id = receiver_id
        self.signal = signal
        self.held = held
        self.passthrough = passthrough
        self.controller = controller
        self.retry_after = retry_after
        self.on_accept = on_accept
        self.on_high_water = on_high_water

    async def consume(self, payload: Payload) -> None:
        if self.held:
            self._hold(payload)
        if self.passthrough:
            await self._export_now(payload)
        if not self.held:
            self.on_accept(payload)

    def _hold(self, payload: Payload) -> None:
        # No await between the check and the appends: admission is atomic in the event loop.
        needed: dict[int, tuple[Budget, int]] = {}
        for buffer in self.held:
            budget, size = needed.get(id(buffer.budget), (buffer.budget, 0))
            needed[id(budget)] = (budget, size + payload.size)
        for budget, size in needed.values():
            if not budget.fits(size):
                raise BackpressureError(
                    f"buffer full ({budget.used} of {budget.capacity} bytes held); retry later",
                    retry_after=self.retry_after,
                )
        self.controller.hold(self.receiver_id, payload, self.held)
        self.on_accept(payload)
        if any(budget.above_high_water for budget, _ in needed.values()):
            self.on_high_water()

    async def _export_now(self, payload: Payload) -> None:
        deadline = asyncio.get_running_loop().time() + PASSTHROUGH_TIMEOUT_S
        exporters = [e for pipeline in self.passthrough for e in pipeline]
        results = await asyncio.gather(*(e.export(payload, deadline) for e in exporters))
        failed = [r for r in results if r.outcome is not Outcome.SUCCESS]
        if failed:
            message = failed[0].error or "export failed"
            if any(r.outcome is Outcome.RETRYABLE for r in failed):
                raise ExportError(message)
            raise PermanentExportError(message)
