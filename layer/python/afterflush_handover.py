"""When the function's telemetry leaves its process: after the response.

Lambda's runtime (awslambdaric) posts the handler's result to the Runtime API, then asks for
the next event. Between the two, in the runtime's own thread, the hand-over runs: every signal
the SDK holds is flushed to the local collector (which answers at once), then the collector is
told that the hand-over of this request id is complete, so that the companion drains at once
instead of waiting for Lambda's platform.runtimeDone. Nothing of it runs before the response is
posted, and nothing competes with it: the runtime's thread is the one doing the work.

A handler that runs into its deadline is killed by Lambda before the hand-over; a watchdog
flushes, shortly before the deadline, whatever the invocation has ended by then.

Stdlib only, and nothing imported until it is needed: this runs in the function's process.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

HANDOVER_ENDPOINT_ENV = "AFTERFLUSH_HANDOVER_ENDPOINT"
CONTROL_ENDPOINT_ENV = "AFTERFLUSH_CONTROL_ENDPOINT"
DEFAULT_CONTROL_ENDPOINT = "unix:///tmp/afterflush/control.sock"
# The collector serves the hand-over mark beside its control socket unless told otherwise.
HANDOVER_SOCKET_NAME = "handover.sock"
HANDOVER_PATH = "/v1/handover"
# Longest the mark may take; the collector answers it at once.
MARK_TIMEOUT_S = 1.0
# The runtime modules that post results: awslambdaric's, and the same module at the top level
# of a runtime directory (older Lambda Python runtimes).
RUNTIME_CLIENT_MODULES = ("awslambdaric.lambda_runtime_client", "lambda_runtime_client")
RUNTIME_CLIENT_CLASS = "LambdaRuntimeClient"
POST_METHODS = ("post_invocation_result", "post_invocation_error")
# The watchdog flushes this long before an invocation's deadline: time for the SDK's exports
# to reach the collector before Lambda ends the runtime.
WATCHDOG_LEAD_S = 0.3
PREFIX = "[afterflush]"

Flush = Callable[[int], None]


def warn(message: str) -> None:
    # Straight to stderr: the root logger may carry the OTel handler, and a line about
    # telemetry must not become telemetry.
    print(f"{PREFIX} WARNING {message}", file=sys.stderr, flush=True)


def handover_socket(env: Mapping[str, str]) -> str | None:
    """The hand-over socket's path: AFTERFLUSH_HANDOVER_ENDPOINT, else handover.sock beside the
    control socket. None (with a warning) for a value that is not unix:///absolute/path."""
    name = HANDOVER_ENDPOINT_ENV
    raw = env.get(name, "").strip()
    if not raw:
        name = CONTROL_ENDPOINT_ENV
        raw = env.get(name, "").strip() or DEFAULT_CONTROL_ENDPOINT
    path = _unix_path(raw)
    if path is None:
        warn(f'{name}: "{raw}" is not unix:///absolute/path; invocations end at runtimeDone')
        return None
    if name == CONTROL_ENDPOINT_ENV:
        path = os.path.join(os.path.dirname(path), HANDOVER_SOCKET_NAME)
    return path


def _unix_path(endpoint: str) -> str | None:
    for prefix in ("unix://", "unix:"):
        if endpoint.startswith(prefix):
            path = endpoint[len(prefix):]
            if path.startswith("/") and len(path) > 1:
                return path
    return None


def _unix_connection(path: str, timeout: float) -> Any:
    """An http.client connection over the unix socket at `path` (http.client is imported on
    the first mark, after the first response, not at init)."""
    import http.client

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.timeout)
                sock.connect(path)
            except BaseException:
                sock.close()
                raise
            self.sock = sock

    return UnixConnection("afterflush", timeout=timeout)


class Marker:
    """Tells the collector that an invocation's hand-over is complete (HTTP on its hand-over
    socket, one kept-alive connection). No collector there is not an error: the SDK may
    export elsewhere."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._connection: Any = None
        self._warned = False

    def mark(self, request_id: str, timeout_s: float = MARK_TIMEOUT_S) -> bool:
        body = json.dumps({"requestId": request_id}).encode()
        # A kept-alive connection can be stale (a collector restarted while frozen): one retry
        # on a new connection.
        for attempt in range(2):
            fresh = self._connection is None
            try:
                status = self._post(body, timeout_s)
            except (FileNotFoundError, ConnectionRefusedError):
                self.close()
                return False  # nobody holds the data: nothing waits for the mark
            except Exception as exc:  # OSError, http.client.HTTPException
                self.close()
                if fresh or attempt:
                    self._warn_once(f"{type(exc).__name__}: {exc}")
                    return False
                continue
            if status == 204:
                return True
            self._warn_once(f"the collector answered {status}")
            return False
        return False

    def _post(self, body: bytes, timeout_s: float) -> int:
        if self._connection is None:
            self._connection = _unix_connection(self._path, timeout_s)
        connection = self._connection
        connection.timeout = timeout_s
        if connection.sock is not None:
            connection.sock.settimeout(timeout_s)
        connection.request(
            "POST", HANDOVER_PATH, body, {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        response.read()
        if response.will_close:
            self.close()
        return response.status

    def _warn_once(self, detail: str) -> None:
        if not self._warned:
            self._warned = True
            warn(f"cannot mark the end of the hand-over ({detail}); the companion drains at "
                 "runtimeDone")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class Watchdog:
    """One daemon thread that calls `fire(request_id, deadline)` when an invocation is still
    running WATCHDOG_LEAD_S before its deadline. Arming and disarming cost a lock each: the
    thread is only woken when it would otherwise wake too late."""

    def __init__(self, fire: Callable[[str, float], None], lead_s: float = WATCHDOG_LEAD_S) -> None:
        self._fire = fire
        self._lead = lead_s
        self._cond = threading.Condition()
        self._armed: tuple[str, float] | None = None  # request id, deadline (epoch seconds)
        self._waking_at: float | None = None  # when the thread wakes next; None: never
        self._thread: threading.Thread | None = None

    def arm(self, request_id: str, deadline: float) -> None:
        with self._cond:
            self._armed = (request_id, deadline)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="afterflush-watchdog", daemon=True
                )
                self._thread.start()
            elif self._waking_at is None or self._waking_at > deadline - self._lead:
                self._cond.notify()

    def disarm(self, request_id: str) -> None:
        with self._cond:
            if self._armed is not None and self._armed[0] == request_id:
                self._armed = None

    def _run(self) -> None:
        with self._cond:
            while True:
                if self._armed is None:
                    self._waking_at = None
                    self._cond.wait()
                    continue
                request_id, deadline = self._armed
                # Wall time: the deadline is Lambda's, and a frozen environment's monotonic
                # clock need not have moved.
                left = deadline - self._lead - time.time()
                if left > 0:
                    self._waking_at = deadline - self._lead
                    self._cond.wait(left)
                    continue
                self._armed = None
                self._cond.release()
                try:
                    self._fire(request_id, deadline)
                except Exception as exc:  # the watchdog must outlive any flush
                    warn(f"flush before the deadline failed: {type(exc).__name__}: {exc}")
                finally:
                    self._cond.acquire()


class Handover:
    """Per invocation: `begin` when the handler is called, `complete` once its response has
    been posted (or, where the runtime cannot be hooked, when the handler returns)."""

    def __init__(
        self, flush: Flush, marker: Marker | None, flush_timeout_ms: int, *, margin_ms: int = 0
    ) -> None:
        self._flush = flush
        self._marker = marker
        self._flush_timeout_ms = flush_timeout_ms
        self._margin_ms = margin_ms
        self._current: tuple[str, float] | None = None  # request id, deadline (epoch seconds)
        self._watchdog = Watchdog(self._before_deadline)

    def begin(self, request_id: str, deadline: float | None) -> None:
        self._current = (request_id, deadline or 0.0)
        if deadline:
            self._watchdog.arm(request_id, deadline)

    def complete(self, request_id: str | None = None) -> None:
        """Flushes every signal and marks the hand-over of the current invocation."""
        current, self._current = self._current, None
        if current is None:
            return
        rid, deadline = current
        if request_id is not None and request_id != rid:
            # Not the invocation the handler saw (the runtime posted for another): flush all
            # the same, but a mark would end the wrong drain.
            rid = ""
        self._watchdog.disarm(current[0])
        started = time.monotonic()
        self._flush(self._budget_ms(deadline))
        if self._marker is not None and rid:
            left_s = self._flush_timeout_ms / 1000 - (time.monotonic() - started)
            if deadline:
                left_s = min(left_s, deadline - time.time())
            if left_s > 0:
                self._marker.mark(rid, min(MARK_TIMEOUT_S, left_s))

    def _budget_ms(self, deadline: float) -> int:
        budget = self._flush_timeout_ms
        if deadline:
            budget = min(budget, int((deadline - time.time()) * 1000) - self._margin_ms)
        return budget

    def _before_deadline(self, request_id: str, deadline: float) -> None:
        current = self._current
        if current is None or current[0] != request_id:
            return
        warn(f"invocation {request_id} is about to time out: flushing what it has ended so far")
        self._flush(max(int((deadline - time.time()) * 1000), 0))


def hook_runtime(after_post: Callable[[str], None]) -> bool:
    """Makes the runtime call `after_post(request_id)` after each result or error it posts.
    False when the running runtime is not one we know (nothing is imported to find out)."""
    for module_name in RUNTIME_CLIENT_MODULES:
        module = sys.modules.get(module_name)
        cls = getattr(module, RUNTIME_CLIENT_CLASS, None) if module is not None else None
        if cls is None or not all(callable(getattr(cls, m, None)) for m in POST_METHODS):
            continue
        for method in POST_METHODS:
            original = getattr(cls, method)
            if getattr(original, "_afterflush", False):
                return True
            setattr(cls, method, _after(original, after_post))
        return True
    return False


def _after(post: Callable[..., Any], after_post: Callable[[str], None]) -> Callable[..., Any]:
    def posted(self: Any, invoke_id: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return post(self, invoke_id, *args, **kwargs)
        finally:
            try:
                after_post(invoke_id)
            except Exception as exc:  # telemetry never breaks the runtime's loop
                warn(f"hand-over failed: {type(exc).__name__}: {exc}")

    posted._afterflush = True  # type: ignore[attr-defined]
    posted.__wrapped__ = post  # type: ignore[attr-defined]
    return posted
