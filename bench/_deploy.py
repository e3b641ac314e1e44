"""The benchmark's execution environments: the built layer unpacked, a Python like Lambda's, the
benchmark function, and for each mode (no telemetry, synchronous, afterflush) the emulator's
--opt directory and the function's environment.

The layer is used as built (dist/afterflush-python-<arch>.zip); the synchronous mode is the same
layer told AFTERFLUSH_HOLD=false, so that the companion runs the collector without flushcontrol.
"""

from __future__ import annotations

import collections
import enum
import importlib.metadata
import random
import re
import shutil
import socket
import sys
import venv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench._errors import BenchError

REPO = Path(__file__).resolve().parents[1]
FUNCTION_DIR = Path(__file__).resolve().parent / "function"
HANDLER = "app.handler"
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
# What Lambda's Python runtime has in /var/runtime besides the standard library.
RUNTIME_DISTRIBUTION = "awslambdaric"
SIGNALS = ("traces", "metrics", "logs")
# The collector in the layer: a static Go binary (the OpenTelemetry Collector with flushcontrol).
COLLECTOR_IN_LAYER = "afterflush/bin/afterflush-collector"
# Metrics leave only with each invocation's flush, never on the SDK's own timer.
METRIC_INTERVAL_MS = "3600000"


class Mode(enum.StrEnum):
    FLOOR = "no-telemetry"
    SYNC = "synchronous"
    AFTERFLUSH = "afterflush"


def host_arch() -> str:
    from scripts import build_layer

    try:
        return build_layer.host_arch()
    except build_layer.BuildError as exc:
        raise BenchError(str(exc)) from exc


def default_layer_zip() -> Path:
    return REPO / "dist" / f"afterflush-python-{host_arch()}.zip"


def unpack_layer(archive: Path, destination: Path) -> Path:
    """The layer zip extracted with its file modes into `destination`."""
    from scripts import build_layer

    if not archive.is_file():
        raise BenchError(f"no layer at {archive}: build it with `make layer`")
    try:
        build_layer.unpack(archive, destination)
    except (OSError, build_layer.BuildError) as exc:
        raise BenchError(f"cannot unpack {archive.name}: {exc}") from exc
    if not (destination / "extensions" / "afterflush").is_file():
        raise BenchError(f"{archive.name} has no extensions/afterflush: not an afterflush layer")
    return destination


@dataclass(frozen=True)
class LambdaPython:
    """A Python like Lambda's: `python` sees only the standard library, and `runtime_dir`
    holds the runtime interface client, as /var/runtime does."""

    python: Path
    bin_dir: Path
    runtime_dir: Path


def _distribution_closure(name: str) -> list[importlib.metadata.Distribution]:
    """`name` and what it requires (no extras), as installed in this interpreter."""
    seen: dict[str, importlib.metadata.Distribution] = {}
    pending = [name]
    while pending:
        try:
            dist = importlib.metadata.distribution(pending.pop())
        except importlib.metadata.PackageNotFoundError as exc:
            raise BenchError(f"{exc.name} is not installed: run `make venv`") from exc
        key = dist.metadata["Name"].lower()
        if key in seen:
            continue
        seen[key] = dist
        for requirement in dist.requires or []:
            if "extra ==" in requirement:
                continue
            match = re.match(r"[A-Za-z0-9._-]+", requirement)
            if match:
                pending.append(match.group(0))
    return list(seen.values())


def lambda_python(root: Path) -> LambdaPython:
    """A bare venv of the base interpreter under `root`, and a runtime directory holding a
    copy of the installed awslambdaric and its dependencies."""
    env_dir = root / "python"
    venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(env_dir)
    runtime_dir = root / "var-runtime"
    for dist in _distribution_closure(RUNTIME_DISTRIBUTION):
        for file in dist.files or []:
            if file.parts[0].endswith(".dist-info") or "__pycache__" in file.parts:
                continue
            source = Path(str(dist.locate_file(file)))
            if not source.is_file():
                continue
            target = runtime_dir / Path(*file.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    # Named with its version: the emulator derives the layer's site-packages from the name.
    python = env_dir / "bin" / f"python{PYTHON_VERSION}"
    return LambdaPython(python=python, bin_dir=env_dir / "bin", runtime_dir=runtime_dir)


def without_extension(layer: Path, destination: Path) -> Path:
    """A view of `layer` (symlinks to its entries) without its extension: the function side
    alone (SDK set-up by otel-instrument), for telling the Init costs apart."""
    destination.mkdir(parents=True)
    for entry in layer.iterdir():
        if entry.name != "extensions":
            (destination / entry.name).symlink_to(entry)
    return destination


# Ports free_port handed out lately (in this process), not handed out again for a while.
_RECENT_PORTS: collections.deque[int] = collections.deque(maxlen=256)


def free_port() -> int:
    """A free loopback TCP port for a server that binds it later (a collector's receivers),
    taken below the kernel's ephemeral range: a port bind(0) handed out and we released could
    be handed out again to another process's bind(0) (the companion's Telemetry API listener,
    a client's source port) before the server binds it, and the server would not start."""
    low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(500):
        port = rng.randrange(max(1024, low - 10000), low)
        if port in _RECENT_PORTS:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _RECENT_PORTS.append(port)
        return port
    raise BenchError(f"no free loopback port in {max(1024, low - 10000)}-{low - 1}")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def collector_config(*, grpc_port: int, http_port: int, backend_http: str) -> str:
    """The shipped config's shape with an otlphttp exporter to the backend in place of debug,
    and the receivers on the given loopback ports."""
    pipelines = "".join(
        f"    {signal}:\n      receivers: [otlp]\n      processors: [flushcontrol]\n"
        f"      exporters: [otlphttp]\n"
        for signal in SIGNALS
    )
    return (
        "receivers:\n  otlp:\n    protocols:\n"
        f"      grpc:\n        endpoint: 127.0.0.1:{grpc_port}\n"
        f"      http:\n        endpoint: 127.0.0.1:{http_port}\n"
        "processors:\n  flushcontrol:\n"
        f"exporters:\n  otlphttp:\n    endpoint: {backend_http}\n"
        f"service:\n  pipelines:\n{pipelines}"
    )


@dataclass(frozen=True)
class Workspace:
    """Everything the environments share, built once per run under `root` (kept short: the
    control socket's path must stay under ~107 bytes)."""

    root: Path
    layer: Path
    sdk_only_layer: Path
    empty_opt: Path
    task: Path
    runtime: LambdaPython

    @classmethod
    def build(cls, root: Path, layer_zip: Path) -> Workspace:
        layer = unpack_layer(layer_zip, root / "layer")
        empty = root / "empty-opt"
        empty.mkdir()
        task = root / "task"
        shutil.copytree(FUNCTION_DIR, task, ignore=shutil.ignore_patterns("__pycache__"))
        return cls(
            root=root,
            layer=layer,
            sdk_only_layer=without_extension(layer, root / "layer-sdk-only"),
            empty_opt=empty,
            task=task,
            runtime=lambda_python(root / "lambda"),
        )

    def process_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The emulator's own environment: extensions find `python3` on PATH, and it is the
        bare one, not this interpreter."""
        env = {k: v for k, v in base.items() if not k.startswith("PYTHON")}
        env["PATH"] = f"{self.runtime.bin_dir}:/usr/bin:/bin"
        return env

    def opt_for(self, mode: Mode) -> Path:
        return self.empty_opt if mode is Mode.FLOOR else self.layer

    def function_env(self, mode: Mode, directory: Path, backend_http: str) -> dict[str, str]:
        """The function's variables for `mode`; writes the collector config into `directory`."""
        if mode is Mode.FLOOR:
            # The function bundles the OpenTelemetry API (the layer's copy of it); with no SDK
            # set up, every call is a no-op.
            site = self.layer / "python" / "lib" / f"python{PYTHON_VERSION}" / "site-packages"
            path = [self.runtime.runtime_dir, self.layer / "python", site]
            return {"PYTHONPATH": ":".join(str(p) for p in path)}
        directory.mkdir(parents=True, exist_ok=True)
        http_port = free_port()
        config = directory / "config.yaml"
        config.write_text(collector_config(
            grpc_port=free_port(), http_port=http_port, backend_http=backend_http,
        ))
        return {
            "AWS_LAMBDA_EXEC_WRAPPER": "/opt/otel-instrument",
            "OPENTELEMETRY_COLLECTOR_CONFIG_URI": str(config),
            "AFTERFLUSH_CONTROL_ENDPOINT": f"unix://{directory}/control.sock",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{http_port}",
            "OTEL_METRIC_EXPORT_INTERVAL": METRIC_INTERVAL_MS,
            "PYTHONPATH": str(self.runtime.runtime_dir),
            # The synchronous flush, as the ADOT collector does it: exports before answering.
            "AFTERFLUSH_HOLD": "false" if mode is Mode.SYNC else "true",
        }
