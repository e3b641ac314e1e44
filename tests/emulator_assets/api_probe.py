"""An external extension that tries the Extensions, Telemetry and Logs APIs' rules during init
and writes each answer ({check, status, body}) as a JSON line to the file in argv[2]."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
NAME = sys.argv[1]
LOG = sys.argv[2]


def call(method: str, path: str, body: object = None, headers: dict[str, str] | None = None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(f"http://{API}{path}", data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def record(check: str, answer) -> None:
    status, headers, body = answer
    try:
        doc = json.loads(body)
    except ValueError:
        doc = body.decode()
    with open(LOG, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"check": check, "status": status, "body": doc, "headers": headers}) + "\n")


def subscription(**overrides):
    doc = {
        "schemaVersion": "2022-12-13",
        "types": ["platform"],
        "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 100},
        "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:4243/"},
    }
    doc.update(overrides)
    return doc


REGISTER = "/2020-01-01/extension/register"
record("register-no-name", call("POST", REGISTER, {"events": ["INVOKE"]}))
record("register-bad-event", call("POST", REGISTER, {"events": ["FOO"]}, {"Lambda-Extension-Name": NAME}))
record("register-bad-body", call("POST", REGISTER, b"{not json", {"Lambda-Extension-Name": NAME}))
ok = call("POST", REGISTER, {"events": ["INVOKE", "SHUTDOWN"]},
          {"Lambda-Extension-Name": NAME, "Lambda-Extension-Accept-Feature": "accountId"})
record("register", ok)
ext_id = ok[1]["Lambda-Extension-Identifier"]
ident = {"Lambda-Extension-Identifier": ext_id}
record("register-again", call("POST", REGISTER, {"events": ["INVOKE"]}, {"Lambda-Extension-Name": NAME}))
NEXT = "/2020-01-01/extension/event/next"
record("next-no-id", call("GET", NEXT))
record("next-bad-id", call("GET", NEXT, None, {"Lambda-Extension-Identifier": "not-a-uuid"}))
record("next-unknown-id", call("GET", NEXT, None,
                               {"Lambda-Extension-Identifier": "00000000-0000-4000-8000-000000000000"}))
TELEMETRY = "/2022-07-01/telemetry"
record("subscribe-no-id", call("PUT", TELEMETRY, subscription()))
record("subscribe-bad-version", call("PUT", TELEMETRY, subscription(schemaVersion="2021-01-01"), ident))
record("subscribe-no-types", call("PUT", TELEMETRY, subscription(types=[]), ident))
record("subscribe-bad-type", call("PUT", TELEMETRY, subscription(types=["platform", "metrics"]), ident))
record("subscribe-small-timeout", call("PUT", TELEMETRY, subscription(
    buffering={"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 10}), ident))
record("subscribe-few-items", call("PUT", TELEMETRY, subscription(
    buffering={"maxItems": 10, "maxBytes": 262144, "timeoutMs": 100}), ident))
record("subscribe-tcp", call("PUT", TELEMETRY, subscription(
    destination={"protocol": "TCP", "port": 4243}), ident))
record("subscribe-outside", call("PUT", TELEMETRY, subscription(
    destination={"protocol": "HTTP", "URI": "http://example.com:4243/"}), ident))
record("subscribe-no-port", call("PUT", TELEMETRY, subscription(
    destination={"protocol": "HTTP", "URI": "http://sandbox.localdomain/"}), ident))
record("subscribe", call("PUT", TELEMETRY, subscription(), ident))
record("logs", call("PUT", "/2020-08-15/logs", {"schemaVersion": "2021-03-18", "types": ["platform"]}, ident))
record("init-error-no-type", call("POST", "/2020-01-01/extension/init/error", {}, ident))

while True:
    status, _, body = call("GET", NEXT, None, ident)
    if status != 200 or json.loads(body)["eventType"] == "SHUTDOWN":
        sys.exit(0)
