"""The spool: what was accepted and not finished comes back, in order, after a crash."""

from __future__ import annotations

import os

import pytest

from collector.processors import _spool
from collector.processors._spool import Spool, SpoolFullError
from tests.fixtures.backend import logs_payload, trace_payload


def test_unfinished_requests_come_back_in_order_and_finished_ones_do_not(tmp_path):
    spool = Spool(str(tmp_path), max_bytes=1 << 20)
    assert spool.open() == []
    spool.append(1, "otlp", trace_payload(2, name="a"))
    spool.append(2, "otlp/2", logs_payload(1, body="b"))
    spool.append(3, "otlp", trace_payload(1, name="c"))
    spool.ack(1)
    spool.close(empty=False)  # what the kernel does for a collector that was killed

    again = Spool(str(tmp_path), max_bytes=1 << 20)
    found = again.open()

    assert [(r.receiver_id, r.payload.signal.value, r.payload.items) for r in found] == [
        ("otlp/2", "logs", 1), ("otlp", "traces", 1)]
    assert found[1].payload == trace_payload(1, name="c")
    again.close(empty=True)
    assert sorted(os.listdir(tmp_path)) == ["lock"]


def test_a_torn_record_at_the_end_is_ignored(tmp_path):
    spool = Spool(str(tmp_path), max_bytes=1 << 20)
    spool.open()
    spool.append(1, "otlp", trace_payload(1, name="whole"))
    spool.append(2, "otlp", trace_payload(1, name="torn"))
    [segment] = [n for n in os.listdir(tmp_path) if n.endswith(".seg")]
    path = tmp_path / segment
    path.write_bytes(path.read_bytes()[:-5])
    spool.close(empty=False)

    found = Spool(str(tmp_path), max_bytes=1 << 20).open()

    assert [r.payload for r in found] == [trace_payload(1, name="whole")]


def test_finished_segments_are_removed_and_the_bound_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(_spool, "SEGMENT_BYTES", 1)
    payload = trace_payload(3)
    spool = Spool(str(tmp_path), max_bytes=4 * (payload.size + 64))
    spool.open()
    for seq in range(1, 4):
        spool.append(seq, "otlp", payload)
    assert len([n for n in os.listdir(tmp_path) if n.endswith(".seg")]) == 4  # rotated per record
    with pytest.raises(SpoolFullError):
        for seq in range(4, 10):
            spool.append(seq, "otlp", payload)

    for seq in range(1, 4):
        spool.ack(seq)

    segments = [n for n in os.listdir(tmp_path) if n.endswith(".seg")]
    assert len(segments) <= 2
    assert spool.bytes == sum(os.path.getsize(tmp_path / n) for n in segments)
    spool.append(10, "otlp", payload)  # room again


def test_one_collector_at_a_time_owns_a_spool(tmp_path):
    first = Spool(str(tmp_path), max_bytes=1 << 20)
    first.open()
    with pytest.raises(OSError, match="is in use by another collector"):
        Spool(str(tmp_path), max_bytes=1 << 20).open()
    first.close(empty=True)
    Spool(str(tmp_path), max_bytes=1 << 20).open()
