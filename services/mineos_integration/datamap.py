"""The data map: where a company keeps a person's data, and what Copy and Delete do there.

A versioned YAML file (docs/data-map.md has the full format and an example of every source type):

    version: 1
    sources:
      - name: orders            # unique; names the export file and the receipt line
        type: sql               # sql | firestore | gcs | http | plugin
        identity: email         # email | $internalId | $phoneNumber
        delete: {mode: delete}  # delete | anonymise (fields) | retain (reason)
        ...                     # the connector's own fields

**Order matters.** A Delete runs the sources one after another in list order, so list children before
their parents (`order_items` before `orders` before `customers`): a foreign key then never refuses a
delete, and a delete that stops half-way leaves parents that a redelivery finds again.

**Connectors** are chosen by `type`. Each one's config model (a `SourceConfig` subclass with
`type: Literal[...]` and `build(context) -> DataSource`) lives in its module and is imported only when
a map uses it, so a map without Firestore never imports the Firestore client; a connector that cannot be
imported fails loudly at start-up, naming the source's line.

**Plug-ins** let a company add its own connector without forking this project:

    - name: loyalty
      type: plugin
      identity: $internalId
      factory: "acme_privacy.loyalty:build_source"   # "package.module:function", importable
      options: {base_url: "https://loyalty.internal", token_env: LOYALTY_TOKEN}

`factory(config: PluginSourceConfig, context: SourceContext) -> DataSource` is called once at start-up;
`config.options` holds the free-form options, `context` the shared clients, the HMAC key of
`anonymise: hash` and the timeout every remote call must respect. The returned object implements the
`DataSource` protocol of `sources/base.py` (count, export, delete, preview) and raises `SourceError`
(transient or not) when its store fails.

**Secrets** are never written in the map: a source names an environment variable (`url_env`,
`auth_env`, ...) which Cloud Run fills from Secret Manager; connectors read it with `secret_from_env`.

**Errors** at start-up are one `DataMapError` whose message names the line and the field of each problem,
e.g. `datamap.yaml line 12, sources[1].table: field required`.
"""

import importlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from mineos_integration.sources.base import Anonymisation, DataSource, DeleteMode, SourceConfig, SourceContext

SUPPORTED_VERSION = 1

# type -> "module:ConfigClass"; the class is imported the first time a data map names the type.
CONNECTOR_CONFIGS: Mapping[str, str] = {
    "sql": "mineos_integration.sources.sql:SqlSourceConfig",
    "firestore": "mineos_integration.sources.firestore:FirestoreSourceConfig",
    "gcs": "mineos_integration.sources.gcs:GcsSourceConfig",
    "http": "mineos_integration.sources.http:HttpSourceConfig",
    "plugin": "mineos_integration.sources.plugin:PluginSourceConfig",
}

Location = tuple[str | int, ...]
# (where, what is wrong, whether the field may be absent: then its name is shown with its parent's line)
_Problem = tuple[Location, str, bool]


class DataMapError(Exception):
    """The data map (or a secret it names) is unusable; the service refuses to start.

    `problems` lists each problem as `<file> line <n>, <field>: <what is wrong>`.
    """

    def __init__(self, message: str, problems: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems) or (message,)


@dataclass(frozen=True)
class DataMap:
    version: int
    sources: list[SourceConfig]  # in delete order: children before parents


def secret_from_env(name: str) -> str:
    """The value of the environment variable a data map names for a secret (a URL, a token).

    Raises:
        DataMapError: the variable is unset or empty.
    """
    value = os.environ.get(name, "")
    if not value.strip():
        raise DataMapError(
            f"environment variable {name} is not set: the data map names it for a secret "
            "(on Cloud Run, map it from Secret Manager)"
        )
    return value


def load_data_map(path: str | os.PathLike[str]) -> DataMap:
    """Read and validate the data map YAML at `path`.

    Raises:
        DataMapError: the file cannot be read or is invalid; the message names line and field.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataMapError(f"cannot read the data map {os.fspath(path)}: {error}") from None
    return parse_data_map(text, label=os.fspath(path))


def parse_data_map(text: str, label: str = "data map") -> DataMap:
    """Validate a data map given as YAML text; `label` names it in error messages."""
    document, lines = _parse_yaml(text, label)
    problems: list[_Problem] = []
    try:
        header = _Document.model_validate(document)
    except ValidationError as error:
        problems.extend(_pydantic_problems(error.errors(), ()))
        raise _data_map_error(label, problems, lines) from None

    sources: list[SourceConfig] = []
    first_use: dict[str, int] = {}
    for index, raw_source in enumerate(header.sources):
        where: Location = ("sources", index)
        source_problems = [((*where, *loc), message, True) for loc, message in _policy_problems(raw_source)]
        name = raw_source.get("name")
        if isinstance(name, str) and name in first_use:
            first = ("sources", first_use[name])
            message = f"duplicate source name {name!r} (also {_dotted(first)}, line {_line(first, lines)})"
            source_problems.append(((*where, "name"), message, False))
        elif isinstance(name, str):
            first_use[name] = index
        config_class = _config_class_for(raw_source, where, source_problems)
        if config_class is not None:
            try:
                sources.append(config_class.model_validate(_with_yaml_nulls_spelled(raw_source)))
            except ValidationError as error:
                # Where a rule above already explains a field, pydantic's view of it only adds noise.
                explained = [loc for loc, _, _ in source_problems]
                source_problems.extend(
                    problem
                    for problem in _pydantic_problems(error.errors(), where)
                    if not any(problem[0][: len(loc)] == loc for loc in explained)
                )
        problems.extend(source_problems)
    if problems:
        raise _data_map_error(label, problems, lines)
    return DataMap(version=header.version, sources=sources)


def build_sources(data_map: DataMap, context: SourceContext) -> list[DataSource]:
    """Build every source's connector (engines, clients) once, in data-map order.

    Raises:
        DataMapError: a source cannot be built (a secret is missing, a plug-in returns no DataSource).
    """
    built: list[DataSource] = []
    try:
        for config in data_map.sources:
            built.append(_build_source(config, context))
    except BaseException:
        for source in built:  # release the engines of the sources built so far
            close = getattr(source, "close", None)
            if callable(close):
                close()
        raise
    return built


def _build_source(config: SourceConfig, context: SourceContext) -> DataSource:
    kind = getattr(config, "type", type(config).__name__)
    hashes = any(rule == Anonymisation.HASH for rule in config.delete.fields.values())
    if hashes and not context.anonymisation_key:
        raise DataMapError(f"source {config.name!r} hashes fields on delete but ANONYMISATION_KEY is not set")
    build = getattr(config, "build", None)
    if not callable(build):
        raise DataMapError(f"source {config.name!r}: {type(config).__name__} has no build(context) method")
    try:
        source = build(context)
    except DataMapError:
        raise
    except Exception as error:
        raise DataMapError(
            f"source {config.name!r} ({kind}) could not be built: {type(error).__name__}: {error}"
        ) from error
    if not isinstance(source, DataSource):
        raise DataMapError(
            f"source {config.name!r} ({kind}): build returned {type(source).__name__}, not a DataSource"
        )
    return source


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1]
    sources: list[dict[str, Any]] = Field(min_length=1)


@cache
def _import_config_class(reference: str) -> type[SourceConfig]:
    module_name, _, class_name = reference.partition(":")
    config_class = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(config_class, type) and issubclass(config_class, SourceConfig)):
        raise TypeError(f"{reference} is not a SourceConfig subclass")
    return config_class


def _config_class_for(
    raw_source: Mapping[str, Any], where: Location, problems: list[_Problem]
) -> type[SourceConfig] | None:
    kinds = ", ".join(sorted(CONNECTOR_CONFIGS))
    kind = raw_source.get("type")
    if kind is None:
        problems.append(((*where, "type"), f"field required (one of {kinds})", True))
        return None
    reference = CONNECTOR_CONFIGS.get(kind) if isinstance(kind, str) else None
    if reference is None:
        problems.append(((*where, "type"), f"unknown source type {kind!r}; expected one of {kinds}", False))
        return None
    try:
        return _import_config_class(reference)
    except Exception as error:  # a broken or missing connector module: say so, loudly, at start-up
        message = f"the {kind!r} connector cannot be loaded ({type(error).__name__}: {error})"
        problems.append(((*where, "type"), message, False))
        return None


def _policy_problems(raw_source: Mapping[str, Any]) -> list[tuple[Location, str]]:
    """The rules between `mode`, `fields` and `reason` that DeletePolicy's types cannot express."""
    policy = raw_source.get("delete")
    if not isinstance(policy, Mapping):
        return []
    problems: list[tuple[Location, str]] = []
    mode = policy.get("mode", DeleteMode.DELETE.value)
    if not isinstance(mode, str):
        return []  # the model reports it
    reason, fields = policy.get("reason"), policy.get("fields")
    if mode == DeleteMode.RETAIN and not (isinstance(reason, str) and reason.strip()):
        problems.append((("delete", "reason"), "required when mode is retain (MineOS is told why)"))
    if mode == DeleteMode.ANONYMISE and not fields:
        problems.append((("delete", "fields"), "required when mode is anonymise: the fields to overwrite"))
    if mode != DeleteMode.ANONYMISE and fields and mode in {item.value for item in DeleteMode}:
        problems.append((("delete", "fields"), f"only allowed when mode is anonymise, not {mode}"))
    if isinstance(fields, Mapping):
        for field_name, rule in fields.items():
            if not _is_anonymisation_rule(rule):
                message = 'must be null, "hash" or {value: <the value to write>}'
                problems.append((("delete", "fields", str(field_name)), message))
    return problems


def _is_anonymisation_rule(rule: Any) -> bool:
    if isinstance(rule, Mapping):
        return list(rule) == ["value"]
    return rule is None or rule in {item.value for item in Anonymisation}


def _with_yaml_nulls_spelled(raw_source: dict[str, Any]) -> dict[str, Any]:
    """`field: null` in YAML is None; DeletePolicy spells that rule "null"."""
    policy = raw_source.get("delete")
    if not (isinstance(policy, Mapping) and isinstance(policy.get("fields"), Mapping)):
        return raw_source
    fields = {
        name: Anonymisation.NULL.value if rule is None else rule for name, rule in policy["fields"].items()
    }
    return {**raw_source, "delete": {**policy, "fields": fields}}


def _pydantic_problems(errors: list[ErrorDetails], prefix: Location) -> list[_Problem]:
    problems = []
    for error in errors:
        message = error["msg"]
        for noise in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(noise)
        if error["type"] == "missing":
            message = "field required"
        elif error["type"] == "extra_forbidden":
            message = "unknown field"
        elif message[:2].istitle():
            message = message[0].lower() + message[1:]
        # A missing field's location does not exist in the file: it is shown, its line is its parent's.
        problems.append(((*prefix, *error["loc"]), message, error["type"] == "missing"))
    return problems


def _data_map_error(label: str, problems: list[_Problem], lines: dict[Location, int]) -> DataMapError:
    described: list[tuple[int, str]] = []
    for loc, message, may_be_absent in problems:
        known = _known_prefix(loc, lines)
        # Show the part of the location that is in the file (pydantic adds union member names to it),
        # plus the missing field's own name.
        shown = loc if may_be_absent and len(known) == len(loc) - 1 else known
        entry = (lines[known], f"{label} line {lines[known]}, {_dotted(shown) or '(top level)'}: {message}")
        if entry not in described:
            described.append(entry)
    described.sort(key=lambda entry: entry[0])
    texts = [text for _, text in described]
    return DataMapError("\n".join(texts), texts)


def _known_prefix(loc: Location, lines: dict[Location, int]) -> Location:
    for length in range(len(loc), 0, -1):
        if loc[:length] in lines:
            return loc[:length]
    return ()


def _line(loc: Location, lines: dict[Location, int]) -> int:
    return lines[_known_prefix(loc, lines)]


def _dotted(loc: Location) -> str:
    """("sources", 1, "table") -> "sources[1].table"."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class _StrictSafeLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would silently keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"key {key!r} is given twice",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str, label: str) -> tuple[Any, dict[Location, int]]:
    """The YAML document and the 1-based line of every key and list item, by location."""
    loader = _StrictSafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise DataMapError(f"{label}: the data map is empty")
        document = loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = f" line {mark.line + 1}" if mark else ""
        raise DataMapError(f"{label}{line}: not valid YAML: {error.problem or error.context}") from None
    except yaml.YAMLError as error:
        raise DataMapError(f"{label}: not valid YAML: {error}") from None
    finally:
        loader.dispose()
    lines: dict[Location, int] = {(): node.start_mark.line + 1}
    _record_lines(node, (), lines, visited=set())
    return document, lines


def _record_lines(node: yaml.Node, loc: Location, lines: dict[Location, int], visited: set[int]) -> None:
    if id(node) in visited:  # an alias: walked once, and never round a recursive one
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                child = (*loc, key_node.value)
                lines[child] = key_node.start_mark.line + 1  # merged keys first, the map's own override
                _record_lines(value_node, child, lines, visited)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*loc, index)] = item.start_mark.line + 1
            _record_lines(item, (*loc, index), lines, visited)
