"""Scenario 2: the backend is down for ten invocations, then back. What was buffered is
delivered once it is back; past the buffer bound the collector refuses with backpressure
(counted by reason, the SDK told at once), and the function keeps answering."""

from __future__ import annotations

import pytest

from tests.fixtures.ledger import chaos_deployment

# About 170 KB of spans per invocation: a 1 MiB buffer is full after six of them.
HEAVY = {"spans": 150, "points": 2, "logs": 2, "attr_bytes": 1000}


@pytest.mark.parametrize(
    "down_for", [10, pytest.param(40, marks=pytest.mark.chaos, id="40-long")]
)
def test_backend_down_buffers_until_it_is_back_and_counts_what_did_not_fit(down_for, guarantees):
    with chaos_deployment(buffer_mib=1, env={"AFTERFLUSH_DRAIN_TIMEOUT": "300ms"}) as dep:
        assert dep.invoke(HEAVY).status == 200
        # Given a backend that went down after the first invocation
        dep.wait_records()
        dep.backend.go_down()
        # When the function is invoked `down_for` times while it is down
        results = [dep.invoke(HEAVY) for _ in range(down_for)]
        fault_records = dep.wait_records()[1:]
        # Then every invocation answered and ended normally
        assert [r.status for r in results] == [200] * down_for
        assert {r["status"] for r in fault_records} == {"success"}
        # And the drains said once that they could not finish, and once more when the full
        # buffer began refusing senders: a line per kind of problem, not per invocation
        lines = dep.companion_lines("drain (invoke) incomplete")
        assert len(lines) == 2, lines
        assert "receivers refused" not in lines[0]
        assert "requests (backpressure) since the last drain" in lines[1]
        # When the backend is back and the function is invoked again
        dep.backend.come_up()
        for event in (HEAVY, HEAVY, {**HEAVY, "status": True}):
            assert dep.invoke(event).status == 200
        status = dep.collector_status()
        assert dep.stop() == 0
        ledger = dep.ledger()
        guarantees(f"2. backend down for {down_for} invocations", ledger, fault_records)
        ledger.assert_nothing_unexplained()
        # Then everything the collector acknowledged was delivered, once
        for name, signal in ledger.signals.items():
            assert signal.delivered == signal.acknowledged, name
            assert (signal.spilled, signal.buffered) == (0, 0), name
            # Exactly once, unless a drain's export was cut by its deadline (the backend
            # may have taken it anyway: sent again, a counted duplicate)
            assert signal.duplicates == 0 or dep.cut_exports(), name
            assert not signal.dropped, name
        # And past the 1 MiB bound the collector refused with backpressure: every refused
        # export was a 429 the SDK got at once, and the collector counted each by reason
        refused = ledger.refused()
        assert set(refused) == {"http 429"}, refused
        assert status["rejectedRequests"] == {"backpressure": str(dep.refused_exports())}
        assert dep.refused_exports() > 0
