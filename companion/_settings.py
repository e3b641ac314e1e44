"""Every AFTERFLUSH_* variable the companion reads, as named constants, parsed strictly.

A bad value becomes one clear problem line and the default; nothing here raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from companion._control import CONTROL_ENDPOINT_ENV, DEFAULT_CONTROL_ENDPOINT, socket_path
from companion._duration import parse_duration as collector_duration
from companion._register import valid_extension_name

DRAIN_TIMEOUT_ENV = "AFTERFLUSH_DRAIN_TIMEOUT"
DEADLINE_MARGIN_ENV = "AFTERFLUSH_DEADLINE_MARGIN"
STRICT_INIT_ENV = "AFTERFLUSH_STRICT_INIT"
READY_TIMEOUT_ENV = "AFTERFLUSH_READY_TIMEOUT"
LOG_LEVEL_ENV = "AFTERFLUSH_LOG_LEVEL"
EXTENSION_NAME_ENV = "AFTERFLUSH_EXTENSION_NAME"
TELEMETRY_PORT_ENV = "AFTERFLUSH_TELEMETRY_PORT"
HOLD_ENV = "AFTERFLUSH_HOLD"
HANDOVER_TIMEOUT_ENV = "AFTERFLUSH_HANDOVER_TIMEOUT"
# AFTERFLUSH_CONTROL_ENDPOINT is CONTROL_ENDPOINT_ENV, shared with the collector.

# Set by Lambda, read here so that the rest of the companion never touches os.environ.
RUNTIME_API_ENV = "AWS_LAMBDA_RUNTIME_API"
LOG_FORMAT_ENV = "AWS_LAMBDA_LOG_FORMAT"
EXEC_WRAPPER_ENV = "AWS_LAMBDA_EXEC_WRAPPER"
# The layer's wrapper scripts (the ADOT layers' names): a function under one hands over its
# telemetry after each response and marks the end of it.
LAYER_WRAPPERS = ("otel-instrument", "otel-handler")

LOG_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_LEVEL_ALIASES = {"warn": "warning"}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The companion's settings; durations are in seconds."""

    # Longest a post-invoke drain may take; also capped by the invoke deadline.
    drain_timeout: float = 2.0
    # Kept free before every Lambda deadline (invoke and shutdown); 0 means none.
    deadline_margin: float = 0.2
    # An invalid collector config fails init instead of turning telemetry off.
    strict_init: bool = False
    control_endpoint: str = DEFAULT_CONTROL_ENDPOINT
    # Longest the first start waits for the collector's Status to say ready.
    ready_timeout: float = 5.0
    log_level: str = "info"
    extension_name: str = "afterflush"
    # Port of the Telemetry API listener; 0 means any free port.
    telemetry_port: int = 0
    json_logs: bool = False
    runtime_api: str = ""
    # false: the collector runs without flushcontrol and exports before it answers the SDK,
    # as the ADOT collector does (the synchronous baseline the benchmark compares against).
    hold: bool = True
    # Longest a drain waits for the function side's hand-over mark once the invocation's
    # runtimeDone has come (the SDK's flush runs after the response, so the mark usually comes
    # later than runtimeDone on a small function); 0: no wait, drain at runtimeDone.
    handover_timeout: float = 1.0
    # The function runs under the layer's otel-instrument (AWS_LAMBDA_EXEC_WRAPPER): it marks
    # the end of each hand-over, so runtimeDone alone does not end the wait for it.
    function_marks: bool = False

    @property
    def log_level_number(self) -> int:
        return LOG_LEVELS[self.log_level]


def parse_duration(text: str) -> float:
    """Seconds in a duration as the collector's config writes them ("2s", "500ms", "1m30s",
    "0"); raises ValueError otherwise, and for a negative one."""
    text = text.strip()
    try:
        seconds = collector_duration(text).total_seconds()
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise ValueError(f'"{text}" is not a duration like "2s" or "500ms"')
    return seconds


def format_duration(seconds: float) -> str:
    if (seconds and seconds < 1) or seconds != int(seconds):
        return f"{round(seconds * 1000)}ms"
    return f"{int(seconds)}s"


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f'"{text}" is not a boolean (true or false)')


def load_settings(env: Mapping[str, str]) -> tuple[Settings, list[str]]:
    """Settings from `env`, and one line per variable whose value was rejected."""
    defaults = Settings()
    problems: list[str] = []

    def value(name: str) -> str | None:
        raw = env.get(name)
        # An empty variable is how a template "unsets" a value: treat it as absent.
        return raw if raw is not None and raw.strip() else None

    def duration(name: str, default: float, *, allow_zero: bool) -> float:
        raw = value(name)
        if raw is None:
            return default
        try:
            parsed = parse_duration(raw)
        except ValueError as exc:
            problems.append(f"{name}: {exc}; using {format_duration(default)}")
            return default
        if parsed == 0 and not allow_zero:
            problems.append(f"{name}: must be more than 0; using {format_duration(default)}")
            return default
        return parsed

    strict_init = defaults.strict_init
    if (raw := value(STRICT_INIT_ENV)) is not None:
        try:
            strict_init = parse_bool(raw)
        except ValueError as exc:
            problems.append(f"{STRICT_INIT_ENV}: {exc}; using false")

    hold = defaults.hold
    if (raw := value(HOLD_ENV)) is not None:
        try:
            hold = parse_bool(raw)
        except ValueError as exc:
            problems.append(f"{HOLD_ENV}: {exc}; using true")

    endpoint = defaults.control_endpoint
    if (raw := value(CONTROL_ENDPOINT_ENV)) is not None:
        try:
            socket_path(raw.strip())
            endpoint = raw.strip()
        except ValueError as exc:
            problems.append(f"{CONTROL_ENDPOINT_ENV}: {exc}; using {endpoint}")

    log_level = defaults.log_level
    if (raw := value(LOG_LEVEL_ENV)) is not None:
        lowered = raw.strip().lower()
        lowered = _LEVEL_ALIASES.get(lowered, lowered)
        if lowered in LOG_LEVELS:
            log_level = lowered
        else:
            problems.append(
                f'{LOG_LEVEL_ENV}: "{raw}" is not one of {", ".join(LOG_LEVELS)}; using info'
            )

    name = defaults.extension_name
    if (raw := value(EXTENSION_NAME_ENV)) is not None:
        if valid_extension_name(raw.strip()):
            name = raw.strip()
        else:
            problems.append(
                f'{EXTENSION_NAME_ENV}: "{raw}" is not a file name of letters, digits, ".", "_"'
                f' or "-"; using {name}'
            )

    port = defaults.telemetry_port
    if (raw := value(TELEMETRY_PORT_ENV)) is not None:
        try:
            port = int(raw.strip())
            if not 0 <= port <= 65535:
                raise ValueError
        except ValueError:
            port = defaults.telemetry_port
            problems.append(f'{TELEMETRY_PORT_ENV}: "{raw}" is not a port (0-65535); using 0')

    handover_timeout = defaults.handover_timeout
    if (raw := value(HANDOVER_TIMEOUT_ENV)) is not None:
        try:
            handover_timeout = parse_duration(raw)
        except ValueError as exc:
            problems.append(f"{HANDOVER_TIMEOUT_ENV}: {exc}; using "
                            f"{format_duration(handover_timeout)}")
    wrapper = env.get(EXEC_WRAPPER_ENV, "").strip()

    settings = Settings(
        drain_timeout=duration(DRAIN_TIMEOUT_ENV, defaults.drain_timeout, allow_zero=False),
        deadline_margin=duration(DEADLINE_MARGIN_ENV, defaults.deadline_margin, allow_zero=True),
        strict_init=strict_init,
        control_endpoint=endpoint,
        ready_timeout=duration(READY_TIMEOUT_ENV, defaults.ready_timeout, allow_zero=False),
        log_level=log_level,
        extension_name=name,
        telemetry_port=port,
        json_logs=(env.get(LOG_FORMAT_ENV, "").strip().upper() == "JSON"),
        runtime_api=env.get(RUNTIME_API_ENV, "").strip(),
        hold=hold,
        handover_timeout=handover_timeout,
        function_marks=wrapper.rsplit("/", 1)[-1] in LAYER_WRAPPERS,
    )
    return settings, problems
