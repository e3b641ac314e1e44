"""A collector process (the binary) for the receiver fuzz tests: both OTLP receivers on free
loopback ports with small size bounds (so oversize cases are cheap), a buffer large enough never
to push back during a run, and the debug exporter. One per test module; tests compare its counts
before and after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench._deploy import free_port
from tests.fixtures.collector import CollectorProcess
from tests.fuzz.strategies import BODY_LIMIT

CONFIG = """\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
        max_recv_msg_size_mib: 1
      http:
        endpoint: 127.0.0.1:{http}
        max_request_body_size: {limit}
processors:
  flushcontrol:
    max_buffer_size_mib: 512
    high_water_mark_percent: 0
    # A fuzz run would write hundreds of megabytes of accepted requests to it.
    spool: false
exporters:
  debug:
    verbosity: basic
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [flushcontrol]
      exporters: [debug]
    metrics:
      receivers: [otlp]
      processors: [flushcontrol]
      exporters: [debug]
    logs:
      receivers: [otlp]
      processors: [flushcontrol]
      exporters: [debug]
"""


@pytest.fixture(scope="module")
def fuzz_collector() -> Iterator[CollectorProcess]:
    grpc_port, http_port = free_port(), free_port()
    config = CONFIG.format(grpc=grpc_port, http=http_port, limit=BODY_LIMIT)
    with CollectorProcess(config, grpc_port=grpc_port, http_port=http_port) as collector:
        yield collector
