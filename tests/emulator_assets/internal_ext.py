"""A function module that registers internal extensions while the runtime initialises."""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request

API = os.environ["AWS_LAMBDA_RUNTIME_API"]


def _register(name: str, events: list[str]) -> tuple[int, dict, str | None]:
    req = urllib.request.Request(f"http://{API}/2020-01-01/extension/register",
                                 data=json.dumps({"events": events}).encode(), method="POST",
                                 headers={"Lambda-Extension-Name": name})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read()), resp.headers["Lambda-Extension-Identifier"]
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), None


REFUSED = _register("internal-with-shutdown", ["INVOKE", "SHUTDOWN"])
ACCEPTED = _register("internal-invoke-only", ["INVOKE"])
SEEN: list[str] = []


def _loop(ext_id: str) -> None:
    while True:
        req = urllib.request.Request(f"http://{API}/2020-01-01/extension/event/next",
                                     headers={"Lambda-Extension-Identifier": ext_id})
        with urllib.request.urlopen(req) as resp:
            SEEN.append(json.loads(resp.read())["eventType"])


if ACCEPTED[2]:
    threading.Thread(target=_loop, args=(ACCEPTED[2],), daemon=True).start()


def handler(event, context):
    return {"refused": {"status": REFUSED[0], "body": REFUSED[1]},
            "accepted": {"status": ACCEPTED[0], "body": ACCEPTED[1]}, "seen": list(SEEN)}
