"""The layer zips `make layer` builds: Lambda's layout with working file modes, compiled
packages for every Python version and the zip's architecture, nothing that does not belong,
our packages off the function's import path, and the same bytes from the same inputs.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

import pytest

from scripts import build_layer
from tests.fixtures.layer import REPO, build_zips, host_arch, zip_modes, zip_names

VERSIONS = build_layer.PYTHON_VERSIONS
MACHINES = {"x86_64": "x86_64", "arm64": "aarch64"}
ELF_MACHINE = {"x86_64": 62, "arm64": 183}
# Compiled packages, where each one must be for every Python version.
FUNCTION_COMPILED = ("wrapt", "charset_normalizer", "grpc")
OURS_COMPILED = ("aiohttp", "yaml", "multidict", "yarl", "frozenlist", "propcache")


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
        "afterflush/launch.py", "afterflush/lib/common/companion/__main__.py",
        "afterflush/lib/common/collector/__main__.py",
    ):
        assert path in modes, path
    # Then the three entry points are 0755 and every other file is 0644
    executables = {path for path, mode in modes.items() if mode == 0o755}
    assert executables == {"extensions/afterflush", "otel-instrument", "otel-handler"}
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
def test_compiled_packages_are_there_for_every_python_version_and_the_zips_architecture(zips, arch):
    names = zip_names(zips[arch])
    machine = MACHINES[arch]
    for version in VERSIONS:
        tag = f"cpython-{version.replace('.', '')}-{machine}-linux-gnu.so"
        function_dir = f"python/lib/python{version}/site-packages"
        ours_dir = f"afterflush/lib/python{version}"
        for package in FUNCTION_COMPILED:
            assert any(n.startswith(f"{function_dir}/{package}/") and n.endswith(tag) for n in names), (
                f"{package} for {version} on {arch}"
            )
        for package in OURS_COMPILED:
            assert any(n.startswith(f"{ours_dir}/{package}/") and n.endswith(tag) for n in names), (
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
            int.from_bytes(data[18:20], "little")
            for info in archive.infolist()
            if info.filename.endswith(".so")
            for data in [archive.read(info)]
        }
    assert machines == {ELF_MACHINE[arch]}


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
    assert {"collector", "companion", "aiohttp", "yaml", "multidict", "yarl"} & visible == set()
    assert {"collector", "companion"} <= top_level("afterflush/lib/common/")
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
    # When the host's layer is built again from the same inputs (not taken from the cache)
    arch = host_arch()
    again = build_zips(tmp_path, [arch], reuse=False)[arch]
    # Then the bytes are the same
    assert hashlib.sha256(again.read_bytes()).hexdigest() == hashlib.sha256(
        zips[arch].read_bytes()
    ).hexdigest()
