"""The afterflush Lambda extension: holds the freeze until the collector has drained.

Run it with `python -m companion [--name NAME]`; `main()` builds the object graph.
"""

from companion._main import main

__all__ = ["main"]
