"""Scenario 7: resets of the execution environment. A function timeout while a drain is in
flight, a runtime that crashes, an extension that dies: data acknowledged before the reset is
delivered (by the reset's Shutdown phase, or after re-init from the spool in /tmp when the
extension had no Shutdown phase), and the environment serves again after re-init."""

from __future__ import annotations

import pytest

from backend import FaultSpec
from tests.fixtures.ledger import chaos_deployment

EVENT = {"spans": 20, "points": 2, "logs": 2}
# The three exports of one drain (traces, metrics, logs) hang; the later ones are answered.
ONE_DRAIN_HANGS = FaultSpec(hang=True, times=3)


def _everything_delivered_once(ledger) -> None:
    ledger.assert_nothing_unexplained()
    for name, signal in ledger.signals.items():
        assert signal.delivered == signal.acknowledged, name
        assert (signal.duplicates, signal.spilled, signal.buffered) == (0, 0, 0), name
        assert not signal.dropped, name


def test_function_timeout_during_a_drain_delivers_the_data_from_before_the_reset(guarantees):
    # Given no Telemetry API (drains run at the start of each INVOKE, beside the handler) and
    # no deadline margin, so that a drain runs right up to the function's deadline
    with chaos_deployment(timeout=1.0, without_telemetry=True,
                          env={"AFTERFLUSH_DEADLINE_MARGIN": "0"}) as dep:
        first = dep.invoke(EVENT)
        dep.wait_records()
        # When the next invocation's drain (of the first one's data) hangs at the backend and
        # its handler runs past the function timeout
        dep.backend.set_faults(ONE_DRAIN_HANGS)
        timed_out = dep.invoke({**EVENT, "then": "hang"})
        records = dep.wait_records()
        # Then the caller got the timeout, and the environment was reset
        assert first.status == 200
        assert timed_out.json()["errorType"] == "Sandbox.Timedout"
        assert records[-1]["status"] == "timeout"
        hung = [r for r in dep.backend.backend.requests() if r.outcome == "hang"]
        assert len(hung) == 3, "the drain was not in flight at the timeout"
        dep.emulator.output.wait_for(r"shutdown: reason=timeout")
        # And after re-init the function serves again
        after = [dep.invoke(EVENT) for _ in range(2)]
        assert [r.status for r in after] == [200, 200]
        assert dep.wait_records()[-2]["coldStart"] is True
        assert dep.stop() == 0
        ledger = dep.ledger()
        guarantees("7a. function timeout during a drain", ledger, records)
        # And everything acknowledged before the reset arrived, once, in the reset's Shutdown
        # phase: both invocations' data but the timed-out one's own span, which its runtime
        # never got to export
        _everything_delivered_once(ledger)
        assert ledger.signals["traces"].never_exported == 1
        [reset] = dep.companion_lines("shutdown (timeout)")
        assert "exported 41 spans, 4 points, 4 log records" in reset


def test_runtime_crash_delivers_the_data_from_before_the_reset(guarantees):
    with chaos_deployment() as dep:
        # Given data held by the collector (the first drain hung at the backend)
        dep.backend.set_faults(ONE_DRAIN_HANGS)
        assert dep.invoke(EVENT).status == 200
        # When the next handler acknowledges its data and then its process exits
        crashed = dep.invoke({**EVENT, "then": "crash"})
        records = dep.wait_records()
        assert crashed.json()["errorType"] == "Runtime.ExitError"
        assert records[-1]["status"] == "failure"
        dep.emulator.output.wait_for(r"\[afterflush\] INFO shutdown \(failure\)")
        # Then both invocations' data was delivered before the environment came back (by the
        # crashed invocation's drain or the reset's Shutdown phase), all but the crashed
        # invocation's own span, which its runtime never got to export
        before_re_init = {s: dep.backend.stats()[s].unique for s in ("traces", "metrics", "logs")}
        assert before_re_init == {"traces": 41, "metrics": 4, "logs": 4}
        # And the environment is initialised again and serves
        assert dep.invoke(EVENT).status == 200
        assert dep.wait_records()[-1]["coldStart"] is True
        assert dep.stop() == 0
        ledger = dep.ledger()
        guarantees("7b. runtime crash", ledger, records)
        _everything_delivered_once(ledger)
        assert ledger.signals["traces"].never_exported == 1


@pytest.mark.parametrize("held", [3, pytest.param(12, marks=pytest.mark.chaos, id="12-long")])
def test_extension_killed_resets_the_environment_and_the_spool_delivers_after_re_init(
    held, guarantees
):
    # Drains of 1 s: the first drain of the collector started by re-init runs on a cold process
    # (its first export opens its connection and loads its client), and on a loaded machine that
    # took more than 200 ms, which left all 104 spans buffered past the point this test reads
    # the backend.
    with chaos_deployment(env={"AFTERFLUSH_DRAIN_TIMEOUT": "1s"}) as dep:
        # Given `held` invocations of data the collector holds (the backend hung)
        dep.backend.set_faults(FaultSpec(hang=True))
        results = [dep.invoke(EVENT) for _ in range(held)]
        # When an invocation acknowledges its data, then SIGKILLs the collector and the
        # companion (no Shutdown phase for them: the environment is reset)
        results.append(dep.invoke({**EVENT, "then": "kill_extensions"}))
        records = dep.wait_records()
        assert records[-1]["status"] == "failure"
        dep.emulator.output.wait_for(r"shutdown: reason=failure")
        dep.backend.clear_faults()
        # And the next invocation initialises the environment again
        results.append(dep.invoke(EVENT))
        dep.wait_records()
        delivered_by_re_init = {s: dep.backend.stats()[s].unique for s in ("traces", "metrics", "logs")}
        assert dep.stop() == 0
        # Then every caller got the function's answer
        assert [r.status for r in results] == [200] * (held + 2)
        # And the new collector replayed what the old one had acknowledged, and the first
        # drain after re-init delivered it
        [replayed] = dep.collector_lines("replayed from the spool")
        # (the killing invocation's own span ends after the kill: the SDK cannot hand it over)
        expected_spans = 21 * (held + 1) - 1
        assert f"{expected_spans} spans" in replayed
        assert delivered_by_re_init["traces"] == expected_spans + 21, dep.companion_lines("drain")
        ledger = dep.ledger()
        guarantees(f"7c. extensions killed, reset ({held} held)", ledger, records)
        _everything_delivered_once(ledger)
