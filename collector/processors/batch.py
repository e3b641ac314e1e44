"""The `batch` processor, accepted for ADOT configs: it only caps coalesced requests.

flushcontrol already coalesces held requests at drain time; batch never holds data on a timer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from collector._component import ComponentFactory, Kind


@dataclass(frozen=True, kw_only=True)
class BatchConfig:
    timeout: timedelta = field(
        default=timedelta(milliseconds=200),
        metadata={"ignored": "data is never held on a timer; flushcontrol sends it at drain time"},
    )
    send_batch_size: int = field(
        default=8192, metadata={"ignored": "flushcontrol coalesces everything it holds at drain time"}
    )
    # Most items in one exported request; 0 = no limit. Requests are split at the boundaries
    # of what senders sent, so one request from a sender is never split.
    send_batch_max_size: int = 0
    metadata_keys: list[str] = field(
        default_factory=list, metadata={"ignored": "requests are not grouped by client metadata"}
    )
    metadata_cardinality_limit: int = field(default=1000, metadata={"ignored": "see metadata_keys"})

    def validate(self) -> list[tuple[str, str]]:
        if self.send_batch_max_size < 0:
            return [("send_batch_max_size", "must be >= 0")]
        return []


FACTORY = ComponentFactory("batch", Kind.PROCESSOR, BatchConfig, lambda config, context: config)
