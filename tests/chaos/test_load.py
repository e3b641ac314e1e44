"""Scenario 8: load. Invocations at up to 50 per second, 100 spans each, for 10 s (60 s under
`make chaos`): nothing is lost, and the environment's memory stays bounded. The rate reached
depends on the machine (one environment runs one invocation at a time, drain included); the
test reports it."""

from __future__ import annotations

import threading
import time

import pytest

from tests.fixtures.ledger import chaos_deployment

RATE_PER_S = 50
EVENT = {"spans": 100, "points": 1, "logs": 1}
# Peak RSS of all the environment's processes may grow this much from the end of the first
# quarter of the run (allocator and import warm-up) to its end; a leak of a few hundred bytes
# per span would cross it within the short run.
RSS_GROWTH_BYTES = 24 * 1024 * 1024


@pytest.mark.parametrize(
    "seconds", [10, pytest.param(60, marks=pytest.mark.chaos, id="60s-long")]
)
def test_load_loses_nothing_and_memory_stays_bounded(seconds, guarantees):
    with chaos_deployment() as dep:
        assert dep.invoke(EVENT).status == 200
        dep.wait_records()
        # When the function is invoked at up to 50 per second for `seconds` (the caller waits
        # for each response; the environment runs one invocation at a time, as Lambda's does)
        pace = threading.Event()  # never set: its wait() is the load generator's clock
        started = time.monotonic()
        statuses = []
        while len(statuses) < seconds * RATE_PER_S and time.monotonic() < started + seconds:
            # Pacing the load, not synchronising with it: no test outcome depends on time.
            pace.wait(max(0.0, started + len(statuses) / RATE_PER_S - time.monotonic()))
            statuses.append(dep.invoke(EVENT, wait_idle=False).status)
        elapsed = time.monotonic() - started
        count = len(statuses)
        assert dep.invoke({**EVENT, "status": True}).status == 200
        records = dep.wait_records(count + 2, timeout=60)
        status = dep.collector_status()
        assert dep.stop() == 0
        # Then every invocation succeeded
        assert statuses == [200] * count
        assert {r["status"] for r in records} == {"success"}
        # And nothing was lost, nothing is left in the collector, nothing arrived twice
        ledger = dep.ledger()
        load = records[1:-1]
        quarter, end = load[len(load) // 4]["maxRssBytes"], load[-1]["maxRssBytes"]
        result = guarantees(
            f"8. load, {count} invocations in {elapsed:.0f} s ({count / elapsed:.0f}/s), "
            f"100 spans each, peak RSS {quarter / 2**20:.0f} -> {end / 2**20:.0f} MiB",
            ledger, load,
        )
        ledger.assert_nothing_unexplained()
        for name, signal in ledger.signals.items():
            assert signal.delivered == signal.acknowledged == signal.produced, name
            assert (signal.spilled, signal.buffered) == (0, 0), name
            # Exactly once, unless a drain's export was cut by its deadline (the backend
            # may have taken it anyway: sent again, a counted duplicate)
            assert signal.duplicates == 0 or dep.cut_exports(), name
            assert not signal.dropped and not signal.refused, name
        # (when the last invocation asked, only its own log record was still held: its spans
        # and point are handed over after the handler)
        assert [status[s]["buffered"] for s in ("traces", "metrics", "logs")] == ["0", "0", "1"]
        assert result.produced == (count + 2) * (EVENT["spans"] + 1 + EVENT["points"] + EVENT["logs"])
        # And memory stayed bounded: the peak after the first quarter is nearly the peak at
        # the end
        assert end - quarter <= RSS_GROWTH_BYTES, (quarter, end)
