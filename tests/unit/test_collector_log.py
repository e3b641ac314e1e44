"""The collector's zap JSON records become lines of the companion's log format."""

from __future__ import annotations

import json

from companion._collector_log import format_line

RESOURCE = {"service.name": "afterflush-collector", "service.version": "dev"}


def zap(level: str, msg: str, **fields: object) -> bytes:
    record = {"level": level, "ts": "2026-12-04T19:20:35.279Z", "caller": "flushcontrol/hub.go:625",
              "msg": msg, "resource": RESOURCE, **fields}
    return (json.dumps(record) + "\n").encode()


def test_a_flushcontrol_record_reads_as_the_collector_s_own_line():
    line = zap("debug", "drain (invoke) r-1 in 0.3 ms: exported 3 spans; last error: ",
               **{"otelcol.component.id": "flushcontrol", "otelcol.component.kind": "extension"})
    assert format_line(line, json_format=False) == (
        b"[afterflush collector] DEBUG drain (invoke) r-1 in 0.3 ms: exported 3 spans; last error: \n")


def test_another_component_s_record_names_the_component_and_keeps_its_detail():
    line = zap("error", "Exporting failed. Dropping data.", error="Permanent error: HTTP Status Code 400",
               dropped_items=5, **{"otelcol.component.id": "otlphttp", "otelcol.signal": "traces"})
    assert format_line(line, json_format=False) == (
        b"[afterflush collector] ERROR otlphttp: Exporting failed. Dropping data. "
        b"(error: Permanent error: HTTP Status Code 400, dropped_items: 5)\n")


def test_json_format_keeps_the_fields_and_the_time():
    line = zap("warn", "sending_queue turned off", exporters=["debug"])
    record = json.loads(format_line(line, json_format=True))
    assert record == {"timestamp": "2026-12-04T19:20:35.279Z", "level": "WARNING",
                      "logger": "afterflush-collector", "message": "sending_queue turned off",
                      "exporters": ["debug"]}


def test_grpc_chatter_below_warning_is_dropped_and_its_warnings_kept():
    assert format_line(zap("info", "[core] Server created", grpc_log=True), json_format=False) == b""
    assert format_line(zap("warn", "[core] bad", grpc_log=True), json_format=False) == (
        b"[afterflush collector] WARNING [core] bad\n")


def test_lines_that_are_not_records_pass_unchanged():
    for raw in (b"invalid config (1 problem):\n", b"  receivers::otlp (config.yaml:3): x\n",
                b'{"resourceSpans": []}\n', b"{not json\n"):
        assert format_line(raw, json_format=False) == raw


def test_a_multi_line_message_stays_one_line():
    assert format_line(zap("info", "first\nsecond\n"), json_format=False) == (
        b"[afterflush collector] INFO first | second\n")


def test_the_collector_s_start_and_stop_narration_is_dropped_below_warning():
    assert format_line(zap("info", "Starting extensions...", caller="extensions/extensions.go:40"),
                       json_format=False) == b""
    assert format_line(zap("info", "Everything is ready.", caller="service@v0.139.0/service.go:245"),
                       json_format=False) == b""
    assert format_line(zap("warn", "x", caller="service@v0.139.0/service.go:1"), json_format=False) == (
        b"[afterflush collector] WARNING x\n")
