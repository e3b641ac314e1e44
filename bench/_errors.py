"""The one error the benchmark raises: a step that could not be measured, said in one line.

`python -m bench` prints it and exits 1; everything it started is stopped first.
"""

from __future__ import annotations


class BenchError(Exception):
    """A run step failed (a process did not come up, an invocation failed, a tool is missing)."""
