"""The exporters' retry policy: backoff with jitter, Retry-After, which codes are retried, and
the loop that retries one export inside its deadline. A fake clock stands in for time."""

from __future__ import annotations

import asyncio
import email.utils
import random
from datetime import timedelta

import pytest

from collector._component import ExportResult, Outcome
from collector.errors import ExportError
from collector.exporters._retry import (
    RETRYABLE_GRPC_CODES,
    RETRYABLE_HTTP_STATUS,
    Backoff,
    Retrier,
    RetryConfig,
    StaleConnectionError,
    is_retryable_grpc,
    is_retryable_http,
    parse_retry_after,
)


class FakeTime:
    """A clock that moves only when the retrier sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> bool:
        self.sleeps.append(seconds)
        self.now += seconds
        return False


class ScriptedAttempts:
    """Attempts that raise or return from a script, recording the time each one was given."""

    def __init__(self, time: FakeTime, script: list[ExportError | ExportResult]) -> None:
        self.time = time
        self.script = script
        self.remaining: list[float] = []

    async def __call__(self, remaining: float) -> ExportResult:
        self.remaining.append(round(remaining, 9))
        step = self.script.pop(0) if self.script else ExportError("http 503")
        if isinstance(step, ExportError):
            raise step
        return step


def exact(**overrides: object) -> RetryConfig:
    """A config without jitter, so waits are exact."""
    values: dict[str, object] = {
        "initial_interval": timedelta(milliseconds=100),
        "max_interval": timedelta(seconds=1),
        "multiplier": 2.0,
        "randomization_factor": 0.0,
    }
    values.update(overrides)
    return RetryConfig(**values)  # type: ignore[arg-type]


# -- backoff -----------------------------------------------------------------------------


def test_backoff_grows_by_the_multiplier_up_to_max_interval_with_jitter_within_bounds() -> None:
    # Given the default policy (100ms, x1.5, at most 1s, +-50%) and a seeded RNG
    config = RetryConfig()
    backoff = Backoff(config, random.Random(7))
    # When ten waits are drawn
    delays = [backoff.next_delay() for _ in range(10)]
    # Then each lies within +-50% of its interval, and the intervals stop growing at 1s
    intervals = [0.1, 0.15, 0.225, 0.3375, 0.50625, 0.759375, 1.0, 1.0, 1.0, 1.0]
    for delay, interval in zip(delays, intervals, strict=True):
        assert interval * 0.5 - 1e-12 <= delay <= interval * 1.5 + 1e-12
    # and they are exactly the seeded RNG's draws, so a seed reproduces a run
    expected_rng = random.Random(7)
    assert delays == pytest.approx([expected_rng.uniform(i * 0.5, i * 1.5) for i in intervals])


def test_backoff_without_randomization_is_the_plain_exponential_sequence() -> None:
    backoff = Backoff(exact(), random.Random(1))
    assert [round(backoff.next_delay(), 9) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


# -- what is retryable -------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_http_throttling_and_gateway_errors_are_retryable(status: int) -> None:
    assert is_retryable_http(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 413, 415, 500, 501])
def test_other_http_errors_are_permanent(status: int) -> None:
    assert not is_retryable_http(status)


def test_retryable_codes_are_the_ones_the_otlp_spec_names() -> None:
    assert RETRYABLE_HTTP_STATUS == {429, 502, 503, 504}
    assert RETRYABLE_GRPC_CODES == {
        "CANCELLED",
        "DEADLINE_EXCEEDED",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNAVAILABLE",
        "DATA_LOSS",
    }


@pytest.mark.parametrize("code", ["UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "CANCELLED"])
def test_transient_grpc_codes_are_retryable_without_retry_info(code: str) -> None:
    assert is_retryable_grpc(code, None)


def test_grpc_resource_exhausted_is_retryable_only_with_retry_info() -> None:
    assert is_retryable_grpc("RESOURCE_EXHAUSTED", 0.5)
    assert not is_retryable_grpc("RESOURCE_EXHAUSTED", None)


@pytest.mark.parametrize(
    "code",
    ["INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED", "UNIMPLEMENTED", "INTERNAL"],
)
def test_other_grpc_codes_are_permanent_even_with_retry_info(code: str) -> None:
    assert not is_retryable_grpc(code, 1.0)


# -- Retry-After -------------------------------------------------------------------------


@pytest.mark.parametrize(("header", "seconds"), [("0", 0.0), ("7", 7.0), (" 120 ", 120.0)])
def test_retry_after_in_seconds(header: str, seconds: float) -> None:
    assert parse_retry_after(header, now=1_000_000.0) == seconds


def test_retry_after_as_http_date_is_the_time_left_until_that_date() -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 42, usegmt=True)
    assert parse_retry_after(header, now=now) == 42.0


def test_retry_after_date_in_the_past_means_retry_now() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0


@pytest.mark.parametrize("header", [None, "", "soon", "-5", "1.5", "Wed, 99 Foo 2024 00:00:00"])
def test_unreadable_retry_after_is_ignored(header: str | None) -> None:
    assert parse_retry_after(header, now=1_700_000_000.0) is None


# -- the retry loop ----------------------------------------------------------------------


async def test_deadline_cuts_retries_and_each_attempt_gets_only_what_is_left() -> None:
    # Given a backend that always answers 503 and a deadline 1s away
    time = FakeTime()
    attempts = ScriptedAttempts(time, [])
    retrier = Retrier(exact(), clock=time.clock, sleep=time.sleep)
    # When the export runs
    result = await retrier.run(attempts, deadline=1.0)
    # Then it waited 100, 200, 400ms and stopped because the next wait (800ms) passes 1s
    assert time.sleeps == pytest.approx([0.1, 0.2, 0.4])
    assert attempts.remaining == pytest.approx([1.0, 0.9, 0.7, 0.3])
    assert result == ExportResult(
        Outcome.RETRYABLE, error="http 503 (deadline reached after 4 attempts)"
    )


async def test_success_after_retryable_failures_is_success() -> None:
    time = FakeTime()
    attempts = ScriptedAttempts(time, [ExportError("http 503"), ExportResult.success(rejected=2)])
    result = await Retrier(exact(), clock=time.clock, sleep=time.sleep).run(attempts, 5.0)
    assert result == ExportResult.success(rejected=2)
    assert time.sleeps == pytest.approx([0.1])


async def test_permanent_result_is_returned_without_retrying() -> None:
    time = FakeTime()
    refused = ExportResult(Outcome.PERMANENT, error="http 400", reason="http 400")
    attempts = ScriptedAttempts(time, [refused])
    result = await Retrier(exact(), clock=time.clock, sleep=time.sleep).run(attempts, 5.0)
    assert result is refused
    assert attempts.remaining == [5.0]
    assert time.sleeps == []


async def test_server_retry_delay_replaces_the_backoff_wait() -> None:
    time = FakeTime()
    attempts = ScriptedAttempts(
        time, [ExportError("http 429", retry_after=0.75), ExportResult.success()]
    )
    result = await Retrier(exact(), clock=time.clock, sleep=time.sleep).run(attempts, 5.0)
    assert result.outcome is Outcome.SUCCESS
    assert time.sleeps == [0.75]


async def test_server_retry_delay_beyond_the_deadline_returns_at_once_without_waiting() -> None:
    time = FakeTime()
    attempts = ScriptedAttempts(time, [ExportError("http 429", retry_after=30.0)])
    result = await Retrier(exact(), clock=time.clock, sleep=time.sleep).run(attempts, 2.0)
    assert result == ExportResult(
        Outcome.RETRYABLE, error="http 429 (deadline reached after 1 attempt)"
    )
    assert time.sleeps == []


async def test_stale_connection_is_retried_once_at_once_then_backs_off() -> None:
    # Given two lost connections in a row, then success
    time = FakeTime()
    lost = StaleConnectionError("connection lost")
    attempts = ScriptedAttempts(time, [lost, StaleConnectionError("again"), ExportResult.success()])
    # When the export runs
    result = await Retrier(exact(), clock=time.clock, sleep=time.sleep).run(attempts, 5.0)
    # Then the first loss is retried without a wait, the second one after a backoff wait
    assert result.outcome is Outcome.SUCCESS
    assert time.sleeps == pytest.approx([0.1])
    assert len(attempts.remaining) == 3


async def test_stale_connection_is_retried_at_once_even_with_retries_disabled() -> None:
    time = FakeTime()
    attempts = ScriptedAttempts(time, [StaleConnectionError("lost"), ExportResult.success()])
    retrier = Retrier(exact(enabled=False), clock=time.clock, sleep=time.sleep)
    assert (await retrier.run(attempts, 5.0)).outcome is Outcome.SUCCESS
    assert time.sleeps == []


async def test_disabled_retries_make_one_attempt_and_keep_the_data() -> None:
    time = FakeTime()
    attempts = ScriptedAttempts(time, [ExportError("http 503")])
    retrier = Retrier(exact(enabled=False), clock=time.clock, sleep=time.sleep)
    result = await retrier.run(attempts, 5.0)
    assert result == ExportResult(
        Outcome.RETRYABLE, error="http 503 (retry_on_failure disabled after 1 attempt)"
    )
    assert time.sleeps == []


async def test_max_elapsed_time_stops_retries_before_the_deadline() -> None:
    time = FakeTime()
    attempts = ScriptedAttempts(time, [])
    config = exact(max_elapsed_time=timedelta(milliseconds=350))
    result = await Retrier(config, clock=time.clock, sleep=time.sleep).run(attempts, 10.0)
    assert time.sleeps == pytest.approx([0.1, 0.2])
    assert result.error == "http 503 (max_elapsed_time reached after 3 attempts)"


async def test_deadline_already_passed_makes_no_attempt() -> None:
    time = FakeTime()
    time.now = 3.0
    attempts = ScriptedAttempts(time, [])
    result = await Retrier(exact(), clock=time.clock, sleep=time.sleep).run(attempts, 2.0)
    assert result == ExportResult(Outcome.RETRYABLE, error="not sent: deadline reached")
    assert attempts.remaining == []


async def test_close_interrupts_a_backoff_wait_and_the_export_returns_retryable() -> None:
    # Given an export waiting 30s before its next attempt, on the real clock
    attempted = asyncio.Event()

    async def failing(remaining: float) -> ExportResult:
        attempted.set()
        raise ExportError("http 503")

    retrier = Retrier(
        exact(initial_interval=timedelta(seconds=30), max_interval=timedelta(seconds=30))
    )
    deadline = asyncio.get_running_loop().time() + 120
    export = asyncio.create_task(retrier.run(failing, deadline))
    async with asyncio.timeout(10):
        await attempted.wait()
        # When the exporter shuts down
        retrier.close()
        result = await export
    # Then the export ends without another attempt
    assert result == ExportResult(
        Outcome.RETRYABLE, error="http 503 (exporter shut down after 1 attempt)"
    )


async def test_closed_retrier_makes_no_attempt() -> None:
    time = FakeTime()
    attempts = ScriptedAttempts(time, [])
    retrier = Retrier(exact(), clock=time.clock, sleep=time.sleep)
    retrier.close()
    result = await retrier.run(attempts, 5.0)
    assert result == ExportResult(Outcome.RETRYABLE, error="not sent: exporter shut down")
    assert attempts.remaining == []


# -- settings ----------------------------------------------------------------------------


def test_default_retry_settings_fit_a_drain_of_a_second_or_two() -> None:
    config = RetryConfig()
    assert config.enabled is True
    assert config.initial_interval == timedelta(milliseconds=100)
    assert config.max_interval == timedelta(seconds=1)
    assert config.max_elapsed_time == timedelta(seconds=300)
    assert (config.multiplier, config.randomization_factor) == (1.5, 0.5)
    assert config.validate() == []


def test_retry_settings_report_every_bad_value() -> None:
    config = RetryConfig(
        initial_interval=timedelta(0),
        max_interval=timedelta(seconds=-1),
        max_elapsed_time=timedelta(seconds=-1),
        multiplier=0.5,
        randomization_factor=1.5,
    )
    assert config.validate() == [
        ("initial_interval", "must be > 0"),
        ("max_interval", "must be >= initial_interval"),
        ("max_elapsed_time", "must be >= 0 (0 = no limit)"),
        ("multiplier", "must be >= 1"),
        ("randomization_factor", "must be between 0 and 1"),
    ]
