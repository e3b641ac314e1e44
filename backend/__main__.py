"""Command line: `python -m backend` serves OTLP on loopback until SIGTERM/SIGINT.

Prints one ready line (JSON with the bound endpoints) to stdout and, with --ready-file, writes
the same JSON to that file once both listeners are up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from backend._faults import FaultSpec
from backend._server import Backend
from backend._signals import Signal


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m backend", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--grpc-port", type=int, default=0, help="0 = a free port")
    parser.add_argument("--http-port", type=int, default=0, help="0 = a free port")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="wait this long before answering each export"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault RNG")
    parser.add_argument("--ready-file", type=Path, help="write the endpoints here when ready")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="JSON",
        help='a fault to start with, e.g. \'{"signal": "traces", "status": 503, "times": 2}\'',
    )
    return parser.parse_args(argv)


def initial_faults(texts: list[str]) -> list[tuple[FaultSpec, Signal | None]]:
    faults = []
    for text in texts:
        document = json.loads(text)
        if not isinstance(document, dict):
            raise ValueError("--fault must be a JSON object")
        name = document.pop("signal", None)
        faults.append((FaultSpec.from_json(document), Signal(name) if name else None))
    return faults


async def serve(args: argparse.Namespace) -> None:
    faults = initial_faults(args.fault)
    backend = Backend(
        host=args.host,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        latency_ms=args.latency_ms,
        seed=args.seed,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with backend:
        for spec, signal_ in faults:
            backend.set_faults(spec, signal_)
        ready = json.dumps({**backend.endpoints(), "pid": os.getpid()})
        if args.ready_file is not None:
            # Written whole then renamed, so a reader never sees half of it.
            partial = args.ready_file.with_name(args.ready_file.name + ".tmp")
            partial.write_text(ready + "\n")
            partial.replace(args.ready_file)
        print(ready, flush=True)
        await stop.wait()
        summary = {name: s.to_json() for name, s in backend.stats().items()}
        print(json.dumps({"stats": summary}), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        asyncio.run(serve(args))
    except (ValueError, TypeError) as exc:
        print(f"backend: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"backend: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
