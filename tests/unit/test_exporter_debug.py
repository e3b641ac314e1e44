"""The debug exporter: what each verbosity writes, and that it always succeeds."""

from __future__ import annotations

import io
import json

import pytest

from collector._component import BuildContext, ExportResult
from collector.exporters import debug
from collector.exporters.debug import DebugConfig, DebugExporter, LoggingConfig
from tests.fixtures.backend import logs_payload, metrics_payload, trace_payload


async def test_basic_writes_one_line_per_export_with_the_count() -> None:
    stream = io.StringIO()
    exporter = DebugExporter("debug", "basic", stream)
    result = await exporter.export(trace_payload(20), deadline=0.0)
    assert result == ExportResult.success()
    assert stream.getvalue() == "debug: 20 spans (traces)\n"


async def test_normal_writes_a_line_per_span_with_name_and_ids() -> None:
    stream = io.StringIO()
    exporter = DebugExporter("debug/verbose", "normal", stream)
    await exporter.export(trace_payload(2, name="GET /cart"), deadline=0.0)
    assert stream.getvalue().splitlines() == [
        "debug/verbose: 2 spans (traces)",
        "debug/verbose:   span 'GET /cart-0' trace_id=0af7651916cd43dd8448eb211c80319c "
        "span_id=0000000000000001 index=0",
        "debug/verbose:   span 'GET /cart-1' trace_id=0af7651916cd43dd8448eb211c80319c "
        "span_id=0000000000000002 index=1",
    ]


async def test_normal_writes_a_line_per_metric_point_and_log_record() -> None:
    stream = io.StringIO()
    exporter = DebugExporter("debug", "normal", stream)
    await exporter.export(metrics_payload(2, name="requests"), deadline=0.0)
    await exporter.export(logs_payload(1, body="hello"), deadline=0.0)
    assert stream.getvalue().splitlines() == [
        "debug: 2 metric points (metrics)",
        "debug:   metric 'requests' gauge value=0",
        "debug:   metric 'requests' gauge value=1",
        "debug: 1 log records (logs)",
        "debug:   log INFO 'hello-0' trace_id= span_id=",
    ]


async def test_detailed_writes_the_otlp_json_of_the_request() -> None:
    stream = io.StringIO()
    exporter = DebugExporter("debug", "detailed", stream)
    await exporter.export(trace_payload(1, name="work"), deadline=0.0)
    summary, document = stream.getvalue().splitlines()
    assert summary == "debug: 1 spans (traces)"
    span = json.loads(document)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert (span["name"], span["traceId"], span["spanId"]) == (
        "work-0",
        "0af7651916cd43dd8448eb211c80319c",
        "0000000000000001",
    )


def test_logging_factory_builds_a_debug_exporter_with_the_mapped_verbosity() -> None:
    exporter = debug.LOGGING_FACTORY.create(
        LoggingConfig(loglevel="debug"), BuildContext("logging", {})
    )
    assert isinstance(exporter, DebugExporter)
    assert (exporter.id, exporter.verbosity) == ("logging", "detailed")
    plain = debug.FACTORY.create(DebugConfig(), BuildContext("debug", {}))
    assert (plain.id, plain.verbosity) == ("debug", "basic")


async def test_debug_writes_to_stderr_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    exporter = DebugExporter("debug", "basic")
    await exporter.export(logs_payload(3), deadline=0.0)
    captured = capsys.readouterr()
    assert captured.err == "debug: 3 log records (logs)\n"
    assert captured.out == ""
