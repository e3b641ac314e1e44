"""Scenario 5: the collector is SIGKILLed in the middle of an invocation. Everything it
acknowledged before the kill is in its write-ahead spool; the collector the companion starts
again replays it and delivers it. The function's responses are unaffected."""

from __future__ import annotations

import re

import pytest

from backend import FaultSpec
from tests.fixtures.ledger import chaos_deployment

EVENT = {"spans": 20, "points": 2, "logs": 2}
RESTART_TRIES = 20


@pytest.mark.parametrize(
    ("protocol", "exporter", "held"),
    [
        ("http/protobuf", "otlphttp", 3),
        pytest.param("grpc", "otlp", 10, marks=pytest.mark.chaos, id="grpc-long"),
    ],
)
def test_collector_killed_mid_invocation_delivers_all_it_acknowledged_after_restart(
    protocol, exporter, held, guarantees
):
    with chaos_deployment(protocol=protocol, exporter=exporter,
                          env={"AFTERFLUSH_DRAIN_TIMEOUT": "200ms"}) as dep:
        # Given a backend that hangs, so that the collector holds `held` invocations of data
        dep.backend.set_faults(FaultSpec(hang=True))
        results = [dep.invoke(EVENT) for _ in range(held)]
        # When an invocation acknowledges its data, then its collector is SIGKILLed, and the
        # handler goes on making data (which the SDK cannot hand over)
        results.append(dep.invoke({**EVENT, "then": "kill_collector"}))
        kill_index = dep.invoked
        dep.wait_records()
        dep.backend.clear_faults()
        # And invocations go on while the companion starts the collector again (each keeps
        # the environment thawed for 300 ms, so that the restart can happen)
        for _ in range(RESTART_TRIES):
            results.append(dep.invoke({**EVENT, "sleep": 0.3}))
            if dep.collector_lines("ready in") and len(dep.collector_lines("ready in")) > 1:
                break
        fault_records = dep.wait_records()
        results += [dep.invoke(EVENT) for _ in range(2)]
        dep.wait_records()
        assert dep.stop() == 0
        # Then every caller got its answer
        assert [r.status for r in results] == [200] * len(results)
        # And the death was logged once and the collector came back
        [death] = dep.companion_lines("collector exited (killed by SIGKILL)")
        assert "restarting it (restart 1)" in death
        # And it replayed exactly what had been acknowledged and not yet delivered
        ledger = dep.ledger()
        guarantees(f"5. collector SIGKILL mid-invocation ({exporter}, {held} held)", ledger,
                   fault_records)
        ledger.assert_nothing_unexplained()
        [replayed] = dep.collector_lines("replayed from the spool")
        per_invocation = {"traces": EVENT["spans"] + 1, "metrics": EVENT["points"],
                          "logs": EVENT["logs"]}
        # The instrumentation's span of the killed invocation ends after the kill.
        expected = {s: n * (held + 1) - (1 if s == "traces" else 0)
                    for s, n in per_invocation.items()}
        assert _counts(replayed) == expected
        # And every acknowledged item was delivered, once; what the SDK could not hand over
        # while the collector was down was refused to it, never acknowledged
        for name, signal in ledger.signals.items():
            assert signal.delivered == signal.acknowledged, name
            assert (signal.spilled, signal.buffered) == (0, 0), name
            assert not signal.dropped, name
            # Exactly once, unless a drain after the restart had its export cut by the
            # deadline (the backend may have taken it: sent again, a counted duplicate)
            assert signal.duplicates == 0 or dep.cut_exports(after="replayed from the spool")
        refused = ledger.refused()
        assert sum(refused.values()) >= sum(per_invocation.values()), refused
        assert kill_index == held + 1


def _counts(line: str) -> dict[str, int]:
    names = {"spans": "traces", "metric points": "metrics", "log records": "logs"}
    found = dict.fromkeys(names.values(), 0)
    for count, noun in re.findall(r"(\d+) (spans|metric points|log records)", line):
        found[names[noun]] += int(count)
    return found
