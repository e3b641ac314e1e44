"""Requirements for the generic config layer: YAML with lines, ${env:...} expansion, and the
strict decoding of nodes into config dataclasses."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import pytest

from collector._confmap import (
    ListNode,
    MapNode,
    Node,
    Report,
    ScalarNode,
    decode,
    parse_duration,
    parse_yaml,
    to_plain,
)

# -- small config types standing in for component configs -------------------------------------


@dataclass(frozen=True, kw_only=True)
class Retry:
    enabled: bool = True
    initial_interval: timedelta = timedelta(seconds=5)
    max_interval: timedelta = timedelta(seconds=30)

    def validate(self) -> list[tuple[str, str]]:
        if self.max_interval < self.initial_interval:
            return [("max_interval", "must be >= initial_interval")]
        return []


@dataclass(frozen=True, kw_only=True)
class Tls:
    insecure: bool = False
    ca_file: str = ""


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True, kw_only=True)
class Exporter:
    endpoint: str = "localhost:4317"
    headers: dict[str, str] = field(default_factory=dict, metadata={"secret": True})
    compression: Literal["gzip", "none"] = "gzip"
    timeout: timedelta = timedelta(seconds=10)
    retry_on_failure: Retry = field(default_factory=Retry)
    tls: Tls | None = None
    ratio: float = 1.0
    max_items: int = 100
    tags: list[str] = field(default_factory=list)
    names: tuple[str, ...] = ()
    api_key: str = field(default="", metadata={"secret": True})
    verbosity: Literal["basic", "detailed"] = field(
        default="basic", metadata={"aliases": ("loglevel",)}
    )
    balancer_name: str = field(default="", metadata={"ignored": "one backend, no balancing"})
    color: Color = Color.RED
    label: str | None = None
    extra: Any = None

    def validate(self) -> list[tuple[str, str]]:
        if self.max_items <= 0:
            return [("max_items", "must be > 0")]
        return []


@dataclass(frozen=True, kw_only=True)
class Required:
    name: str
    size: int = 1


@dataclass(frozen=True, kw_only=True)
class Protocols:
    grpc: Tls | None = None
    http: Tls | None = field(default_factory=lambda: Tls(ca_file="/default"))


def load(text: str, env: dict[str, str] | None = None) -> tuple[Node, Report]:
    report = Report("config.yaml")
    node = parse_yaml(text, env=env or {}, report=report)
    assert node is not None
    return node, report


def decode_text(
    text: str, cls: Any = Exporter, base: Any = None, env: dict[str, str] | None = None
) -> tuple[Any, Report]:
    node, report = load(text, env)
    return decode(node, cls, "exporters::otlp", base, report=report), report


def messages(report: Report) -> list[str]:
    return [str(problem) for problem in report.sorted_problems()]


# -- YAML reading -------------------------------------------------------------------------------


def test_nodes_carry_the_line_of_the_key_that_introduces_them() -> None:
    # given a nested mapping whose values start on the line after their key
    node, report = load("a: 1\nb:\n  c:\n    - x\n    - y\n")
    # then every value reports the line of its key, and list items their own line
    assert isinstance(node, MapNode)
    b = node.entries["b"]
    assert isinstance(b, MapNode) and b.line == 2
    c = b.entries["c"]
    assert isinstance(c, ListNode) and c.line == 3
    assert [item.line for item in c.items] == [4, 5]
    assert report.problems == []


def test_yaml_uses_the_core_schema_so_yes_and_leading_zeros_stay_plain() -> None:
    # given values that YAML 1.1 would turn into bools and octal numbers
    node, _ = load("a: yes\nb: on\nc: 0755\nd: true\ne: 0x1F\nf: 1.5\ng: ~\nh: 2024-01-01\n")
    # then only the YAML 1.2 core forms are typed
    assert to_plain(node) == {
        "a": "yes", "b": "on", "c": 755, "d": True, "e": 31, "f": 1.5, "g": None,
        "h": "2024-01-01",
    }


def test_yaml_syntax_error_is_reported_with_its_line() -> None:
    # given a mapping value where a key was expected, on line 3
    report = Report("config.yaml")
    node = parse_yaml("a: 1\nb:\n  c: d: e\n", env={}, report=report)
    # then there is nothing to decode and one problem names the line
    assert node is None
    assert messages(report) == [
        "<root> (config.yaml:3): invalid YAML: mapping values are not allowed here (column 7)"
    ]


def test_duplicate_keys_are_an_error_naming_the_first_definition() -> None:
    _, report = load("exporters:\n  otlp: {}\n  debug: {}\n  otlp: {}\n")
    assert messages(report) == [
        'exporters::otlp (config.yaml:4): duplicate key "otlp"; first defined on line 2'
    ]


def test_merge_keys_apply_anchored_mappings_under_explicit_keys() -> None:
    node, report = load("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n")
    assert to_plain(node)["use"] == {"x": 1, "y": 3}
    assert report.problems == []


def test_alias_bombs_are_stopped_by_the_node_budget() -> None:
    # given the classic exponential alias expansion
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 8):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    report = Report("config.yaml")
    # when it is read
    parse_yaml("\n".join(lines) + "\n", env={}, report=report)
    # then reading stops with one problem instead of building ten million nodes
    assert len(report.problems) == 1
    assert "too many values" in report.problems[0].message


# -- ${env:...} expansion -----------------------------------------------------------------------


def test_env_reference_forms_expand_inside_strings_as_text() -> None:
    # given every reference form inside longer strings
    text = (
        'a: "http://${env:HOST}:${PORT}/v1"\n'
        'b: "x-${env:MISSING:-fallback}-y"\n'
        'c: "x-${env:EMPTY:-fallback}-y"\n'
        'd: "pa$$word and $${env:HOST}"\n'
        'e: "cost: $5"\n'
    )
    node, report = load(text, env={"HOST": "collector", "PORT": "4318", "EMPTY": ""})
    # then each is substituted as text; a default applies only to unset variables; $$ is $
    assert to_plain(node) == {
        "a": "http://collector:4318/v1",
        "b": "x-fallback-y",
        "c": "x--y",
        "d": "pa$word and ${env:HOST}",
        "e": "cost: $5",
    }
    assert report.problems == [] and report.warnings == []


def test_a_whole_value_reference_takes_the_type_its_text_has_in_yaml() -> None:
    env = {"PORT": "4317", "ON": "true", "RATIO": "0.5", "WORD": "yes", "HDRS": "{a: 1, b: x}"}
    node, report = load(
        "p: ${env:PORT}\no: ${ON}\nr: ${env:RATIO}\nw: ${env:WORD}\nh: ${env:HDRS}\n", env
    )
    assert to_plain(node) == {"p": 4317, "o": True, "r": 0.5, "w": "yes",
                              "h": {"a": 1, "b": "x"}}
    assert report.problems == []


def test_a_whole_value_number_still_feeds_a_string_field_with_its_text() -> None:
    # given PORT=04317 (a YAML int) referenced by a string field and an int field
    config, report = decode_text(
        "endpoint: ${env:PORT}\nmax_items: ${env:PORT}\n", env={"PORT": "04317"}
    )
    # then the string field gets the variable's text and the int field the number
    assert report.problems == []
    assert (config.endpoint, config.max_items) == ("04317", 4317)


def test_an_unset_variable_expands_to_empty_with_a_warning() -> None:
    # given a string field and an int field that reference an unset variable
    config, report = decode_text(
        "endpoint: ${env:NOPE}\nmax_items: ${env:NOPE}\nlabel: ${env:NOPE}\n"
        'api_key: "Bearer ${env:NOPE}"\n'
    )
    # then the string is empty, the int keeps its default, the optional is None
    assert report.problems == []
    assert (config.endpoint, config.max_items, config.label, config.api_key) == (
        "", 100, None, "Bearer ",
    )
    # (expansion happens while reading, so warnings carry document paths)
    assert report.warnings == [
        f'{key} (config.yaml:{line}): environment variable "NOPE" is not '
        'set; using ""'
        for key, line in (("endpoint", 1), ("max_items", 2), ("label", 3), ("api_key", 4))
    ]


def test_env_expansion_applies_to_values_not_keys() -> None:
    node, report = load("${env:K}: ${env:K}\n", env={"K": "v"})
    assert to_plain(node) == {"${env:K}": "v"}
    assert report.problems == []


def test_a_variable_value_is_not_expanded_again() -> None:
    node, _ = load('a: "${env:A}"\nb: "x${env:A}"\n', env={"A": "${env:B}$$", "B": "no"})
    assert to_plain(node) == {"a": "${env:B}$$", "b": "x${env:B}$$"}


def test_unsupported_references_are_errors_with_path_and_line() -> None:
    _, report = load(
        "exporters:\n  otlp:\n    endpoint: ${file:/etc/endpoint}\n    key: ${env:1BAD}\n"
    )
    assert messages(report) == [
        'exporters::otlp::endpoint (config.yaml:3): cannot expand "${file:/etc/endpoint}": '
        'scheme "file" is not supported; only env (${env:NAME}) is',
        'exporters::otlp::key (config.yaml:4): cannot expand "${env:1BAD}": environment '
        'variable "1BAD" has an invalid name (letters, digits and _, not starting with a digit)',
    ]


# -- durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5s", timedelta(seconds=5)),
        ("250ms", timedelta(milliseconds=250)),
        ("1.5s", timedelta(seconds=1.5)),
        ("1m30s", timedelta(seconds=90)),
        ("2h", timedelta(hours=2)),
        ("100us", timedelta(microseconds=100)),
        ("1500ns", timedelta(microseconds=2)),
        ("10ns", timedelta(0)),
        ("0", timedelta(0)),
        ("-1s", timedelta(seconds=-1)),
    ],
)
def test_durations_parse_as_the_collector_writes_them(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "5 s", "5sec", "s", "1.5.5s", "five seconds"])
def test_malformed_durations_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_a_bad_duration_names_the_key_and_line() -> None:
    config, report = decode_text("endpoint: x\ntimeout: 5 sec\n")
    assert config is None
    assert messages(report) == [
        'exporters::otlp::timeout (config.yaml:2): invalid duration "5 sec": use a number and '
        'a unit (ns, us, ms, s, m, h), e.g. "5s" or "1m30s"'
    ]


def test_a_duration_without_a_unit_is_rejected() -> None:
    _, report = decode_text("timeout: 5\nretry_on_failure:\n  max_interval: '30'\n")
    assert messages(report) == [
        'exporters::otlp::timeout (config.yaml:1): needs a unit, e.g. "5s"; got 5',
        'exporters::otlp::retry_on_failure::max_interval (config.yaml:3): needs a unit, '
        'e.g. "5s"; got 30',
    ]


# -- decoding -----------------------------------------------------------------------------------


def test_fields_decode_to_their_types() -> None:
    config, report = decode_text(
        "endpoint: backend:4317\n"
        "headers: {x-team: abc, x-version: 2, x-ratio: 1.10}\n"
        "compression: none\n"
        "timeout: 1m30s\n"
        "ratio: 2\n"
        "tags: [a, b]\n"
        "names: c, d\n"
        "color: blue\n"
        "extra: {any: [1, 2]}\n"
    )
    assert report.problems == [] and report.warnings == []
    assert config == Exporter(
        endpoint="backend:4317",
        headers={"x-team": "abc", "x-version": "2", "x-ratio": "1.10"},
        compression="none",
        timeout=timedelta(seconds=90),
        ratio=2.0,
        tags=["a", "b"],
        names=("c", "d"),
        color=Color.BLUE,
        extra={"any": [1, 2]},
    )


def test_unknown_key_lists_the_keys_that_are_accepted() -> None:
    _, report = decode_text("endpiont: x\n", cls=Tls)
    assert messages(report) == [
        'exporters::otlp::endpiont (config.yaml:1): unknown key "endpiont"; '
        "expected one of: ca_file, insecure"
    ]


def test_wrong_types_are_errors_with_what_was_found() -> None:
    _, report = decode_text(
        'max_items: "10"\nratio: fast\nretry_on_failure:\n  enabled: "yes"\n'
        "tags: {a: b}\nendpoint: [x]\ncompression: gz\n"
    )
    assert messages(report) == [
        'exporters::otlp::max_items (config.yaml:1): must be an integer, got "10"',
        'exporters::otlp::ratio (config.yaml:2): must be a number, got "fast"',
        'exporters::otlp::retry_on_failure::enabled (config.yaml:4): must be true or false, '
        'got "yes"',
        "exporters::otlp::tags (config.yaml:5): must be a list, got a mapping",
        "exporters::otlp::endpoint (config.yaml:6): must be a string, got a list",
        'exporters::otlp::compression (config.yaml:7): must be one of: gzip, none; got "gz"',
    ]


def test_a_bool_is_not_an_integer_and_an_integer_is_not_a_string() -> None:
    _, report = decode_text("max_items: true\nendpoint: 4317\n")
    assert messages(report) == [
        "exporters::otlp::max_items (config.yaml:1): must be an integer, got true",
        "exporters::otlp::endpoint (config.yaml:2): must be a string, got 4317",
    ]


def test_secret_values_never_appear_in_messages() -> None:
    _, report = decode_text(
        "api_key: 12345\nheaders:\n  x-api-key: [s3cr3t]\n  x-other: {k: hunter2}\n"
    )
    assert messages(report) == [
        "exporters::otlp::api_key (config.yaml:1): must be a string, got an integer",
        "exporters::otlp::headers::x-api-key (config.yaml:3): must be a string, got a list",
        "exporters::otlp::headers::x-other (config.yaml:4): must be a string, got a mapping",
    ]
    assert not any("12345" in m or "hunter2" in m or "s3cr3t" in m for m in messages(report))


def test_validate_problems_of_a_nested_dataclass_carry_its_path_and_line() -> None:
    _, report = decode_text(
        "endpoint: x\nretry_on_failure:\n  initial_interval: 10s\n  max_interval: 1s\n"
    )
    assert messages(report) == [
        "exporters::otlp::retry_on_failure::max_interval (config.yaml:4): "
        "must be >= initial_interval"
    ]


def test_validate_problem_for_an_absent_key_points_at_its_mapping() -> None:
    # given a base whose max_items is invalid, and YAML that does not mention it
    base = Exporter(max_items=0)
    _, report = decode_text("endpoint: x\ntls:\n  insecure: true\n", base=base)
    assert messages(report) == ["exporters::otlp::max_items (config.yaml:1): must be > 0"]


def test_validate_is_not_run_on_a_dataclass_that_had_problems() -> None:
    _, report = decode_text("max_items: 0\nratio: x\n")
    assert messages(report) == ['exporters::otlp::ratio (config.yaml:2): must be a number, got "x"']


def test_decoding_merges_onto_the_base_including_nested_dataclasses_and_maps() -> None:
    # given a factory default with non-default nested values and headers
    base = Exporter(
        endpoint="default:4317",
        headers={"x-a": "1"},
        retry_on_failure=Retry(enabled=False, max_interval=timedelta(minutes=1)),
        tags=["t1", "t2"],
    )
    # when the YAML overrides one nested field, one header and the list
    config, report = decode_text(
        "retry_on_failure:\n  initial_interval: 1s\nheaders:\n  x-b: '2'\ntags: [t3]\n",
        base=base,
    )
    # then absent fields keep the base's values, maps merge and lists replace
    assert report.problems == []
    assert config.endpoint == "default:4317"
    assert config.retry_on_failure == Retry(
        enabled=False, initial_interval=timedelta(seconds=1), max_interval=timedelta(minutes=1)
    )
    assert config.headers == {"x-a": "1", "x-b": "2"}
    assert config.tags == ["t3"]


def test_null_for_a_plain_field_keeps_the_default() -> None:
    config, report = decode_text("endpoint:\nmax_items: ~\nretry_on_failure:\n")
    assert report.problems == []
    assert config == Exporter()


def test_null_for_an_optional_dataclass_means_present_with_defaults() -> None:
    # given grpc written with nothing after it, and http absent
    config, report = decode_text("grpc:\n", cls=Protocols)
    # then grpc is present with its defaults and http keeps the field default
    assert report.problems == []
    assert config == Protocols(grpc=Tls(), http=Tls(ca_file="/default"))


def test_null_for_an_optional_dataclass_merges_onto_the_base_value() -> None:
    base = Protocols(grpc=Tls(ca_file="/base"), http=None)
    config, report = decode_text("grpc:\nhttp:\n", cls=Protocols, base=base)
    assert report.problems == []
    assert config == Protocols(grpc=Tls(ca_file="/base"), http=Tls())


def test_null_for_an_optional_plain_field_means_none() -> None:
    config, report = decode_text("label:\n", base=Exporter(label="x"))
    assert report.problems == []
    assert config.label is None


def test_a_missing_required_field_is_reported_on_its_mapping() -> None:
    _, report = decode_text("outer:\n  size: 2\n", cls=dict[str, Required])
    assert messages(report) == ["exporters::otlp::outer::name (config.yaml:1): is required"]


def test_old_key_names_are_accepted_with_a_warning() -> None:
    config, report = decode_text("loglevel: detailed\n")
    assert report.problems == []
    assert config.verbosity == "detailed"
    assert report.warnings == [
        'exporters::otlp::loglevel (config.yaml:1): "loglevel" is an old name; use "verbosity"'
    ]


def test_an_old_key_name_together_with_the_new_one_is_an_error() -> None:
    _, report = decode_text("verbosity: basic\nloglevel: detailed\n")
    assert messages(report) == [
        'exporters::otlp::loglevel (config.yaml:2): both "verbosity" and its old name '
        '"loglevel" are set; keep "verbosity"'
    ]


def test_ignored_keys_are_accepted_with_a_warning_and_keep_the_default() -> None:
    config, report = decode_text("balancer_name: round_robin\n")
    assert report.problems == []
    assert config.balancer_name == ""
    assert report.warnings == [
        'exporters::otlp::balancer_name (config.yaml:1): "balancer_name" is ignored: '
        "one backend, no balancing"
    ]


def test_a_component_without_config_gets_its_base_validated() -> None:
    # given `otlp:` with nothing after it and a base that fails validation
    node = ScalarNode(None, "", 7)
    report = Report("config.yaml")
    config = decode(node, Exporter, "exporters::otlp", Exporter(max_items=-1), report=report)
    # then the base is the value, and its validate() problem is reported on the key's line
    assert config == Exporter(max_items=-1)
    assert messages(report) == ["exporters::otlp::max_items (config.yaml:7): must be > 0"]


def test_several_problems_are_all_reported_in_file_order() -> None:
    _, report = decode_text(
        "tls:\n  insecure: maybe\nendpoint: 1\nzzz: 1\nretry_on_failure:\n  enabled: 1\n"
    )
    assert [p.line for p in report.sorted_problems()] == [2, 3, 4, 6]
    assert len(messages(report)) == 4
