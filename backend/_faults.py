"""Faults the backend injects into its answers: error statuses (always, N times or with a
probability), partial success, hanging, resetting or silently dropping connections.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

from backend._signals import Signal

# The gRPC status a fault's HTTP status stands for, as OTLP pairs them.
GRPC_CODE_OF_HTTP_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "UNIMPLEMENTED",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
ALL_SIGNALS = "*"


@dataclass(frozen=True, kw_only=True)
class FaultSpec:
    """What to do to the export requests of a signal instead of answering them normally."""

    # Answer with this HTTP status (0 = answer normally); gRPC gets grpc_code, or the code
    # OTLP pairs with the status.
    status: int = 0
    # Answer with one of these HTTP statuses instead, drawn from the seeded RNG for each
    # request the spec applies to (a mix such as 503s and 429s); empty = use `status`.
    statuses: tuple[int, ...] = ()
    grpc_code: str = ""
    message: str = ""
    # Seconds for Retry-After (HTTP) and a RetryInfo detail (gRPC); None = send none.
    retry_after: float | None = None
    # Send Retry-After as an HTTP-date instead of seconds.
    retry_after_as_date: bool = False
    # Accept the request but report this many of its first items as rejected.
    reject: int = 0
    # Accept the request and never answer it.
    hang: bool = False
    # Read the request, then reset the connection (gRPC: answer UNAVAILABLE).
    reset: bool = False
    # HTTP: a keep-alive connection that already carried an answer is closed, without an
    # answer, when the next request arrives on it: the peer-closed pooled connection a
    # process meets after a freeze. gRPC ignores it.
    close_idle: bool = False
    # Apply to each matching request with this probability (drawn from the seeded RNG).
    probability: float = 1.0
    # Apply to the next N matching requests only; 0 = to all of them.
    times: int = 0

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> FaultSpec:
        """From the control API's JSON; raises ValueError naming an unknown field."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(document) - names)
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(unknown)}")
        fields = dict(document)
        if "statuses" in fields:
            statuses = fields["statuses"]
            if not isinstance(statuses, list) or not all(isinstance(s, int) for s in statuses):
                raise ValueError("statuses must be a list of HTTP status numbers")
            fields["statuses"] = tuple(statuses)
        return cls(**fields)

    @property
    def effective_grpc_code(self) -> str:
        if self.grpc_code:
            return self.grpc_code
        return GRPC_CODE_OF_HTTP_STATUS.get(self.status, "UNKNOWN")


class FaultPlan:
    """The fault spec per signal (or for all), with the counters and RNG that decide which
    request a spec applies to."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._specs: dict[str, FaultSpec] = {}
        self._left: dict[str, int] = {}

    def reseed(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def set(self, spec: FaultSpec, signal: Signal | None = None) -> None:
        key = signal.value if signal is not None else ALL_SIGNALS
        self._specs[key] = spec
        self._left[key] = spec.times

    def clear(self) -> None:
        self._specs.clear()
        self._left.clear()

    def specs(self) -> dict[str, FaultSpec]:
        return dict(self._specs)

    def pick(self, signal: Signal, *, reused: bool = False) -> FaultSpec | None:
        """The spec that applies to this request of `signal`, if any (consumes one of its
        `times` and one draw of the RNG when a probability is set). A close_idle spec
        applies only to a request on a `reused` connection. A spec with `statuses` comes back
        with the one status drawn for this request."""
        key = signal.value if signal.value in self._specs else ALL_SIGNALS
        spec = self._specs.get(key)
        if spec is None or (spec.close_idle and not reused):
            return None
        if spec.times and self._left[key] <= 0:
            return None
        if spec.probability < 1.0 and self._rng.random() >= spec.probability:
            return None
        if spec.times:
            self._left[key] -= 1
        if spec.statuses:
            return dataclasses.replace(spec, status=self._rng.choice(spec.statuses), statuses=())
        return spec
