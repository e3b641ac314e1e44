"""The layer's shell entry points, run as Lambda runs them: the extension launcher
(extensions/afterflush, which starts the companion through afterflush/launch.py) and the exec
wrappers otel-instrument and otel-handler. The companion here is a probe that reports what it
was started with.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.layer import REPO

LAYER = REPO / "layer"
VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
PROBE_COMPANION = """\
import json, os, sys
names = ("PYTHONPATH", "PYTHONSAFEPATH", "PYTHONNOUSERSITE", "PYTHONWARNINGS",
         "OPENTELEMETRY_COLLECTOR_CONFIG_URI", "OPENTELEMETRY_COLLECTOR_CONFIG_FILE")
print(json.dumps({
    "argv": sys.argv[1:],
    "path": sys.path,
    "env": {n: os.environ[n] for n in names if n in os.environ},
    "isolated": sys.flags.isolated,
}))
"""
TIMEOUT_S = 30


def make_layer(
    root: Path,
    versions: tuple[str, ...] = (VERSION,),
    name: str = "afterflush",
    *,
    own_compiled: bool = False,
) -> Path:
    """A layer directory with the real launcher and launch.py, and a probe companion. As in
    the built layer, the compiled packages for each Python version are the function side's
    (python/lib/python3.X/site-packages, grpcio among them); `own_compiled` adds the directory
    the companion's own would have (afterflush/lib/python3.X)."""
    (root / "extensions").mkdir(parents=True)
    shutil.copy2(LAYER / "extensions" / "afterflush", root / "extensions" / name)
    (root / "afterflush").mkdir()
    shutil.copy2(LAYER / "afterflush" / "launch.py", root / "afterflush" / "launch.py")
    companion = root / "afterflush" / "lib" / "common" / "companion"
    companion.mkdir(parents=True)
    (companion / "__init__.py").write_text("")
    (companion / "__main__.py").write_text(PROBE_COMPANION)
    for version in versions:
        (root / "python" / "lib" / f"python{version}" / "site-packages").mkdir(parents=True)
        if own_compiled:
            (root / "afterflush" / "lib" / f"python{version}").mkdir(parents=True)
    return root


@pytest.fixture
def python_dir(tmp_path: Path) -> Path:
    """A directory whose only `python3` is this interpreter."""
    directory = tmp_path / "bin"
    directory.mkdir()
    (directory / "python3").symlink_to(sys.executable)
    return directory


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def base_env(python_dir: Path | None, **extra: str) -> dict[str, str]:
    path = f"{python_dir}:/usr/bin:/bin" if python_dir else "/nonexistent"
    return {"PATH": path, "HOME": "/tmp", **extra}


# --- extensions/afterflush ---------------------------------------------------------------


def test_launcher_runs_the_companion_with_the_layers_packages_and_nothing_of_the_functions(
    tmp_path, python_dir
):
    layer = make_layer(tmp_path / "layer")
    # Given a function environment with its own Python settings
    env = base_env(python_dir, PYTHONPATH="/var/task/vendor", PYTHONWARNINGS="error")
    # When Lambda starts the extension
    done = run([str(layer / "extensions" / "afterflush")], env)
    assert done.returncode == 0, done.stderr
    probe = json.loads(done.stdout)
    # Then the companion runs isolated, under the extension's file name
    assert probe["argv"] == ["--name", "afterflush"]
    assert probe["isolated"] == 1
    ours = [
        str(layer / "afterflush" / "lib" / "common"),
        str(layer / "python" / "lib" / f"python{VERSION}" / "site-packages"),
    ]
    # With the layer's directories first on its path and the function's nowhere
    assert probe["path"][:2] == ours
    assert not [p for p in probe["path"] if p.startswith("/var/task")]
    # And the collector it starts (a Go binary: PYTHON* settings mean nothing to it) inherits
    # the function's environment, with the layer's config as the default
    assert probe["env"] == {
        "PYTHONPATH": "/var/task/vendor",
        "PYTHONWARNINGS": "error",
        "OPENTELEMETRY_COLLECTOR_CONFIG_URI": str(layer / "collector-config" / "config.yaml"),
    }


def test_the_companions_own_compiled_packages_come_first_when_the_layer_has_them(
    tmp_path, python_dir
):
    layer = make_layer(tmp_path / "layer", own_compiled=True)
    done = run([str(layer / "extensions" / "afterflush")], base_env(python_dir))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["path"][:3] == [
        str(layer / "afterflush" / "lib" / f"python{VERSION}"),
        str(layer / "afterflush" / "lib" / "common"),
        str(layer / "python" / "lib" / f"python{VERSION}" / "site-packages"),
    ]


def test_launcher_leaves_a_config_location_the_function_chose(tmp_path, python_dir):
    layer = make_layer(tmp_path / "layer")
    env = base_env(python_dir, OPENTELEMETRY_COLLECTOR_CONFIG_FILE="/var/task/collector.yaml")
    done = run([str(layer / "extensions" / "afterflush")], env)
    assert done.returncode == 0, done.stderr
    probe_env = json.loads(done.stdout)["env"]
    assert probe_env["OPENTELEMETRY_COLLECTOR_CONFIG_FILE"] == "/var/task/collector.yaml"
    assert "OPENTELEMETRY_COLLECTOR_CONFIG_URI" not in probe_env


def test_extension_registers_under_the_launchers_file_name(tmp_path, python_dir):
    layer = make_layer(tmp_path / "layer", name="telemetry-after")
    done = run([str(layer / "extensions" / "telemetry-after")], base_env(python_dir))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["argv"] == ["--name", "telemetry-after"]


@pytest.mark.skipif(
    Path("/var/lang/bin/python3").exists(), reason="this machine has Lambda's Python in /var/lang"
)
def test_launcher_without_any_python_says_so_in_one_line_and_exits_cleanly(tmp_path):
    layer = make_layer(tmp_path / "layer")
    done = run([str(layer / "extensions" / "afterflush")], base_env(None))
    assert (done.returncode, done.stdout) == (0, "")
    assert done.stderr.splitlines() == [
        "[afterflush] no Python found (/var/lang/bin/python3 or python3 on PATH); the "
        "afterflush extension needs a Python 3.11-3.14 runtime and is not running"
    ]


def test_launcher_names_the_versions_it_has_when_the_interpreter_is_another(tmp_path, python_dir):
    # Given a layer built for two other Python versions
    layer = make_layer(tmp_path / "layer", versions=("3.98", "3.99"))
    done = run([str(layer / "extensions" / "afterflush")], base_env(python_dir))
    # Then one line says so, the companion does not start, and the exit is clean
    assert (done.returncode, done.stdout) == (0, "")
    assert done.stderr.splitlines() == [
        f"[afterflush] this layer has no packages for Python {VERSION} (it has 3.98, 3.99); "
        "the afterflush extension is not running"
    ]


# --- otel-instrument and otel-handler ----------------------------------------------------

LAMBDA_ENV = {
    "AWS_LAMBDA_FUNCTION_NAME": "orders",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/27/[$LATEST]abc",
    "AWS_REGION": "eu-west-1",
    "AWS_EXECUTION_ENV": f"AWS_Lambda_python{VERSION}",
    "_HANDLER": "app.handler",
}
LAMBDA_ATTRIBUTES = (
    "cloud.provider=aws,cloud.platform=aws_lambda,cloud.region=eu-west-1,faas.name=orders,"
    "faas.version=$LATEST,faas.instance=2026/11/27/[$LATEST]abc"
)


def wrapped_env(wrapper: Path, **extra: str) -> dict[str, str]:
    """The environment the runtime command gets from `wrapper`."""
    env = {"PATH": "/usr/bin:/bin", **LAMBDA_ENV, **extra}
    done = run([str(wrapper), "/usr/bin/env", "-0"], env)
    assert done.returncode == 0, done.stderr
    pairs = [item.split("=", 1) for item in done.stdout.split("\0") if item]
    return {key: value for key, value in pairs}


def test_otel_instrument_sets_the_adot_defaults_and_points_lambda_at_the_wrapper():
    env = wrapped_env(LAYER / "otel-instrument")
    assert {k: v for k, v in env.items() if k.startswith("OTEL_")} == {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "orders",
        "OTEL_PROPAGATORS": "tracecontext,baggage,xray",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",
        "OTEL_RESOURCE_ATTRIBUTES": LAMBDA_ATTRIBUTES,
    }
    assert (env["_HANDLER"], env["ORIG_HANDLER"]) == ("otel_wrapper.lambda_handler", "app.handler")


def test_the_functions_own_settings_win_over_every_default():
    env = wrapped_env(
        LAYER / "otel-instrument",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_SERVICE_NAME="checkout",
        OTEL_PROPAGATORS="tracecontext",
        OTEL_TRACES_EXPORTER="console",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED="false",
        OTEL_RESOURCE_ATTRIBUTES="team=payments,faas.name=checkout-fn",
    )
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert env["OTEL_SERVICE_NAME"] == "checkout"
    assert env["OTEL_PROPAGATORS"] == "tracecontext"
    assert (env["OTEL_TRACES_EXPORTER"], env["OTEL_METRICS_EXPORTER"], env["OTEL_LOGS_EXPORTER"]) == (
        "console", "none", "none"
    )
    assert env["OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED"] == "false"
    # Ours first: in OTEL_RESOURCE_ATTRIBUTES a later key wins
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == f"{LAMBDA_ATTRIBUTES},team=payments,faas.name=checkout-fn"


def test_otel_handler_is_the_same_wrapper():
    assert wrapped_env(LAYER / "otel-handler") == wrapped_env(LAYER / "otel-instrument")


@pytest.mark.parametrize(
    ("command", "started"),
    [
        # A runtime that takes the handler as an argument (awslambdaric, the emulator)
        (["python3", "-m", "awslambdaric", "app.handler"],
         ["python3", "-m", "awslambdaric", "otel_wrapper.lambda_handler"]),
        # Lambda's own bootstrap reads _HANDLER: its command is left as it is
        (["/var/lang/bin/python3.12", "/var/runtime/bootstrap.py"],
         ["/var/lang/bin/python3.12", "/var/runtime/bootstrap.py"]),
    ],
    ids=["handler-argument", "lambda-bootstrap"],
)
def test_the_runtime_command_starts_with_the_wrapper_as_its_handler(command, started):
    env = {"PATH": "/usr/bin:/bin", **LAMBDA_ENV}
    done = run([str(LAYER / "otel-instrument"), "/usr/bin/printf", r"%s\n", *command], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == started


def test_a_layer_outside_opt_puts_its_python_directories_after_the_functions_once(tmp_path):
    # Given the layer unpacked somewhere other than /opt
    layer = tmp_path / "layer"
    site = layer / "python" / "lib" / f"python{VERSION}" / "site-packages"
    site.mkdir(parents=True)
    shutil.copy2(LAYER / "otel-instrument", layer / "otel-instrument")
    # When the wrapper runs twice over (a wrapper of a wrapper)
    env = {"PATH": "/usr/bin:/bin", **LAMBDA_ENV, "PYTHONPATH": "/var/task/vendor"}
    wrapper = str(layer / "otel-instrument")
    done = run([wrapper, wrapper, "/usr/bin/printenv", "PYTHONPATH"], env)
    assert done.returncode == 0, done.stderr
    # Then the function's path comes first and the layer's directories appear once each
    assert done.stdout.strip() == f"/var/task/vendor:{site}:{layer / 'python'}"


def test_the_wrapper_is_not_wrapped_twice():
    env = {"PATH": "/usr/bin:/bin", **LAMBDA_ENV}
    wrapper = str(LAYER / "otel-instrument")
    done = run([wrapper, wrapper, "/usr/bin/printenv", "_HANDLER", "ORIG_HANDLER"], env)
    assert done.stdout.splitlines() == ["otel_wrapper.lambda_handler", "app.handler"]
