"""The function side's hand-over (layer/python/afterflush_handover.py): where the mark goes,
the mark over HTTP on a unix socket, the hook on the runtime's post, the order of flush and
mark, and the watchdog before the deadline."""

from __future__ import annotations

import http.server
import json
import socketserver
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 10.0


@pytest.fixture
def handover(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    monkeypatch.syspath_prepend(str(REPO / "layer" / "python"))
    sys.modules.pop("afterflush_handover", None)
    import afterflush_handover

    return afterflush_handover


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _UnixHttp

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.path, json.loads(body), self.client_address))
        status = self.server.statuses.pop(0) if self.server.statuses else 204
        self.send_response(status)
        self.send_header("Content-Length", "0")
        if self.server.close_after:
            self.send_header("Connection", "close")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


class _UnixHttp(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str) -> None:
        super().__init__(path, _Handler)
        self.requests: list[tuple[str, Any, Any]] = []
        self.statuses: list[int] = []
        self.close_after = False
        self.connections = 0

    def get_request(self) -> Any:
        self.connections += 1
        return super().get_request()


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[_UnixHttp]:
    server = _UnixHttp(str(tmp_path / "handover.sock"))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT_S)


@pytest.mark.parametrize(
    ("env", "path"),
    [
        ({}, "/tmp/afterflush/handover.sock"),
        ({"AFTERFLUSH_CONTROL_ENDPOINT": "unix:///run/x/control.sock"}, "/run/x/handover.sock"),
        ({"AFTERFLUSH_CONTROL_ENDPOINT": "unix:///run/x/control.sock",
          "AFTERFLUSH_HANDOVER_ENDPOINT": "unix:///run/y/h.sock"}, "/run/y/h.sock"),
    ],
)
def test_the_mark_goes_beside_the_control_socket_unless_told(handover, env, path) -> None:
    assert handover.handover_socket(env) == path


def test_an_endpoint_that_is_not_a_unix_path_is_one_warning(handover, capsys) -> None:
    assert handover.handover_socket({"AFTERFLUSH_HANDOVER_ENDPOINT": "localhost:4000"}) is None
    assert capsys.readouterr().err == (
        '[afterflush] WARNING AFTERFLUSH_HANDOVER_ENDPOINT: "localhost:4000" is not '
        "unix:///absolute/path; invocations end at runtimeDone\n"
    )


def test_marks_are_posted_on_one_kept_alive_connection(handover, collector, tmp_path) -> None:
    marker = handover.Marker(str(tmp_path / "handover.sock"))
    assert marker.mark("r1") is True
    assert marker.mark("r2") is True
    marker.close()
    assert [(path, body) for path, body, _ in collector.requests] == [
        ("/v1/handover", {"requestId": "r1"}), ("/v1/handover", {"requestId": "r2"}),
    ]
    assert collector.connections == 1


def test_a_connection_the_collector_closed_is_replaced(handover, collector, tmp_path, capsys) -> None:
    collector.close_after = True
    marker = handover.Marker(str(tmp_path / "handover.sock"))
    assert [marker.mark("r1"), marker.mark("r2")] == [True, True]
    assert collector.connections == 2
    assert capsys.readouterr().err == ""


def test_no_collector_is_not_an_error(handover, tmp_path, capsys) -> None:
    marker = handover.Marker(str(tmp_path / "nobody.sock"))
    assert marker.mark("r1") is False
    assert capsys.readouterr().err == ""


def test_a_refused_mark_is_said_once(handover, collector, tmp_path, capsys) -> None:
    collector.statuses = [400, 400]
    marker = handover.Marker(str(tmp_path / "handover.sock"))
    assert [marker.mark("r1"), marker.mark("r2")] == [False, False]
    assert capsys.readouterr().err == (
        "[afterflush] WARNING cannot mark the end of the hand-over (the collector answered 400);"
        " the companion drains at runtimeDone\n"
    )


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def flush(self, timeout_ms: int) -> None:
        self.calls.append(("flush", timeout_ms))

    def mark(self, request_id: str, timeout_s: float = 1.0) -> bool:
        self.calls.append(("mark", request_id))
        return True


def test_the_hand_over_flushes_then_marks_within_the_deadline(handover) -> None:
    recorder = _Recorder()
    h = handover.Handover(recorder.flush, recorder, 30_000, margin_ms=50)
    h.begin("r1", time.time() + 10)
    h.complete("r1")
    [(flush, budget), mark] = recorder.calls
    assert flush == "flush" and 9_000 < budget <= 9_950
    assert mark == ("mark", "r1")
    # And a second completion (the runtime posting twice) does nothing
    h.complete("r1")
    assert len(recorder.calls) == 2


def test_a_post_for_another_request_flushes_but_does_not_mark(handover) -> None:
    recorder = _Recorder()
    h = handover.Handover(recorder.flush, recorder, 1_000)
    h.begin("r1", None)
    h.complete("other")
    assert recorder.calls == [("flush", 1_000)]


class _FakeRuntimeClient:
    """The shape of awslambdaric's LambdaRuntimeClient's posting methods."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def post_invocation_result(self, invoke_id: str, result: bytes, content_type: str = "",
                               invocation_id: Any = None) -> None:
        self.log.append(("result", invoke_id, result))

    def post_invocation_error(self, invoke_id: str, error: str, xray_fault: str,
                              invocation_id: Any = None) -> None:
        self.log.append(("error", invoke_id, error))
        raise RuntimeError("the Runtime API refused it")


def test_the_runtime_hands_over_after_each_post(handover, monkeypatch) -> None:
    log: list[Any] = []
    module = types.ModuleType("awslambdaric.lambda_runtime_client")
    cls = type("LambdaRuntimeClient", (_FakeRuntimeClient,), {})
    module.LambdaRuntimeClient = cls  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "awslambdaric.lambda_runtime_client", module)

    assert handover.hook_runtime(lambda rid: log.append(("handover", rid))) is True
    # Hooking twice does not hand over twice
    assert handover.hook_runtime(lambda rid: log.append(("again", rid))) is True
    client = cls(log)
    client.post_invocation_result("r1", b"{}", "application/json")
    with pytest.raises(RuntimeError):
        client.post_invocation_error("r2", "{}", "")
    assert log == [
        ("result", "r1", b"{}"), ("handover", "r1"), ("error", "r2", "{}"), ("handover", "r2"),
    ]


def test_an_unknown_runtime_is_not_hooked_and_nothing_is_imported(handover, monkeypatch) -> None:
    for name in handover.RUNTIME_CLIENT_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert handover.hook_runtime(lambda rid: None) is False
    assert not [m for m in handover.RUNTIME_CLIENT_MODULES if m in sys.modules]


def test_the_real_awslambdaric_client_can_be_hooked(handover, monkeypatch) -> None:
    from awslambdaric import lambda_runtime_client

    for method in handover.POST_METHODS:
        monkeypatch.setattr(lambda_runtime_client.LambdaRuntimeClient, method,
                            getattr(lambda_runtime_client.LambdaRuntimeClient, method))
    assert handover.hook_runtime(lambda rid: None) is True
    for method in handover.POST_METHODS:
        assert getattr(lambda_runtime_client.LambdaRuntimeClient, method)._afterflush is True


def test_the_watchdog_fires_for_the_invocation_still_running_at_its_lead(handover) -> None:
    fired: list[str] = []
    done = threading.Event()

    def fire(request_id: str, deadline: float) -> None:
        fired.append(request_id)
        done.set()

    dog = handover.Watchdog(fire, lead_s=0.3)
    # Given one invocation that ended long before its deadline
    dog.arm("ended", time.time() + 3600)
    dog.disarm("ended")
    # When the next one is already within the lead of its deadline
    dog.arm("late", time.time() + 0.1)
    # Then the watchdog fires for it, and only for it
    assert done.wait(WAIT_S)
    assert fired == ["late"]


def test_the_watchdog_flushes_what_a_running_invocation_ended(handover, capsys) -> None:
    recorder = _Recorder()
    flushed = threading.Event()

    def flush(timeout_ms: int) -> None:
        recorder.flush(timeout_ms)
        flushed.set()

    h = handover.Handover(flush, recorder, 30_000)
    h.begin("r1", time.time() + 0.2)
    assert flushed.wait(WAIT_S)
    # Then the flush had what is left before the deadline, and no mark was made: the
    # invocation has not ended
    [(kind, budget)] = recorder.calls
    assert kind == "flush" and 0 <= budget <= 200
    assert capsys.readouterr().err == (
        "[afterflush] WARNING invocation r1 is about to time out: flushing what it has ended "
        "so far\n"
    )
