"""A write-ahead spool of accepted requests in /tmp, so that a restarted collector replays them.

Append-only segment files of data and ack records; no fsync (a crash of the collector, not of
the machine, is what it guards against, and /tmp outlives a reset of the environment).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from collector._signals import Payload, Signal

log = logging.getLogger("collector.spool")

_MAGIC = b"AFS1"
_DATA, _ACK = 1, 2
# magic, kind, signal, receiver-id length, items, payload length, seq
_HEADER = struct.Struct("<4sBBHIIQ")
_SIGNAL_CODES = {Signal.TRACES: 1, Signal.METRICS: 2, Signal.LOGS: 3}
_SIGNALS = {code: signal for signal, code in _SIGNAL_CODES.items()}
SEGMENT_BYTES = 1 << 20


@dataclass(frozen=True)
class SpooledRequest:
    """A request found in the spool at start: accepted by a collector that did not finish it."""

    receiver_id: str
    payload: Payload


class SpoolFullError(Exception):
    """The spool has no room for the request; the receiver answers with backpressure."""


class Spool:
    """Segment files `NNNNNNNN.seg` in one directory, which one collector locks for itself."""

    def __init__(self, directory: str, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.bytes = 0  # bytes of every segment on disk
        self._lock_fd = -1
        self._file: object = None
        self._segment = 0
        self._segment_bytes = 0
        self._live: dict[int, set[int]] = {}  # segment -> seqs not yet acked
        self._seq_segment: dict[int, int] = {}
        self.disabled_reason = ""

    def open(self) -> list[SpooledRequest]:
        """Locks the directory and returns what earlier collectors left unfinished, in the
        order they accepted it; the old segments are then removed (the caller holds the
        requests again, under new sequence numbers)."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._lock_fd = os.open(os.path.join(self.directory, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise OSError(f"spool {self.directory} is in use by another collector") from None
        segments = sorted(name for name in os.listdir(self.directory) if name.endswith(".seg"))
        found: dict[int, SpooledRequest] = {}
        for name in segments:
            for kind, seq, receiver_id, payload in _read(os.path.join(self.directory, name)):
                if kind == _DATA and payload is not None:
                    found[seq] = SpooledRequest(receiver_id, payload)
                else:
                    found.pop(seq, None)
        for name in segments:
            os.unlink(os.path.join(self.directory, name))
        self._segment = int(segments[-1].split(".")[0]) + 1 if segments else 0
        self._open_segment()
        return [found[seq] for seq in sorted(found)]

    def append(self, seq: int, receiver_id: str, payload: Payload) -> None:
        """Records an accepted request before the sender is answered."""
        if self._file is None:
            return
        record_size = _HEADER.size + len(receiver_id.encode()) + payload.size
        if self.bytes + record_size > self.max_bytes:
            raise SpoolFullError(f"spool full ({self.bytes} of {self.max_bytes} bytes)")
        # Registered before the write, which may rotate to a new segment.
        self._live.setdefault(self._segment, set()).add(seq)
        self._seq_segment[seq] = self._segment
        self._write(_DATA, seq, receiver_id.encode(), payload)

    def ack(self, seq: int) -> None:
        """Records that the request `seq` needs no replay (sent, dropped or spilled)."""
        segment = self._seq_segment.pop(seq, None)
        if segment is None or self._file is None:
            return
        live = self._live[segment]
        live.discard(seq)
        if not live and segment != self._segment:
            self._remove_segment(segment)
            return
        self._write(_ACK, seq, b"", None)
        if not live and self._segment_bytes >= SEGMENT_BYTES:
            self._rotate()

    def _write(self, kind: int, seq: int, receiver_id: bytes, payload: Payload | None) -> None:
        data = payload.data if payload is not None else b""
        items = payload.items if payload is not None else 0
        signal = _SIGNAL_CODES[payload.signal] if payload is not None else 0
        header = _HEADER.pack(_MAGIC, kind, signal, len(receiver_id), items, len(data), seq)
        try:
            self._file.write(header + receiver_id + data)  # type: ignore[attr-defined]
            self._file.flush()  # type: ignore[attr-defined]
        except OSError as exc:
            self._disable(f"cannot write the spool ({exc}); continuing without it")
            return
        written = len(header) + len(receiver_id) + len(data)
        self.bytes += written
        self._segment_bytes += written
        if kind == _DATA and self._segment_bytes >= SEGMENT_BYTES:
            self._rotate()

    def _rotate(self) -> None:
        previous = self._segment
        self._close_file()
        self._segment += 1
        self._open_segment()
        if not self._live.get(previous):
            self._remove_segment(previous)

    def _open_segment(self) -> None:
        self._file = open(self._path(self._segment), "ab", buffering=0)
        self._segment_bytes = 0
        self._live.setdefault(self._segment, set())

    def _remove_segment(self, segment: int) -> None:
        path = self._path(segment)
        with contextlib.suppress(FileNotFoundError):
            self.bytes -= os.path.getsize(path)
            os.unlink(path)
        self._live.pop(segment, None)

    def _path(self, segment: int) -> str:
        return os.path.join(self.directory, f"{segment:08d}.seg")

    def _disable(self, reason: str) -> None:
        if not self.disabled_reason:
            self.disabled_reason = reason
            log.warning("%s", reason)
        self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()  # type: ignore[attr-defined]
            self._file = None

    def close(self, *, empty: bool) -> None:
        """Closes the spool; with `empty` (nothing left to replay) removes its segments."""
        self._close_file()
        if empty and os.path.isdir(self.directory):
            for name in os.listdir(self.directory):
                if name.endswith(".seg"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(self.directory, name))
            self.bytes = 0
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def _read(path: str) -> Iterator[tuple[int, int, str, Payload | None]]:
    """The records of one segment; stops at a torn or foreign tail (a crash mid-write)."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError:
        return
    offset = 0
    while offset + _HEADER.size <= len(data):
        magic, kind, signal, id_len, items, size, seq = _HEADER.unpack_from(data, offset)
        end = offset + _HEADER.size + id_len + size
        if magic != _MAGIC or kind not in (_DATA, _ACK) or end > len(data):
            return
        start = offset + _HEADER.size
        receiver_id = data[start : start + id_len].decode(errors="replace")
        payload = None
        if kind == _DATA:
            if signal not in _SIGNALS:
                return
            payload = Payload(_SIGNALS[signal], data[start + id_len : end], items)
        yield kind, seq, receiver_id, payload
        offset = end
