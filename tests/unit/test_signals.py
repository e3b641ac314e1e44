"""Trace and span ids are empty or of their exact length, wherever a signal carries them."""

from __future__ import annotations

from collector._signals import Signal


def test_ids_of_the_right_length_or_empty_are_fine():
    traces = Signal.TRACES.request_type()
    span = traces.resource_spans.add().scope_spans.add().spans.add(
        trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    span.links.add(trace_id=b"\x03" * 16, span_id=b"\x04" * 8)
    logs = Signal.LOGS.request_type()
    logs.resource_logs.add().scope_logs.add().log_records.add()  # no ids: not in a trace

    assert Signal.TRACES.id_problem(traces) is None
    assert Signal.LOGS.id_problem(logs) is None


def test_a_bad_id_anywhere_is_named():
    traces = Signal.TRACES.request_type()
    traces.resource_spans.add().scope_spans.add().spans.add(
        trace_id=b"\x01" * 16, span_id=b"\x02" * 8, parent_span_id=b"\x05" * 4)
    link_traces = Signal.TRACES.request_type()
    linked = link_traces.resource_spans.add().scope_spans.add().spans.add(
        trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    linked.links.add(trace_id=b"\x03" * 15, span_id=b"\x04" * 8)
    logs = Signal.LOGS.request_type()
    logs.resource_logs.add().scope_logs.add().log_records.add(trace_id=b"\x01" * 16, span_id=b"\x02")
    metrics = Signal.METRICS.request_type()
    point = metrics.resource_metrics.add().scope_metrics.add().metrics.add(
        name="m").sum.data_points.add(as_int=1)
    point.exemplars.add(trace_id=b"\x01" * 3, span_id=b"\x02" * 8)

    assert Signal.TRACES.id_problem(traces) == (
        "a span has an id of the wrong length (trace_id 16 bytes, span_id 8 bytes, "
        "parent_span_id 4 bytes); ids are 16 and 8 bytes")
    assert Signal.TRACES.id_problem(link_traces) == (
        "a span link has an id of the wrong length (trace_id 15 bytes, span_id 8 bytes); "
        "ids are 16 and 8 bytes")
    assert Signal.LOGS.id_problem(logs) == (
        "a log record has an id of the wrong length (trace_id 16 bytes, span_id 1 bytes); "
        "ids are 16 and 8 bytes")
    assert Signal.METRICS.id_problem(metrics) == (
        "an exemplar has an id of the wrong length (trace_id 3 bytes, span_id 8 bytes); "
        "ids are 16 and 8 bytes")
