"""The layer zips `make layer` builds: Lambda's layout with working file modes, the collector
as a static binary for the zip's architecture, compiled packages for every Python version and
the zip's architecture, nothing that does not belong, our packages off the function's import
path, and the same bytes from the same inputs.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from scripts import build_layer
from tests.fixtures.layer import REPO, build_zips, host_arch, zip_modes, zip_names

VERSIONS = build_layer.PYTHON_VERSIONS
MACHINES = {"x86_64": "x86_64", "arm64": "aarch64"}
ELF_MACHINE = {"x86_64": 62, "arm64": 183}
COLLECTOR = "afterflush/bin/afterflush-collector"
# Compiled packages, where each one must be for every Python version (grpc is the companion's
# too: stored once, on the function side).
FUNCTION_COMPILED = ("wrapt", "charset_normalizer", "grpc")
# What the companion ships beside itself in afterflush/lib/common: protobuf (google/) and
# grpcio's typing_extensions.
COMPANION_COMMON = {"companion", "google", "typing_extensions.py"}
COMPANION_DISTRIBUTIONS = {"protobuf", "typing_extensions"}
ET_EXEC = 2
PT_INTERP = 3


def elf_header(data: bytes) -> dict[str, int]:
    """The fields of a 64-bit little-endian ELF header this test looks at, and whether any
    program header is PT_INTERP (a dynamic loader: the binary is not static)."""
    phoff = int.from_bytes(data[32:40], "little")
    entsize = int.from_bytes(data[54:56], "little")
    count = int.from_bytes(data[56:58], "little")
    types = [int.from_bytes(data[phoff + i * entsize: phoff + i * entsize + 4], "little")
             for i in range(count)]
    return {
        "class": data[4], "data": data[5],
        "type": int.from_bytes(data[16:18], "little"),
        "machine": int.from_bytes(data[18:20], "little"),
        "segments": count, "interp": int(PT_INTERP in types),
    }


@pytest.fixture(scope="module")
def zips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_zips(tmp_path_factory.mktemp("layer-zips"), build_layer.ARCHITECTURES)


def test_both_architectures_are_built_under_their_lambda_names(zips):
    assert {arch: path.name for arch, path in zips.items()} == {
        "x86_64": "afterflush-python-x86_64.zip",
        "arm64": "afterflush-python-arm64.zip",
    }


@pytest.mark.parametrize("arch", build_layer.ARCHITECTURES)
def test_layer_has_lambdas_layout_and_only_the_entry_points_are_executable(zips, arch):
    modes = zip_modes(zips[arch])
    # Given the paths Lambda and the ADOT layer's users rely on
    for path in (
        "extensions/afterflush", "otel-instrument", "otel-handler",
        "collector-config/config.yaml", "collector-config/honeycomb.yaml",
        "python/otel_wrapper.py", "python/afterflush_instrument.py",
        "afterflush/launch.py", "afterflush/lib/common/companion/__main__.py", COLLECTOR,
    ):
        assert path in modes, path
    # Then the three entry points and the collector are 0755 and every other file is 0644
    executables = {path for path, mode in modes.items() if mode == 0o755}
    assert executables == {"extensions/afterflush", "otel-instrument", "otel-handler", COLLECTOR}
    assert {mode for path, mode in modes.items() if path not in executables} == {0o644}


@pytest.mark.parametrize("arch", build_layer.ARCHITECTURES)
def test_every_entry_has_the_same_fixed_timestamp_and_entries_are_sorted(zips, arch):
    with zipfile.ZipFile(zips[arch]) as archive:
        infos = archive.infolist()
    assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert [info.filename for info in infos] == sorted(info.filename for info in infos)


def test_shipped_collector_config_is_the_repositorys(zips):
    with zipfile.ZipFile(zips[host_arch()]) as archive:
        assert archive.read("collector-config/config.yaml") == (
            REPO / "config" / "collector.yaml"
        ).read_bytes()
        assert archive.read("collector-config/honeycomb.yaml") == (
            REPO / "config" / "examples" / "honeycomb.yaml"
        ).read_bytes()


@pytest.mark.parametrize("arch", build_layer.ARCHITECTURES)
def test_afterflush_holds_the_collector_binary_the_launcher_and_the_companions_packages_only(
    zips, arch
):
    names = zip_names(zips[arch])
    ours = [PurePosixPath(n).parts[1:] for n in names if n.startswith("afterflush/")]
    # Given what the layer keeps off the function's path: the collector binary, the launcher,
    # and one directory of pure-Python packages (the companion has no compiled one of its own,
    # so there is no afterflush/lib/python3.X)
    assert {parts[0] for parts in ours} == {"bin", "launch.py", "lib"}
    assert [parts for parts in ours if parts[0] == "bin"] == [("bin", "afterflush-collector")]
    assert {parts[1] for parts in ours if parts[0] == "lib"} == {"common"}
    # Then afterflush/lib/common is the companion, protobuf and typing_extensions: nothing of
    # the Python collector (aiohttp, PyYAML, opentelemetry-proto and their dependencies)
    common = {parts[2] for parts in ours if parts[:2] == ("lib", "common")}
    assert {n for n in common if not n.endswith(".dist-info")} == COMPANION_COMMON
    assert {n.split("-", 1)[0].lower() for n in common if n.endswith(".dist-info")} == (
        COMPANION_DISTRIBUTIONS
    )


@pytest.mark.parametrize("arch", build_layer.ARCHITECTURES)
def test_the_collector_is_a_static_executable_for_the_zips_architecture(zips, arch):
    with zipfile.ZipFile(zips[arch]) as archive:
        info = archive.getinfo(COLLECTOR)
        data = archive.read(info)
    # A 64-bit little-endian executable for the zip's machine, with program headers and none
    # naming a dynamic loader: it runs on any Lambda OS, whatever its libc
    assert data[:4] == b"\x7fELF"
    header = elf_header(data)
    assert header.pop("segments") > 0
    assert header == {"class": 2, "data": 1, "type": ET_EXEC, "machine": ELF_MACHINE[arch],
                      "interp": 0}
    assert (info.external_attr >> 16) & 0o777 == 0o755


def test_the_hosts_collector_runs_and_reports_the_projects_version(zips, tmp_path):
    # Given the collector from the host's zip, unpacked with its mode
    opt = tmp_path / "opt"
    build_layer.unpack(zips[host_arch()], opt)
    # When it is asked for its version
    done = subprocess.run(
        [str(opt / COLLECTOR), "--version"], capture_output=True, text=True, timeout=30,
        env={"PATH": os.defpath},
    )
    # Then it is the build of this project's version (go build -X main.version)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["afterflush-collector", "version", build_layer.project_version()]


@pytest.mark.parametrize("arch", build_layer.ARCHITECTURES)
def test_no_python_collector_and_no_go_sources_in_the_zip(zips, arch):
    names = zip_names(zips[arch])
    roots = ["python/", "afterflush/lib/common/"] + [
        f"python/lib/python{v}/site-packages/" for v in VERSIONS
    ]
    # No importable `collector` package under any of the layer's import roots
    assert [n for n in names for root in roots
            if n.startswith(root) and n[len(root):].split("/", 1)[0] == "collector"] == []
    assert [n for n in names if n.split("/", 1)[0] == "collector"] == []
    # Nor the Go sources the binary was built from
    assert [n for n in names if n.endswith(".go") or n.rsplit("/", 1)[-1] in ("go.mod", "go.sum")] == []


@pytest.mark.parametrize("arch", build_layer.ARCHITECTURES)
def test_compiled_packages_are_there_for_every_python_version_and_the_zips_architecture(zips, arch):
    names = zip_names(zips[arch])
    machine = MACHINES[arch]
    for version in VERSIONS:
        tag = f"cpython-{version.replace('.', '')}-{machine}-linux-gnu.so"
        function_dir = f"python/lib/python{version}/site-packages"
        for package in FUNCTION_COMPILED:
            assert any(n.startswith(f"{function_dir}/{package}/") and n.endswith(tag) for n in names), (
                f"{package} for {version} on {arch}"
            )
    # And no version-specific extension module sits where every version would load it
    shared = [n for n in names if n.startswith(("python/", "afterflush/lib/common/"))
              and not n.startswith("python/lib/") and re.search(r"\.cpython-3\d+-", n)]
    assert shared == []


@pytest.mark.parametrize("arch", build_layer.ARCHITECTURES)
def test_every_binary_is_for_the_zips_architecture(zips, arch):
    with zipfile.ZipFile(zips[arch]) as archive:
        machines = {
            info.filename: int.from_bytes(data[18:20], "little")
            for info in archive.infolist()
            for data in [archive.read(info)]
            if data[:4] == b"\x7fELF"
        }
    # Every ELF file (extension modules and the collector) is for the zip's machine
    assert COLLECTOR in machines
    assert any(name.endswith(".so") for name in machines)
    assert set(machines.values()) == {ELF_MACHINE[arch]}


@pytest.mark.parametrize("arch", build_layer.ARCHITECTURES)
def test_no_bytecode_tests_or_install_records_in_the_zip(zips, arch):
    names = zip_names(zips[arch])
    assert [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))] == []
    assert [n for n in names if re.search(r"/tests?/|/conftest\.py$", n)] == []
    # A test_*.py that stays is not a test module (semconv's test_attributes names the
    # `test.*` attributes)
    with zipfile.ZipFile(zips[arch]) as archive:
        test_named = [n for n in names if re.search(r"/test_[^/]*\.py$|_test\.py$", n)]
        assert [n for n in test_named
                if re.search(rb"^\s*(import|from)\s+(unittest|pytest)\b", archive.read(n), re.M)] == []
    assert "python/opentelemetry/semconv/_incubating/attributes/test_attributes.py" in names
    assert [n for n in names if re.search(r"\.dist-info/(RECORD|INSTALLER|REQUESTED|direct_url\.json)$", n)] == []
    # The repository's own tests, requirements and build files stay out too
    assert [n for n in names
            if n.startswith(("requirements/", "tests/", "scripts/")) or n == "README.md"] == []


@pytest.mark.parametrize("arch", build_layer.ARCHITECTURES)
def test_our_packages_and_their_dependencies_are_off_the_functions_import_path(zips, arch):
    names = zip_names(zips[arch])
    function_path = ["python/"] + [f"python/lib/python{v}/site-packages/" for v in VERSIONS]

    def top_level(prefix: str) -> set[str]:
        return {n[len(prefix):].split("/", 1)[0] for n in names
                if n.startswith(prefix) and "/" in n[len(prefix):]}

    visible = set().union(*(top_level(p) for p in function_path))
    assert {"companion", "afterflush", "bin"} & visible == set()
    assert "companion" in top_level("afterflush/lib/common/")
    # And the function side has what the ADOT layer gives: SDK, exporters, distro,
    # instrumentations and the X-Ray propagator
    for module in (
        "opentelemetry/sdk/__init__.pyi", "opentelemetry/exporter/otlp/proto/http/__init__.py",
        "opentelemetry/exporter/otlp/proto/grpc/__init__.py", "opentelemetry/distro/__init__.py",
        "opentelemetry/instrumentation/aws_lambda/__init__.py",
        "opentelemetry/instrumentation/botocore/__init__.py",
        "opentelemetry/propagators/aws/__init__.py",
    ):
        assert f"python/{module}" in names, module


def test_same_inputs_give_the_same_zip(zips, tmp_path):
    # When the host's layer is built again from the same inputs, the collector included (go
    # build again, its compiled packages from Go's build cache; neither taken from our cache)
    arch = host_arch()
    again = build_zips(tmp_path, [arch], reuse=False)[arch]
    # Then the bytes are the same
    assert hashlib.sha256(again.read_bytes()).hexdigest() == hashlib.sha256(
        zips[arch].read_bytes()
    ).hexdigest()


# --- the collector build, without building it -------------------------------------------


def test_the_collector_cache_key_covers_the_go_sources_only(tmp_path, monkeypatch):
    # Given a collector tree with sources, tests, testdata and the old Python files
    source = tmp_path / "collector"
    for name in ("main.go", "go.mod", "go.sum", "flushcontrol/spool.go", "main_test.go",
                 "flushcontrol/spool_test.go", "testdata/fixture.go", "flushcontrol/testdata/x.go",
                 "__main__.py", "exporters/otlp.py", "testdata/config.yaml"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(name)
    monkeypatch.setattr(build_layer, "COLLECTOR_SOURCE", source)
    # Then the build's inputs are the Go sources, go.mod and go.sum
    assert [p.relative_to(source).as_posix() for p in build_layer.collector_sources()] == [
        "flushcontrol/spool.go", "go.mod", "go.sum", "main.go",
    ]
    go = build_layer.Go(version="go1.26.0", proxy="https://proxy.golang.org")
    key = build_layer.collector_key(go, "x86_64")
    # And the key changes with a source, the target and the toolchain, not with a test
    (source / "main_test.go").write_text("changed")
    (source / "exporters" / "otlp.py").write_text("changed")
    assert build_layer.collector_key(go, "x86_64") == key
    assert build_layer.collector_key(go, "arm64") != key
    assert build_layer.collector_key(build_layer.Go("go1.26.1", go.proxy), "x86_64") != key
    (source / "go.sum").write_text("changed")
    assert build_layer.collector_key(go, "x86_64") != key


@pytest.mark.parametrize(
    ("goproxy", "first"),
    [
        ("https://proxy.golang.org,direct", "https://proxy.golang.org"),
        ("https://a.example|https://b.example,direct", "https://a.example"),
        ("off", "off"),
        ("", build_layer.DEFAULT_GOPROXY),
    ],
)
def test_the_build_uses_the_first_module_proxy_alone(goproxy, first):
    assert build_layer.first_proxy(goproxy) == first


def test_the_go_build_is_a_static_cross_build_unaffected_by_the_callers_go_settings(monkeypatch):
    monkeypatch.setenv("GOFLAGS", "-race")
    monkeypatch.setenv("GOAMD64", "v3")
    monkeypatch.setenv("CGO_ENABLED", "1")
    env = build_layer.go_environment("arm64", "https://proxy.golang.org")
    assert {k: env.get(k) for k in ("CGO_ENABLED", "GOOS", "GOARCH", "GOARM64", "GOAMD64",
                                    "GOFLAGS", "GOPROXY", "GOWORK")} == {
        "CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": "arm64", "GOARM64": "v8.0",
        "GOAMD64": None, "GOFLAGS": None, "GOPROXY": "https://proxy.golang.org", "GOWORK": "off",
    }
    command = build_layer.go_build_command("out")
    assert command[:4] == ["go", "build", "-trimpath", "-buildvcs=false"]
    assert command[command.index("-ldflags") + 1] == (
        f"-s -w -buildid= -X main.version={build_layer.project_version()}"
    )


@pytest.mark.parametrize(
    ("stderr", "line"),
    [
        # A module the proxy does not serve (with the proxy alone, no fallback to direct)
        ("go: downloading example.com/gone v0.0.1\n"
         "main.go:3:8: example.com/gone@v0.0.1: reading https://proxy.golang.org/example.com/"
         "gone/@v/v0.0.1.zip: 404 Not Found\n\tserver response: not found\n",
         "main.go:3:8: example.com/gone@v0.0.1: reading https://proxy.golang.org/example.com/"
         "gone/@v/v0.0.1.zip: 404 Not Found"),
        ("# github.com/afterflush/afterflush/collector/flushcontrol\n"
         "flushcontrol/hub.go:12:3: undefined: spool\n",
         "flushcontrol/hub.go:12:3: undefined: spool"),
    ],
    ids=["missing-module", "compile-error"],
)
def test_a_failed_go_build_is_reported_by_the_line_that_says_why(stderr, line):
    assert build_layer.go_error(stderr) == line


def fake_tools(directory: Path, go_version: str | None) -> str:
    """A PATH with the tools scripts/check_go.sh uses, and a `go` that reports `go_version`
    (none when it is None)."""
    directory.mkdir()
    for tool in ("bash", "sed", "sort", "head"):
        found = shutil.which(tool)
        assert found is not None, tool
        (directory / tool).symlink_to(found)
    if go_version is not None:
        go = directory / "go"
        go.write_text(f"#!/bin/sh\necho {go_version}\n")
        go.chmod(0o755)
    return str(directory)


@pytest.mark.parametrize(
    ("go_version", "message"),
    [
        (None, "[layer] error: Go 1.26 or newer is needed to build the collector: install it "
               "(https://go.dev/doc/install, or your package manager's golang package) and put "
               "'go' on PATH"),
        ("go1.25.4", "[layer] error: Go 1.26 or newer is needed to build the collector; 'go' on "
                     "PATH is 1.25.4: install a newer Go"),
    ],
    ids=["missing", "too-old"],
)
def test_without_go_1_26_the_build_says_what_to_install_in_one_line(
    tmp_path, go_version, message
):
    # Given a PATH whose `go` is missing or too old
    path = fake_tools(tmp_path / "bin", go_version)
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_layer.py"), "--arch", "host",
         "--out", str(tmp_path / "dist"), "--cache", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=60, env={"PATH": path, "HOME": str(tmp_path)},
    )
    # Then the build stops before anything else, with one line
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines() == [message]
    assert not (tmp_path / "dist").exists()
