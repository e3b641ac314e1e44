"""A local OTLP backend for tests, `make run` and the benchmark: records what it accepts and
injects faults on demand (python -m backend, or the Backend class).
"""

from backend._faults import FaultSpec
from backend._server import Backend
from backend._store import Item, RequestRecord, SignalStats

__all__ = ["Backend", "FaultSpec", "Item", "RequestRecord", "SignalStats"]
