"""Scenario 8: load. 50 invocations per second offered as an open loop for 10 s (60 s under
`make chaos`), 100 spans each, over several environments exporting to one backend, as Lambda
scales out: nothing is lost, and each environment's memory stays bounded. One environment
runs one invocation at a time, post-invoke drain included; the test reports the rate the
environments completed against the rate offered (it depends on the machine)."""

from __future__ import annotations

import pytest

from tests.fixtures.ledger import chaos_fleet, offer_load, p99

RATE_PER_S = 50
# One environment completes ~30 invocations/s here (the Telemetry API's buffering before
# platform.runtimeDone, then the drain, follow every response): two take the offered rate.
ENVIRONMENTS = 2
EVENT = {"spans": 100, "points": 1, "logs": 1}
ITEMS_PER_INVOCATION = EVENT["spans"] + 1 + EVENT["points"] + EVENT["logs"]  # +1: the root span
# Peak RSS of all of an environment's processes may grow this much from the end of the first
# quarter of its load (allocator and import warm-up) to its end; a leak of a few hundred
# bytes per span would cross it within the short run.
RSS_GROWTH_BYTES = 24 * 1024 * 1024


def _mib(value: int) -> str:
    return f"{value / 2**20:.0f}"


@pytest.mark.parametrize(
    "seconds", [10, pytest.param(60, marks=pytest.mark.chaos, id="60s-long")]
)
def test_load_over_environments_loses_nothing_and_memory_stays_bounded(seconds, guarantees):
    with chaos_fleet(ENVIRONMENTS) as fleet:
        # Given warm environments (a cold start is not the load's doing)
        for env in fleet.environments:
            assert env.invoke(EVENT).status == 200
            env.wait_records()
        # When 50 invocations per second are offered for `seconds`, each going to an idle
        # environment
        load = offer_load(fleet.environments, EVENT, rate=RATE_PER_S, seconds=seconds,
                          drain_seconds=max(20.0, seconds))
        for env in fleet.environments:
            assert env.invoke({**EVENT, "status": True}).status == 200
        records = [env.wait_records(timeout=60) for env in fleet.environments]
        statuses = [env.collector_status() for env in fleet.environments]
        assert fleet.stop() == [0] * ENVIRONMENTS
        # Then every request offered was served, and every invocation succeeded
        assert (load.offered, load.completed) == (seconds * RATE_PER_S, seconds * RATE_PER_S)
        assert [s.status for s in load.served] == [200] * load.offered
        served_by = load.per_environment()
        assert [len(r) for r in records] == [served_by[n] + 2 for n in range(ENVIRONMENTS)]
        assert {r["status"] for env_records in records for r in env_records} == {"success"}
        # And nothing was lost, nothing is left in any collector, nothing arrived twice
        ledger = fleet.ledger()
        load_records = [r for env_records in records for r in env_records[1:-1]]
        peaks = [(r[1:-1][len(r[1:-1]) // 4]["maxRssBytes"], r[-2]["maxRssBytes"])
                 for r in records]
        result = guarantees(
            f"8. load, {load.offered} offered in {seconds} s ({RATE_PER_S}/s) over "
            f"{ENVIRONMENTS} environments, completed in {load.elapsed:.1f} s "
            f"({load.completed_rate:.1f}/s, wait for an idle one p99 "
            f"{p99(load.waits_ms()):.0f} ms), 100 spans each, peak RSS "
            + ", ".join(f"{_mib(q)} -> {_mib(e)}" for q, e in peaks) + " MiB",
            ledger, load_records,
        )
        ledger.assert_nothing_unexplained()
        for name, signal in ledger.signals.items():
            assert signal.delivered == signal.acknowledged == signal.produced, name
            assert (signal.spilled, signal.buffered) == (0, 0), name
            # Exactly once, unless a drain's export was cut by its deadline (the backend
            # may have taken it anyway: sent again, a counted duplicate)
            assert signal.duplicates == 0 or fleet.cut_exports(), name
            assert not signal.dropped and not signal.refused, name
        # (when the last invocation asked, only its own log record was still held: its spans
        # and point are handed over after the handler)
        for status in statuses:
            assert [status[s]["buffered"] for s in ("traces", "metrics", "logs")] == ["0", "0", "1"]
        assert result.produced == (load.completed + 2 * ENVIRONMENTS) * ITEMS_PER_INVOCATION
        # And each environment's memory stayed bounded: its peak after the first quarter is
        # nearly its peak at the end
        for quarter, end in peaks:
            assert end - quarter <= RSS_GROWTH_BYTES, (quarter, end)
