"""The companion's settings: every AFTERFLUSH_* variable parsed strictly, a bad value is one
clear problem line and the default."""

from __future__ import annotations

import pytest

from companion._settings import (
    Settings,
    format_duration,
    load_settings,
    parse_bool,
    parse_duration,
)


def test_defaults_when_nothing_is_set() -> None:
    settings, problems = load_settings({})
    assert problems == []
    assert settings == Settings(
        drain_timeout=2.0, deadline_margin=0.2, strict_init=False,
        control_endpoint="unix:///tmp/afterflush/control.sock", ready_timeout=5.0,
        log_level="info", extension_name="afterflush", telemetry_port=0, json_logs=False,
        runtime_api="", hold=True,
    )


def test_hold_false_runs_the_collector_without_flushcontrol() -> None:
    from companion._main import (
        collector_env,
    )

    settings, problems = load_settings({"AFTERFLUSH_HOLD": "false"})
    assert (settings.hold, problems) == (False, [])
    assert collector_env({}, settings)["AFTERFLUSH_HOLD"] == "false"
    assert collector_env({"AFTERFLUSH_HOLD": "no"}, Settings())["AFTERFLUSH_HOLD"] == "true"
    bad, problems = load_settings({"AFTERFLUSH_HOLD": "maybe"})
    assert bad.hold is True
    assert problems == ['AFTERFLUSH_HOLD: "maybe" is not a boolean (true or false); using true']


def test_every_variable_is_read() -> None:
    settings, problems = load_settings({
        "AFTERFLUSH_DRAIN_TIMEOUT": "1500ms",
        "AFTERFLUSH_DEADLINE_MARGIN": "0",
        "AFTERFLUSH_STRICT_INIT": "TRUE",
        "AFTERFLUSH_CONTROL_ENDPOINT": "unix:///tmp/x/c.sock",
        "AFTERFLUSH_READY_TIMEOUT": "1m",
        "AFTERFLUSH_LOG_LEVEL": "Warn",
        "AFTERFLUSH_EXTENSION_NAME": "afterflush-2",
        "AFTERFLUSH_TELEMETRY_PORT": "4243",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
    })
    assert problems == []
    assert settings == Settings(
        drain_timeout=1.5, deadline_margin=0.0, strict_init=True,
        control_endpoint="unix:///tmp/x/c.sock", ready_timeout=60.0, log_level="warning",
        extension_name="afterflush-2", telemetry_port=4243, json_logs=True,
        runtime_api="127.0.0.1:9001",
    )
    assert settings.log_level_number == 30


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("AFTERFLUSH_DRAIN_TIMEOUT", "2", 'AFTERFLUSH_DRAIN_TIMEOUT: "2" is not a duration like "2s" or "500ms"; using 2s'),
        ("AFTERFLUSH_DRAIN_TIMEOUT", "0", "AFTERFLUSH_DRAIN_TIMEOUT: must be more than 0; using 2s"),
        ("AFTERFLUSH_DEADLINE_MARGIN", "-5ms", 'AFTERFLUSH_DEADLINE_MARGIN: "-5ms" is not a duration like "2s" or "500ms"; using 200ms'),
        ("AFTERFLUSH_READY_TIMEOUT", "5 seconds", 'AFTERFLUSH_READY_TIMEOUT: "5 seconds" is not a duration like "2s" or "500ms"; using 5s'),
        ("AFTERFLUSH_STRICT_INIT", "maybe", 'AFTERFLUSH_STRICT_INIT: "maybe" is not a boolean (true or false); using false'),
        ("AFTERFLUSH_CONTROL_ENDPOINT", "127.0.0.1:4000", 'AFTERFLUSH_CONTROL_ENDPOINT: control endpoint "127.0.0.1:4000" must be unix:///absolute/path; using unix:///tmp/afterflush/control.sock'),
        ("AFTERFLUSH_LOG_LEVEL", "verbose", 'AFTERFLUSH_LOG_LEVEL: "verbose" is not one of debug, info, warning, error; using info'),
        ("AFTERFLUSH_EXTENSION_NAME", "../x", 'AFTERFLUSH_EXTENSION_NAME: "../x" is not a file name of letters, digits, ".", "_" or "-"; using afterflush'),
        ("AFTERFLUSH_TELEMETRY_PORT", "70000", 'AFTERFLUSH_TELEMETRY_PORT: "70000" is not a port (0-65535); using 0'),
    ],
)
def test_a_bad_value_is_one_clear_line_and_the_default(name: str, value: str, problem: str) -> None:
    settings, problems = load_settings({name: value})
    assert problems == [problem]
    assert settings == Settings()


def test_an_empty_variable_counts_as_unset() -> None:
    settings, problems = load_settings({"AFTERFLUSH_DRAIN_TIMEOUT": " ", "AFTERFLUSH_STRICT_INIT": ""})
    assert (settings, problems) == (Settings(), [])


def test_all_bad_values_are_reported_at_once() -> None:
    _, problems = load_settings({"AFTERFLUSH_DRAIN_TIMEOUT": "x", "AFTERFLUSH_STRICT_INIT": "y"})
    assert [p.split(":")[0] for p in problems] == ["AFTERFLUSH_STRICT_INIT", "AFTERFLUSH_DRAIN_TIMEOUT"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2s", 2.0), ("500ms", 0.5), ("1.5s", 1.5), ("1m", 60.0), ("0", 0.0), (" 25ms ", 0.025)],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "2", "s", "2x", "-1s", "1e3ms", "2 s"])
def test_malformed_durations_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(2.0, "2s"), (0.2, "200ms"), (1.5, "1500ms"), (0.0, "0s")])
def test_durations_format_back(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(("text", "value"), [("true", True), ("1", True), ("False", False), ("off", False)])
def test_booleans_parse(text: str, value: bool) -> None:
    assert parse_bool(text) is value


def test_a_bad_boolean_is_an_error() -> None:
    with pytest.raises(ValueError, match='"tru" is not a boolean'):
        parse_bool("tru")
