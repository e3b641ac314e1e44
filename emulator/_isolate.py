"""--isolate: a private mount namespace in which the layer is /opt, the function is /var/task
and sandbox.localdomain resolves to loopback, as inside Lambda (root only)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path
from typing import Final

CLONE_NEWNS: Final = 0x00020000
MS_RDONLY: Final = 1
MS_REMOUNT: Final = 32
MS_BIND: Final = 4096
MS_REC: Final = 16384
MS_PRIVATE: Final = 1 << 18
HOSTS_LINES: Final = "127.0.0.1\tsandbox sandbox.localdomain\n::1\tsandbox sandbox.localdomain\n"


class IsolationError(OSError):
    """The namespace or one of its mounts could not be made."""


def _libc() -> ctypes.CDLL:
    name = ctypes.util.find_library("c")
    if name is None:
        raise IsolationError("--isolate needs the C library (libc) to make a mount namespace")
    return ctypes.CDLL(name, use_errno=True)


def _mount(libc: ctypes.CDLL, source: str | None, target: str, flags: int) -> None:
    src = source.encode() if source is not None else None
    if libc.mount(src, target.encode(), None, ctypes.c_ulong(flags), None) != 0:
        err = ctypes.get_errno()
        raise IsolationError(f"--isolate: cannot mount {source or ''} on {target}: {os.strerror(err)}")


def isolate(opt_dir: Path, task_dir: Path, scratch: Path) -> None:
    """Moves this process (and so everything it starts later) into a private mount namespace.

    Call before any thread starts. /opt and /var/task are created on the host when missing,
    as empty mount points.
    """
    if os.geteuid() != 0:
        raise IsolationError("--isolate needs root (it makes a private mount namespace)")
    libc = _libc()
    if libc.unshare(CLONE_NEWNS) != 0:
        raise IsolationError(f"--isolate: unshare failed: {os.strerror(ctypes.get_errno())}")
    # Private propagation keeps these mounts from leaking back into the host's namespace.
    _mount(libc, None, "/", MS_REC | MS_PRIVATE)
    for target in (Path("/opt"), Path("/var/task")):
        target.mkdir(parents=True, exist_ok=True)
    _mount(libc, str(opt_dir), "/opt", MS_BIND | MS_REC)
    _mount(libc, str(task_dir), "/var/task", MS_BIND)
    # The function's code is read-only in Lambda.
    _mount(libc, None, "/var/task", MS_BIND | MS_REMOUNT | MS_RDONLY)
    hosts = scratch / "hosts"
    try:
        original = Path("/etc/hosts").read_text()
    except OSError:
        original = "127.0.0.1\tlocalhost\n"
    hosts.write_text(original.rstrip("\n") + "\n" + HOSTS_LINES)
    _mount(libc, str(hosts), "/etc/hosts", MS_BIND)
