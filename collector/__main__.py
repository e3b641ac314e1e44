"""Command line: `python -m collector run|validate|ctl`.

run: the collector until SIGTERM/SIGINT; validate: check a config; ctl: call the control endpoint.
"""

from __future__ import annotations

import time

STARTED = time.monotonic()

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

EXIT_CONFIG = 2  # the config is invalid (the companion tells this apart from a crash)
EXIT_START = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m collector", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the collector until SIGTERM/SIGINT")
    run.add_argument("--config", help="path or file: URI (default: see README)")
    run.add_argument(
        "--no-hold",
        action="store_true",
        help="no flushcontrol: export before answering the sender (the ADOT way; for comparison)",
    )
    validate = commands.add_parser("validate", help="check a config and print every problem")
    validate.add_argument("--config")
    ctl = commands.add_parser("ctl", help="call the control endpoint and print the reply as JSON")
    ctl.add_argument("action", choices=["status", "drain"])
    ctl.add_argument("--endpoint", help="unix:///path (default: AFTERFLUSH_CONTROL_ENDPOINT or the default)")
    ctl.add_argument("--timeout", default="5s", help="deadline, e.g. 5s or 500ms")
    ctl.add_argument("--reason", default="manual")
    ctl.add_argument("--request-id", default="")
    ctl.add_argument("--spill", action="store_true", help="spill what cannot be sent to stdout")
    return parser


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("AWS_LAMBDA_LOG_FORMAT", "").upper() == "JSON":
        handler.setFormatter(_JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("[afterflush collector] %(levelname)s %(message)s"))
    root = logging.getLogger("collector")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel({"warn": "WARNING"}.get(level.lower(), level.upper()))


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {"level": record.levelname, "logger": "afterflush.collector", "message": record.getMessage()}
        )


def _load(config_arg: str | None, *, hold: bool) -> Any:
    from collector._config import load_config, resolve_config_uri
    from collector._registry import default_registry

    uri = resolve_config_uri(config_arg, os.environ)
    return load_config(uri, env=os.environ, registry=default_registry(), hold=hold)


def _print_config_error(exc: Any) -> None:
    problems = exc.problems
    print(
        f"[afterflush collector] ERROR invalid config ({len(problems)} problem"
        f"{'s' if len(problems) != 1 else ''}):",
        file=sys.stderr,
    )
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    sys.stderr.flush()


def cmd_validate(args: argparse.Namespace) -> int:
    from collector.errors import ConfigError

    try:
        config = _load(args.config, hold=True)
    except ConfigError as exc:
        _print_config_error(exc)
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}")
    print(f"{config.source}: valid; {config.summary()}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from collector.errors import AfterflushError, ConfigError

    _setup_logging("info")
    try:
        config = _load(args.config, hold=not args.no_hold)
    except ConfigError as exc:
        _print_config_error(exc)
        return EXIT_CONFIG
    _setup_logging(config.log_level)
    log = logging.getLogger("collector")
    for warning in config.warnings:
        log.warning("%s", warning)

    from collector._registry import default_registry
    from collector._service import Service, run

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run(Service(config, default_registry(), started_at=STARTED), stop)

    try:
        asyncio.run(main())
    except (AfterflushError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return EXIT_START
    return 0


def cmd_ctl(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from collector._duration import parse_duration
    from collector.control import CONTROL_ENDPOINT_ENV, DEFAULT_CONTROL_ENDPOINT, ControlClient
    from collector.errors import ControlError

    endpoint = args.endpoint or os.environ.get(CONTROL_ENDPOINT_ENV) or DEFAULT_CONTROL_ENDPOINT
    try:
        timeout = parse_duration(args.timeout).total_seconds()
    except ValueError as exc:
        print(f"--timeout: {exc}", file=sys.stderr)
        return 2

    async def call() -> Any:
        client = ControlClient(endpoint)
        try:
            if args.action == "status":
                return await client.status(timeout=timeout)
            return await client.drain(
                timeout=timeout, reason=args.reason, request_id=args.request_id,
                spill_remaining=args.spill,
            )
        finally:
            await client.aclose()

    try:
        reply = asyncio.run(call())
    except (ControlError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(json_format.MessageToDict(reply, always_print_fields_with_no_presence=True)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = {"run": cmd_run, "validate": cmd_validate, "ctl": cmd_ctl}[args.command]
    return command(args)


if __name__ == "__main__":
    sys.exit(main())
