"""What both OTLP servers do with a request once it is read: count, hand on, or refuse.

Errors from the consumer become a Rejected with the reason the sender gets back; every
refusal is counted by reason.
"""

from __future__ import annotations

import logging
from typing import Any

from google.protobuf.message import DecodeError

from collector._component import Consumer
from collector._signals import Payload, Signal
from collector.errors import BackpressureError, ExportError, PermanentExportError
from collector.receivers.otlp._status import Problem, Rejected

log = logging.getLogger("collector.receivers.otlp")


class Intake:
    """Hands decoded requests to the consumer of their signal."""

    def __init__(self, receiver_id: str, consumers: dict[Signal, Consumer]) -> None:
        self.receiver_id = receiver_id
        self.consumers = dict(consumers)
        # Refused requests by reason (Problem.key); the service reports them.
        self.rejected: dict[str, int] = {}
        self._internal_logged = False

    def check_pipeline(self, signal: Signal) -> Consumer:
        consumer = self.consumers.get(signal)
        if consumer is None:
            raise Rejected(
                Problem.NO_PIPELINE,
                f"no {signal.value} pipeline uses receiver {self.receiver_id}",
            )
        return consumer

    async def accept(self, signal: Signal, data: bytes, request: Any = None) -> None:
        """Hands `data` (a serialized request, `request` when already parsed) on; raises
        Rejected when it cannot be taken."""
        consumer = self.check_pipeline(signal)
        if request is None:
            try:
                request = signal.decode(data)
            except DecodeError as exc:
                # The library's message repeats the type name before the reason.
                reason = str(exc).rpartition(": ")[2] or "cannot parse"
                raise Rejected(
                    Problem.BAD_DATA,
                    f"the body is not a valid {signal.request_type.DESCRIPTOR.name}: {reason}",
                ) from None
        items = signal.count_items(request)
        if items == 0:
            # Nothing to keep; the spec asks for success.
            return
        try:
            await consumer.consume(Payload(signal, data, items))
        except BackpressureError as exc:
            raise Rejected(Problem.BACKPRESSURE, str(exc), exc.retry_after) from None
        except PermanentExportError as exc:
            raise Rejected(Problem.EXPORT_REFUSED, str(exc)) from None
        except ExportError as exc:
            raise Rejected(Problem.EXPORT_FAILED, str(exc), exc.retry_after) from None
        except Exception:
            # A bug downstream: say so once, with the traceback, and keep serving.
            if not self._internal_logged:
                self._internal_logged = True
                log.exception("receiver %s: the pipeline failed on a request", self.receiver_id)
            raise Rejected(Problem.INTERNAL, "internal error in the collector") from None

    def count(self, rejection: Rejected) -> None:
        key = rejection.problem.key
        self.rejected[key] = self.rejected.get(key, 0) + 1
        log.debug("receiver %s refused a request: %s: %s", self.receiver_id, key, rejection)
