"""The function side of the layer (python/): the SDK set up from the OTEL_* variables by
otel_wrapper, the instrumentations named by AFTERFLUSH_INSTRUMENTATIONS, every signal flushed
before the handler returns to Lambda, and a broken setting that costs telemetry, not the function.

The sample function runs in a bare interpreter whose path holds only the unpacked layer's
python directories, with the SDK's console exporters so that what was flushed can be read
from its output.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.fixtures.layer import (
    EXAMPLE_FUNCTION,
    PYTHON_VERSION,
    REPO,
    LambdaRuntime,
    build_zips,
    host_arch,
    lambda_runtime,
    unpack,
)

MARKER = "=== handler returned to Lambda ==="
# Calls the handler Lambda would call, then leaves without the SDK's exit-time flush, so only
# what the end-of-invocation flush sent shows up before the marker.
DRIVER = f"""\
import json, os, sys

class Context:
    function_name = "orders"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:orders"
    memory_limit_in_mb = 128
    aws_request_id = "req-1"
    log_group_name = "/aws/lambda/orders"
    log_stream_name = "stream"
    def get_remaining_time_in_millis(self):
        return 3000

import otel_wrapper
result = otel_wrapper.lambda_handler(json.loads(sys.argv[1]), Context())
print({MARKER!r})
print(json.dumps(result))
sys.stdout.flush()
os._exit(0)
"""
CONSOLE = {
    "OTEL_TRACES_EXPORTER": "console",
    "OTEL_METRICS_EXPORTER": "console",
    "OTEL_LOGS_EXPORTER": "console",
}
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    arch = host_arch()
    zips = build_zips(tmp_path_factory.mktemp("zip"), [arch])
    return unpack(zips[arch], tmp_path_factory.mktemp("opt"))


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> LambdaRuntime:
    return lambda_runtime(tmp_path_factory.mktemp("runtime"))


def invoke(layer: Path, runtime: LambdaRuntime, tmp_path: Path, event: dict[str, object],
           **env: str) -> tuple[str, dict[str, object], str]:
    """Runs the sample function's handler once through otel_wrapper; returns what was printed
    before the handler returned, its result, and stderr."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    path = [
        str(EXAMPLE_FUNCTION),
        str(layer / "python" / "lib" / f"python{PYTHON_VERSION}" / "site-packages"),
        str(layer / "python"),
    ]
    environment = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": ":".join(path),
        "AWS_LAMBDA_FUNCTION_NAME": "orders",
        "ORIG_HANDLER": "app.handler",
        "_HANDLER": "otel_wrapper.lambda_handler",
        "OTEL_SERVICE_NAME": "orders",
        "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",
        **CONSOLE,
        **env,
    }
    done = subprocess.run(
        [str(runtime.python), str(driver), json.dumps(event)], env=environment,
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    before, _, after = done.stdout.partition(MARKER + "\n")
    return before, json.loads(after), done.stderr


def span_names(output: str) -> list[str]:
    return sorted(
        line.split('"name": ', 1)[1].strip().strip('",')
        for line in output.splitlines()
        if line.startswith('    "name": ')
    )


def test_every_signal_is_flushed_before_the_handler_returns_to_lambda(layer, runtime, tmp_path):
    before, result, stderr = invoke(layer, runtime, tmp_path, {"items": 2})
    assert result["produced"] == {"traces": 4, "metrics": 1, "logs": 1}
    # Then the invocation's span (the aws-lambda instrumentation's), the handler's span and its
    # two item spans were exported before the handler returned
    assert span_names(before) == ["handle-order", "orders", "process-item", "process-item"]
    # And the metric point and the log record too
    assert '"name": "orders.items"' in before
    assert '"body": "handled an order of 2 items"' in before
    # And setup said nothing
    assert stderr == ""


def test_with_no_instrumentation_the_wrapper_flushes_every_signal_itself(layer, runtime, tmp_path):
    before, _, stderr = invoke(
        layer, runtime, tmp_path, {"items": 1}, AFTERFLUSH_INSTRUMENTATIONS="none"
    )
    # No invocation span without the aws-lambda instrumentation, but nothing waits either
    assert span_names(before) == ["handle-order", "process-item"]
    assert '"name": "orders.items"' in before
    assert '"body": "handled an order of 1 items"' in before
    assert stderr == ""


def test_resource_carries_the_service_name_and_the_lambda_attributes(layer, runtime, tmp_path):
    before, _, _ = invoke(
        layer, runtime, tmp_path, {"items": 1},
        OTEL_RESOURCE_ATTRIBUTES="cloud.provider=aws,faas.name=orders",
    )
    assert '"service.name": "orders"' in before
    assert '"cloud.provider": "aws"' in before
    assert '"faas.name": "orders"' in before


def test_a_broken_sdk_setting_costs_telemetry_not_the_function(layer, runtime, tmp_path):
    before, result, stderr = invoke(
        layer, runtime, tmp_path, {"items": 1},
        OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_PROTOCOL="carrier-pigeon",
    )
    # Then the function answered as usual
    assert result["produced"] == {"traces": 3, "metrics": 1, "logs": 1}
    assert span_names(before) == []
    # And one line said why there is no telemetry
    assert stderr.splitlines() == [
        "[afterflush] WARNING OpenTelemetry SDK setup failed, telemetry is off: "
        "RuntimeError: Unsupported OTLP protocol 'carrier-pigeon' is configured"
    ]


def test_an_instrumentation_that_is_not_installed_is_one_warning(layer, runtime, tmp_path):
    before, _, stderr = invoke(
        layer, runtime, tmp_path, {"items": 1}, AFTERFLUSH_INSTRUMENTATIONS="aws_lambda,flask"
    )
    assert stderr.splitlines() == [
        '[afterflush] WARNING AFTERFLUSH_INSTRUMENTATIONS: no instrumentation named "flask" is installed'
    ]
    assert span_names(before) == ["handle-order", "orders", "process-item"]


# --- settings, read without starting anything ---------------------------------------------


@pytest.fixture(scope="module")
def instrument_module() -> ModuleType:
    """layer/python/afterflush_instrument.py, loaded with its directory on sys.path only meanwhile."""
    path = REPO / "layer" / "python" / "afterflush_instrument.py"
    spec = importlib.util.spec_from_file_location("afterflush_instrument_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Dataclasses look their module up while the class is created.
    sys.modules[spec.name] = module
    # It imports afterflush_handover from beside it, as the layer's python/ directory does.
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
        sys.path.remove(str(path.parent))
        sys.modules.pop("afterflush_handover", None)
    return module


@pytest.mark.parametrize(
    ("env", "instrumentations", "problems"),
    [
        ({}, ("botocore", "aws_lambda"), []),
        ({"AFTERFLUSH_INSTRUMENTATIONS": "aws-lambda, Requests"}, ("requests", "aws_lambda"), []),
        ({"AFTERFLUSH_INSTRUMENTATIONS": "none"}, (), []),
        ({"AFTERFLUSH_INSTRUMENTATIONS": "all"}, ("all",), []),
        ({"AFTERFLUSH_INSTRUMENTATIONS": "all,botocore"}, ("all",),
         ['AFTERFLUSH_INSTRUMENTATIONS: "all" cannot be combined with other names; using all']),
        ({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "botocore"}, ("aws_lambda",), []),
    ],
    ids=["default", "names-normalized-aws-lambda-last", "none", "all", "all-and-more", "disabled"],
)
def test_instrumentation_list_settings(instrument_module, env, instrumentations, problems):
    settings, found = instrument_module.load_settings(env)
    assert (settings.instrumentations, found) == (instrumentations, problems)


def test_a_bad_flush_timeout_is_one_problem_and_the_default(instrument_module):
    settings, problems = instrument_module.load_settings(
        {"OTEL_INSTRUMENTATION_AWS_LAMBDA_FLUSH_TIMEOUT": "soon"}
    )
    assert settings.flush_timeout_ms == 30_000
    assert problems == [
        'OTEL_INSTRUMENTATION_AWS_LAMBDA_FLUSH_TIMEOUT: "soon" is not a positive number of '
        "milliseconds; using 30000"
    ]
