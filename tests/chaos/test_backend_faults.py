"""The faults the scenarios add to the test backend: a mix of statuses, coming back on demand
after going down, and the count of requests still in flight."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import aiohttp
import pytest

from backend import FaultSpec
from tests.fixtures.backend import running_backend
from tests.fixtures.otlp import http_post, trace_payload


async def _post(session: aiohttp.ClientSession, url: str) -> int:
    return (await http_post(session, url, trace_payload(1).data)).status


async def test_a_status_mix_draws_each_status_from_the_seeded_rng():
    # Given a backend that answers every request with 503 or 429, as a seeded RNG draws
    async with running_backend(seed=7) as backend, aiohttp.ClientSession() as session:
        backend.set_faults(FaultSpec(statuses=(503, 429), retry_after=1))
        url = backend.http_endpoint + "/v1/traces"
        # When 20 requests arrive
        statuses = [await _post(session, url) for _ in range(20)]
    # Then each got the status the same RNG draws, and both occurred
    rng = random.Random(7)
    assert statuses == [rng.choice((503, 429)) for _ in range(20)]
    assert set(Counter(statuses)) == {503, 429}


def test_a_status_mix_comes_from_the_control_api_as_a_list():
    spec = FaultSpec.from_json({"statuses": [503, 429], "probability": 0.3})
    assert (spec.statuses, spec.probability) == ((503, 429), 0.3)
    with pytest.raises(ValueError, match="statuses must be a list of HTTP status numbers"):
        FaultSpec.from_json({"statuses": "503"})


async def test_come_up_ends_going_down_at_once_on_the_same_ports():
    async with running_backend() as backend, aiohttp.ClientSession() as session:
        url = backend.http_endpoint + "/v1/traces"
        # Given a backend down for an hour
        await backend.go_down(3600)
        assert not backend.up
        with pytest.raises(aiohttp.ClientConnectionError):
            await _post(session, url)
        # When it comes up
        await backend.come_up()
        # Then it listens again on the same port, and taking it down later still works
        assert backend.up
        assert await _post(session, url) == 200
        await backend.come_up()  # a no-op when up
        assert backend.stats()["traces"].items == 1


async def test_in_flight_counts_requests_waiting_out_latency_but_not_hanging_ones():
    async with running_backend(latency_ms=300) as backend, aiohttp.ClientSession() as session:
        url = backend.http_endpoint + "/v1/traces"
        # Given one request waiting out the latency
        slow = asyncio.create_task(_post(session, url))
        await backend.wait_until(lambda: backend.in_flight == 1, timeout=5)
        # And one held by the hang fault (it never records items)
        backend.set_faults(FaultSpec(hang=True), None)
        hanging = asyncio.create_task(_post(session, url))
        await backend.wait_for_requests(1, timeout=5)
        assert backend.in_flight == 1
        # When the slow one is answered, nothing is in flight
        await backend.wait_idle(timeout=5)
        assert await slow == 200
        assert backend.stats()["traces"].items == 1
        hanging.cancel()
