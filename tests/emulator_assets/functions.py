"""Handlers for the emulator's tests, run by the real awslambdaric."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request

TRACE = os.environ.get("TEST_TRACE_FILE")


def _trace(**fields: object) -> None:
    if TRACE:
        with open(TRACE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"t": time.time(), **fields}) + "\n")


def echo(event, context):
    _trace(step="handler", requestId=context.aws_request_id)
    print(f"echo {context.aws_request_id}")
    return {"event": event, "requestId": context.aws_request_id, "pid": os.getpid(),
            "remainingMs": context.get_remaining_time_in_millis()}


def client_context(event, context):
    return {"custom": context.client_context.custom if context.client_context else None}


def empty(event, context):
    return None


def environment(event, context):
    return {"env": dict(os.environ), "path": sys.path, "argv": sys.argv, "pid": os.getpid(),
            "ppid": os.getppid(), "cwd": os.getcwd()}


def sleep(event, context):
    time.sleep(float(event.get("seconds", 1)))
    return {"slept": event.get("seconds", 1)}


def fail(event, context):
    raise ValueError("boom")


def crash(event, context):
    os._exit(7)


def busy(event, context):
    """Spins for event['seconds'] of wall time; reports CPU seconds used and iterations."""
    wall0, cpu0 = time.monotonic(), time.process_time()
    end = wall0 + float(event.get("seconds", 1))
    n = 0
    while time.monotonic() < end:
        n += 1
    return {"wall": time.monotonic() - wall0, "cpu": time.process_time() - cpu0, "iterations": n}


def allocate(event, context):
    """Allocates and touches event['mb'] megabytes."""
    blocks = []
    for _ in range(int(event.get("mb", 256))):
        blocks.append(bytearray(1024 * 1024))
    return {"allocated": len(blocks)}


def register_late(event, context):
    """Tries to register an extension after init."""
    api = os.environ["AWS_LAMBDA_RUNTIME_API"]
    req = urllib.request.Request(f"http://{api}/2020-01-01/extension/register",
                                 data=json.dumps({"events": ["INVOKE"]}).encode(), method="POST",
                                 headers={"Lambda-Extension-Name": "late"})
    try:
        with urllib.request.urlopen(req) as resp:
            return {"status": resp.status, "body": json.loads(resp.read())}
    except urllib.error.HTTPError as err:
        return {"status": err.code, "body": json.loads(err.read())}


def sandbox_view(event, context):
    """What the function sees of its surroundings (for --isolate)."""
    import socket

    return {
        "sandbox": socket.gethostbyname("sandbox"),
        "sandbox.localdomain": socket.gethostbyname("sandbox.localdomain"),
        "opt": sorted(os.listdir("/opt")),
        "task_root": os.environ.get("LAMBDA_TASK_ROOT"),
        "cwd": os.getcwd(),
        "path": sys.path,
        "task_writable": os.access("/var/task", os.W_OK) and _can_write("/var/task"),
    }


def _can_write(directory: str) -> bool:
    try:
        with open(os.path.join(directory, ".probe-write"), "w") as fh:
            fh.write("x")
    except OSError:
        return False
    os.remove(os.path.join(directory, ".probe-write"))
    return True
