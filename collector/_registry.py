"""The one place that maps component type names to factories.

Nothing registers itself on import; main() asks for this table and hands it on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from collector._component import Kind


def default_registry() -> Mapping[Kind, Mapping[str, Any]]:
    from collector.exporters import debug, otlp, otlphttp
    from collector.processors import batch, flushcontrol
    from collector.receivers import otlp as otlp_receiver

    return {
        Kind.RECEIVER: {"otlp": otlp_receiver.FACTORY},
        Kind.PROCESSOR: {
            "flushcontrol": flushcontrol.FACTORY,
            "decouple": flushcontrol.DECOUPLE_FACTORY,
            "batch": batch.FACTORY,
        },
        Kind.EXPORTER: {
            "otlp": otlp.FACTORY,
            "otlphttp": otlphttp.FACTORY,
            "debug": debug.FACTORY,
            "logging": debug.LOGGING_FACTORY,
        },
        Kind.EXTENSION: {},
    }
