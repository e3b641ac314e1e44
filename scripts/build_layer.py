"""Builds the afterflush Lambda layer zips, one per architecture, for Python 3.11 to 3.14.
Shared by `make layer` and Dockerfile.layer; needs the standard library, pip, and Go 1.26 or
newer (the collector is cross-compiled for each architecture).

The zip holds (paths relative to /opt):
  extensions/afterflush, otel-instrument, otel-handler    the launcher and exec wrappers
  afterflush/bin/afterflush-collector                      the collector (static Go binary)
  afterflush/launch.py                                     picks the packages for the interpreter
  afterflush/lib/common/                                   the companion, its pure-Python deps
  afterflush/lib/python3.X/                                its own compiled deps for Python 3.X,
                                                           if any (grpcio is the function's)
  collector-config/config.yaml, collector-config/honeycomb.yaml
  python/                                                  the function's SDK (pure Python)
  python/lib/python3.X/site-packages/                      its compiled deps for Python 3.X

Wheels are resolved by pip for each (side, architecture, Python version) with the pins in
layer/requirements/constraints.txt, cached under .layer-build/, and unpacked straight into
the zip: sorted entries, fixed timestamps and modes, no bytecode, so the same inputs give the
same bytes. The collector is built with `go build -trimpath` and an empty build id, which is
reproducible too; each binary is cached under .layer-build/collector/ by a hash of the Go
sources, the toolchain and the target.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
LAYER_SOURCE = ROOT / "layer"
REQUIREMENTS_DIR = LAYER_SOURCE / "requirements"
FUNCTION_REQUIREMENTS = REQUIREMENTS_DIR / "function.txt"
COMPANION_REQUIREMENTS = REQUIREMENTS_DIR / "companion.txt"
CONSTRAINTS = REQUIREMENTS_DIR / "constraints.txt"
PYPROJECT = ROOT / "pyproject.toml"
CONFIG_FILES = {
    "collector-config/config.yaml": ROOT / "config" / "collector.yaml",
    "collector-config/honeycomb.yaml": ROOT / "config" / "examples" / "honeycomb.yaml",
}
# Our own packages, copied from the source tree into afterflush/lib/common.
OUR_PACKAGES = ("companion",)

# The collector: a Go program in collector/, cross-compiled for each architecture. The
# companion finds it at afterflush/bin/ beside its own afterflush/lib/common/companion.
COLLECTOR_SOURCE = ROOT / "collector"
COLLECTOR_PATH = "afterflush/bin/afterflush-collector"
CHECK_GO = ROOT / "scripts" / "check_go.sh"
GO_MINIMUM = "1.26"
GOARCH = {"x86_64": "amd64", "arm64": "arm64"}
# The baseline instruction set of each, stated so that a GOAMD64/GOARM64 in the environment
# cannot change the binary.
GO_ISA = {"x86_64": ("GOAMD64", "v1"), "arm64": ("GOARM64", "v8.0")}
# When `go env GOPROXY` says nothing.
DEFAULT_GOPROXY = "https://proxy.golang.org"
# ELF program header type of the dynamic loader's path: a static binary has none.
PT_INTERP = 3

PYTHON_VERSIONS = ("3.11", "3.12", "3.13", "3.14")
ARCHITECTURES = ("x86_64", "arm64")
# glibc of the Lambda OS each runtime runs on: python3.11 on Amazon Linux 2 (2.26),
# python3.12 and later on Amazon Linux 2023 (2.34).
GLIBC = {"3.11": 26, "3.12": 34, "3.13": 34, "3.14": 34}
MACHINE = {"x86_64": "x86_64", "arm64": "aarch64"}
# ELF e_machine values, for checking that a compiled file is for the architecture.
ELF_MACHINE = {"x86_64": 62, "arm64": 183}

# Files in layer/ that document or build the layer and do not go into it.
LAYER_SOURCE_ONLY = frozenset({"README.md"})
EXECUTABLES = frozenset({"extensions/afterflush", "otel-instrument", "otel-handler", COLLECTOR_PATH})
EXECUTABLE_MODE = 0o755
FILE_MODE = 0o644
# 1980-01-01, the earliest time a zip entry can carry.
ZIP_EPOCH = 315532800
# Bumped when the way wheels become zip entries changes, so that a cached zip built the old
# way is never reused.
LAYOUT_VERSION = 1

FUNCTION_SIDE = "function"
COMPANION_SIDE = "companion"
SIDES = (FUNCTION_SIDE, COMPANION_SIDE)
REQUIREMENTS = {FUNCTION_SIDE: FUNCTION_REQUIREMENTS, COMPANION_SIDE: COMPANION_REQUIREMENTS}


class BuildError(Exception):
    """A build problem, reported as one line."""


# ---------------------------------------------------------------------------- resolution


@dataclass(frozen=True)
class Target:
    side: str
    arch: str
    python: str

    @property
    def key(self) -> str:
        return f"{self.side}-{self.arch}-py{self.python}"

    def pip_platform_args(self) -> list[str]:
        cp = "cp" + self.python.replace(".", "")
        platforms = [arg for tag in manylinux_tags(self.arch, GLIBC[self.python])
                     for arg in ("--platform", tag)]
        return [
            "--only-binary=:all:",
            "--implementation", "cp",
            "--python-version", self.python,
            "--abi", cp, "--abi", "abi3", "--abi", "none",
            *platforms,
        ]


def manylinux_tags(arch: str, glibc_minor: int) -> list[str]:
    """Every manylinux tag a system with glibc 2.`glibc_minor` runs, newest first: pip does
    not widen a --platform manylinux_2_Y tag to the older ones by itself."""
    machine = MACHINE[arch]
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(glibc_minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    return tags + [f"{name}_{machine}" for minor, name in legacy.items() if minor <= glibc_minor]


def project_version() -> str:
    """pyproject's [project].version: what the collector reports as its version."""
    with PYPROJECT.open("rb") as stream:
        return str(tomllib.load(stream)["project"]["version"])


def requirements_for(side: str) -> list[str]:
    """The side's requirements file (layer/requirements/function.txt or companion.txt)."""
    return [
        line.split("#", 1)[0].strip()
        for line in REQUIREMENTS[side].read_text().splitlines()
        if line.split("#", 1)[0].strip()
    ]


def resolution_key(target: Target) -> str:
    """Changes whenever anything that decides which wheels `target` gets changes."""
    digest = hashlib.sha256()
    digest.update(json.dumps(
        {
            "requirements": requirements_for(target.side),
            "constraints": CONSTRAINTS.read_text(),
            "pip": target.pip_platform_args(),
        },
        sort_keys=True,
    ).encode())
    return digest.hexdigest()[:16]


def pip_environment() -> dict[str, str]:
    env = dict(os.environ)
    # Local wheel directories must not stand in for the index: the pins name index files.
    env.pop("PIP_FIND_LINKS", None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


def pip_download(target: Target, pool: Path, pip_cache: Path) -> list[str]:
    """Downloads the wheels `target` needs into `pool`; returns their file names."""
    with tempfile.TemporaryDirectory(prefix=f"{target.key}-", dir=pool.parent) as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text("\n".join(requirements_for(target.side)) + "\n")
        dest = Path(tmp) / "wheels"
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--progress-bar", "off",
            "--cache-dir", str(pip_cache), "--dest", str(dest),
            *target.pip_platform_args(),
            "-r", str(requirements), "-c", str(CONSTRAINTS),
        ]
        done = subprocess.run(command, capture_output=True, text=True, env=pip_environment())
        if done.returncode != 0:
            detail = _last_error_line(done.stderr or done.stdout)
            raise BuildError(f"pip could not get the wheels for {target.key}: {detail}")
        names = sorted(p.name for p in dest.iterdir())
        not_wheels = [n for n in names if not n.endswith(".whl")]
        if not_wheels:
            raise BuildError(f"{target.key}: only wheels can go into the layer, got {not_wheels}")
        for name in names:
            if not (pool / name).exists():
                shutil.move(str(dest / name), pool / name)
        return names


def _last_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1]


def check_pinned(resolved: Mapping[str, Sequence[str]]) -> None:
    """Every wheel a build uses must be pinned, or the same inputs could give other bytes."""
    pins = read_pins(CONSTRAINTS.read_text())
    for key, names in resolved.items():
        for name in names:
            dist, version = wheel_name_version(name)
            if pins.get(dist) != version:
                raise BuildError(
                    f"{key}: {dist} {version} is not pinned in "
                    f"{CONSTRAINTS.relative_to(ROOT)}; add '{dist}=={version}' "
                    "(or run scripts/build_layer.py --lock)"
                )


def read_pins(text: str) -> dict[str, str]:
    pins = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise BuildError(f"{CONSTRAINTS.name}: '{line}' is not a name==version pin")
        pins[normalize(name)] = version.split(";", 1)[0].strip()
    return pins


def normalize(name: str) -> str:
    return "-".join(name.replace("_", "-").replace(".", "-").lower().split("-"))


def wheel_name_version(filename: str) -> tuple[str, str]:
    parts = filename[: -len(".whl")].split("-")
    return normalize(parts[0]), parts[1]


def resolve(
    targets: Sequence[Target], cache: Path, *, log: Logger, jobs: int = 4
) -> dict[str, list[str]]:
    """The wheel file names of every target; a target whose inputs did not change since it was
    last resolved comes from the cache, without pip."""
    pool = cache / "wheels"
    records = cache / "resolved"
    pool.mkdir(parents=True, exist_ok=True)
    records.mkdir(parents=True, exist_ok=True)
    resolved: dict[str, list[str]] = {}
    missing = []
    for target in targets:
        record = records / f"{target.key}-{resolution_key(target)}.json"
        names = json.loads(record.read_text()) if record.exists() else None
        if names is not None and all((pool / name).exists() for name in names):
            resolved[target.key] = names
        else:
            missing.append(target)
    if not missing:
        log.step(f"wheels: {len(targets)} targets resolved before, taken from {cache.name}/")
        return resolved
    log.step(f"wheels: resolving {len(missing)} targets with pip (cached under {cache.name}/)")
    started = time.monotonic()
    fresh: dict[str, list[str]] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as executor:
        futures = {executor.submit(pip_download, t, pool, cache / "pip-cache"): t for t in missing}
        for future in concurrent.futures.as_completed(futures):
            fresh[futures[future].key] = future.result()
    check_pinned(fresh)
    for target in missing:
        record = records / f"{target.key}-{resolution_key(target)}.json"
        partial = record.with_name(record.name + ".partial")
        partial.write_text(json.dumps(fresh[target.key], indent=1) + "\n")
        partial.replace(record)
    log.step(f"wheels: resolved in {time.monotonic() - started:.1f}s")
    return {**resolved, **fresh}


def lock(cache: Path, *, log: Logger) -> None:
    """Rewrites the constraints file with what pip picks today for every architecture and
    Python version. Both sides are resolved together so that the pins agree."""
    versions: dict[str, set[str]] = {}
    both = [*requirements_for(FUNCTION_SIDE), *requirements_for(COMPANION_SIDE)]
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text("\n".join(both) + "\n")
        for arch in ARCHITECTURES:
            for python in PYTHON_VERSIONS:
                target = Target("all", arch, python)
                report = Path(tmp) / f"{target.key}.json"
                command = [
                    sys.executable, "-m", "pip", "install", "--quiet", "--dry-run",
                    "--ignore-installed", "--target", str(Path(tmp) / "target"),
                    "--report", str(report), *target.pip_platform_args(),
                    "-r", str(requirements),
                ]
                done = subprocess.run(
                    command, capture_output=True, text=True, env=pip_environment()
                )
                if done.returncode != 0:
                    raise BuildError(f"{target.key}: {_last_error_line(done.stderr)}")
                for item in json.loads(report.read_text())["install"]:
                    meta = item["metadata"]
                    versions.setdefault(normalize(meta["name"]), set()).add(meta["version"])
                log.step(f"lock: resolved {target.key}")
    split = {name: sorted(v) for name, v in versions.items() if len(v) > 1}
    if split:
        raise BuildError(f"targets disagree on versions, pin these by hand: {split}")
    header = [
        "# Every package the layer ships, pinned: the same pins give the same layer.",
        "# Regenerate with: python scripts/build_layer.py --lock",
    ]
    lines = [f"{name}=={next(iter(v))}" for name, v in sorted(versions.items())]
    CONSTRAINTS.write_text("\n".join(header + lines) + "\n")
    log.step(f"lock: wrote {len(lines)} pins to {CONSTRAINTS.relative_to(ROOT)}")


def all_targets(arches: Iterable[str], versions: Iterable[str]) -> list[Target]:
    return [Target(side, arch, v) for side in SIDES for arch in arches for v in versions]


# ---------------------------------------------------------------------------- the collector


@dataclass(frozen=True)
class Go:
    """The Go toolchain on PATH: its version and the module proxy the build uses."""

    version: str
    proxy: str


def find_go() -> Go:
    """Go on PATH, new enough for the collector (scripts/check_go.sh says what to install)."""
    try:
        checked = subprocess.run(
            ["bash", str(CHECK_GO), GO_MINIMUM], capture_output=True, text=True
        )
    except OSError as exc:
        raise BuildError(f"cannot run {CHECK_GO.relative_to(ROOT)}: {exc}") from exc
    if checked.returncode != 0:
        raise BuildError(_last_error_line(checked.stderr).removeprefix("error: "))
    done = subprocess.run(
        ["go", "env", "GOVERSION", "GOPROXY"],
        capture_output=True, text=True, cwd=COLLECTOR_SOURCE, env=go_environment(),
    )
    if done.returncode != 0:
        raise BuildError(f"go env failed: {_last_error_line(done.stderr)}")
    version, _, proxies = done.stdout.partition("\n")
    return Go(version=version.strip(), proxy=first_proxy(proxies))


def first_proxy(goproxy: str) -> str:
    """The first entry of a GOPROXY list: with the proxy alone, a module it does not serve is
    an error naming the module, not a fallback to `direct` that may not be reachable."""
    first = re.split(r"[,|]", goproxy.strip(), maxsplit=1)[0].strip()
    return first or DEFAULT_GOPROXY


def go_environment(arch: str | None = None, proxy: str | None = None) -> dict[str, str]:
    """The environment of `go`: nothing of the caller's that could change the binary (GOFLAGS,
    GOEXPERIMENT, a go.work above collector/), and for a build the target and the proxy."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("GOFLAGS", "GOEXPERIMENT", "GOOS", "GOARCH", "GOAMD64", "GOARM64")}
    env["GOWORK"] = "off"
    if arch is not None:
        isa_name, isa_level = GO_ISA[arch]
        env.update({"CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": GOARCH[arch],
                    isa_name: isa_level})
    if proxy is not None:
        env["GOPROXY"] = proxy
    return env


def go_build_command(output: str) -> list[str]:
    ldflags = f"-s -w -buildid= -X main.version={project_version()}"
    return ["go", "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", output, "."]


def collector_sources() -> list[Path]:
    """What the binary is built from: every *.go (tests excepted), go.mod and go.sum under
    collector/, testdata/ excepted (the Python collector's files there are not)."""
    found = []
    for path in COLLECTOR_SOURCE.rglob("*"):
        relative = path.relative_to(COLLECTOR_SOURCE)
        if "testdata" in relative.parts[:-1] or not path.is_file():
            continue
        if path.name in ("go.mod", "go.sum") or (
            path.suffix == ".go" and not path.name.endswith("_test.go")
        ):
            found.append(path)
    return sorted(found)


def collector_key(go: Go, arch: str) -> str:
    """Changes whenever the sources, the toolchain, the flags or the target change."""
    env = go_environment(arch)
    digest = hashlib.sha256()
    digest.update(json.dumps(
        {
            "go": go.version,
            "command": go_build_command("-"),
            "env": {k: env[k] for k in ("CGO_ENABLED", "GOOS", "GOARCH", GO_ISA[arch][0])},
        },
        sort_keys=True,
    ).encode())
    for path in collector_sources():
        digest.update(path.relative_to(COLLECTOR_SOURCE).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:20]


def go_error(text: str) -> str:
    """The line of go's output that says what failed: the first one that is neither a package
    heading (`# package`) nor progress (`go: downloading ...`). A module the proxy does not
    serve is named there (`...: example.com/m@v1.2.3: reading https://...: 404 Not Found`)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines
              if not line.startswith(("#", "go: downloading ", "go: finding ", "go: extracting "))]
    return (useful or lines or ["no output"])[0]


def build_collector(go: Go, arch: str, cache: Path, *, log: Logger, reuse: bool = True) -> bytes:
    """The collector binary for `arch`; built with `go build` unless one of the same sources,
    toolchain and target is cached (`reuse`). Go's own build cache makes a rebuild of
    unchanged packages quick."""
    target = f"linux/{GOARCH[arch]}"
    stored = cache / "collector" / f"{arch}-{collector_key(go, arch)}" / "afterflush-collector"
    if reuse and stored.exists():
        stored.parent.touch()
        data = stored.read_bytes()
        check_collector(data, arch, str(stored))
        log.step(f"collector {target}: unchanged sources, reused")
        return data
    log.step(f"collector {target}: go build ({go.version}, GOPROXY={go.proxy})")
    started = time.monotonic()
    stored.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="go-build-", dir=stored.parent) as tmp:
        output = Path(tmp) / "afterflush-collector"
        done = subprocess.run(
            go_build_command(str(output)), capture_output=True, text=True,
            cwd=COLLECTOR_SOURCE, env=go_environment(arch, go.proxy),
        )
        if done.returncode != 0:
            raise BuildError(f"go build of the collector for {target} failed: {go_error(done.stderr)}")
        data = output.read_bytes()
        check_collector(data, arch, f"the collector built for {target}")
        # Cached only under the key of the sources it was built from: not when one changed
        # while go was building.
        if stored.parent.name == f"{arch}-{collector_key(go, arch)}":
            output.replace(stored)
    log.step(f"collector {target}: built in {time.monotonic() - started:.1f}s, {mib(len(data))}")
    return data


def check_collector(data: bytes, arch: str, what: str) -> None:
    """A 64-bit little-endian ELF executable for `arch` with no dynamic loader: it runs on any
    Lambda OS."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise BuildError(f"{what} is not a 64-bit little-endian ELF file")
    if int.from_bytes(data[18:20], "little") != ELF_MACHINE[arch]:
        raise BuildError(f"{what} is not an {arch} binary")
    if PT_INTERP in elf_segment_types(data):
        raise BuildError(f"{what} is dynamically linked (was cgo on?); it must be static")


def elf_segment_types(data: bytes) -> list[int]:
    """The p_type of each program header of a 64-bit little-endian ELF file."""
    phoff = int.from_bytes(data[32:40], "little")
    entsize = int.from_bytes(data[54:56], "little")
    count = int.from_bytes(data[56:58], "little")
    return [
        int.from_bytes(data[phoff + i * entsize: phoff + i * entsize + 4], "little")
        for i in range(count)
    ]


# ---------------------------------------------------------------------------- assembly


@dataclass
class Entry:
    data: bytes
    mode: int
    origin: str


@dataclass
class Tree:
    """The layer's files, by path relative to the layer root."""

    entries: dict[str, Entry] = field(default_factory=dict)

    def add(self, path: str, data: bytes, origin: str, mode: int = FILE_MODE) -> None:
        existing = self.entries.get(path)
        if existing is not None and existing.data != data:
            raise BuildError(f"{path} comes from both {existing.origin} and {origin}")
        self.entries[path] = Entry(data, mode, origin)

    def unpacked_size(self) -> int:
        return sum(len(e.data) for e in self.entries.values())


def skipped(path: PurePosixPath) -> bool:
    """Bytecode, tests and install records are not part of the layer."""
    parts = path.parts
    if "__pycache__" in parts or path.suffix in (".pyc", ".pyo"):
        return True
    # Test suites shipped inside packages: directories named tests/test below a package.
    if any(part in ("tests", "test") for part in parts[1:-1]):
        return True
    return len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] in (
        "RECORD", "RECORD.jws", "RECORD.p7s", "INSTALLER", "REQUESTED", "direct_url.json"
    )


TEST_IMPORT = re.compile(rb"^\s*(?:import|from)\s+(?:unittest|pytest)\b", re.MULTILINE)


def is_test_module(path: PurePosixPath, data: bytes) -> bool:
    """A test_*.py / *_test.py module that imports a test framework. Names alone would also
    catch modules such as semconv's test_attributes (the `test.*` attributes)."""
    name = path.name
    if path.suffix != ".py" or not (name.startswith("test_") or name.endswith("_test.py")):
        return False
    return TEST_IMPORT.search(data) is not None


def wheel_entries(wheel: Path) -> Iterator[tuple[str, bytes]]:
    """The files a wheel installs into site-packages, as (relative path, content)."""
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            path = PurePosixPath(info.filename)
            head = path.parts[0]
            if head.endswith(".data"):
                # purelib/platlib go to site-packages; scripts, headers and data are not needed.
                if len(path.parts) < 3 or path.parts[1] not in ("purelib", "platlib"):
                    continue
                path = PurePosixPath(*path.parts[2:])
            if skipped(path):
                continue
            data = archive.read(info)
            if not is_test_module(path, data):
                yield str(path), data


def source_entries(directory: Path, prefix: str) -> Iterator[tuple[str, bytes]]:
    for path in sorted(directory.rglob("*")):
        relative = PurePosixPath(path.relative_to(directory).as_posix())
        target = PurePosixPath(prefix, relative)
        if path.is_file() and not skipped(target):
            data = path.read_bytes()
            if not is_test_module(target, data):
                yield str(target), data


@dataclass(frozen=True)
class Placement:
    """Where each wheel of one side goes: shared by every Python version or per version."""

    shared: tuple[str, ...]
    per_version: Mapping[str, tuple[str, ...]]


def place(wheels: Mapping[str, Sequence[str]]) -> Placement:
    """A wheel every version uses (pure Python or abi3) is stored once."""
    sets = [set(names) for names in wheels.values()]
    shared = set.intersection(*sets) if sets else set()
    return Placement(
        shared=tuple(sorted(shared)),
        per_version={v: tuple(sorted(set(n) - shared)) for v, n in wheels.items()},
    )


def assemble(
    arch: str,
    versions: Sequence[str],
    resolved: Mapping[str, Sequence[str]],
    pool: Path,
    collector: bytes,
) -> Tree:
    tree = Tree()

    def add_wheels(names: Iterable[str], prefix: str) -> None:
        for name in names:
            for path, data in wheel_entries(pool / name):
                tree.add(f"{prefix}/{path}", data, name)

    function_wheels = {v: resolved[Target(FUNCTION_SIDE, arch, v).key] for v in versions}
    function = place(function_wheels)
    add_wheels(function.shared, "python")
    for v in versions:
        add_wheels(function.per_version[v], f"python/lib/python{v}/site-packages")

    # A compiled wheel both sides use (grpcio) is stored once, on the function side; the
    # launcher puts that one directory after ours on the companion's path.
    companion_wheels = {
        v: [n for n in resolved[Target(COMPANION_SIDE, arch, v).key]
            if n not in function.per_version[v]]
        for v in versions
    }
    ours = place(companion_wheels)
    add_wheels(ours.shared, "afterflush/lib/common")
    for v in versions:
        add_wheels(ours.per_version[v], f"afterflush/lib/python{v}")
    for package in OUR_PACKAGES:
        for path, data in source_entries(ROOT / package, f"afterflush/lib/common/{package}"):
            tree.add(path, data, package)
    tree.add(COLLECTOR_PATH, collector, f"collector/ (go build linux/{GOARCH[arch]})",
             EXECUTABLE_MODE)

    for path, data in source_entries(LAYER_SOURCE, ""):
        if path.startswith("requirements/") or path in LAYER_SOURCE_ONLY:
            continue
        tree.add(path.lstrip("/"), data, "layer/", EXECUTABLE_MODE if path in EXECUTABLES else FILE_MODE)
    for path, source in CONFIG_FILES.items():
        tree.add(path, source.read_bytes(), str(source.relative_to(ROOT)))
    missing = sorted(EXECUTABLES - tree.entries.keys())
    if missing:
        raise BuildError(f"layer/ lacks {missing}")
    check_architecture(tree, arch)
    return tree


def check_architecture(tree: Tree, arch: str) -> None:
    """Catches a wheel for the wrong machine before it reaches a function."""
    for path, entry in tree.entries.items():
        if entry.data[:4] == b"\x7fELF":
            machine = int.from_bytes(entry.data[18:20], "little")
            if machine != ELF_MACHINE[arch]:
                raise BuildError(f"{path} (from {entry.origin}) is not an {arch} binary")


def zip_timestamp() -> tuple[int, int, int, int, int, int]:
    epoch = max(int(os.environ.get("SOURCE_DATE_EPOCH", ZIP_EPOCH)), ZIP_EPOCH)
    t = time.gmtime(epoch)
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec - t.tm_sec % 2)


def write_zip(tree: Tree, destination: Path) -> None:
    """Writes the zip atomically: sorted entries, one timestamp, fixed modes."""
    stamp = zip_timestamp()
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as out:
        for path in sorted(tree.entries):
            entry = tree.entries[path]
            info = zipfile.ZipInfo(path, date_time=stamp)
            info.create_system = 3  # unix, so that the modes below are honoured
            info.external_attr = (stat.S_IFREG | entry.mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            out.writestr(info, entry.data)
    partial.replace(destination)


def unpack(archive: Path, destination: Path) -> None:
    """Extracts a layer zip keeping its file modes (zipfile.extractall drops them)."""
    with zipfile.ZipFile(archive) as source:
        for info in source.infolist():
            target = destination / info.filename
            if not target.resolve().is_relative_to(destination.resolve()):
                raise BuildError(f"{archive.name}: entry {info.filename} leaves the layer")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read(info))
            mode = (info.external_attr >> 16) & 0o777
            target.chmod(mode or FILE_MODE)


# ---------------------------------------------------------------------------- command line


class Logger:
    def __init__(self, quiet: bool) -> None:
        self._quiet = quiet

    def step(self, message: str) -> None:
        if not self._quiet:
            print(f"[layer] {message}", flush=True)


def host_arch() -> str:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return "x86_64"
    if machine in ("aarch64", "arm64"):
        return "arm64"
    raise BuildError(f"no Lambda architecture matches this machine ({machine}); use --arch")


def zip_name(arch: str) -> str:
    return f"afterflush-python-{arch}.zip"


def mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def input_files() -> list[Path]:
    """Every file besides the wheels whose bytes can change a zip, this script included."""
    files = [path for path in LAYER_SOURCE.rglob("*") if path.is_file()]
    for package in OUR_PACKAGES:
        files += [path for path in (ROOT / package).rglob("*") if path.is_file()]
    files += [*CONFIG_FILES.values(), Path(__file__).resolve()]
    return sorted(
        path for path in files
        if not skipped(PurePosixPath(path.relative_to(ROOT).as_posix()))
    )


def layer_key(
    arch: str, versions: Sequence[str], resolved: Mapping[str, Sequence[str]], collector: bytes
) -> str:
    """Names a zip by everything it is made of: the same key, the same bytes."""
    digest = hashlib.sha256()
    digest.update(json.dumps(
        {
            "arch": arch,
            "versions": list(versions),
            "layout": LAYOUT_VERSION,
            "stamp": zip_timestamp(),
            "wheels": {t.key: resolved[t.key] for t in all_targets([arch], versions)},
            "collector": hashlib.sha256(collector).hexdigest(),
        },
        sort_keys=True,
    ).encode())
    for path in input_files():
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:20]


def copy_atomically(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    shutil.copyfile(source, partial)
    partial.replace(destination)


def prune(directory: Path, keep: int) -> None:
    """Drops all but the `keep` most recently used entries."""
    entries = sorted(directory.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    for entry in entries[keep:]:
        shutil.rmtree(entry, ignore_errors=True)


def build(
    arches: Sequence[str],
    versions: Sequence[str],
    out: Path,
    cache: Path,
    *,
    log: Logger,
    reuse: bool = True,
) -> dict[str, Path]:
    """Builds one zip per architecture into `out`; returns them by architecture. A collector
    binary or a zip whose inputs did not change since it was last built comes from the cache
    (`reuse`; without it both are built again, the binary with Go's build cache)."""
    started = time.monotonic()
    go = find_go()
    cache.mkdir(parents=True, exist_ok=True)
    resolved = resolve(all_targets(arches, versions), cache, log=log)
    built = {}
    for arch in arches:
        collector = build_collector(go, arch, cache, log=log, reuse=reuse)
        stored = cache / "zips" / layer_key(arch, versions, resolved, collector) / zip_name(arch)
        if reuse and stored.exists():
            stored.parent.touch()
            how = "unchanged inputs, reused"
        else:
            tree = assemble(arch, versions, resolved, cache / "wheels", collector)
            stored.parent.mkdir(parents=True, exist_ok=True)
            write_zip(tree, stored)
            how = "built"
        destination = out / zip_name(arch)
        copy_atomically(stored, destination)
        built[arch] = destination
        with zipfile.ZipFile(destination) as archive:
            infos = archive.infolist()
        log.step(
            f"{destination.name}: {mib(destination.stat().st_size)} zipped, "
            f"{mib(sum(i.file_size for i in infos))} unzipped, {len(infos)} files ({how})"
        )
    prune(cache / "zips", keep=2 * len(ARCHITECTURES))
    prune(cache / "collector", keep=2 * len(ARCHITECTURES))
    log.step(f"done in {time.monotonic() - started:.1f}s")
    return built


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="build_layer.py", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--arch", default="all", choices=["all", "host", *ARCHITECTURES],
        help="architectures to build (default: all)",
    )
    parser.add_argument(
        "--python", default=",".join(PYTHON_VERSIONS),
        help="comma-separated Python versions (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where the zips go")
    parser.add_argument(
        "--cache", type=Path, default=ROOT / ".layer-build",
        help="wheel, collector and zip cache (git-ignored)",
    )
    parser.add_argument("--unpack", type=Path, help="also unpack the (single) zip here")
    parser.add_argument(
        "--rebuild", action="store_true",
        help="build the collector and the zips even when ones of the same inputs are cached",
    )
    parser.add_argument("--lock", action="store_true", help="re-pin the constraints file")
    parser.add_argument("--quiet", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    log = Logger(args.quiet)
    try:
        if args.lock:
            args.cache.mkdir(parents=True, exist_ok=True)
            lock(args.cache, log=log)
            return 0
        arches = list(ARCHITECTURES) if args.arch == "all" else [
            host_arch() if args.arch == "host" else args.arch
        ]
        versions = [v.strip() for v in args.python.split(",") if v.strip()]
        unknown = [v for v in versions if v not in PYTHON_VERSIONS]
        if unknown or not versions:
            raise BuildError(f"--python: choose from {', '.join(PYTHON_VERSIONS)}")
        built = build(arches, versions, args.out, args.cache, log=log, reuse=not args.rebuild)
        if args.unpack is not None:
            if len(built) != 1:
                raise BuildError("--unpack needs a single --arch")
            if args.unpack.exists():
                shutil.rmtree(args.unpack)
            unpack(next(iter(built.values())), args.unpack)
            log.step(f"unpacked into {args.unpack}")
    except BuildError as exc:
        print(f"[layer] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
