"""The afterflush Lambda extension: holds the freeze until the collector has drained.

Run it with `python -m companion [--name NAME]`; companion._main.main builds the object graph.
Nothing is imported here, so that `python -m companion` can register before anything heavy.
"""
