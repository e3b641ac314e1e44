"""A local Lambda execution environment (python -m emulator): Runtime, Extensions and Telemetry
APIs, freeze, timeouts, shutdown and Lambda's resource sizing, for tests, the benchmark and make run."""

from emulator._cgroups import end_environment

__all__ = ["end_environment"]
