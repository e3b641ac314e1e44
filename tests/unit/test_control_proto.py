"""The committed FlushControl code is exactly what control.proto generates."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2

from companion.proto import control_pb2
from companion.proto.generate import GENERATED, HERE, generate


def test_committed_generated_code_matches_the_proto(tmp_path: Path) -> None:
    generate(tmp_path)

    for name in GENERATED:
        fresh = (tmp_path / name).read_text()
        committed = (HERE / name).read_text()
        assert fresh == committed, f"{name} is stale: run `make proto`"


def test_drain_request_keeps_room_for_later_options() -> None:
    file = descriptor_pb2.FileDescriptorProto.FromString(control_pb2.DESCRIPTOR.serialized_pb)
    drain = next(m for m in file.message_type if m.name == "DrainRequest")

    assert file.package == "afterflush.control.v1"
    assert [(f.name, f.number) for f in drain.field] == [
        ("request_id", 1), ("reason", 2), ("spill_remaining", 3), ("await_handover", 4),
        ("handover_timeout_ms", 5), ("max_drain_ms", 6),
    ]
    assert [(r.start, r.end) for r in drain.reserved_range] == [(7, 16)]
