"""Scenario 4: the environment freezes in the middle of an export. The emulator freezes as soon
as the last extension calls next; an export the collector started on its own (buffer above the
high-water mark) against a slow backend is still in flight then, and the next invocation thaws
it. After the thaw, pooled connections the backend closed meanwhile fail their first request.
Nothing is lost; a response lost in flight shows up as a counted duplicate."""

from __future__ import annotations

import pytest

from backend import FaultSpec
from tests.fixtures.ledger import chaos_deployment

# About 500 KB of spans: above the 20% high-water mark of a 2 MiB buffer in every invocation.
HEAVY = {"spans": 450, "points": 3, "logs": 3, "attr_bytes": 1000}


@pytest.mark.parametrize(
    "invocations", [4, pytest.param(30, marks=pytest.mark.chaos, id="30-long")]
)
def test_freeze_in_the_middle_of_an_export_loses_nothing(invocations, guarantees):
    with chaos_deployment(
        buffer_mib=2, high_water_percent=20, env={"AFTERFLUSH_DRAIN_TIMEOUT": "100ms"},
    ) as dep:
        # Given a backend that answers each export after 400 ms, so that the export the
        # collector starts on its own during the handler is in flight at the freeze
        dep.backend.set_latency(400)
        results = [dep.invoke(HEAVY) for _ in range(invocations)]
        fault_records = dep.wait_records()
        # Then the companion did call next while that export was running (and the
        # environment was frozen with it in flight), and every invocation ended normally
        assert dep.companion_lines("another drain was still running at the deadline")
        assert [r.status for r in results] == [200] * invocations
        assert {r["status"] for r in fault_records} == {"success"}
        # When, after each thaw, the backend has closed the pooled connections (the first
        # request on a reused connection is dropped without an answer)
        dep.backend.set_latency(0)
        dep.backend.set_faults(FaultSpec(close_idle=True))
        # (a drain cut by its deadline leaves no connection in the pool: invoke until an
        # export has met a closed pooled one, at most 10 times)
        closed: list[object] = []
        for _ in range(10):
            assert dep.invoke(HEAVY).status == 200
            closed = [r for r in dep.backend.backend.requests() if r.outcome == "closed"]
            if closed:
                break
        assert closed, "no request met a closed pooled connection in 10 invocations"
        dep.backend.clear_faults()
        assert dep.invoke(HEAVY).status == 200
        assert dep.stop() == 0
        ledger = dep.ledger()
        guarantees(f"4. freeze mid-export ({invocations} invocations)", ledger, fault_records)
        # Then every acknowledged item arrived; none was dropped, spilled or left behind
        ledger.assert_nothing_unexplained()
        for name, signal in ledger.signals.items():
            assert signal.delivered == signal.acknowledged, name
            assert (signal.spilled, signal.buffered) == (0, 0), name
            assert not signal.dropped, name
