"""Builds the companion's object graph from the command line and the environment, and runs it.

`python -m companion [--name NAME]`: NAME is the extension's file name under /opt/extensions.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import BinaryIO

import collector
from collector.control import CONTROL_ENDPOINT_ENV, ControlClient
from companion._companion import Companion
from companion._lambda_api import ExtensionsApi, LambdaApiError
from companion._log import Logger
from companion._settings import RUNTIME_API_ENV, Settings, load_settings, valid_extension_name
from companion._supervisor import CollectorSupervisor
from companion._telemetry import RuntimeDoneTracker, TelemetryListener

USAGE = "usage: python -m companion [--name NAME]"


def parse_name(argv: Sequence[str]) -> str | None:
    """The --name value, None when absent; raises ValueError on anything else."""
    name: str | None = None
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--name" and args:
            name = args.pop(0)
        elif arg.startswith("--name="):
            name = arg.partition("=")[2]
        else:
            raise ValueError(f"unexpected argument {arg!r}")
    if name is not None and not valid_extension_name(name):
        raise ValueError(f"--name {name!r} is not a plain file name")
    return name


def collector_command() -> list[str]:
    """The collector runs on the companion's own interpreter and resolves its config from the
    same environment (OPENTELEMETRY_COLLECTOR_CONFIG_URI, then ..._FILE, then the default)."""
    return [sys.executable, "-m", "collector", "run"]


def collector_env(env: Mapping[str, str], settings: Settings) -> dict[str, str]:
    """The companion's environment plus the control endpoint it chose, and a PYTHONPATH that
    finds the same `collector` package the companion imports (the layer keeps our packages
    off the function's path)."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(collector.__file__ or "")))
    child = dict(env)
    child[CONTROL_ENDPOINT_ENV] = settings.control_endpoint
    existing = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    child["PYTHONPATH"] = os.pathsep.join(
        [package_root, *(p for p in existing if p != package_root)]
    )
    return child


def build(
    settings: Settings,
    name: str,
    env: Mapping[str, str],
    log: Logger,
    *,
    command: Sequence[str] | None = None,
    output: BinaryIO | None = None,
    started: float | None = None,
) -> Companion:
    """The object graph; `command` and `output` (where the collector's stderr goes) default to
    the real collector and the companion's stderr."""
    tracker = RuntimeDoneTracker()
    supervisor = CollectorSupervisor(
        command=command if command is not None else collector_command(),
        env=collector_env(env, settings),
        endpoint=settings.control_endpoint,
        log=log,
        ready_timeout=settings.ready_timeout,
        control_factory=ControlClient,
        output=output if output is not None else sys.stderr.buffer,
    )
    return Companion(
        settings=settings,
        name=name,
        api=ExtensionsApi(settings.runtime_api),
        supervisor=supervisor,
        listener=TelemetryListener(tracker, log),
        tracker=tracker,
        log=log,
        started=started,
    )


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    started = time.monotonic()
    environ = dict(os.environ if env is None else env)
    settings, problems = load_settings(environ)
    log = Logger(sys.stderr, level=settings.log_level_number, json_format=settings.json_logs)
    for problem in problems:
        log.warning(problem)
    try:
        name = parse_name(sys.argv[1:] if argv is None else argv) or settings.extension_name
    except ValueError as exc:
        log.error(f"{exc}; {USAGE}")
        return 2
    if not settings.runtime_api:
        log.error(f"{RUNTIME_API_ENV} is not set: the companion runs as a Lambda extension")
        return 1
    try:
        companion = build(settings, name, environ, log, started=started)
    except LambdaApiError as exc:
        log.error(str(exc))
        return 1
    return asyncio.run(companion.run())
