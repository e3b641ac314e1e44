"""The afterflush benchmark: caller latency, billed post-invoke time, cold start, memory and
throughput of the layer against the synchronous flush, under the local Lambda emulator.

Run it with `python -m bench [--quick]` or `make bench`; see bench/README.md.
"""
