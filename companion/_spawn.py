"""Starting the collector process without an event loop, so that main() can start it right
after registration, before asyncio and the rest of the companion are imported.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import stat
import subprocess
from collections.abc import Mapping, Sequence

_PR_SET_PDEATHSIG = 1
# Loaded in the parent: the child must not import anything between fork and exec.
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """Runs in the child before exec: a companion killed outright takes its collector along."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def remove_stale_socket(path: str) -> None:
    """Removes a socket file a dead collector left, which would otherwise pass the readiness
    check's existence test and cost the gRPC channel a reconnect backoff."""
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)


def spawn_collector(
    command: Sequence[str], env: Mapping[str, str], socket_file: str
) -> subprocess.Popen[bytes]:
    """Starts the collector: stdout inherited (spilled OTLP JSON lines go straight to Lambda's
    log), stderr piped to the supervisor. Raises OSError."""
    remove_stale_socket(socket_file)
    return subprocess.Popen(
        list(command),
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=None,
        stderr=subprocess.PIPE,
        preexec_fn=_die_with_parent,
    )
