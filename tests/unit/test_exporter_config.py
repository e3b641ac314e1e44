"""The exporters' settings: collector key names decode from YAML, defaults match the
collector where they should, and every bad value is reported with its key."""

from __future__ import annotations

import ssl
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from collector._component import BuildContext, Kind
from collector._confmap import Report, decode, parse_yaml
from collector._signals import Signal
from collector.errors import ConfigError
from collector.exporters import debug, otlp, otlphttp
from collector.exporters._retry import RetryConfig
from collector.exporters._tls import TLSConfig, read_pem_files, ssl_context
from collector.exporters.debug import DebugConfig, LoggingConfig
from collector.exporters.otlp import OTLPConfig
from collector.exporters.otlphttp import OTLPHTTPConfig


def decode_yaml(text: str, cls: type[object]) -> tuple[object, Report]:
    report = Report("config.yaml")
    node = parse_yaml(text, env={}, report=report)
    return decode(node, cls, "exporters::x", report=report), report


def problem_lines(report: Report) -> list[str]:
    return [str(p) for p in report.sorted_problems()]


# -- otlp --------------------------------------------------------------------------------


def test_otlp_config_decodes_the_collector_keys() -> None:
    # Given an otlp exporter section as written for the collector
    text = """\
endpoint: api.honeycomb.io:443
headers:
  x-honeycomb-team: abc123
tls:
  insecure: false
  ca_file: /etc/ca.pem
compression: none
timeout: 2s
retry_on_failure:
  enabled: true
  initial_interval: 50ms
  max_interval: 500ms
  max_elapsed_time: 10s
sending_queue:
  enabled: false
  queue_size: 100
"""
    # When it is decoded
    config, report = decode_yaml(text, OTLPConfig)
    # Then every value lands in its field, sending_queue is accepted with a warning
    assert report.problems == []
    assert config == OTLPConfig(
        endpoint="api.honeycomb.io:443",
        headers={"x-honeycomb-team": "abc123"},
        tls=TLSConfig(ca_file="/etc/ca.pem"),
        compression="none",
        timeout=timedelta(seconds=2),
        retry_on_failure=RetryConfig(
            initial_interval=timedelta(milliseconds=50),
            max_interval=timedelta(milliseconds=500),
            max_elapsed_time=timedelta(seconds=10),
        ),
    )
    assert report.warnings == [
        'exporters::x::sending_queue (config.yaml:14): "sending_queue" is ignored: '
        "flushcontrol holds the data between drains"
    ]


def test_otlp_defaults_are_the_collectors_gzip_and_5s() -> None:
    config = OTLPConfig()
    assert (config.compression, config.timeout) == ("gzip", timedelta(seconds=5))


@pytest.mark.parametrize(
    ("endpoint", "insecure", "target", "secure"),
    [
        ("api.honeycomb.io:443", False, "api.honeycomb.io:443", True),
        ("127.0.0.1:4317", True, "127.0.0.1:4317", False),
        ("http://127.0.0.1:4317", False, "127.0.0.1:4317", False),
        ("https://api.honeycomb.io:443", False, "api.honeycomb.io:443", True),
        ("https://api.honeycomb.io:443/", True, "api.honeycomb.io:443", True),
        ("dns:///collector:4317", True, "dns:///collector:4317", False),
    ],
)
def test_otlp_endpoint_scheme_decides_tls_as_the_collector_does(
    endpoint: str, insecure: bool, target: str, secure: bool
) -> None:
    config = OTLPConfig(endpoint=endpoint, tls=TLSConfig(insecure=insecure))
    assert config.target() == (target, secure)


def test_otlp_config_reports_every_problem_with_its_key_and_line() -> None:
    text = """\
endpoint: https://api.honeycomb.io/v1/traces
timeout: 0s
tls:
  insecure_skip_verify: true
"""
    _, report = decode_yaml(text, OTLPConfig)
    assert problem_lines(report) == [
        'exporters::x::endpoint (config.yaml:1): "https://api.honeycomb.io/v1/traces" must be '
        "host:port or http(s)://host:port",
        "exporters::x::timeout (config.yaml:2): must be > 0",
        "exporters::x::tls::insecure_skip_verify (config.yaml:4): is not supported by the "
        "gRPC exporter; set ca_file",
    ]


def test_otlp_nested_sections_report_their_own_problems() -> None:
    text = """\
endpoint: api.honeycomb.io:443
tls:
  cert_file: /etc/cert.pem
retry_on_failure:
  multiplier: 0.5
  max_interval: 10ms
"""
    _, report = decode_yaml(text, OTLPConfig)
    assert problem_lines(report) == [
        # key_file is absent: the error points at its section
        "exporters::x::tls::key_file (config.yaml:2): must be set together with cert_file",
        "exporters::x::retry_on_failure::multiplier (config.yaml:5): must be >= 1",
        "exporters::x::retry_on_failure::max_interval (config.yaml:6): must be >= initial_interval",
    ]


def test_otlp_endpoint_is_required() -> None:
    assert OTLPConfig().validate() == [("endpoint", "must be set, e.g. api.honeycomb.io:443")]


def test_header_values_never_appear_in_config_errors() -> None:
    # Given a header value that cannot go on the wire
    config = OTLPHTTPConfig(endpoint="https://x.example", headers={"x-key": "s3cr3t\nvalue"})
    # When it is validated, the error names the key only
    assert config.validate() == [("headers::x-key", "value must not contain a line break")]


# -- otlphttp ----------------------------------------------------------------------------


def test_otlphttp_config_decodes_the_collector_keys() -> None:
    text = """\
endpoint: https://api.honeycomb.io
logs_endpoint: https://logs.example.com/custom/path
headers:
  x-honeycomb-team: abc123
encoding: json
compression: ""
timeout: 3s
max_idle_conns: 10
"""
    config, report = decode_yaml(text, OTLPHTTPConfig)
    assert report.problems == []
    assert config == OTLPHTTPConfig(
        endpoint="https://api.honeycomb.io",
        logs_endpoint="https://logs.example.com/custom/path",
        headers={"x-honeycomb-team": "abc123"},
        encoding="json",
        compression="",
        timeout=timedelta(seconds=3),
    )


def test_otlphttp_defaults_are_the_collectors_gzip_proto_and_30s() -> None:
    config = OTLPHTTPConfig()
    assert (config.compression, config.encoding, config.timeout) == (
        "gzip",
        "proto",
        timedelta(seconds=30),
    )


def test_otlphttp_appends_the_signal_path_unless_a_signal_endpoint_is_set() -> None:
    config = OTLPHTTPConfig(
        endpoint="https://api.example.com/otlp",
        metrics_endpoint="https://metrics.example.com/ingest",
    )
    assert config.url(Signal.TRACES) == "https://api.example.com/otlp/v1/traces"
    assert config.url(Signal.METRICS) == "https://metrics.example.com/ingest"
    assert config.url(Signal.LOGS) == "https://api.example.com/otlp/v1/logs"
    assert OTLPHTTPConfig(endpoint="https://h.example/").url(Signal.LOGS) == (
        "https://h.example/v1/logs"
    )


def test_otlphttp_signal_without_any_endpoint_has_no_url() -> None:
    assert OTLPHTTPConfig(traces_endpoint="https://t.example/v1/traces").url(Signal.LOGS) == ""


def test_otlphttp_config_reports_bad_urls_and_a_missing_endpoint() -> None:
    assert OTLPHTTPConfig(endpoint="api.honeycomb.io:443", timeout=timedelta(0)).validate() == [
        ("endpoint", '"api.honeycomb.io:443" must be an http:// or https:// URL'),
        ("timeout", "must be > 0"),
    ]
    assert OTLPHTTPConfig().validate() == [
        ("endpoint", "must be set (or traces_endpoint, metrics_endpoint, logs_endpoint)")
    ]


def test_otlphttp_rejects_an_unknown_compression_naming_the_choices() -> None:
    _, report = decode_yaml("endpoint: https://x.example\ncompression: zstd\n", OTLPHTTPConfig)
    assert problem_lines(report) == [
        'exporters::x::compression (config.yaml:2): must be one of: gzip, none, ""; got "zstd"'
    ]


# -- debug and logging -------------------------------------------------------------------


def test_debug_defaults_to_basic_and_logging_to_normal() -> None:
    assert DebugConfig().effective_verbosity == "basic"
    assert LoggingConfig().effective_verbosity == "normal"


@pytest.mark.parametrize(
    ("loglevel", "verbosity"),
    [("debug", "detailed"), ("info", "normal"), ("warn", "basic"), ("error", "basic")],
)
def test_logging_loglevel_maps_to_verbosity(loglevel: str, verbosity: str) -> None:
    config, report = decode_yaml(f"loglevel: {loglevel}\n", LoggingConfig)
    assert report.problems == []
    assert isinstance(config, LoggingConfig)
    assert config.effective_verbosity == verbosity


def test_logging_loglevel_and_verbosity_together_are_an_error() -> None:
    _, report = decode_yaml("loglevel: debug\nverbosity: basic\n", LoggingConfig)
    assert problem_lines(report) == [
        "exporters::x::loglevel (config.yaml:1): cannot be set together with verbosity; "
        "use verbosity only"
    ]


# -- factories ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "type_name", "config_type"),
    [
        (otlp.FACTORY, "otlp", OTLPConfig),
        (otlphttp.FACTORY, "otlphttp", OTLPHTTPConfig),
        (debug.FACTORY, "debug", DebugConfig),
        (debug.LOGGING_FACTORY, "logging", LoggingConfig),
    ],
)
def test_factories_name_their_type_and_support_every_signal(
    factory: Any, type_name: str, config_type: type
) -> None:
    assert factory.type_name == type_name
    assert factory.kind is Kind.EXPORTER
    assert factory.signals == frozenset(Signal)
    assert factory.config_type is config_type
    assert isinstance(factory.default_config(), config_type)


def test_created_exporter_carries_the_component_id() -> None:
    config = OTLPHTTPConfig(endpoint="https://api.honeycomb.io")
    exporter = otlphttp.FACTORY.create(config, BuildContext("otlphttp/honeycomb", {}))
    assert exporter.id == "otlphttp/honeycomb"
    grpc_exporter = otlp.FACTORY.create(
        OTLPConfig(endpoint="api.honeycomb.io:443"), BuildContext("otlp/hny", {})
    )
    assert grpc_exporter.id == "otlp/hny"


def test_create_refuses_an_invalid_config_with_full_key_paths() -> None:
    with pytest.raises(ConfigError) as caught:
        otlp.FACTORY.create(OTLPConfig(), BuildContext("otlp/a", {}))
    assert (
        str(caught.value) == "exporters::otlp/a::endpoint: must be set, e.g. api.honeycomb.io:443"
    )


# -- TLS files ---------------------------------------------------------------------------


def test_unreadable_tls_files_are_reported_with_their_keys(tmp_path: Path) -> None:
    tls = TLSConfig(
        ca_file=str(tmp_path / "missing-ca.pem"),
        cert_file=str(tmp_path / "c.pem"),
        key_file=str(tmp_path / "k.pem"),
    )
    with pytest.raises(ConfigError) as caught:
        ssl_context(tls, "exporters::otlphttp")
    assert [p.path for p in caught.value.problems] == [
        "exporters::otlphttp::tls::ca_file",
        "exporters::otlphttp::tls::cert_file",
        "exporters::otlphttp::tls::key_file",
    ]
    assert caught.value.problems[0].message == (
        f"cannot read {tmp_path / 'missing-ca.pem'}: No such file or directory"
    )


def test_insecure_skip_verify_turns_certificate_checks_off_for_otlphttp() -> None:
    context = ssl_context(TLSConfig(insecure_skip_verify=True), "exporters::otlphttp")
    assert (context.check_hostname, context.verify_mode) == (False, ssl.CERT_NONE)
    strict = ssl_context(TLSConfig(), "exporters::otlphttp")
    assert (strict.check_hostname, strict.verify_mode) == (True, ssl.CERT_REQUIRED)


def test_pem_files_are_read_as_bytes(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    files = read_pem_files(TLSConfig(ca_file=str(ca)), "exporters::otlp")
    assert (files.ca, files.cert, files.key) == (b"-----BEGIN CERTIFICATE-----\n", None, None)
