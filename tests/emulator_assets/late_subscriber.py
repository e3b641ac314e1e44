"""A function module that tries to subscribe to the Telemetry API after init, from an extension
registered by the runtime itself (an internal extension)."""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request

API = os.environ["AWS_LAMBDA_RUNTIME_API"]


def _call(method, path, body, headers):
    req = urllib.request.Request(f"http://{API}{path}", data=json.dumps(body).encode(), method=method,
                                 headers=headers)
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


_, _headers, _ = _call("POST", "/2020-01-01/extension/register", {"events": []},
                       {"Lambda-Extension-Name": "late-subscriber"})
EXT_ID = _headers["Lambda-Extension-Identifier"]


def _park():
    urllib.request.urlopen(urllib.request.Request(
        f"http://{API}/2020-01-01/extension/event/next", headers={"Lambda-Extension-Identifier": EXT_ID}))


threading.Thread(target=_park, daemon=True).start()


def handler(event, context):
    status, _, body = _call("PUT", "/2022-07-01/telemetry", {
        "schemaVersion": "2022-12-13", "types": ["platform"],
        "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:4243/"},
    }, {"Lambda-Extension-Identifier": EXT_ID})
    return {"status": status, "body": body}
