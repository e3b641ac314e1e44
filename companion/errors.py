"""The companion's errors; library exceptions are converted at the boundary.

CompanionError
 ├── LambdaApiError     an Extensions or Telemetry API call failed or was refused
 └── ControlError       the collector's control endpoint could not be reached or answered badly

This module imports nothing: companion._register, which runs before anything heavy is
imported, takes LambdaApiError from here.
"""

from __future__ import annotations


class CompanionError(Exception):
    """Base of every error the companion raises on purpose."""


class LambdaApiError(CompanionError):
    """An Extensions or Telemetry API call failed or was refused."""


class ControlError(CompanionError):
    """The control endpoint could not be reached, or its answer was not understood."""
