"""Scenario 3: a backend that accepts connections and never answers. Every invocation ends
inside its function timeout; the data goes once the backend answers again."""

from __future__ import annotations

import pytest

from backend import FaultSpec
from tests.fixtures.ledger import chaos_deployment

EVENT = {"spans": 30, "points": 3, "logs": 3}


@pytest.mark.parametrize(
    ("exporter", "invocations"),
    [
        ("otlphttp", 3),
        pytest.param("otlp", 3, id="otlp"),
        pytest.param("otlphttp", 30, marks=pytest.mark.chaos, id="otlphttp-long"),
    ],
)
def test_hanging_backend_never_times_out_the_function_and_data_goes_later(
    exporter, invocations, guarantees
):
    # Given a 1 s function timeout, the default drain budget (2 s, so the deadline is what
    # caps it) and a backend that takes every export and never answers
    with chaos_deployment(exporter=exporter, timeout=1.0) as dep:
        dep.backend.set_faults(FaultSpec(hang=True))
        # When the function is invoked
        results = [dep.invoke(EVENT) for _ in range(invocations)]
        fault_records = dep.wait_records()
        # Then every invocation succeeded: each drain ended before the function's deadline
        assert [r.status for r in results] == [200] * invocations
        assert [r["status"] for r in fault_records] == ["success"] * invocations
        assert all(r["durationMs"] < 1000 for r in fault_records)
        hung = [r for r in dep.backend.backend.requests() if r.outcome == "hang"]
        assert hung, "no export reached the hanging backend"
        assert dep.backend.stats()["traces"].items == 0
        # When the backend answers again
        dep.backend.clear_faults()
        assert dep.invoke(EVENT).status == 200
        dep.wait_records()
        # Then the next drain delivered everything, once, before the environment stopped
        delivered_before_shutdown = dep.backend.stats()["traces"].unique
        assert dep.stop() == 0
        ledger = dep.ledger()
        guarantees(f"3. backend hangs ({exporter}, {invocations} invocations)", ledger,
                   fault_records)
        ledger.assert_nothing_unexplained()
        assert delivered_before_shutdown == ledger.signals["traces"].produced
        for name, signal in ledger.signals.items():
            assert signal.delivered == signal.produced == signal.acknowledged, name
            assert (signal.duplicates, signal.spilled, signal.buffered) == (0, 0, 0), name
            assert not signal.dropped, name
