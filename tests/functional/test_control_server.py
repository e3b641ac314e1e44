"""The control endpoint: a unix socket only its owner may use, never stolen from a live one."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from collector._control_server import ControlServer
from collector.control import ControlClient
from collector.errors import AfterflushError
from collector.processors.flushcontrol import DrainOutcome
from collector.proto import control_pb2
from tests.fixtures.collector import short_tmpdir


class Host:
    """Answers like a collector holding nothing."""

    def __init__(self) -> None:
        self.drains: list[tuple[float | None, str, str, bool]] = []

    async def drain(self, *, timeout, reason, request_id, spill_remaining):
        self.drains.append((timeout, reason, request_id, spill_remaining))
        return DrainOutcome()

    def rejected_since_last_drain(self):
        return {"backpressure": 2}

    def status_reply(self):
        return control_pb2.StatusReply(ready=True, pid=os.getpid())


async def test_socket_is_private_and_drain_gets_the_callers_deadline_less_a_margin():
    directory = short_tmpdir()
    endpoint = f"unix://{directory}/ctl/control.sock"
    host = Host()
    server = ControlServer(endpoint, host)
    await server.start()
    client = ControlClient(endpoint)
    try:
        mode = os.stat(f"{directory}/ctl/control.sock").st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        assert stat.S_IMODE(os.stat(f"{directory}/ctl").st_mode) == 0o700

        status = await client.status(timeout=2.0)
        reply = await client.drain(timeout=2.0, request_id="r1", reason="invoke", spill_remaining=True)

        assert (status.ready, status.pid) == (True, os.getpid())
        assert reply.complete is True
        assert dict(reply.rejected_requests) == {"backpressure": 2}
        [(timeout, reason, request_id, spill)] = host.drains
        assert (reason, request_id, spill) == ("invoke", "r1", True)
        assert timeout is not None and 1.5 < timeout < 1.96
    finally:
        await client.aclose()
        await server.shutdown()
    assert not os.path.exists(f"{directory}/ctl/control.sock")


async def test_a_stale_socket_is_replaced_and_a_live_one_is_refused():
    directory = short_tmpdir()
    path = f"{directory}/control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # bound, never listening: what a killed collector leaves behind
    stale.close()
    first = ControlServer(f"unix://{path}", Host())
    await first.start()
    try:
        second = ControlServer(f"unix://{path}", Host())
        with pytest.raises(AfterflushError, match=f"control endpoint unix://{path} is in use"):
            await second.start()
    finally:
        await first.shutdown()
