"""A small external extension for the emulator's tests; its behaviour is chosen by flags.
It appends what happens to it as JSON lines to --log (registration, events, telemetry)."""

from __future__ import annotations

import argparse
import http.server
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
LOCK = threading.Lock()


def log(path: str | None, **fields: object) -> None:
    if path is None:
        return
    fields.setdefault("t", time.time())
    with LOCK, open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(fields) + "\n")


def call(method: str, path: str, body: object = None, headers: dict[str, str] | None = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{API}{path}", data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


class Telemetry:
    """Listener for Telemetry API batches; remembers every event.

    Its port is chosen at once, but nothing listens on it until serve().
    """

    def __init__(self, log_path: str | None) -> None:
        self.events: list[dict] = []
        self.cond = threading.Condition()
        self.log_path = log_path
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]

    def serve(self) -> None:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                batch = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.cond:
                    owner.events.extend(batch)
                    owner.cond.notify_all()
                for event in batch:
                    log(owner.log_path, telemetry=event)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def wait_for(self, event_type: str, request_id: str | None, timeout: float) -> bool:
        """Waits (bounded) until an event of event_type (for request_id, if given) arrived."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if any(e["type"] == event_type and (request_id is None or e["record"]["requestId"] == request_id)
                       for e in self.events):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)


def spin() -> None:
    n = 0
    while True:
        n += 1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("--register-as")
    ap.add_argument("--events", default="INVOKE,SHUTDOWN")
    ap.add_argument("--log")
    ap.add_argument("--subscribe", action="store_true")
    ap.add_argument("--listener-late", action="store_true", help="start the listener at the first INVOKE")
    ap.add_argument("--hold-fifo", help="after INVOKE, read a line from this FIFO before next")
    ap.add_argument("--work-ms", type=float, default=0, help="after runtimeDone, work this long")
    ap.add_argument("--wait-for", help="after INVOKE, wait for a telemetry event of this type")
    ap.add_argument("--ignore-shutdown", action="store_true")
    ap.add_argument("--spin", action="store_true", help="burn CPU on a background thread")
    ap.add_argument("--init-error")
    ap.add_argument("--exit-on-invoke", type=int)
    ap.add_argument("--exit-error-on-invoke", help="on INVOKE, report this error type and exit")
    args = ap.parse_args()

    events = [e for e in args.events.split(",") if e]
    status, headers, body = call("POST", "/2020-01-01/extension/register", {"events": events},
                                 {"Lambda-Extension-Name": args.register_as or args.name})
    log(args.log, step="register", status=status, body=json.loads(body or b"null"), pid=os.getpid(),
        env=dict(os.environ))
    if status != 200:
        return 1
    print(f"probe {args.name} registered", flush=True)
    ext_id = headers["Lambda-Extension-Identifier"]
    ident = {"Lambda-Extension-Identifier": ext_id}
    if args.init_error:
        call("POST", "/2020-01-01/extension/init/error", {"errorMessage": "cannot start",
             "errorType": args.init_error}, {**ident, "Lambda-Extension-Function-Error-Type": args.init_error})
        return 1
    telemetry = None
    if args.subscribe:
        telemetry = Telemetry(args.log)
        if not args.listener_late:
            telemetry.serve()
        sub = {
            "schemaVersion": "2022-12-13",
            "types": ["platform", "function", "extension"],
            "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 25},
            "destination": {"protocol": "HTTP", "URI": f"http://sandbox.localdomain:{telemetry.port}/t"},
        }
        status, _, body = call("PUT", "/2022-07-01/telemetry", sub, ident)
        log(args.log, step="subscribe", status=status, body=body.decode())
    if args.spin:
        threading.Thread(target=spin, daemon=True).start()
    while True:
        status, _, body = call("GET", "/2020-01-01/extension/event/next", None, ident)
        if status != 200:
            log(args.log, step="next-failed", status=status, body=body.decode())
            return 1
        event = json.loads(body)
        log(args.log, step="event", event=event)
        if event["eventType"] == "SHUTDOWN":
            if args.ignore_shutdown:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                log(args.log, step="ignoring-shutdown")
                while True:
                    time.sleep(0.05)
            log(args.log, step="exit")
            return 0
        if args.exit_error_on_invoke:
            answer = call("POST", "/2020-01-01/extension/exit/error", {"errorMessage": "giving up"},
                          {**ident, "Lambda-Extension-Function-Error-Type": args.exit_error_on_invoke})
            log(args.log, step="exit-error", status=answer[0])
            return 1
        if args.exit_on_invoke is not None:
            log(args.log, step="crash")
            return args.exit_on_invoke
        if telemetry is not None and args.listener_late:
            telemetry.serve()
            args.listener_late = False
        if args.wait_for and telemetry is not None:
            log(args.log, step="waited", type=args.wait_for, got=telemetry.wait_for(args.wait_for, None, 10))
        if args.work_ms and telemetry is not None:
            got = telemetry.wait_for("platform.runtimeDone", event["requestId"], 10)
            started = time.monotonic()
            time.sleep(args.work_ms / 1000)
            log(args.log, step="work", requestId=event["requestId"], sawRuntimeDone=got,
                workMs=(time.monotonic() - started) * 1000)
        if args.hold_fifo:
            log(args.log, step="holding", requestId=event["requestId"])
            with open(args.hold_fifo, encoding="utf-8") as fifo:
                fifo.readline()
            log(args.log, step="released", requestId=event["requestId"])


if __name__ == "__main__":
    sys.exit(main())
