"""A function for the hand-over tests, run under the layer's otel-instrument: only the
OpenTelemetry API and logging, as a user's function.

Each invocation produces one "handle-order" span, one span per item, one orders.items point and
one log record (besides the aws-lambda instrumentation's invocation span), and answers with
what it produced and the wall time it started. The event may also ask it to
- "late_log": start a thread that logs one record ("late record <requestId>") once the
  invocation's span has ended, after the handler returned; the next invocation waits for it;
- "raise": raise after producing everything;
- "sleep_s": sleep that long after producing everything (past the function's timeout).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from opentelemetry import metrics, trace

tracer = trace.get_tracer("afterflush.handover-test")
items_counter = metrics.get_meter("afterflush.handover-test").create_counter("orders.items")
log = logging.getLogger("afterflush.handover-test")
log.setLevel(logging.INFO)
# Threads of earlier invocations that log after their handler returned.
late_threads: list[threading.Thread] = []
LATE_WAIT_S = 10.0


def _log_when_ended(span: Any, request_id: str) -> None:
    # A bounded wait for the invocation's span to end, which happens after the handler returns.
    give_up = time.monotonic() + LATE_WAIT_S
    while getattr(span, "end_time", None) is None and time.monotonic() < give_up:
        time.sleep(0.001)
    log.info("late record %s", request_id)


def handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    started_at = time.time()
    event = event or {}
    for thread in late_threads:
        thread.join(LATE_WAIT_S)
    late_threads.clear()
    items = int(event.get("items", 2))
    with tracer.start_as_current_span("handle-order", attributes={"order.items": items}):
        for index in range(items):
            with tracer.start_as_current_span("process-item", attributes={"item.index": index}):
                pass
    items_counter.add(items)
    log.info("handled an order of %d items", items)
    if event.get("late_log"):
        thread = threading.Thread(
            target=_log_when_ended, args=(trace.get_current_span(), context.aws_request_id)
        )
        thread.start()
        late_threads.append(thread)
    if event.get("raise"):
        raise RuntimeError("order rejected")
    if event.get("sleep_s"):
        time.sleep(float(event["sleep_s"]))
    return {
        "requestId": context.aws_request_id,
        "startedAt": started_at,
        "produced": {"traces": items + 2, "metrics": 1, "logs": 1},
    }
