"""A local OTLP backend for tests, `make run` and the benchmark: records what it accepts and
injects faults on demand (python -m backend, or the Backend class).

OTLP: gRPC on one port; HTTP (protobuf or JSON, gzip) on another, at /v1/traces, /v1/metrics,
/v1/logs. The HTTP port also serves:
  GET  /_stats                   per signal: items, unique, duplicates, requests,
                                 rejected_requests, rejected_items
  GET  /_items?signal=traces     accepted items: key, name, ids, attributes, received, request
  GET  /_requests[?signal=...]   every export request: peer, headers, encoding, outcome
  POST /_reset                   forget requests and items
  POST /_control                 {"signal": "traces", "fault": {FaultSpec fields}},
                                 {"clear": true}, {"latency_ms": N}, {"seed": N}, {"down_ms": N}
"""

from backend._faults import FaultSpec
from backend._server import Backend
from backend._store import Item, RequestRecord, SignalStats

__all__ = ["Backend", "FaultSpec", "Item", "RequestRecord", "SignalStats"]
