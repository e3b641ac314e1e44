"""The fault scenarios' shared setup: each scenario records its ledger as one line of the
Guarantees table, printed at the end of the run (and written as JSON to the file named by
AFTERFLUSH_CHAOS_REPORT, when set)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.ledger import Ledger, ScenarioResult, print_ledger

REPORT_ENV = "AFTERFLUSH_CHAOS_REPORT"
_RESULTS = pytest.StashKey[list[ScenarioResult]]()

Record = Callable[[str, Ledger, list[dict[str, Any]]], ScenarioResult]


@pytest.fixture(scope="session")
def guarantees(request: pytest.FixtureRequest) -> Record:
    """record(scenario, ledger, fault_records): prints the ledger and keeps its table line;
    `fault_records` are the emulator's records of the invocations during the fault."""
    results = request.config.stash.setdefault(_RESULTS, [])

    def record(scenario: str, ledger: Ledger, fault_records: list[dict[str, Any]]) -> ScenarioResult:
        print_ledger(scenario, ledger)
        result = ScenarioResult.of(scenario, ledger, fault_records)
        results.append(result)
        return result

    return record


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    results = config.stash.get(_RESULTS, [])
    if not results:
        return
    columns = ("scenario", "invocations", "produced", "acknowledged", "delivered", "duplicates",
               "dropped", "spilled", "buffered", "refused", "unexplained", "p99_ms")
    rows = [columns] + [tuple(str(r.to_json()[c]) for c in columns) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    terminalreporter.section("afterflush guarantees (ledger per scenario)")
    for row in rows:
        terminalreporter.write_line(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    target = os.environ.get(REPORT_ENV)
    if target:
        Path(target).write_text(json.dumps([r.to_json() for r in results], indent=2) + "\n")
