"""`make run`: the sample function with the layer under the local Lambda emulator, against a test
backend that answers after a delay, once with afterflush and once with a synchronous pipeline.

Builds the layer for this machine's architecture, unpacks it, starts the backend, invokes the
function N times in each mode (each time on an idle environment, as callers spaced apart would),
and prints what the caller waited, what was done after the response, and what was delivered.

  afterflush   the layer as shipped: the SDK flushes to the local collector, flushcontrol
               answers at once, the companion drains to the backend after the response.
  synchronous  the same layer and SDK with AFTERFLUSH_HOLD=false: the collector runs without
               flushcontrol (`collector run --no-hold`), as the ADOT collector does: each
               export waits for the backend before the SDK's flush returns, so the response
               waits too.
Everything it starts, it stops.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._deploy import free_port
from scripts import build_layer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_FUNCTION = ROOT / "examples" / "function"
SIGNALS = ("traces", "metrics", "logs")
UNITS = {"traces": "spans", "metrics": "points", "logs": "logs"}
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
INVOKE_TIMEOUT_S = 60.0
POLL_S = 0.01


class DemoError(Exception):
    """Something the demo could not do, said in one line."""


def wait_for(predicate: Any, timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None) -> Any:
    """Polls `predicate` every 10 ms until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise DemoError(f"{what}: the process exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(POLL_S)


@dataclass
class Process:
    """A child process in its own process group, with its output in a log file."""

    name: str
    argv: Sequence[str]
    log: Path
    env: Mapping[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> Process:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                list(self.argv), cwd=ROOT, env=dict(self.env) if self.env is not None else None,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def stop(self) -> int | None:
        """SIGTERM, a bounded wait, then SIGKILL for the whole group."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_TIMEOUT_S)
        code = self.proc.poll()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(STOP_TIMEOUT_S)
        return code


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def http(method: str, url: str, body: Any = None, timeout: float = 10.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class ModeResult:
    name: str
    init_ms: float
    caller_ms: list[float]
    post_invoke_ms: list[float]
    produced: dict[str, int]
    delivered: dict[str, int]
    failures: int


def collector_config(grpc_port: int, http_port: int, backend_http: str, *, hold: bool) -> str:
    processors = "      processors: [flushcontrol]\n" if hold else ""
    pipelines = "".join(
        f"    {s}:\n      receivers: [otlp]\n{processors}      exporters: [otlphttp]\n"
        for s in SIGNALS
    )
    return (
        "receivers:\n  otlp:\n    protocols:\n"
        f"      grpc:\n        endpoint: 127.0.0.1:{grpc_port}\n"
        f"      http:\n        endpoint: 127.0.0.1:{http_port}\n"
        + ("processors:\n  flushcontrol:\n" if hold else "")
        + f"exporters:\n  otlphttp:\n    endpoint: {backend_http}\n"
        f"service:\n  pipelines:\n{pipelines}"
    )


class Progress:
    def __init__(self, label: str, total: int) -> None:
        self._label = label
        self._total = total
        self._tty = sys.stdout.isatty()

    def update(self, done: int, last_ms: float | None) -> None:
        width = 20
        bar = "#" * (done * width // self._total) + "." * (width - done * width // self._total)
        last = f"  last {last_ms:7.1f} ms" if last_ms is not None else ""
        line = f"  {self._label:<12} [{bar}] {done:>3}/{self._total}{last}"
        if self._tty:
            print("\r" + line, end="", flush=True)
        elif done == self._total or done % 5 == 0:
            print(line, flush=True)

    def finish(self) -> None:
        if self._tty:
            print(flush=True)


def run_mode(
    name: str,
    *,
    hold: bool,
    opt: Path,
    work: Path,
    backend_http: str,
    args: argparse.Namespace,
) -> ModeResult:
    """One series of invocations under a fresh emulator; stops it (SHUTDOWN drains) before
    reading what the backend received."""
    http("POST", f"{backend_http}/_reset", {})
    mode_dir = work / name
    mode_dir.mkdir()
    grpc_port, http_port = free_port(), free_port()
    config = mode_dir / "config.yaml"
    config.write_text(collector_config(grpc_port, http_port, backend_http, hold=hold))
    control = f"unix://{mode_dir}/control.sock"
    started: list[Process] = []
    # The extension's python3 is this interpreter (the launcher looks on PATH).
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    try:
        layer_dir = opt
        ready, report = mode_dir / "emulator-ready.json", mode_dir / "report.jsonl"
        function_env = {
            "AWS_LAMBDA_EXEC_WRAPPER": "/opt/otel-instrument",
            "OPENTELEMETRY_COLLECTOR_CONFIG_URI": str(config),
            "AFTERFLUSH_CONTROL_ENDPOINT": control,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{http_port}",
            # Metrics leave only with each invocation's flush: one point per invocation.
            "OTEL_METRIC_EXPORT_INTERVAL": "3600000",
            # false: the collector exports before it answers the SDK (no flushcontrol), as the
            # ADOT collector does; the companion then has nothing to drain.
            "AFTERFLUSH_HOLD": "true" if hold else "false",
        }
        argv = [
            sys.executable, "-m", "emulator", "--opt", str(layer_dir),
            "--task", str(EXAMPLE_FUNCTION), "--handler", "app.handler",
            "--listen", "127.0.0.1:0", "--runtime-api", "127.0.0.1:0",
            "--ready-file", str(ready), "--report", str(report), "--init-now",
            "--memory", str(args.memory), "--function-name", "orders",
        ]
        for key, value in function_env.items():
            argv += ["--env", f"{key}={value}"]
        emulator_env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        emulator_env["PATH"] = path
        emulator = Process("emulator", argv, mode_dir / "emulator.log", emulator_env).start()
        started.append(emulator)
        door = wait_for(lambda: read_json(ready), START_TIMEOUT_S, "the emulator", emulator.proc)
        url = f"{door['invoke']}/2015-03-31/functions/function/invocations"
        inits = wait_for(lambda: [r for r in read_jsonl(report) if r.get("kind") == "init"],
                         START_TIMEOUT_S, "the function's init", emulator.proc)
        if inits[0].get("status") != "success":
            raise DemoError(f"{name}: init failed ({inits[0].get('errorType')}); "
                            f"see {mode_dir / 'emulator.log'}")

        progress = Progress(name, args.invocations)
        progress.update(0, None)
        caller_ms: list[float] = []
        produced = dict.fromkeys(SIGNALS, 0)
        failures = 0
        for index in range(args.invocations):
            if index:
                # The previous invocation is over (runtime and extensions called next).
                wait_for(lambda i=index: len([r for r in read_jsonl(report) if r.get("kind") == "invoke"]) >= i,
                         INVOKE_TIMEOUT_S, "the previous invocation to end", emulator.proc)
            body = json.dumps({"items": args.items}).encode()
            request = urllib.request.Request(url, data=body, method="POST")
            begin = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=INVOKE_TIMEOUT_S) as response:
                    answer = json.loads(response.read())
                    status = response.status
            except urllib.error.HTTPError as exc:
                answer, status = {}, exc.code
            caller_ms.append((time.perf_counter() - begin) * 1000)
            if status != 200 or "produced" not in answer:
                failures += 1
            else:
                for s in SIGNALS:
                    produced[s] += int(answer["produced"][s])
            progress.update(index + 1, caller_ms[-1])
        progress.finish()
        invokes = wait_for(
            lambda: (r := [x for x in read_jsonl(report) if x.get("kind") == "invoke"])
            and len(r) >= args.invocations and r,
            INVOKE_TIMEOUT_S, "the last invocation to end", emulator.proc,
        )
        # SHUTDOWN: whatever is still held goes out now.
        emulator.stop()
        started.remove(emulator)
        stats = http("GET", f"{backend_http}/_stats")
        return ModeResult(
            name=name,
            init_ms=float(inits[0].get("initDurationMs") or 0.0),
            caller_ms=caller_ms,
            post_invoke_ms=[float(r.get("postRuntimeDurationMs") or 0.0) for r in invokes],
            produced=produced,
            delivered={s: int(stats[s]["unique"]) for s in SIGNALS},
            failures=failures,
        )
    finally:
        for process in reversed(started):
            process.stop()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def table(results: Sequence[ModeResult]) -> str:
    header = ["", "caller p50", "caller p99", "post-invoke p50", "post-invoke p99",
              "delivered / produced"]
    rows = [header]
    for r in results:
        delivered = ", ".join(
            f"{r.delivered[s]}/{r.produced[s]} {UNITS[s]}" for s in SIGNALS
        )
        rows.append([
            r.name,
            f"{percentile(r.caller_ms, 50):.1f} ms", f"{percentile(r.caller_ms, 99):.1f} ms",
            f"{percentile(r.post_invoke_ms, 50):.1f} ms", f"{percentile(r.post_invoke_ms, 99):.1f} ms",
            delivered,
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i in (0, len(header) - 1) else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="run_demo.py", description=__doc__.split("\n")[0])
    parser.add_argument("--invocations", type=int, default=20, help="per mode (default 20)")
    parser.add_argument("--latency-ms", type=float, default=200.0,
                        help="how long the backend takes to answer each export (default 200)")
    parser.add_argument("--items", type=int, default=3, help="items per order: spans = items + 2")
    parser.add_argument("--memory", type=int, default=1769,
                        help="function memory in MB; sets the CPU share (default 1769 = 1 vCPU)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist",
                        help="where the layer zip is built (default dist/)")
    args = parser.parse_args(argv)
    if args.invocations < 1 or args.items < 0:
        parser.error("--invocations must be at least 1 and --items at least 0")
    return args


@contextlib.contextmanager
def work_directory(keep: bool) -> Iterator[Path]:
    # Short: unix socket paths must stay under ~107 bytes.
    path = Path(tempfile.mkdtemp(prefix="afterflush-run-", dir="/tmp"))
    try:
        yield path
    finally:
        if keep:
            print(f"work directory kept: {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        arch = build_layer.host_arch()
        print(f"building the layer for {arch} ...", flush=True)
        built = build_layer.build(
            [arch], list(build_layer.PYTHON_VERSIONS), args.dist, ROOT / ".layer-build",
            log=build_layer.Logger(quiet=False),
        )
        with work_directory(args.keep) as work:
            opt = work / "opt"
            build_layer.unpack(built[arch], opt)
            backend = Process(
                "backend",
                [sys.executable, "-m", "backend", "--latency-ms", f"{args.latency_ms:g}",
                 "--ready-file", str(work / "backend.json")],
                work / "backend.log",
            ).start()
            try:
                endpoints = wait_for(lambda: read_json(work / "backend.json"), START_TIMEOUT_S,
                                     "the backend", backend.proc)
                print(f"backend answers every export after {args.latency_ms:g} ms; "
                      f"{args.invocations} invocations per mode, function memory {args.memory} MB",
                      flush=True)
                results = [
                    run_mode(name, hold=hold, opt=opt, work=work,
                             backend_http=endpoints["http"], args=args)
                    for name, hold in (("afterflush", True), ("synchronous", False))
                ]
            finally:
                backend.stop()
    except (DemoError, build_layer.BuildError, OSError) as exc:
        print(f"run: {exc}", file=sys.stderr)
        return 1
    print()
    print(table(results))
    print()
    print("caller: the invoke request, as the caller waited for it. post-invoke: after the "
          "response, before the environment may freeze (billed).")
    print("synchronous: the same layer and SDK with AFTERFLUSH_HOLD=false: the collector "
          "exports before it answers (no flushcontrol), as the ADOT collector does.")
    afterflush = results[0]
    print(f"afterflush init (extension and runtime, before the first invocation): "
          f"{afterflush.init_ms:.0f} ms")
    broken = [r for r in results
              if r.failures or any(r.delivered[s] < r.produced[s] for s in SIGNALS)]
    for r in broken:
        print(f"run: {r.name}: {r.failures} failed invocations; delivered {r.delivered} of "
              f"{r.produced}", file=sys.stderr)
    if any(r.delivered[s] > r.produced[s] for r in results for s in SIGNALS):
        print("more delivered than the function produced: the SDK's own log records (an export "
              "retried, a warning) are OTLP logs too.")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
