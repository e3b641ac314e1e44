"""The collector's configuration: its components and pipelines, read strictly from
OpenTelemetry Collector YAML, with flushcontrol added to every pipeline that lacks it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from collector._component import Factory, Kind
from collector._confmap import (
    ListNode,
    MapNode,
    Node,
    Report,
    ScalarNode,
    decode,
    is_null,
    join_path,
    parse_yaml,
)
from collector._signals import Signal
from collector.errors import ConfigError, ConfigProblem

CONFIG_URI_ENV = "OPENTELEMETRY_COLLECTOR_CONFIG_URI"
# The older name, still set by some ADOT-era deployments.
CONFIG_FILE_ENV = "OPENTELEMETRY_COLLECTOR_CONFIG_FILE"
DEFAULT_CONFIG_PATH = "/opt/collector-config/config.yaml"

# Processors that hold data until the companion asks for a drain.
FLUSHCONTROL = "flushcontrol"
HOLDING_TYPES = frozenset({FLUSHCONTROL, "decouple"})

# Extensions that ADOT configs carry and that have no role here; any other is an error.
IGNORED_EXTENSIONS = ("health_check", "memory_ballast", "pprof", "zpages")

LOG_LEVELS = ("debug", "info", "warn", "warning", "error")

# A config file is a few KiB; anything near this is not one.
MAX_CONFIG_BYTES = 4 * 1024 * 1024

Registry = Mapping[Kind, Mapping[str, Factory]]

_KIND_WORD = {
    Kind.RECEIVER: "receiver",
    Kind.PROCESSOR: "processor",
    Kind.EXPORTER: "exporter",
    Kind.EXTENSION: "extension",
}
_TOP_KEYS = ("receivers", "processors", "exporters", "extensions", "service")
_SERVICE_KEYS = ("extensions", "pipelines", "telemetry")
_PIPELINE_KEYS = ("receivers", "processors", "exporters")
_TYPE_NAME = re.compile(r"[A-Za-z][0-9A-Za-z_]{0,62}")
_URI_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):")


@dataclass(frozen=True)
class ComponentConfig:
    id: str  # "otlphttp/honeycomb"
    type: str  # "otlphttp"
    config: Any  # the decoded config dataclass instance


@dataclass(frozen=True)
class PipelineConfig:
    id: str  # "traces/2"
    signal: Signal
    receivers: tuple[str, ...]  # component ids
    processors: tuple[str, ...]  # after flushcontrol insertion; "decouple" kept as listed
    exporters: tuple[str, ...]


@dataclass(frozen=True)
class CollectorConfig:
    source: str  # the file path it came from
    receivers: dict[str, ComponentConfig]  # every one defined, used or not
    processors: dict[str, ComponentConfig]  # including a flushcontrol added automatically
    exporters: dict[str, ComponentConfig]
    pipelines: dict[str, PipelineConfig]
    log_level: str  # debug, info, warn or error
    warnings: tuple[str, ...]  # one line each

    def summary(self) -> str:
        """One line: "2 pipelines: traces: otlp -> flushcontrol -> otlphttp; logs: ..."."""
        count = len(self.pipelines)
        parts = []
        for pipeline in self.pipelines.values():
            stages = [", ".join(pipeline.receivers), *pipeline.processors,
                      ", ".join(pipeline.exporters)]
            parts.append(f"{pipeline.id}: {' -> '.join(stages)}")
        noun = "pipeline" if count == 1 else "pipelines"
        return f"{count} {noun}: {'; '.join(parts)}"


# ---------------------------------------------------------------------------------------------
# Where the config comes from.


def resolve_config_uri(arg: str | None, env: Mapping[str, str]) -> str:
    """The config location: the argument, else $OPENTELEMETRY_COLLECTOR_CONFIG_URI, else
    $OPENTELEMETRY_COLLECTOR_CONFIG_FILE, else /opt/collector-config/config.yaml. Empty
    values count as unset."""
    for candidate in (arg, env.get(CONFIG_URI_ENV), env.get(CONFIG_FILE_ENV)):
        if candidate:
            return candidate
    return DEFAULT_CONFIG_PATH


def config_file_path(uri: str) -> str:
    """The file path a config location names: a plain path or a file: URI (file:/a/b,
    file:///a/b, file:relative). Raises ConfigError for any other scheme."""
    match = _URI_SCHEME.match(uri)
    if match is None:
        return uri
    scheme = match.group(1)
    if scheme.lower() != "file":
        raise _source_error(
            f'config source "{uri}"',
            f'scheme "{scheme}" is not supported yet; use a file path or a file: URI',
        )
    path = uri[match.end() :]
    if path.startswith("/"):
        # file:///a/b and file:/a/b name the same file.
        path = "/" + path.lstrip("/")
    if not path:
        raise _source_error(f'config source "{uri}"', "names no file")
    return path


def load_config(
    uri: str, *, env: Mapping[str, str], registry: Registry, hold: bool = True
) -> CollectorConfig:
    """Reads and decodes the config at `uri` (see config_file_path); raises ConfigError
    with every problem found."""
    path = config_file_path(uri)
    subject = f'config file "{path}"'
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise _source_error(subject, "not found") from None
    except OSError as exc:
        raise _source_error(subject, f"cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise _source_error(subject, f"is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _source_error(subject, f"is not UTF-8 text (byte {exc.start})") from None
    return parse_config(text, source=path, env=env, registry=registry, hold=hold)


def _source_error(subject: str, message: str) -> ConfigError:
    return ConfigError([ConfigProblem(subject, message)])


# ---------------------------------------------------------------------------------------------
# service.telemetry, decoded like any component config.


@dataclass(frozen=True, kw_only=True)
class _LogsTelemetry:
    level: str = "info"
    # The Go collector's other log settings: accepted so its configs load, but our log
    # format is fixed.
    development: object = field(default=None, metadata={"ignored": "the log format is fixed"})
    encoding: object = field(default=None, metadata={"ignored": "the log format is fixed"})
    disable_caller: object = field(default=None, metadata={"ignored": "the log format is fixed"})
    disable_stacktrace: object = field(
        default=None, metadata={"ignored": "the log format is fixed"}
    )
    sampling: object = field(default=None, metadata={"ignored": "every log line is kept"})
    output_paths: object = field(default=None, metadata={"ignored": "logs go to stderr"})
    error_output_paths: object = field(default=None, metadata={"ignored": "logs go to stderr"})
    initial_fields: object = field(default=None, metadata={"ignored": "the log format is fixed"})

    def validate(self) -> list[tuple[str, str]]:
        # Empty means info, as in the Go collector (so an unset ${env:LOG_LEVEL} is fine).
        if self.level and self.level.lower() not in LOG_LEVELS:
            return [("level", f'must be one of: {", ".join(LOG_LEVELS)}; got "{self.level}"')]
        return []


@dataclass(frozen=True, kw_only=True)
class _Telemetry:
    logs: _LogsTelemetry = field(default_factory=_LogsTelemetry)
    metrics: object = field(
        default=None, metadata={"ignored": "the collector does not report its own metrics"}
    )
    traces: object = field(
        default=None, metadata={"ignored": "the collector does not trace itself"}
    )
    resource: object = field(
        default=None, metadata={"ignored": "the collector has no telemetry of its own"}
    )


# ---------------------------------------------------------------------------------------------
# Decoding the whole file.


def parse_config(
    text: str, *, source: str, env: Mapping[str, str], registry: Registry, hold: bool = True
) -> CollectorConfig:
    """Decodes collector YAML; raises ConfigError with every problem, in file order.

    `hold=False` (the collector without flushcontrol) adds no flushcontrol and removes
    flushcontrol and decouple from every pipeline.
    """
    report = Report(source)
    root = parse_yaml(text, env=env, report=report)
    report.raise_if_problems()
    if root is None or is_null(root):
        raise _source_error(f'config file "{source}"', "is empty")
    if not isinstance(root, MapNode):
        report.error("", root.line, "must be a mapping of receivers, processors, exporters "
                     "and service")
        report.raise_if_problems()
    assert isinstance(root, MapNode)
    return _Builder(report, registry, hold).build(root)


@dataclass
class _PipelineDraft:
    id: str
    signal: Signal
    lists: dict[str, list[tuple[str, int]]]  # "receivers" -> [(id, line)]


class _Builder:
    def __init__(self, report: Report, registry: Registry, hold: bool) -> None:
        self._report = report
        self._registry = registry
        self._hold = hold

    def build(self, root: MapNode) -> CollectorConfig:
        _check_keys(self._report, root, "", _TOP_KEYS)
        receivers = self._components(root, Kind.RECEIVER)
        processors = self._components(root, Kind.PROCESSOR)
        exporters = self._components(root, Kind.EXPORTER)
        extensions = self._extensions(root)
        service = _mapping_at(self._report, root, "", "service")
        if service is None:
            if "service" not in root.entries:
                self._report.error("service", root.line, "is required: it lists the pipelines")
            raise ConfigError(self._report.sorted_problems())
        _check_keys(self._report, service, "service", _SERVICE_KEYS)
        self._service_extensions(service, extensions)
        telemetry = decode(
            service.entries.get("telemetry"), _Telemetry, "service::telemetry",
            report=self._report,
        )
        drafts = self._pipelines(service)
        components = {
            Kind.RECEIVER: receivers, Kind.PROCESSOR: processors, Kind.EXPORTER: exporters,
        }
        for draft in drafts:
            self._check_references(draft, components)
        self._report.raise_if_problems()

        pipelines = self._place_flushcontrol(drafts, processors)
        self._report.raise_if_problems()
        self._warn_unused(components, pipelines)
        level = (telemetry.logs.level.lower() if telemetry is not None else "") or "info"
        return CollectorConfig(
            source=self._report.source,
            receivers=receivers,
            processors=processors,
            exporters=exporters,
            pipelines=pipelines,
            log_level="warn" if level == "warning" else level,
            warnings=tuple(self._report.warnings),
        )

    # -- components -------------------------------------------------------------------------

    def _components(self, root: MapNode, kind: Kind) -> dict[str, ComponentConfig]:
        section = _mapping_at(self._report, root, "", kind.value)
        result: dict[str, ComponentConfig] = {}
        if section is None:
            return result
        factories = self._registry.get(kind, {})
        word = _KIND_WORD[kind]
        for component_id, node in section.entries.items():
            path = join_path(kind.value, component_id)
            type_name = self._component_type(component_id, path, node.line, word)
            if type_name is None:
                continue
            factory = factories.get(type_name)
            if factory is None:
                supported = ", ".join(sorted(factories)) or "none"
                self._report.error(
                    path, node.line, f'unknown {word} type "{type_name}"; supported: {supported}'
                )
                continue
            config = decode(
                node, factory.config_type, path, factory.default_config(), report=self._report
            )
            if config is not None:
                result[component_id] = ComponentConfig(component_id, type_name, config)
        return result

    def _component_type(self, component_id: str, path: str, line: int, word: str) -> str | None:
        type_name, slash, name = component_id.partition("/")
        if not _TYPE_NAME.fullmatch(type_name) or (slash and not name.strip()) or any(
            c.isspace() for c in name
        ):
            self._report.error(
                path, line,
                f'invalid {word} id "{component_id}": use type[/name], e.g. "otlp" or '
                '"otlp/2" (the type: a letter, then letters, digits or _)',
            )
            return None
        return type_name

    def _extensions(self, root: MapNode) -> dict[str, int]:
        """Defined extension ids (all ignorable ones) with their lines."""
        section = _mapping_at(self._report, root, "", "extensions")
        result: dict[str, int] = {}
        if section is None:
            return result
        for extension_id, node in section.entries.items():
            path = join_path("extensions", extension_id)
            type_name = self._component_type(extension_id, path, node.line, "extension")
            if type_name is None:
                continue
            if type_name not in IGNORED_EXTENSIONS:
                self._report.error(
                    path, node.line,
                    f'extension "{type_name}" is not supported; only these are accepted '
                    f"(and ignored): {', '.join(IGNORED_EXTENSIONS)}",
                )
                continue
            result[extension_id] = node.line
        if result:
            self._report.warnings.append(
                f"extensions ignored (they have no role in this collector): {', '.join(result)}"
            )
        return result

    def _service_extensions(self, service: MapNode, defined: Mapping[str, int]) -> None:
        node = service.entries.get("extensions")
        if node is None or is_null(node):
            return
        for extension_id, line in _id_list(self._report, node, "service::extensions"):
            # An unsupported extension was already reported where it is defined; say it once.
            if extension_id not in defined and not self._reported_at(
                join_path("extensions", extension_id)
            ):
                self._report.error(
                    "service::extensions", line,
                    f'references extension "{extension_id}" which is not configured',
                )

    # -- pipelines --------------------------------------------------------------------------

    def _pipelines(self, service: MapNode) -> list[_PipelineDraft]:
        section = _mapping_at(self._report, service, "service", "pipelines")
        if section is None or not section.entries:
            line = section.line if section is not None else service.line
            self._report.error("service::pipelines", line, "needs at least one pipeline")
            return []
        signals = {signal.value: signal for signal in Signal}
        drafts: list[_PipelineDraft] = []
        for pipeline_id, node in section.entries.items():
            path = join_path("service::pipelines", pipeline_id)
            type_name, slash, name = pipeline_id.partition("/")
            signal = signals.get(type_name)
            if signal is None:
                self._report.error(
                    path, node.line,
                    f'unknown pipeline type "{type_name}"; expected one of: '
                    f"{', '.join(sorted(signals))}",
                )
                continue
            if slash and not name.strip():
                self._report.error(path, node.line, f'invalid pipeline id "{pipeline_id}"')
                continue
            if is_null(node):
                node = MapNode({}, node.line)
            if not isinstance(node, MapNode):
                self._report.error(path, node.line, "must be a mapping of receivers, "
                                   "processors and exporters")
                continue
            _check_keys(self._report, node, path, _PIPELINE_KEYS)
            lists: dict[str, list[tuple[str, int]]] = {}
            for key in _PIPELINE_KEYS:
                child = node.entries.get(key)
                lists[key] = (
                    [] if child is None or is_null(child)
                    else _id_list(self._report, child, join_path(path, key))
                )
            for key in ("receivers", "exporters"):
                if not lists[key]:
                    self._report.error(path, node.line, f"must have at least one {key[:-1]}")
            drafts.append(_PipelineDraft(pipeline_id, signal, lists))
        return drafts

    def _check_references(
        self, draft: _PipelineDraft, components: Mapping[Kind, dict[str, ComponentConfig]]
    ) -> None:
        kinds = {"receivers": Kind.RECEIVER, "processors": Kind.PROCESSOR,
                 "exporters": Kind.EXPORTER}
        pipeline_path = join_path("service::pipelines", draft.id)
        for key, kind in kinds.items():
            path = join_path(pipeline_path, key)
            word = _KIND_WORD[kind]
            defined = components[kind]
            seen: set[str] = set()
            for component_id, line in draft.lists[key]:
                if component_id in seen:
                    self._report.error(
                        path, line, f'references {word} "{component_id}" more than once'
                    )
                    continue
                seen.add(component_id)
                if component_id not in defined:
                    holding = kind is Kind.PROCESSOR and self._define_holding(
                        component_id, defined
                    )
                    if not holding and not (
                        self._reported_at(join_path(kind.value, component_id))
                    ):
                        self._report.error(
                            path, line,
                            f'references {word} "{component_id}" which is not configured',
                        )
                    continue
                factory = self._registry.get(kind, {}).get(defined[component_id].type)
                signals = factory.signals if factory is not None else frozenset()
                if kind is Kind.PROCESSOR and not signals:
                    continue  # a processor that names no signals handles all of them
                if draft.signal not in signals:
                    self._report.error(
                        path, line,
                        f'{word} "{component_id}" does not support {draft.signal.value}',
                    )

    def _reported_at(self, path: str) -> bool:
        """Whether a problem was reported at `path` or under it: a component that failed to
        decode is configured, and its own problems say what is wrong."""
        return any(p.path == path or p.path.startswith(path + "::")
                   for p in self._report.problems)

    def _define_holding(self, component_id: str, processors: dict[str, ComponentConfig]) -> bool:
        """Defines flushcontrol or decouple, named in a pipeline but not under processors,
        with its factory's default config. False when it is not a holding processor."""
        if component_id not in HOLDING_TYPES:
            return False
        factory = self._registry.get(Kind.PROCESSOR, {}).get(component_id)
        if factory is None:
            return False
        processors[component_id] = ComponentConfig(
            component_id, component_id, factory.default_config()
        )
        return True

    def _place_flushcontrol(
        self, drafts: list[_PipelineDraft], processors: dict[str, ComponentConfig]
    ) -> dict[str, PipelineConfig]:
        def holds(component_id: str) -> bool:
            return processors[component_id].type in HOLDING_TYPES

        pipelines: dict[str, PipelineConfig] = {}
        changed: list[str] = []
        for draft in drafts:
            chain = [component_id for component_id, _ in draft.lists["processors"]]
            if not self._hold:
                kept = [component_id for component_id in chain if not holds(component_id)]
                if kept != chain:
                    changed.append(draft.id)
                chain = kept
            elif not any(holds(component_id) for component_id in chain):
                chain.append(FLUSHCONTROL)
                changed.append(draft.id)
            pipelines[draft.id] = PipelineConfig(
                id=draft.id,
                signal=draft.signal,
                receivers=tuple(component_id for component_id, _ in draft.lists["receivers"]),
                processors=tuple(chain),
                exporters=tuple(component_id for component_id, _ in draft.lists["exporters"]),
            )
        if not self._hold:
            for component_id in [c for c in processors if holds(c)]:
                del processors[component_id]
            if changed:
                self._report.warnings.append(
                    "holding disabled: flushcontrol/decouple removed from pipelines "
                    f"{', '.join(changed)}; data is exported as it arrives"
                )
            return pipelines
        if changed:
            if FLUSHCONTROL not in processors:
                factory = self._registry.get(Kind.PROCESSOR, {}).get(FLUSHCONTROL)
                if factory is None:
                    self._report.error(
                        join_path("processors", FLUSHCONTROL), 0,
                        "no flushcontrol processor is registered, and every pipeline needs one",
                    )
                    return pipelines
                processors[FLUSHCONTROL] = ComponentConfig(
                    FLUSHCONTROL, FLUSHCONTROL, factory.default_config()
                )
            self._report.warnings.append(
                f"flushcontrol added to pipelines without it: {', '.join(changed)}"
            )
        return pipelines

    def _warn_unused(
        self,
        components: Mapping[Kind, dict[str, ComponentConfig]],
        pipelines: Mapping[str, PipelineConfig],
    ) -> None:
        used = {
            Kind.RECEIVER: {c for p in pipelines.values() for c in p.receivers},
            Kind.PROCESSOR: {c for p in pipelines.values() for c in p.processors},
            Kind.EXPORTER: {c for p in pipelines.values() for c in p.exporters},
        }
        unused = [
            join_path(kind.value, component_id)
            for kind, defined in components.items()
            for component_id in defined
            if component_id not in used[kind]
        ]
        if unused:
            self._report.warnings.append(
                f"defined but not used in any pipeline (ignored): {', '.join(unused)}"
            )


# ---------------------------------------------------------------------------------------------
# Small shape checks shared by the sections above.


def _check_keys(report: Report, node: MapNode, path: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    for key, child in node.entries.items():
        if key not in allowed:
            report.error(
                join_path(path, key), child.line,
                f'unknown key "{key}"; expected one of: {", ".join(sorted(allowed))}',
            )


def _mapping_at(report: Report, parent: MapNode, path: str, key: str) -> MapNode | None:
    """The mapping under `key`: None when absent; an empty one for null; reports others."""
    node = parent.entries.get(key)
    if node is None:
        return None
    if is_null(node):
        return MapNode({}, node.line)
    if not isinstance(node, MapNode):
        report.error(join_path(path, key), node.line, "must be a mapping")
        return None
    return node


def _id_list(report: Report, node: Node, path: str) -> list[tuple[str, int]]:
    """Component ids with their lines from a YAML list (or a comma-separated string)."""
    if isinstance(node, ScalarNode) and isinstance(node.value, str):
        return [(part.strip(), node.line) for part in node.value.split(",") if part.strip()]
    if not isinstance(node, ListNode):
        report.error(path, node.line, "must be a list of component ids")
        return []
    ids: list[tuple[str, int]] = []
    for index, item in enumerate(node.items):
        if isinstance(item, ScalarNode) and isinstance(item.value, str) and item.value:
            ids.append((item.value, item.line))
        else:
            report.error(f"{path}[{index}]", item.line, "must be a component id")
    return ids


__all__ = [
    "CONFIG_FILE_ENV",
    "CONFIG_URI_ENV",
    "DEFAULT_CONFIG_PATH",
    "FLUSHCONTROL",
    "HOLDING_TYPES",
    "CollectorConfig",
    "ComponentConfig",
    "PipelineConfig",
    "Registry",
    "config_file_path",
    "load_config",
    "parse_config",
    "resolve_config_uri",
]
