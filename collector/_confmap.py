"""Reads collector YAML into line-numbered nodes with ${env:...} expanded, and decodes nodes
into frozen config dataclasses strictly, collecting every problem with its key path and line.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import yaml

from collector._duration import parse_duration
from collector.errors import ConfigError, ConfigProblem

PATH_SEPARATOR = "::"

# Bounds that keep a hostile or broken file (alias bombs, absurd nesting) from eating memory.
MAX_NODES = 100_000
MAX_DEPTH = 64

_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = _TAG + "merge"


def join_path(path: str, key: str) -> str:
    """The key path of `key` under `path`: ("exporters", "otlp") -> "exporters::otlp"."""
    return f"{path}{PATH_SEPARATOR}{key}" if path else key


# ---------------------------------------------------------------------------------------------
# Nodes: YAML values that remember where they were written.
#
# `line` is 1-based: for a value under a key it is the key's line, so that a problem with a
# value, or with a key missing from a mapping, points at the key that introduced it.


@dataclasses.dataclass(frozen=True, slots=True)
class ScalarNode:
    value: bool | int | float | str | None
    # The scalar as written, or the text an environment variable gave; a string field takes
    # this when the value came from an expansion, so PORT=4317 can feed a string field.
    text: str
    line: int
    expanded: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class MapNode:
    entries: dict[str, Node]
    line: int


@dataclasses.dataclass(frozen=True, slots=True)
class ListNode:
    items: tuple[Node, ...]
    line: int


Node = ScalarNode | MapNode | ListNode


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.value is None


def find_line(node: Node, relative: str) -> int:
    """The line of the deepest node on `relative` (a "::"-joined key path) under `node`."""
    line = node.line
    for key in relative.split(PATH_SEPARATOR) if relative else ():
        if not isinstance(node, MapNode) or key not in node.entries:
            break
        node = node.entries[key]
        line = node.line
    return line


def to_plain(node: Node) -> Any:
    """The node as plain Python values (dicts, lists, scalars)."""
    if isinstance(node, MapNode):
        return {key: to_plain(child) for key, child in node.entries.items()}
    if isinstance(node, ListNode):
        return [to_plain(child) for child in node.items]
    return node.value


# ---------------------------------------------------------------------------------------------
# Problems and warnings of one load.


class Report:
    """Collects every problem and warning of one configuration load."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[ConfigProblem] = []
        self.warnings: list[str] = []

    def error(self, path: str, line: int, message: str) -> None:
        self.problems.append(ConfigProblem(path, message, self.source, line))

    def warn(self, path: str, line: int, message: str) -> None:
        self.warnings.append(str(ConfigProblem(path, message, self.source, line)))

    def sorted_problems(self) -> list[ConfigProblem]:
        """Problems in file order; those without a line last, each group in finding order."""
        return sorted(self.problems, key=lambda p: (p.line == 0, p.line))

    def raise_if_problems(self) -> None:
        if self.problems:
            raise ConfigError(self.sorted_problems())


# ---------------------------------------------------------------------------------------------
# YAML reading.


class _Loader(yaml.SafeLoader):
    """PyYAML with the YAML 1.2 core schema, which is what the Go collector's YAML library
    does for untyped values: `yes`, `on` and `0755` are strings, not bools or octal."""

    yaml_implicit_resolvers: dict[Any, Any] = {}


def _add_resolver(tag: str, pattern: str, first: str) -> None:
    _Loader.add_implicit_resolver(_TAG + tag, re.compile(pattern, re.X), list(first))


_add_resolver("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF")
_add_resolver("null", r"^(?:~|null|Null|NULL|)$", "~nN")
_Loader.add_implicit_resolver(_TAG + "null", re.compile(r"^$"), [""])
_add_resolver("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789")
_add_resolver(
    "float",
    r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""",
    "-+.0123456789",
)
_add_resolver("merge", r"^(?:<<)$", "<")


def _construct_scalar(tag: str, text: str) -> bool | int | float | str | None:
    """Raises ValueError when an explicitly tagged scalar does not fit its tag."""
    if tag == _TAG + "str":
        return text
    if tag == _TAG + "null":
        if text not in ("", "~", "null", "Null", "NULL"):
            raise ValueError(f'"{text}" is not null')
        return None
    if tag == _TAG + "bool":
        if text.lower() not in ("true", "false"):
            raise ValueError(f'"{text}" is not a bool')
        return text.lower() == "true"
    if tag == _TAG + "int":
        digits = text.replace("_", "")
        if digits[:2] in ("0o", "0x", "0b"):
            return int(digits, 0)
        return int(digits, 10)
    if tag == _TAG + "float":
        lowered = text.lower().replace("_", "")
        if lowered.endswith(".inf"):
            return float("-inf") if lowered.startswith("-") else float("inf")
        if lowered == ".nan":
            return float("nan")
        return float(lowered)
    raise ValueError(f'unsupported YAML tag "{tag}"')


def _compose(text: str) -> yaml.Node | None:
    # The Loader takes care of its own stream; dispose() releases its state either way.
    loader = _Loader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def parse_yaml(text: str, *, env: Mapping[str, str], report: Report) -> Node | None:
    """Parses one YAML document into nodes with environment references expanded.

    Returns None for an empty document. Syntax errors and expansion problems go to `report`
    (a syntax error leaves nothing to decode, so it returns None then too).
    """
    try:
        root = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        column = f" (column {mark.column + 1})" if mark is not None else ""
        report.error("", line, f"invalid YAML: {exc.problem or exc.context}{column}")
        return None
    except yaml.reader.ReaderError as exc:
        # A character YAML does not allow (a control character, say): no mark, a position.
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        report.error("", line, f"invalid YAML: character #x{code:04x} is not allowed "
                               f"(column {column})")
        return None
    except yaml.YAMLError as exc:
        report.error("", 0, "invalid YAML: " + " ".join(str(exc).split()))
        return None
    except RecursionError:
        report.error("", 0, "invalid YAML: nested too deeply")
        return None
    if root is None:
        return None
    return _Converter(env, report).convert(root, "", root.start_mark.line + 1, 0)


class _Converter:
    """Turns composed PyYAML nodes into our nodes, expanding environment references."""

    def __init__(self, env: Mapping[str, str], report: Report) -> None:
        self._env = env
        self._report = report
        self._budget = MAX_NODES
        self._over_budget = False

    def convert(self, ynode: yaml.Node, path: str, line: int, depth: int) -> Node:
        self._budget -= 1
        if self._budget < 0 or depth > MAX_DEPTH:
            if not self._over_budget:
                self._over_budget = True
                why = "too many values" if self._budget < 0 else "nested too deeply"
                self._report.error(path, line, f"{why} (more than {MAX_NODES} values or "
                                   f"{MAX_DEPTH} levels; are aliases nested?)")
            return ScalarNode(None, "", line)
        if isinstance(ynode, yaml.MappingNode):
            return self._mapping(ynode, path, line, depth)
        if isinstance(ynode, yaml.SequenceNode):
            items = tuple(
                self.convert(item, path, item.start_mark.line + 1, depth + 1)
                for item in ynode.value
            )
            return ListNode(items, line)
        assert isinstance(ynode, yaml.ScalarNode)
        text = str(ynode.value)
        if ynode.tag in (_TAG + "str", _MERGE_TAG):
            return _Expander(self._env, self._report, path, line).expand(text)
        try:
            value = _construct_scalar(ynode.tag, text)
        except ValueError as exc:
            message = str(exc) if "tag" in str(exc) else f"invalid {ynode.tag}: {exc}"
            self._report.error(path, line, message)
            return ScalarNode(None, text, line)
        return ScalarNode(value, text, line)

    def _mapping(self, ynode: yaml.MappingNode, path: str, line: int, depth: int) -> MapNode:
        own: dict[str, Node] = {}
        merged: dict[str, Node] = {}
        for key_node, value_node in ynode.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                for source in self._merge_sources(value_node, path, key_line, depth):
                    for key, child in source.entries.items():
                        # With several merged mappings the first one wins, as in YAML.
                        merged.setdefault(key, child)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self._report.error(path, key_line, "keys must be strings")
                continue
            key = str(key_node.value)
            if key in own:
                self._report.error(
                    join_path(path, key), key_line,
                    f'duplicate key "{key}"; first defined on line {own[key].line}',
                )
                continue
            own[key] = self.convert(value_node, join_path(path, key), key_line, depth + 1)
        entries = dict(own)
        for key, child in merged.items():
            entries.setdefault(key, child)
        return MapNode(entries, line)

    def _merge_sources(
        self, ynode: yaml.Node, path: str, line: int, depth: int
    ) -> list[MapNode]:
        candidates = ynode.value if isinstance(ynode, yaml.SequenceNode) else [ynode]
        sources: list[MapNode] = []
        for candidate in candidates:
            if not isinstance(candidate, yaml.MappingNode):
                self._report.error(path, line, "a merge key (<<) needs a mapping or a list of mappings")
                continue
            sources.append(self._mapping(candidate, path, line, depth + 1))
        return sources


# ---------------------------------------------------------------------------------------------
# ${env:VAR} expansion, as the OpenTelemetry Collector's confmap does it:
#   ${env:VAR} and ${VAR} expand to the variable's value; ${env:VAR:-default} uses `default`
#   when VAR is unset (not when it is empty); an unset variable expands to nothing, with a
#   warning; $$ is a literal $ (so $${env:VAR} is the text ${env:VAR}); a value that is
#   entirely one reference takes the type its text has in YAML, while a reference inside a
#   longer string is substituted as text. Keys are never expanded.
# Deliberately unlike the Go collector: a variable's value is data, so references and $$ in
# it are not expanded again.

_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+")


@dataclasses.dataclass(frozen=True, slots=True)
class _Resolved:
    text: str
    is_set: bool  # False when the variable is unset and has no default
    from_default: bool


class _Expander:
    def __init__(self, env: Mapping[str, str], report: Report, path: str, line: int) -> None:
        self._env = env
        self._report = report
        self._path = path
        self._line = line

    def expand(self, raw: str) -> Node:
        if "$" not in raw:
            return ScalarNode(raw, raw, self._line)
        if raw.startswith("${") and raw.endswith("}") and raw.find("}") == len(raw) - 1:
            resolved = self._resolve(raw)
            if resolved is None:
                return ScalarNode(raw, raw, self._line)
            return self._typed(resolved)
        pieces: list[str] = []
        pos = 0
        while pos < len(raw):
            dollar = raw.find("$", pos)
            if dollar < 0:
                pieces.append(raw[pos:])
                break
            pieces.append(raw[pos:dollar])
            if raw.startswith("$$", dollar):
                pieces.append("$")
                pos = dollar + 2
            elif raw.startswith("${", dollar) and raw.find("}", dollar) > 0:
                end = raw.find("}", dollar)
                resolved = self._resolve(raw[dollar : end + 1])
                pieces.append(raw[dollar : end + 1] if resolved is None else resolved.text)
                pos = end + 1
            else:
                pieces.append("$")
                pos = dollar + 1
        text = "".join(pieces)
        return ScalarNode(text, text, self._line)

    def _resolve(self, reference: str) -> _Resolved | None:
        """`reference` is "${...}"; None (after reporting why) when it cannot be expanded."""
        body = reference[2:-1]
        if "$" in body:
            return self._fail(reference, '"$" is not allowed inside a reference')
        name, default = body, None
        scheme_match = _SCHEME.match(body)
        if scheme_match and body[scheme_match.end() : scheme_match.end() + 1] == ":" and not (
            body[scheme_match.end() :].startswith(":-")
        ):
            scheme = scheme_match.group()
            if scheme != "env":
                return self._fail(
                    reference, f'scheme "{scheme}" is not supported; only env (${{env:NAME}}) is'
                )
            name = body[scheme_match.end() + 1 :]
        if ":-" in name:
            name, default = name.split(":-", 1)
        if not _VAR_NAME.fullmatch(name):
            return self._fail(
                reference, f'environment variable "{name}" has an invalid name '
                "(letters, digits and _, not starting with a digit)",
            )
        if name in self._env:
            return _Resolved(self._env[name], True, False)
        if default is not None:
            return _Resolved(default, True, True)
        self._report.warn(
            self._path, self._line, f'environment variable "{name}" is not set; using ""'
        )
        return _Resolved("", False, False)

    def _fail(self, reference: str, why: str) -> _Resolved | None:
        self._report.error(self._path, self._line, f'cannot expand "{reference}": {why}')
        return None

    def _typed(self, resolved: _Resolved) -> Node:
        text = resolved.text
        if resolved.from_default and text == "":
            return ScalarNode("", "", self._line, expanded=True)
        try:
            ynode = _compose(text)
        except (yaml.YAMLError, RecursionError):
            # Not YAML: the text is the value, as the collector does it.
            return ScalarNode(text, text, self._line, expanded=True)
        if ynode is None:
            return ScalarNode(None, text, self._line, expanded=True)
        if isinstance(ynode, yaml.ScalarNode):
            if ynode.tag == _TAG + "str" or ynode.tag == _MERGE_TAG:
                # The variable's text itself (quotes and all), not the YAML-unquoted string.
                return ScalarNode(text, text, self._line, expanded=True)
            try:
                value = _construct_scalar(ynode.tag, str(ynode.value))
            except ValueError:
                return ScalarNode(text, text, self._line, expanded=True)
            return ScalarNode(value, text, self._line, expanded=True)
        # A mapping or list from a variable: data only, so no further expansion inside it.
        inert = Report(self._report.source)
        node = _Converter({}, inert).convert(ynode, self._path, self._line, 0)
        node = _relocate(node, self._line)
        if inert.problems:
            return ScalarNode(text, text, self._line, expanded=True)
        return node


def _relocate(node: Node, line: int) -> Node:
    """The node with every line set to `line` (where the reference was written)."""
    if isinstance(node, MapNode):
        return MapNode({k: _relocate(v, line) for k, v in node.entries.items()}, line)
    if isinstance(node, ListNode):
        return ListNode(tuple(_relocate(item, line) for item in node.items), line)
    return dataclasses.replace(node, line=line, expanded=True)


# ---------------------------------------------------------------------------------------------
# Decoding nodes into typed values.

_FAILED: Any = object()
_NONE_TYPE = type(None)


def decode(
    node: Node | None, cls: Any, path: str, base: Any = None, *, report: Report,
    secret: bool = False,
) -> Any:
    """Decodes `node` as `cls` (a config dataclass or a supported field type) on top of
    `base` (fields absent from the node keep base's values; nested dataclasses merge).

    Problems go to `report`, each with its key path under `path` and its line; the result
    is None when the value could not be decoded. Supported types: bool, int, float, str,
    datetime.timedelta, Literal[str, ...], str Enums, list/tuple/Sequence of X,
    dict/Mapping of str to X, nested dataclasses, X | None, and Any (plain values).
    Dataclass fields may carry metadata "aliases" (old key names), "ignored" (why the key is
    accepted and ignored) and "secret" (never echo the value in a message). A dataclass's
    validate() -> list[tuple[relative_path, message]] is called when it decoded cleanly.
    """
    decoder = _Decoder(report)
    if node is None:
        if base is not None:
            return base
        node = MapNode({}, 0)
    result = decoder.value(node, cls, path, base, secret=secret)
    return None if result is _FAILED else result


def _optional_inner(tp: Any) -> Any:
    """X for `X | None` (or Optional[X]); None when tp is not such a union."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(tp) if arg is not _NONE_TYPE]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
        raise TypeError(f"unsupported config field type {tp!r}: only X | None unions")
    return None


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _describe(node: Node, secret: bool) -> str:
    if isinstance(node, MapNode):
        return "a mapping"
    if isinstance(node, ListNode):
        return "a list"
    value = node.value
    if value is None:
        return "null"
    if secret:
        kind = {bool: "a bool", int: "an integer", float: "a number", str: "a string"}
        return kind[type(value)]
    if isinstance(value, str):
        return f'"{value}"'
    return node.text


class _Decoder:
    def __init__(self, report: Report) -> None:
        self._report = report

    def _error(self, path: str, line: int, message: str) -> Any:
        self._report.error(path, line, message)
        return _FAILED

    def _mismatch(self, node: Node, path: str, what: str, secret: bool) -> Any:
        return self._error(path, node.line, f"must be {what}, got {_describe(node, secret)}")

    def value(
        self, node: Node, tp: Any, path: str, base: Any, *, secret: bool = False,
        lenient: bool = False,
    ) -> Any:
        inner = _optional_inner(tp)
        if inner is not None:
            if is_null(node):
                if _is_dataclass_type(inner):
                    return self.dataclass(MapNode({}, node.line), inner, path, base)
                return None
            return self.value(node, inner, path, base, secret=secret, lenient=lenient)
        if tp is Any or tp is object:
            return to_plain(node)
        if _is_dataclass_type(tp):
            if is_null(node):
                node = MapNode({}, node.line)
            return self.dataclass(node, tp, path, base)
        if tp is bool:
            if isinstance(node, ScalarNode) and isinstance(node.value, bool):
                return node.value
            return self._mismatch(node, path, "true or false", secret)
        if tp is int:
            if isinstance(node, ScalarNode) and type(node.value) is int:
                return node.value
            return self._mismatch(node, path, "an integer", secret)
        if tp is float:
            if isinstance(node, ScalarNode) and type(node.value) in (int, float):
                return float(typing.cast(float, node.value))
            return self._mismatch(node, path, "a number", secret)
        if tp is str:
            return self._string(node, path, secret, lenient)
        if tp is datetime.timedelta:
            return self._duration(node, path, secret)
        origin = typing.get_origin(tp)
        if origin is Literal:
            return self._choice(node, path, [str(a) for a in typing.get_args(tp)], secret)
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            values = {str(member.value): member for member in tp}
            choice = self._choice(node, path, list(values), secret)
            return choice if choice is _FAILED else values[choice]
        if origin in (list, tuple, Sequence):
            return self._sequence(node, tp, origin, path, secret)
        if origin in (dict, Mapping):
            return self._mapping(node, tp, path, base, secret)
        raise TypeError(f"unsupported config field type {tp!r} at {path}")

    def _string(self, node: Node, path: str, secret: bool, lenient: bool) -> Any:
        if isinstance(node, ScalarNode):
            if isinstance(node.value, str):
                return node.value
            if node.expanded:
                return node.text
            if lenient and node.value is not None:
                return node.text
        return self._mismatch(node, path, "a string", secret)

    def _duration(self, node: Node, path: str, secret: bool) -> Any:
        if isinstance(node, ScalarNode):
            value = node.value
            if value == 0 and type(value) in (int, float):
                return datetime.timedelta(0)
            if isinstance(value, str):
                try:
                    return parse_duration(value)
                except ValueError:
                    pass
            # The Go collector reads a bare number as nanoseconds, which nobody means.
            if type(value) in (int, float) or (
                isinstance(value, str) and re.fullmatch(r"[-+]?[0-9]*\.?[0-9]+", value)
            ):
                got = "" if secret else f"; got {node.text}"
                return self._error(path, node.line, f'needs a unit, e.g. "5s"{got}')
            if isinstance(value, str):
                shown = "a duration" if secret else f'"{value}"'
                return self._error(
                    path, node.line,
                    f"invalid duration {shown}: use a number and a unit "
                    '(ns, us, ms, s, m, h), e.g. "5s" or "1m30s"',
                )
        return self._mismatch(node, path, 'a duration, e.g. "5s"', secret)

    def _choice(self, node: Node, path: str, allowed: list[str], secret: bool) -> Any:
        if isinstance(node, ScalarNode) and isinstance(node.value, str) and node.value in allowed:
            return node.value
        if isinstance(node, ScalarNode) and node.expanded and node.text in allowed:
            return node.text
        shown = ", ".join(choice if choice else '""' for choice in allowed)
        got = "" if secret else f"; got {_describe(node, secret)}"
        return self._error(path, node.line, f"must be one of: {shown}{got}")

    def _sequence(self, node: Node, tp: Any, origin: Any, path: str, secret: bool) -> Any:
        args = typing.get_args(tp)
        if origin is tuple:
            if len(args) != 2 or args[1] is not Ellipsis:
                raise TypeError(f"unsupported config field type {tp!r} at {path}")
        item_type = args[0] if args else Any
        if item_type is str and isinstance(node, ScalarNode) and isinstance(node.value, str):
            # As the collector does: "a, b" into a list of strings is ["a", "b"].
            items: Any = [part.strip() for part in node.value.split(",") if part.strip()]
        elif isinstance(node, ListNode):
            items = []
            for index, child in enumerate(node.items):
                items.append(self.value(child, item_type, f"{path}[{index}]", None, secret=secret))
            if any(item is _FAILED for item in items):
                return _FAILED
        else:
            return self._mismatch(node, path, "a list", secret)
        return items if origin is list else tuple(items)

    def _mapping(self, node: Node, tp: Any, path: str, base: Any, secret: bool) -> Any:
        args = typing.get_args(tp)
        key_type, value_type = args if args else (str, Any)
        if key_type is not str:
            raise TypeError(f"unsupported config field type {tp!r} at {path}: keys must be str")
        if not isinstance(node, MapNode):
            return self._mismatch(node, path, "a mapping", secret)
        # Mappings merge onto the base's, as the collector's decoder does; lists replace.
        result: dict[str, Any] = dict(base) if isinstance(base, Mapping) else {}
        failed = False
        for key, child in node.entries.items():
            decoded = self.value(
                child, value_type, join_path(path, key),
                result.get(key), secret=secret, lenient=True,
            )
            failed = failed or decoded is _FAILED
            result[key] = decoded
        return _FAILED if failed else result

    def dataclass(self, node: Node, cls: Any, path: str, base: Any) -> Any:
        if not isinstance(node, MapNode):
            return self._mismatch(node, path, "a mapping", False)
        try:
            hints = typing.get_type_hints(cls)
        except NameError as exc:
            raise TypeError(f"cannot resolve the field types of {cls.__name__}: {exc}") from exc
        fields = [f for f in dataclasses.fields(cls) if f.init]
        by_key: dict[str, dataclasses.Field[Any]] = {f.name: f for f in fields}
        old_names: dict[str, dataclasses.Field[Any]] = {
            alias: f for f in fields for alias in f.metadata.get("aliases", ())
        }
        problems_before = len(self._report.problems)
        for key, child in node.entries.items():
            if key in by_key:
                continue
            if key in old_names:
                new = old_names[key].name
                if new in node.entries:
                    self._error(
                        join_path(path, key), child.line,
                        f'both "{new}" and its old name "{key}" are set; keep "{new}"',
                    )
                else:
                    self._report.warn(
                        join_path(path, key), child.line, f'"{key}" is an old name; use "{new}"'
                    )
                continue
            expected = ", ".join(sorted(by_key))
            self._error(
                join_path(path, key), child.line,
                f'unknown key "{key}"; expected one of: {expected}',
            )
        kwargs: dict[str, Any] = {}
        failed = False
        for f in fields:
            key = f.name
            found: Node | None = node.entries.get(key)
            if found is None:
                for alias in f.metadata.get("aliases", ()):
                    if alias in node.entries:
                        key, found = alias, node.entries[alias]
                        break
            fallback = getattr(base, f.name) if base is not None else _field_default(f)
            field_path = join_path(path, key)
            if "ignored" in f.metadata:
                if found is not None:
                    self._report.warn(
                        field_path, found.line, f'"{key}" is ignored: {f.metadata["ignored"]}'
                    )
                found = None
                if fallback is dataclasses.MISSING:
                    fallback = None
            if found is None or (is_null(found) and _null_means_default(found, hints[f.name])):
                if fallback is dataclasses.MISSING:
                    where = node.line if found is None else found.line
                    self._error(field_path, where, "is required")
                    failed = True
                else:
                    kwargs[f.name] = fallback
                continue
            decoded = self.value(
                found, hints[f.name], field_path,
                None if fallback is dataclasses.MISSING else fallback,
                secret=bool(f.metadata.get("secret")),
            )
            if decoded is _FAILED:
                failed = True
            else:
                kwargs[f.name] = decoded
        if failed:
            return _FAILED
        try:
            instance = cls(**kwargs)
        except (TypeError, ValueError) as exc:
            return self._error(path, node.line, str(exc))
        if len(self._report.problems) == problems_before:
            self._validate(instance, node, path)
        return instance

    def _validate(self, instance: Any, node: MapNode, path: str) -> None:
        validate = getattr(instance, "validate", None)
        if not callable(validate):
            return
        for problem in validate() or ():
            relative, message = ("", problem) if isinstance(problem, str) else problem
            self._report.error(join_path(path, relative), find_line(node, relative), message)


def _field_default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _null_means_default(node: Node, tp: Any) -> bool:
    """Whether a null for a field of type `tp` keeps the field's default.

    It does not for `X | None` (null is None, or a present dataclass with its defaults),
    for dataclasses (present, with defaults), and for strings from an unset variable ("").
    """
    if _optional_inner(tp) is not None or _is_dataclass_type(tp):
        return False
    return not (tp is str and isinstance(node, ScalarNode) and node.expanded)
