"""Requirements for the collector's configuration: components, pipelines, flushcontrol
insertion, the hold=False mode, extensions, telemetry, and where the config comes from."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import pytest

from collector._component import BuildContext, Kind
from collector._config import (
    CollectorConfig,
    ComponentConfig,
    PipelineConfig,
    load_config,
    parse_config,
    resolve_config_uri,
)
from collector._signals import Signal
from collector.errors import ConfigError

# -- fake components: the real ones live elsewhere; these follow the same conventions --------


@dataclass(frozen=True, kw_only=True)
class FakeServer:
    endpoint: str = "localhost:4317"


@dataclass(frozen=True, kw_only=True)
class FakeProtocols:
    grpc: FakeServer | None = None
    http: FakeServer | None = None


@dataclass(frozen=True, kw_only=True)
class FakeOtlpReceiverConfig:
    protocols: FakeProtocols = field(default_factory=FakeProtocols)


@dataclass(frozen=True, kw_only=True)
class FakeOtlpExporterConfig:
    endpoint: str = ""
    headers: dict[str, str] = field(default_factory=dict, metadata={"secret": True})
    timeout: timedelta = timedelta(seconds=5)

    def validate(self) -> list[tuple[str, str]]:
        return [] if self.endpoint else [("endpoint", "must be set")]


@dataclass(frozen=True, kw_only=True)
class FakeDebugConfig:
    verbosity: Literal["basic", "normal", "detailed"] = "basic"


@dataclass(frozen=True, kw_only=True)
class FakeLoggingConfig:
    loglevel: Literal["debug", "info", "warn", "error"] = "info"
    verbosity: Literal["basic", "normal", "detailed"] = "basic"


@dataclass(frozen=True, kw_only=True)
class FakeFlushControlConfig:
    max_buffer_size_mib: int = 16
    default_drain_timeout: timedelta = timedelta(seconds=5)

    def validate(self) -> list[tuple[str, str]]:
        return [] if self.max_buffer_size_mib > 0 else [("max_buffer_size_mib", "must be > 0")]


@dataclass(frozen=True, kw_only=True)
class FakeDecoupleConfig:
    max_queue_size: int = field(default=200, metadata={"ignored": "bounded in bytes instead"})


@dataclass(frozen=True, kw_only=True)
class FakeBatchConfig:
    timeout: timedelta = timedelta(milliseconds=200)
    send_batch_size: int = 8192


@dataclass
class FakeFactory:
    type_name: str
    kind: Kind
    config_type: type[Any]
    signals: frozenset[Signal] = frozenset(Signal)
    default: Callable[[], Any] | None = None

    def default_config(self) -> Any:
        return self.default() if self.default is not None else self.config_type()

    def create(self, config: Any, context: BuildContext) -> Any:
        raise AssertionError("configuration tests build no components")


def make_registry(*, flushcontrol: bool = True) -> dict[Kind, dict[str, Any]]:
    processors = {
        "batch": FakeFactory("batch", Kind.PROCESSOR, FakeBatchConfig, frozenset()),
        "decouple": FakeFactory("decouple", Kind.PROCESSOR, FakeDecoupleConfig, frozenset()),
    }
    if flushcontrol:
        processors["flushcontrol"] = FakeFactory(
            "flushcontrol", Kind.PROCESSOR, FakeFlushControlConfig, frozenset()
        )
    return {
        Kind.RECEIVER: {
            "otlp": FakeFactory("otlp", Kind.RECEIVER, FakeOtlpReceiverConfig),
            "zipkin": FakeFactory(
                "zipkin", Kind.RECEIVER, FakeDebugConfig, frozenset({Signal.TRACES})
            ),
        },
        Kind.PROCESSOR: processors,
        Kind.EXPORTER: {
            "otlp": FakeFactory(
                "otlp", Kind.EXPORTER, FakeOtlpExporterConfig,
                default=lambda: FakeOtlpExporterConfig(endpoint="localhost:4317"),
            ),
            "otlphttp": FakeFactory("otlphttp", Kind.EXPORTER, FakeOtlpExporterConfig),
            "debug": FakeFactory("debug", Kind.EXPORTER, FakeDebugConfig),
            "logging": FakeFactory("logging", Kind.EXPORTER, FakeLoggingConfig),
            "xraylike": FakeFactory(
                "xraylike", Kind.EXPORTER, FakeDebugConfig, frozenset({Signal.TRACES})
            ),
        },
        Kind.EXTENSION: {},
    }


def parse(
    text: str, *, env: dict[str, str] | None = None, hold: bool = True,
    registry: dict[Kind, dict[str, Any]] | None = None,
) -> CollectorConfig:
    return parse_config(
        textwrap.dedent(text), source="config.yaml", env=env or {},
        registry=registry if registry is not None else make_registry(), hold=hold,
    )


def problems_of(text: str, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, **kwargs)
    lines = str(caught.value).splitlines()
    assert lines == [str(p) for p in caught.value.problems]
    return lines


MINIMAL = """\
receivers:
  otlp:
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
"""

# -- a whole config -----------------------------------------------------------------------------


def test_a_full_config_decodes_components_and_pipelines_with_flushcontrol_appended() -> None:
    # given a config with named components, three signals and a batch processor
    config = parse(
        """\
        receivers:
          otlp:
            protocols:
              grpc:
              http:
                endpoint: 127.0.0.1:4318
        processors:
          batch:
            timeout: 1s
        exporters:
          otlphttp/honeycomb:
            endpoint: https://api.honeycomb.io
            headers:
              x-honeycomb-team: ${env:HONEYCOMB_API_KEY}
          debug:
        service:
          telemetry:
            logs:
              level: DEBUG
          pipelines:
            traces:
              receivers: [otlp]
              processors: [batch]
              exporters: [otlphttp/honeycomb]
            metrics:
              receivers: [otlp]
              exporters: [otlphttp/honeycomb, debug]
            logs/2:
              receivers: [otlp]
              exporters: [debug]
        """,
        env={"HONEYCOMB_API_KEY": "abc123"},
    )
    # then every component is decoded onto its factory default
    assert config.source == "config.yaml"
    assert config.receivers == {
        "otlp": ComponentConfig("otlp", "otlp", FakeOtlpReceiverConfig(protocols=FakeProtocols(
            grpc=FakeServer(), http=FakeServer(endpoint="127.0.0.1:4318"),
        ))),
    }
    assert config.exporters == {
        "otlphttp/honeycomb": ComponentConfig(
            "otlphttp/honeycomb", "otlphttp",
            FakeOtlpExporterConfig(
                endpoint="https://api.honeycomb.io", headers={"x-honeycomb-team": "abc123"}
            ),
        ),
        "debug": ComponentConfig("debug", "debug", FakeDebugConfig()),
    }
    # and flushcontrol is appended, with its factory's default config
    assert config.processors == {
        "batch": ComponentConfig("batch", "batch", FakeBatchConfig(timeout=timedelta(seconds=1))),
        "flushcontrol": ComponentConfig("flushcontrol", "flushcontrol", FakeFlushControlConfig()),
    }
    assert config.pipelines == {
        "traces": PipelineConfig("traces", Signal.TRACES, ("otlp",), ("batch", "flushcontrol"),
                                 ("otlphttp/honeycomb",)),
        "metrics": PipelineConfig("metrics", Signal.METRICS, ("otlp",), ("flushcontrol",),
                                  ("otlphttp/honeycomb", "debug")),
        "logs/2": PipelineConfig("logs/2", Signal.LOGS, ("otlp",), ("flushcontrol",),
                                 ("debug",)),
    }
    assert config.log_level == "debug"
    assert config.warnings == (
        "flushcontrol added to pipelines without it: traces, metrics, logs/2",
    )
    assert config.summary() == (
        "3 pipelines: traces: otlp -> batch -> flushcontrol -> otlphttp/honeycomb; "
        "metrics: otlp -> flushcontrol -> otlphttp/honeycomb, debug; "
        "logs/2: otlp -> flushcontrol -> debug"
    )


def test_the_adot_lambda_layer_default_config_loads_unchanged() -> None:
    # given the ADOT Lambda layer's shipped config (logging exporter, collector metrics)
    config = parse(
        """\
        extensions:
          health_check:
        receivers:
          otlp:
            protocols:
              grpc:
                endpoint: "localhost:4317"
              http:
                endpoint: "localhost:4318"
        exporters:
          logging:
            loglevel: debug
        service:
          extensions: [health_check]
          pipelines:
            traces:
              receivers: [otlp]
              exporters: [logging]
            metrics:
              receivers: [otlp]
              exporters: [logging]
          telemetry:
            metrics:
              address: localhost:8888
        """
    )
    # then it runs as is, with flushcontrol added and what is ignored said once each
    assert config.receivers["otlp"].config == FakeOtlpReceiverConfig(protocols=FakeProtocols(
        grpc=FakeServer(endpoint="localhost:4317"), http=FakeServer(endpoint="localhost:4318")
    ))
    assert config.exporters["logging"].config == FakeLoggingConfig(loglevel="debug")
    assert config.summary() == (
        "2 pipelines: traces: otlp -> flushcontrol -> logging; "
        "metrics: otlp -> flushcontrol -> logging"
    )
    assert config.log_level == "info"
    assert config.warnings == (
        "extensions ignored (they have no role in this collector): health_check",
        'service::telemetry::metrics (config.yaml:23): "metrics" is ignored: the collector '
        "does not report its own metrics",
        "flushcontrol added to pipelines without it: traces, metrics",
    )


def test_a_single_pipeline_summary_says_pipeline() -> None:
    assert parse(MINIMAL).summary() == "1 pipeline: traces: otlp -> flushcontrol -> debug"


def test_pipeline_lists_may_be_comma_separated_strings() -> None:
    text = MINIMAL.replace("  debug:\n", "  debug:\n  debug/2:\n")
    config = parse(text.replace("[otlp]", "otlp").replace("[debug]", "debug, debug/2"))
    assert config.pipelines["traces"].receivers == ("otlp",)
    assert config.pipelines["traces"].exporters == ("debug", "debug/2")


# -- problems, each with key path and line ------------------------------------------------------


def test_unknown_component_type_lists_the_supported_types() -> None:
    assert problems_of(MINIMAL.replace("  debug:\n", "  debug:\n  awsxray:\n")) == [
        'exporters::awsxray (config.yaml:5): unknown exporter type "awsxray"; '
        "supported: debug, logging, otlp, otlphttp, xraylike"
    ]


def test_unknown_key_in_a_component_lists_the_accepted_keys() -> None:
    text = MINIMAL.replace("  debug:\n", "  otlp:\n    endpiont: x\n  debug:\n")
    assert problems_of(text) == [
        'exporters::otlp::endpiont (config.yaml:5): unknown key "endpiont"; '
        "expected one of: endpoint, headers, timeout"
    ]


def test_unknown_top_level_and_service_keys_are_errors() -> None:
    text = "connectors:\n  x:\n" + MINIMAL.replace("service:\n", "service:\n  pipeline: {}\n")
    assert problems_of(text) == [
        'connectors (config.yaml:1): unknown key "connectors"; '
        "expected one of: exporters, extensions, processors, receivers, service",
        'service::pipeline (config.yaml:8): unknown key "pipeline"; '
        "expected one of: extensions, pipelines, telemetry",
    ]


def test_a_pipeline_referencing_an_undefined_component_is_an_error() -> None:
    text = MINIMAL.replace("[otlp]", "[otlp, otlp/2]").replace(
        "exporters: [debug]", "processors: [batch/x]\n      exporters: [debug, otlphttp]"
    )
    assert problems_of(text) == [
        'service::pipelines::traces::receivers (config.yaml:8): references receiver "otlp/2" '
        "which is not configured",
        'service::pipelines::traces::processors (config.yaml:9): references processor '
        '"batch/x" which is not configured',
        'service::pipelines::traces::exporters (config.yaml:10): references exporter '
        '"otlphttp" which is not configured',
    ]


def test_a_pipeline_needs_a_receiver_and_an_exporter() -> None:
    text = MINIMAL + "    metrics:\n      receivers: []\n    logs:\n"
    assert problems_of(text) == [
        "service::pipelines::metrics (config.yaml:10): must have at least one receiver",
        "service::pipelines::metrics (config.yaml:10): must have at least one exporter",
        "service::pipelines::logs (config.yaml:12): must have at least one receiver",
        "service::pipelines::logs (config.yaml:12): must have at least one exporter",
    ]


def test_a_component_in_a_pipeline_of_a_signal_it_does_not_support_is_an_error() -> None:
    text = MINIMAL.replace("  debug:\n", "  debug:\n  xraylike:\n").replace(
        "receivers:\n  otlp:\n", "receivers:\n  otlp:\n  zipkin:\n"
    ) + "    metrics:\n      receivers: [zipkin]\n      exporters: [xraylike]\n"
    assert problems_of(text) == [
        'service::pipelines::metrics::receivers (config.yaml:13): receiver "zipkin" does not '
        "support metrics",
        'service::pipelines::metrics::exporters (config.yaml:14): exporter "xraylike" does not '
        "support metrics",
    ]


def test_a_pipeline_type_other_than_traces_metrics_logs_is_an_error() -> None:
    text = MINIMAL + "    profiles:\n      receivers: [otlp]\n      exporters: [debug]\n"
    assert problems_of(text) == [
        'service::pipelines::profiles (config.yaml:10): unknown pipeline type "profiles"; '
        "expected one of: logs, metrics, traces"
    ]


def test_a_holding_processor_name_in_another_list_is_not_defined_implicitly() -> None:
    assert problems_of(MINIMAL.replace("[otlp]", "[otlp, flushcontrol]")) == [
        'service::pipelines::traces::receivers (config.yaml:8): references receiver '
        '"flushcontrol" which is not configured'
    ]


def test_a_component_listed_twice_in_a_pipeline_is_an_error() -> None:
    assert problems_of(MINIMAL.replace("[debug]", "[debug, debug]")) == [
        'service::pipelines::traces::exporters (config.yaml:9): references exporter "debug" '
        "more than once"
    ]


def test_an_invalid_component_id_is_an_error() -> None:
    assert problems_of(MINIMAL.replace("  debug:\n", "  debug:\n  debug/:\n")) == [
        'exporters::debug/ (config.yaml:5): invalid exporter id "debug/": use type[/name], '
        'e.g. "otlp" or "otlp/2" (the type: a letter, then letters, digits or _)'
    ]


def test_a_config_without_pipelines_is_an_error() -> None:
    assert problems_of("receivers:\n  otlp:\n") == [
        "service (config.yaml:1): is required: it lists the pipelines"
    ]
    assert problems_of("receivers:\n  otlp:\nservice:\n  pipelines:\n") == [
        "service::pipelines (config.yaml:4): needs at least one pipeline"
    ]


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    # given a config with problems in components, flushcontrol settings and pipelines
    text = """\
    receivers:
      otlp:
        protocols:
          grpc:
            endpoint: 4317
    processors:
      flushcontrol:
        max_buffer_size_mib: 0
    exporters:
      otlp:
        timeout: 5
      awsxray:
    service:
      pipelines:
        traces:
          receivers: [otlp]
          exporters: [otlp, debug]
    """
    # then all of them come back, in the order of their lines
    assert problems_of(text) == [
        "receivers::otlp::protocols::grpc::endpoint (config.yaml:5): must be a string, got 4317",
        "processors::flushcontrol::max_buffer_size_mib (config.yaml:8): must be > 0",
        'exporters::otlp::timeout (config.yaml:11): needs a unit, e.g. "5s"; got 5',
        'exporters::awsxray (config.yaml:12): unknown exporter type "awsxray"; '
        "supported: debug, logging, otlp, otlphttp, xraylike",
        'service::pipelines::traces::exporters (config.yaml:17): references exporter "debug" '
        "which is not configured",
    ]


def test_a_component_that_failed_to_decode_is_not_also_reported_as_missing() -> None:
    text = MINIMAL.replace("  debug:\n", "  debug:\n    verbosity: loud\n")
    assert problems_of(text) == [
        'exporters::debug::verbosity (config.yaml:5): must be one of: basic, normal, detailed; '
        'got "loud"'
    ]


def test_a_yaml_syntax_error_is_one_problem_with_its_line() -> None:
    assert problems_of("receivers:\n  otlp:\nexporters: [debug\nservice:\n") == [
        "<root> (config.yaml:4): invalid YAML: expected ',' or ']', but got ':' (column 8)"
    ]


@pytest.mark.parametrize("text", ["", "\n# only a comment\n", "~\n"])
def test_an_empty_config_is_one_clear_error(text: str) -> None:
    assert problems_of(text) == ['config file "config.yaml": is empty']


def test_a_config_that_is_not_a_mapping_is_an_error() -> None:
    assert problems_of("- receivers\n") == [
        "<root> (config.yaml:1): must be a mapping of receivers, processors, exporters and "
        "service"
    ]


def test_secrets_from_the_environment_never_appear_in_problems() -> None:
    text = MINIMAL.replace(
        "  debug:\n", "  otlp:\n    headers:\n      x-key: ${env:KEY}\n  debug:\n"
    )
    lines = problems_of(text, env={"KEY": "[sekrit]"})
    assert lines == [
        "exporters::otlp::headers::x-key (config.yaml:6): must be a string, got a list"
    ]


# -- flushcontrol -------------------------------------------------------------------------------


def test_a_flushcontrol_defined_under_processors_is_the_one_added() -> None:
    text = MINIMAL.replace(
        "exporters:", "processors:\n  flushcontrol:\n    max_buffer_size_mib: 4\nexporters:", 1
    )
    config = parse(text)
    assert config.processors == {
        "flushcontrol": ComponentConfig(
            "flushcontrol", "flushcontrol", FakeFlushControlConfig(max_buffer_size_mib=4)
        )
    }
    assert config.pipelines["traces"].processors == ("flushcontrol",)


def test_a_pipeline_that_lists_flushcontrol_keeps_its_place_and_gets_no_second_one() -> None:
    # given flushcontrol listed before batch, without a processors entry for it
    text = MINIMAL.replace("exporters:", "processors:\n  batch:\nexporters:", 1).replace(
        "exporters: [debug]", "processors: [flushcontrol, batch]\n      exporters: [debug]"
    )
    config = parse(text)
    assert config.pipelines["traces"].processors == ("flushcontrol", "batch")
    assert config.processors["flushcontrol"].config == FakeFlushControlConfig()
    assert config.warnings == ()


def test_decouple_counts_as_flushcontrol() -> None:
    text = MINIMAL.replace("exporters:", "processors:\n  decouple:\nexporters:", 1).replace(
        "exporters: [debug]", "processors: [decouple]\n      exporters: [debug]"
    ) + "    logs:\n      receivers: [otlp]\n      exporters: [debug]\n"
    config = parse(text)
    assert config.pipelines["traces"].processors == ("decouple",)
    assert config.pipelines["logs"].processors == ("flushcontrol",)
    assert set(config.processors) == {"decouple", "flushcontrol"}
    assert config.processors["decouple"] == ComponentConfig(
        "decouple", "decouple", FakeDecoupleConfig()
    )
    assert config.warnings == ("flushcontrol added to pipelines without it: logs",)


def test_a_named_flushcontrol_counts_as_flushcontrol() -> None:
    text = MINIMAL.replace(
        "exporters:", "processors:\n  flushcontrol/big:\n    max_buffer_size_mib: 64\nexporters:",
        1,
    ).replace("exporters: [debug]", "processors: [flushcontrol/big]\n      exporters: [debug]")
    config = parse(text)
    assert config.pipelines["traces"].processors == ("flushcontrol/big",)
    assert list(config.processors) == ["flushcontrol/big"]


def test_without_hold_flushcontrol_and_decouple_are_removed_and_none_is_added() -> None:
    # given pipelines listing flushcontrol and decouple, and one listing neither
    text = """\
    receivers:
      otlp:
    processors:
      batch:
      decouple:
      flushcontrol:
    exporters:
      debug:
    service:
      pipelines:
        traces:
          receivers: [otlp]
          processors: [batch, flushcontrol]
          exporters: [debug]
        metrics:
          receivers: [otlp]
          processors: [decouple]
          exporters: [debug]
        logs:
          receivers: [otlp]
          exporters: [debug]
    """
    # when it is loaded for the collector without flushcontrol
    config = parse(text, hold=False)
    # then no pipeline holds data and no holding processor is left to build
    assert {pid: p.processors for pid, p in config.pipelines.items()} == {
        "traces": ("batch",), "metrics": (), "logs": (),
    }
    assert list(config.processors) == ["batch"]
    assert config.warnings == (
        "holding disabled: flushcontrol/decouple removed from pipelines traces, metrics; "
        "data is exported as it arrives",
    )


def test_a_registry_without_flushcontrol_is_an_error_when_one_must_be_added() -> None:
    assert problems_of(MINIMAL, registry=make_registry(flushcontrol=False)) == [
        "processors::flushcontrol: no flushcontrol processor is registered, and every "
        "pipeline needs one"
    ]
    config = parse(MINIMAL, registry=make_registry(flushcontrol=False), hold=False)
    assert config.pipelines["traces"].processors == ()


# -- extensions, telemetry, unused components ---------------------------------------------------


def test_harmless_extensions_are_ignored_with_one_warning_and_others_are_errors() -> None:
    text = "extensions:\n  health_check:\n  pprof/1:\n  zpages:\n  memory_ballast:\n" + MINIMAL
    assert parse(text).warnings[0] == (
        "extensions ignored (they have no role in this collector): "
        "health_check, pprof/1, zpages, memory_ballast"
    )
    text = "extensions:\n  sigv4auth:\n" + MINIMAL + "  extensions: [sigv4auth, oauth2]\n"
    assert problems_of(text) == [
        'extensions::sigv4auth (config.yaml:2): extension "sigv4auth" is not supported; '
        "only these are accepted (and ignored): health_check, memory_ballast, pprof, zpages",
        'service::extensions (config.yaml:12): references extension "oauth2" which is not '
        "configured",
    ]


@pytest.mark.parametrize(
    ("written", "level"),
    [("debug", "debug"), ("INFO", "info"), ("Warn", "warn"), ("warning", "warn"),
     ("error", "error"), ("${env:UNSET_LEVEL}", "info")],
)
def test_log_level_is_read_case_insensitively(written: str, level: str) -> None:
    text = MINIMAL + f"  telemetry:\n    logs:\n      level: {written}\n"
    assert parse(text).log_level == level


def test_a_bad_log_level_lists_the_accepted_ones() -> None:
    text = MINIMAL + "  telemetry:\n    logs:\n      level: verbose\n"
    assert problems_of(text) == [
        "service::telemetry::logs::level (config.yaml:12): must be one of: debug, info, warn, "
        'warning, error; got "verbose"'
    ]


def test_components_defined_but_unused_are_kept_with_a_warning() -> None:
    text = MINIMAL.replace("  debug:\n", "  debug:\n  otlphttp:\n    endpoint: http://x\n")
    text = text.replace("receivers:\n  otlp:\n", "receivers:\n  otlp:\n  zipkin:\n")
    config = parse(text)
    assert set(config.exporters) == {"debug", "otlphttp"}
    assert set(config.receivers) == {"otlp", "zipkin"}
    assert config.warnings[-1] == (
        "defined but not used in any pipeline (ignored): receivers::zipkin, exporters::otlphttp"
    )


# -- where the config comes from ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "env", "expected"),
    [
        ("/a.yaml", {"OPENTELEMETRY_COLLECTOR_CONFIG_URI": "/b.yaml"}, "/a.yaml"),
        (None, {"OPENTELEMETRY_COLLECTOR_CONFIG_URI": "file:/b.yaml",
                "OPENTELEMETRY_COLLECTOR_CONFIG_FILE": "/c.yaml"}, "file:/b.yaml"),
        (None, {"OPENTELEMETRY_COLLECTOR_CONFIG_FILE": "/c.yaml"}, "/c.yaml"),
        ("", {"OPENTELEMETRY_COLLECTOR_CONFIG_URI": "",
              "OPENTELEMETRY_COLLECTOR_CONFIG_FILE": "/c.yaml"}, "/c.yaml"),
        (None, {}, "/opt/collector-config/config.yaml"),
    ],
)
def test_config_location_precedence(
    arg: str | None, env: dict[str, str], expected: str
) -> None:
    assert resolve_config_uri(arg, env) == expected


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "config.yaml").write_text(MINIMAL)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "form", ["{dir}/config.yaml", "file:{dir}/config.yaml", "file://{dir}/config.yaml",
             "config.yaml", "file:config.yaml"],
)
def test_load_accepts_paths_and_file_uris(config_dir: Path, form: str) -> None:
    uri = form.format(dir=config_dir)
    config = load_config(uri, env={}, registry=make_registry())
    expected_source = str(config_dir / "config.yaml") if "{dir}" in form else "config.yaml"
    assert config.source == expected_source
    assert config.summary() == "1 pipeline: traces: otlp -> flushcontrol -> debug"


@pytest.mark.parametrize(
    ("uri", "scheme"),
    [("s3://bucket/config.yaml", "s3"), ("https://example.com/c.yaml", "https"),
     ("http://example.com/c.yaml", "http"), ("env:CONFIG", "env"), ("yaml:a: b", "yaml")],
)
def test_other_config_sources_are_a_clear_error(uri: str, scheme: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(uri, env={}, registry=make_registry())
    assert str(caught.value) == (
        f'config source "{uri}": scheme "{scheme}" is not supported yet; '
        "use a file path or a file: URI"
    )


def test_a_missing_or_empty_config_file_is_one_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(str(missing), env={}, registry=make_registry())
    assert str(caught.value) == f'config file "{missing}": not found'

    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError) as caught:
        load_config(f"file:{empty}", env={}, registry=make_registry())
    assert str(caught.value) == f'config file "{empty}": is empty'


def test_problems_from_a_file_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "collector.yaml"
    path.write_text(MINIMAL.replace("  debug:\n", "  debug:\n    verbosity: 3\n"))
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), env={}, registry=make_registry())
    assert str(caught.value) == (
        f"exporters::debug::verbosity ({path}:5): must be one of: basic, normal, detailed; "
        "got 3"
    )
