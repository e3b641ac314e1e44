"""Builds the companion's object graph from the command line and the environment, and runs it.

`python -m companion [--name NAME]`: NAME is the extension's file name under /opt/extensions.
Registration comes first, before asyncio and everything heavier is imported.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from companion._log import ERROR, Logger
from companion._register import Registration, register, valid_extension_name
from companion.errors import LambdaApiError

if TYPE_CHECKING:
    import subprocess
    from typing import BinaryIO

    from companion._companion import Companion
    from companion._settings import Settings

USAGE = "usage: python -m companion [--name NAME]"
DEFAULT_NAME = "afterflush"
# Read here, before the settings module, because registration cannot wait for it.
RUNTIME_API_ENV = "AWS_LAMBDA_RUNTIME_API"
EXTENSION_NAME_ENV = "AFTERFLUSH_EXTENSION_NAME"
LOG_FORMAT_ENV = "AWS_LAMBDA_LOG_FORMAT"


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


def extension_name(cli_name: str | None, env: Mapping[str, str]) -> str:
    """--name, else AFTERFLUSH_EXTENSION_NAME when it is a valid name, else "afterflush" (a bad
    variable is reported with the other settings)."""
    if cli_name:
        return cli_name
    configured = env.get(EXTENSION_NAME_ENV, "").strip()
    return configured if valid_extension_name(configured) else DEFAULT_NAME


COLLECTOR_BINARY = "afterflush-collector"


def collector_command() -> list[str]:
    """The collector binary; it resolves its config from the same environment as the ADOT
    collector (OPENTELEMETRY_COLLECTOR_CONFIG_URI, then ..._FILE, then the default) and reads
    AFTERFLUSH_HOLD itself (false: its pipelines run without flushcontrol)."""
    return [collector_binary()]


def collector_binary(package_dir: str | None = None) -> str:
    """The collector beside the companion: afterflush/bin/ in the layer (the companion is in
    afterflush/lib/common/), bin/ in the source tree (built by make collector). The layer's
    place when neither exists, so that starting it fails with that path in the error."""
    here = package_dir or os.path.dirname(os.path.abspath(__file__))
    layer = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(here))), "bin", COLLECTOR_BINARY)
    source = os.path.join(os.path.dirname(here), "bin", COLLECTOR_BINARY)
    for candidate in (layer, source):
        if os.access(candidate, os.X_OK):
            return candidate
    return layer


def collector_env(env: Mapping[str, str], settings: Settings) -> dict[str, str]:
    """The companion's environment plus the control endpoint it chose and AFTERFLUSH_HOLD as
    the companion parsed it."""
    from companion._control import CONTROL_ENDPOINT_ENV
    from companion._settings import HOLD_ENV

    child = dict(env)
    child[CONTROL_ENDPOINT_ENV] = settings.control_endpoint
    child[HOLD_ENV] = "true" if settings.hold else "false"
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
    registration: Registration | None = None,
    registered_at: float | None = None,
    first: subprocess.Popen[bytes] | None = None,
    first_spawned_at: float | None = None,
) -> Companion:
    """The object graph; `command` and `output` (where the collector's stderr goes) default to
    the real collector and the companion's stderr. Without `registration` the companion
    registers itself; `first` is a collector already started."""
    from companion._companion import Companion
    from companion._control import ControlClient
    from companion._lambda_api import ExtensionsApi
    from companion._supervisor import CollectorSupervisor
    from companion._telemetry import RuntimeDoneTracker, TelemetryListener

    tracker = RuntimeDoneTracker()
    supervisor = CollectorSupervisor(
        command=command if command is not None else collector_command(),
        env=collector_env(env, settings),
        endpoint=settings.control_endpoint,
        log=log,
        ready_timeout=settings.ready_timeout,
        control_factory=ControlClient,
        output=output if output is not None else sys.stderr.buffer,
        first=first,
        first_spawned_at=first_spawned_at,
        json_logs=settings.json_logs,
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
        registration=registration,
        registered_at=registered_at,
    )


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    started = time.monotonic()
    environ = dict(os.environ if env is None else env)
    early_log = Logger(
        sys.stderr, json_format=environ.get(LOG_FORMAT_ENV, "").strip().upper() == "JSON"
    )
    try:
        name = extension_name(parse_name(sys.argv[1:] if argv is None else argv), environ)
    except ValueError as exc:
        early_log.error(f"{exc}; {USAGE}")
        return 2
    runtime_api = environ.get(RUNTIME_API_ENV, "").strip()
    if not runtime_api:
        early_log.error(f"{RUNTIME_API_ENV} is not set: the companion runs as a Lambda extension")
        return 1
    try:
        registration = register(runtime_api, name)
    except LambdaApiError as exc:
        # The one failure that may fail init: Lambda requires registration.
        early_log.error(f"cannot register as extension {name}: {exc}")
        return 1
    registered_at = time.monotonic()

    # The collector takes longest to start: it goes next, before asyncio is even imported.
    from companion._control import socket_path
    from companion._settings import load_settings
    from companion._spawn import spawn_collector

    settings, problems = load_settings(environ)
    log = Logger(sys.stderr, level=settings.log_level_number, json_format=settings.json_logs)
    command = collector_command()
    child_env = collector_env(environ, settings)
    try:
        first: subprocess.Popen[bytes] | None = spawn_collector(
            command, child_env, socket_path(settings.control_endpoint)
        )
    except OSError:
        first = None  # the supervisor tries again, and says why
    spawned_at = time.monotonic()
    for problem in problems:
        log.warning(problem)

    import asyncio

    try:
        companion = build(
            settings, name, environ, log, command=command, started=started,
            registration=registration, registered_at=registered_at, first=first,
            first_spawned_at=spawned_at,
        )
    except LambdaApiError as exc:
        if first is not None:
            first.kill()
        log.log(ERROR, str(exc))
        return 1
    return asyncio.run(companion.run())
