"""Scenario 1: a backend that answers 30% of exports with 503 or 429 (Retry-After): everything
is delivered, and retries stay inside each drain's deadline (no invocation times out)."""

from __future__ import annotations

import pytest

from backend import FaultSpec
from tests.fixtures.ledger import chaos_deployment

FLAKY = FaultSpec(statuses=(503, 429), retry_after=1.0, probability=0.3)
EVENT = {"spans": 20, "points": 2, "logs": 2}


@pytest.mark.parametrize(
    ("exporter", "invocations"),
    [
        ("otlphttp", 8),
        pytest.param("otlphttp", 150, marks=pytest.mark.chaos, id="otlphttp-long"),
        pytest.param("otlp", 150, marks=pytest.mark.chaos, id="otlp-long"),
    ],
)
def test_random_503s_and_429s_lose_nothing_and_never_time_out_the_function(
    exporter, invocations, guarantees
):
    with chaos_deployment(exporter=exporter, env={"AFTERFLUSH_DRAIN_TIMEOUT": "1500ms"}) as dep:
        # Given a backend that refuses 30% of exports with 503 or 429 + Retry-After: 1
        dep.backend.set_faults(FLAKY)
        # When the function is invoked again and again
        results = [dep.invoke(EVENT) for _ in range(invocations)]
        fault_records = dep.wait_records()
        # Then every caller got its answer and no invocation ran into its timeout: each drain
        # gave up its retries at its deadline and left the rest for the next one
        assert [r.status for r in results] == [200] * invocations
        assert {r["status"] for r in fault_records} == {"success"}
        assert all(r["durationMs"] < dep.timeout * 1000 for r in fault_records)
        requests = dep.backend.backend.requests()
        refused = [r for r in requests if r.outcome != "accepted"]
        assert refused, (
            f"the fault never fired in {len(requests)} export requests; companion said: "
            f"{dep.companion_lines()[-5:]}"
        )
        assert {r.outcome for r in refused} <= {"http 503", "http 429", "grpc UNAVAILABLE",
                                                 "grpc RESOURCE_EXHAUSTED"}
        # When the backend recovers and the environment shuts down
        dep.backend.clear_faults()
        assert dep.invoke(EVENT).status == 200
        assert dep.stop() == 0
        # Then every item arrived exactly once, with nothing dropped, spilled or left over
        ledger = dep.ledger()
        guarantees(f"1. 30% 503/429 ({exporter}, {invocations} invocations)", ledger,
                   fault_records)
        ledger.assert_nothing_unexplained()
        for name, signal in ledger.signals.items():
            produced = EVENT[{"traces": "spans", "metrics": "points", "logs": "logs"}[name]]
            per_invocation = produced + (1 if name == "traces" else 0)
            assert signal.produced == signal.acknowledged == per_invocation * (invocations + 1)
            assert signal.delivered == signal.produced, name
            assert (signal.spilled, signal.buffered) == (0, 0), name
            # Exactly once, unless a drain's export was cut by its deadline (the backend
            # may have taken it anyway: sent again, a counted duplicate)
            assert signal.duplicates == 0 or dep.cut_exports(), name
            assert not signal.dropped and not signal.refused, name
