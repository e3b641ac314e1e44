"""OpenTelemetry in the function's process, for the afterflush layer: the SDK configured from
the OTEL_* variables, a fixed list of instrumentations, and every signal handed to the local
collector per invocation, after the response has been posted (afterflush_handover).

Imported by otel_wrapper (the handler otel-instrument names in _HANDLER). Telemetry never breaks
the function: a setup step that fails is one line on stderr and the handler runs without it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from afterflush_handover import Handover, Marker, handover_socket, hook_runtime, warn

INSTRUMENTATIONS_ENV = "AFTERFLUSH_INSTRUMENTATIONS"
DISABLED_ENV = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
ORIG_HANDLER_ENV = "ORIG_HANDLER"
# The aws-lambda instrumentation's own setting; it bounds our log flush too.
FLUSH_TIMEOUT_ENV = "OTEL_INSTRUMENTATION_AWS_LAMBDA_FLUSH_TIMEOUT"
SDK_DISABLED_ENV = "OTEL_SDK_DISABLED"
# false: the collector exports before it answers (no flushcontrol), and the handler flushes
# before it returns, as with the ADOT layer (the benchmark's synchronous baseline).
HOLD_ENV = "AFTERFLUSH_HOLD"

# Importing the instrumentations by name instead of discovering them through package entry
# points keeps start-up short (entry-point discovery scans every distribution on the path).
# aws_lambda goes last: instrumenting it imports the function's module.
DEFAULT_INSTRUMENTATIONS = ("botocore", "aws_lambda")
# name -> (module, instrumentor class, library that must be importable; None: always applies)
KNOWN_INSTRUMENTATIONS: Mapping[str, tuple[str, str, str | None]] = {
    "aws_lambda": ("opentelemetry.instrumentation.aws_lambda", "AwsLambdaInstrumentor", None),
    "botocore": ("opentelemetry.instrumentation.botocore", "BotocoreInstrumentor", "botocore"),
}
# Every installed instrumentation, found through entry points, as the ADOT layer does.
ALL = "all"
NONE = "none"
DEFAULT_FLUSH_TIMEOUT_MS = 30_000
# Kept free before the invocation's deadline by the hand-over's flush.
DEADLINE_MARGIN_MS = 50

Handler = Callable[[Any, Any], Any]


@dataclass(frozen=True, kw_only=True)
class Settings:
    # Instrumentations to apply, in order; ("all",) means every installed one.
    instrumentations: tuple[str, ...] = DEFAULT_INSTRUMENTATIONS
    # Longest each end-of-invocation flush may take, in milliseconds.
    flush_timeout_ms: int = DEFAULT_FLUSH_TIMEOUT_MS
    sdk_disabled: bool = False
    # The collector holds what it gets until the companion drains it (AFTERFLUSH_HOLD).
    hold: bool = True


def _names(text: str) -> list[str]:
    return [n.strip().lower().replace("-", "_") for n in text.split(",") if n.strip()]


def load_settings(env: Mapping[str, str]) -> tuple[Settings, list[str]]:
    """Settings from `env`, and one line per value that was rejected (its default is used)."""
    problems: list[str] = []
    names = tuple(DEFAULT_INSTRUMENTATIONS)
    raw = env.get(INSTRUMENTATIONS_ENV)
    if raw is not None and raw.strip():
        listed = _names(raw)
        if NONE in listed and len(listed) > 1:
            problems.append(f'{INSTRUMENTATIONS_ENV}: "none" cannot be combined with other names; using none')
            listed = [NONE]
        if ALL in listed and len(listed) > 1:
            problems.append(f'{INSTRUMENTATIONS_ENV}: "all" cannot be combined with other names; using all')
            listed = [ALL]
        names = () if listed == [NONE] else tuple(dict.fromkeys(listed))
    disabled = set(_names(env.get(DISABLED_ENV, "")))
    if names != (ALL,):
        names = tuple(n for n in names if n not in disabled)
        # aws_lambda imports the function's module: everything else must be in place first.
        names = tuple(sorted(names, key=lambda n: n == "aws_lambda"))

    flush_timeout_ms = DEFAULT_FLUSH_TIMEOUT_MS
    raw = env.get(FLUSH_TIMEOUT_ENV)
    if raw is not None and raw.strip():
        try:
            flush_timeout_ms = int(raw.strip())
            if flush_timeout_ms <= 0:
                raise ValueError
        except ValueError:
            problems.append(
                f'{FLUSH_TIMEOUT_ENV}: "{raw}" is not a positive number of milliseconds; '
                f"using {DEFAULT_FLUSH_TIMEOUT_MS}"
            )
            flush_timeout_ms = DEFAULT_FLUSH_TIMEOUT_MS
    sdk_disabled = env.get(SDK_DISABLED_ENV, "").strip().lower() == "true"
    # The companion validates AFTERFLUSH_HOLD and says so; here only "false" changes anything.
    hold = env.get(HOLD_ENV, "").strip().lower() not in {"false", "0", "no", "off"}
    return Settings(
        instrumentations=names, flush_timeout_ms=flush_timeout_ms, sdk_disabled=sdk_disabled,
        hold=hold,
    ), problems


def configure_sdk() -> None:
    """Tracer, meter and logger providers from the OTEL_* variables, through the distro, as
    `opentelemetry-instrument` would set them up."""
    from opentelemetry.distro import OpenTelemetryConfigurator, OpenTelemetryDistro
    from opentelemetry.instrumentation.version import __version__

    OpenTelemetryDistro().configure()
    OpenTelemetryConfigurator().configure(auto_instrumentation_version=__version__)


class _NoFlush:
    """A provider as the aws-lambda instrumentation sees it: everything the SDK's, but a
    force_flush that does nothing. The instrumentation flushes inside the handler, before the
    response; the hand-over flushes after it."""

    def __init__(self, provider: Any) -> None:
        self._provider = provider

    def __getattr__(self, name: str) -> Any:
        return getattr(self._provider, name)

    def force_flush(self, timeout_millis: float | None = None) -> bool:
        return True


def lambda_instrumentation_options() -> dict[str, Any]:
    """What the aws-lambda instrumentation is given: the SDK's providers without its flush."""
    from opentelemetry import metrics, trace

    return {
        "tracer_provider": _NoFlush(trace.get_tracer_provider()),
        "meter_provider": _NoFlush(metrics.get_meter_provider()),
    }


def instrument(names: Sequence[str], lambda_options: Mapping[str, Any] | None = None) -> list[str]:
    """Applies the named instrumentations; returns those applied. A name that is not one of
    ours is looked up among installed entry points (group opentelemetry_instrumentor).
    `lambda_options` go to the aws-lambda instrumentation."""
    options = dict(lambda_options or {})
    if tuple(names) == (ALL,):
        return _instrument_all(options)
    applied = []
    for name in names:
        try:
            if _instrument_one(name, options if name == "aws_lambda" else {}):
                applied.append(name)
        except Exception as exc:  # an instrumentation must never stop the function
            warn(f"instrumentation {name} failed and is off: {type(exc).__name__}: {exc}")
    return applied


def _instrument_one(name: str, options: Mapping[str, Any]) -> bool:
    known = KNOWN_INSTRUMENTATIONS.get(name)
    if known is not None:
        module_name, class_name, library = known
        if library is not None and importlib.util.find_spec(library) is None:
            return False  # nothing to instrument (botocore outside Lambda's runtime)
        instrumentor = getattr(importlib.import_module(module_name), class_name)
    else:
        from opentelemetry.util._importlib_metadata import entry_points

        found = list(entry_points(group="opentelemetry_instrumentor", name=name))
        if not found:
            warn(f'{INSTRUMENTATIONS_ENV}: no instrumentation named "{name}" is installed')
            return False
        instrumentor = found[0].load()
    # The library check above stands in for the dependency check, which reads package metadata.
    instrumentor().instrument(skip_dep_check=True, **options)
    return True


# The aws-lambda instrumentation's entry point name.
LAMBDA_ENTRY_POINT = "aws-lambda"


def _instrument_all(lambda_options: Mapping[str, Any]) -> list[str]:
    from opentelemetry.distro import OpenTelemetryDistro
    from opentelemetry.instrumentation.auto_instrumentation import _load

    class Distro(OpenTelemetryDistro):
        def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
            if entry_point.name == LAMBDA_ENTRY_POINT:
                kwargs.update(lambda_options)
            super().load_instrumentor(entry_point, **kwargs)  # type: ignore[no-untyped-call]

    _load._load_instrumentors(Distro())  # type: ignore[no-untyped-call]
    return [ALL]


def import_handler(spec: str) -> Handler:
    """The function `module.function` names (slashes in the module part allowed, as Lambda)."""
    module_name, _, function_name = spec.rpartition(".")
    if not module_name:
        raise ImportError(f'{ORIG_HANDLER_ENV} "{spec}" is not of the form module.function')
    module = importlib.import_module(module_name.replace("/", "."))
    handler: Handler = getattr(module, function_name)
    return handler


def _flush(kind: str, provider: Any, timeout_ms: int) -> None:
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is None or timeout_ms <= 0:
        return
    try:
        force_flush(timeout_ms)
    except Exception as exc:
        warn(f"flushing {kind} failed: {type(exc).__name__}: {exc}")


def flush_providers(timeout_ms: int) -> None:
    """Hands everything the SDK holds to its exporters (the local collector answers at once):
    traces, then metrics, then logs, within `timeout_ms` together."""
    from opentelemetry import _logs, metrics, trace

    started = time.monotonic()

    def left() -> int:
        return timeout_ms - int((time.monotonic() - started) * 1000)

    _flush("traces", trace.get_tracer_provider(), left())
    _flush("metrics", metrics.get_meter_provider(), left())
    _flush("logs", _logs.get_logger_provider(), left())


def _deadline(context: Any) -> float | None:
    """The invocation's deadline in epoch seconds, from the Lambda context."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(remaining):
        return None
    try:
        return time.time() + int(remaining()) / 1000
    except (TypeError, ValueError):
        return None


def wrap(handler: Handler, *, handover: Handover, after_response: bool) -> Handler:
    """`handler`, with the invocation's hand-over: after the response (the runtime's post
    completes it) when `after_response`, else when the handler returns, before the response,
    as the ADOT layer does."""

    def lambda_handler(event: Any, context: Any) -> Any:
        handover.begin(str(getattr(context, "aws_request_id", "") or ""), _deadline(context))
        if after_response:
            return handler(event, context)
        try:
            return handler(event, context)
        finally:
            handover.complete()

    lambda_handler.__wrapped__ = handler  # type: ignore[attr-defined]
    return lambda_handler


def setup(env: Mapping[str, str] | None = None) -> Handler:
    """Configures the SDK and the instrumentations, then imports the function's handler
    (named by ORIG_HANDLER) and returns it wrapped."""
    env = os.environ if env is None else env
    spec = env.get(ORIG_HANDLER_ENV, "")
    if not spec:
        raise ImportError(
            f"{ORIG_HANDLER_ENV} is not set: otel_wrapper.lambda_handler is the handler only "
            "with AWS_LAMBDA_EXEC_WRAPPER=/opt/otel-instrument"
        )
    settings, problems = load_settings(env)
    for problem in problems:
        warn(problem)
    telemetry = not settings.sdk_disabled
    if telemetry:
        try:
            configure_sdk()
        except Exception as exc:
            warn(f"OpenTelemetry SDK setup failed, telemetry is off: {type(exc).__name__}: {exc}")
            telemetry = False
    # Even without telemetry the hand-over is marked: the companion waits for the mark of every
    # invocation of a function under the layer's wrapper.
    marker = None
    if settings.hold:
        path = handover_socket(env)
        marker = Marker(path) if path is not None else None
    handover = Handover(
        flush_providers, marker, settings.flush_timeout_ms, margin_ms=DEADLINE_MARGIN_MS
    )
    after_response = settings.hold and hook_runtime(handover.complete)
    if telemetry:
        try:
            options = lambda_instrumentation_options()
        except Exception as exc:
            warn(f"the aws-lambda instrumentation flushes itself: {type(exc).__name__}: {exc}")
            options = {}
        instrument(settings.instrumentations, options)
    # With the aws-lambda instrumentation on, the handler it wrapped is what the module holds now.
    return wrap(import_handler(spec), handover=handover, after_response=after_response)
