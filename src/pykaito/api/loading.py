"""Reading Workspaces from YAML, and writing them back.

A file may hold several documents: Workspaces come back as typed values, everything else (a
ConfigMap holding ``inference_config.yaml``, a Secret) comes back as plain dicts so that callers
such as ``kaito validate`` can use them as context. Errors never leak a parser traceback: malformed
YAML is an :class:`InputError` naming ``file:line``; a document of the wrong shape is a
:class:`SchemaError` whose field errors carry paths such as ``resource.count``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import yaml

from pykaito.api.types import GROUP, KIND, Workspace
from pykaito.catalog.loader import closest, did_you_mean
from pykaito.errors import FieldError, InputError, ValidationError

STDIN = "-"


class _Loader(yaml.SafeLoader):
    """YAML as the Kubernetes API reads it: timestamps stay strings."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _Dumper(yaml.SafeDumper):
    """Block-style YAML; multi-line strings as literal blocks so ConfigMaps stay readable."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _represent_str)


class SchemaError(ValidationError, InputError):
    """A document does not have the shape of a Workspace (a wrong type, an unknown field).

    It is both an input error (the file cannot be read as a Workspace) and a validation error
    (``errors`` lists each broken field with its path).
    """

    def __init__(self, source: str, errors: list[FieldError]) -> None:
        super().__init__(errors)
        self.source = source

    def __str__(self) -> str:
        return f"{self.source}: " + "; ".join(str(e) for e in self.errors)


@dataclass(frozen=True)
class Documents:
    """What one YAML text holds: its Workspaces, and every other object as a plain dict."""

    source: str
    workspaces: tuple[Workspace, ...]
    others: tuple[dict[str, Any], ...] = ()
    # Filled by the collecting readers only: each document that could not be read, with its errors.
    invalid: tuple[SchemaError, ...] = ()
    # The YAML node of each of ``others`` (None inside a ``kind: List``), for line numbers.
    other_nodes: tuple[yaml.Node | None, ...] = field(default=(), compare=False, repr=False)

    def _objects(self, kind: str, namespace: str | None) -> list[dict[str, Any]]:
        found = []
        for obj in self.others:
            if obj.get("kind") != kind or obj.get("apiVersion", "v1") != "v1":
                continue
            meta = obj.get("metadata") or {}
            ns = meta.get("namespace")
            if namespace is None or ns is None or ns == namespace:
                found.append(obj)
        return found

    def config_maps(self, namespace: str | None = None) -> dict[str, dict[str, str]]:
        """ConfigMaps by name (their ``data``); only those in ``namespace`` or with none given."""
        result: dict[str, dict[str, str]] = {}
        for obj in self._objects("ConfigMap", namespace):
            name = (obj.get("metadata") or {}).get("name")
            data = obj.get("data") or {}
            if isinstance(name, str) and isinstance(data, Mapping):
                result[name] = {str(k): v if isinstance(v, str) else str(v) for k, v in data.items()}
        return result

    def secrets(self, namespace: str | None = None) -> dict[str, frozenset[str]]:
        """Secrets by name with the keys they hold (from ``data`` and ``stringData``)."""
        result: dict[str, frozenset[str]] = {}
        for obj in self._objects("Secret", namespace):
            name = (obj.get("metadata") or {}).get("name")
            keys: set[str] = set()
            for section in ("data", "stringData"):
                value = obj.get(section) or {}
                if isinstance(value, Mapping):
                    keys.update(str(k) for k in value)
            if isinstance(name, str):
                result[name] = frozenset(keys)
        return result


# --- reading -----------------------------------------------------------------------------------


def load_text(text: str, source: str = "<string>") -> Documents:
    """Every document in a YAML text; empty documents are skipped, ``kind: List`` is expanded.

    The first document of the wrong shape raises (``SchemaError`` or ``InputError``).
    """
    return _load(text, source, collect=False)


def collect_text(text: str, source: str = "<string>") -> Documents:
    """Like :func:`load_text`, but a document of the wrong shape does not stop the reading.

    Each such document is one ``SchemaError`` in ``Documents.invalid`` (in file order) and the
    others are read as usual; only malformed YAML, which hides where documents end, raises.
    """
    return _load(text, source, collect=True)


def _load(text: str, source: str, *, collect: bool) -> Documents:
    try:
        raw_docs = list(yaml.load_all(text, Loader=_Loader))
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.YAMLError as exc:
        raise InputError(_yaml_message(exc, source)) from exc

    workspaces: list[Workspace] = []
    others: list[dict[str, Any]] = []
    other_nodes: list[yaml.Node | None] = []
    invalid: list[SchemaError] = []

    def refuse(where: str, path: str, message: str) -> None:
        if not collect:
            raise InputError(message)
        invalid.append(SchemaError(where, [FieldError(path, message)]))

    non_empty = [(raw, node) for raw, node in zip(raw_docs, nodes, strict=True) if raw is not None]
    for number, (raw, node) in enumerate(non_empty, start=1):
        where = source if len(non_empty) == 1 else f"{source} (document {number})"
        line = node.start_mark.line + 1
        if not isinstance(raw, dict):
            refuse(
                where,
                "(document)",
                f"{source}:{line}: document {number} is a {_kind_of(raw)}, not a Kubernetes object; "
                "a Workspace starts with `apiVersion: kaito.sh/v1beta1` and `kind: Workspace`",
            )
            continue
        items: list[tuple[dict[str, Any], yaml.Node | None]] = [(raw, node)]
        if raw.get("kind") == "List" and isinstance(raw.get("items"), list):
            items = [(item, None) for item in raw["items"] if isinstance(item, dict)]
        for obj, obj_node in items:
            if _is_workspace(obj):
                try:
                    workspaces.append(_parse(obj, where, source, obj_node))
                except SchemaError as exc:
                    if not collect:
                        raise
                    invalid.append(exc)
            elif "kind" not in obj:
                refuse(
                    where,
                    "kind",
                    f"{source}:{line}: document {number} has no `kind`; "
                    "a Workspace starts with `apiVersion: kaito.sh/v1beta1` and `kind: Workspace`",
                )
            else:
                others.append(obj)
                other_nodes.append(obj_node)
    return Documents(
        source=source,
        workspaces=tuple(workspaces),
        others=tuple(others),
        invalid=tuple(invalid),
        other_nodes=tuple(other_nodes),
    )


def _read(path: str | Path) -> tuple[str, str]:
    if str(path) == STDIN:
        return sys.stdin.read(), "<stdin>"
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError(f"{file}: no such file; pass a Workspace YAML file or `-` for stdin") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{file}: is a directory; pass a Workspace YAML file") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{file}: not UTF-8 text; pass a Workspace YAML file") from exc
    except OSError as exc:
        raise InputError(f"{file}: cannot read it ({exc.strerror})") from exc
    return text, str(file)


def load_path(path: str | Path) -> Documents:
    """The documents in a file; ``-`` reads standard input."""
    return load_text(*_read(path))


def collect_path(path: str | Path) -> Documents:
    """The documents in a file (``-`` for stdin), collecting schema errors: see :func:`collect_text`."""
    return collect_text(*_read(path))


def load_workspaces(path: str | Path) -> list[Workspace]:
    """The Workspaces in a file (``-`` for stdin); InputError when there is none."""
    docs = load_path(path)
    if not docs.workspaces:
        raise InputError(f"{docs.source}: no Workspace found (a document with `kind: Workspace`)")
    return list(docs.workspaces)


def load_workspace(path: str | Path) -> Workspace:
    """The one Workspace in a file; InputError when there is none or several."""
    found = load_workspaces(path)
    if len(found) > 1:
        names = ", ".join(w.name or "?" for w in found)
        raise InputError(f"{path}: {len(found)} Workspaces ({names}); pass a file with exactly one")
    return found[0]


def parse_workspace(data: Mapping[str, Any], source: str = "<object>") -> Workspace:
    """A Workspace from a plain dict (a Kubernetes object body); SchemaError on the wrong shape."""
    return _parse(dict(data), source, source, None)


def _is_workspace(obj: Mapping[str, Any]) -> bool:
    api_version = obj.get("apiVersion")
    return obj.get("kind") == KIND and (
        not isinstance(api_version, str) or api_version.split("/")[0] == GROUP
    )


def _parse(obj: dict[str, Any], where: str, file: str, node: yaml.Node | None) -> Workspace:
    try:
        return Workspace.model_validate(obj, strict=True)
    except pydantic.ValidationError as exc:
        raise SchemaError(where, field_errors(exc, file, node)) from exc


def field_errors(
    exc: pydantic.ValidationError,
    file: str,
    node: yaml.Node | None,
    message: Callable[[Mapping[str, Any]], str] | None = None,
) -> list[FieldError]:
    """One ``FieldError`` per pydantic error, with ``(file:line)`` where the YAML node is known."""
    errors = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        text = (message or _error_message)(err)
        line = _line_of(node, loc) if node is not None else None
        if line is not None:
            text = f"{text} ({file}:{line})"
        errors.append(FieldError(field_path(loc), text))
    return errors


# --- error messages ----------------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def field_path(loc: Iterable[str | int]) -> str:
    """``("inference", "adapters", 0, "source")`` -> ``inference.adapters[0].source``.

    Keys that are not plain identifiers (annotation and label keys) are written in brackets:
    ``metadata.annotations["kaito.sh/runtime"]``.
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f'["{part}"]'
    return out


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def _got(value: Any) -> str:
    shown = repr(value) if not isinstance(value, dict | list) else _kind_of(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"got {shown}" if isinstance(value, dict | list) else f"got {_kind_of(value)} {shown}"


def _known_fields(loc: tuple[str | int, ...]) -> list[str]:
    model: Any = Workspace
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        info = getattr(model, "model_fields", {}).get(part)
        if info is None:
            return []
        model = _model_in(info.annotation)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _error_message(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    value = err.get("input")
    loc = tuple(err["loc"])
    if kind == "extra_forbidden":
        field = str(loc[-1])
        known = _known_fields(loc)
        hint = did_you_mean(closest(field, known)) if known else ""
        listing = f"; known fields here: {', '.join(known)}" if known else ""
        return f"unknown field {field!r}{hint}: remove it{listing}"
    if kind == "missing":
        return "required field is missing: add it"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected an integer, {_got(value)}; write a whole number such as 1"
    if kind == "string_type":
        hint = f"; quote it: '{value}'" if isinstance(value, int | float | bool) else ""
        return f"expected a string, {_got(value)}{hint}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"expected a mapping (key: value lines), {_got(value)}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list (lines starting with '- '), {_got(value)}"
    if kind == "literal_error":
        expected = (err.get("ctx") or {}).get("expected", "")
        return f"must be one of {expected}, {_got(value)}"
    if kind == "bool_type":
        return f"expected true or false, {_got(value)}"
    return f"{err.get('msg', 'invalid value')}, {_got(value)}"


def _yaml_message(exc: yaml.YAMLError, source: str) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
    detail = f"{context}, {problem}" if context else str(problem)
    return f"{where}: malformed YAML: {detail}; fix the indentation or quoting there"


def _line_of(node: yaml.Node, loc: Sequence[str | int]) -> int | None:
    """The line of the deepest node along ``loc`` that the document has (1-based)."""
    line = node.start_mark.line + 1
    current: yaml.Node = node
    for part in loc:
        if isinstance(current, yaml.MappingNode) and isinstance(part, str):
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    line = key.start_mark.line + 1
                    current = value
                    break
            else:
                return line
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(current.value):
                return line
            current = current.value[part]
            line = current.start_mark.line + 1
        else:
            return line
    return line


# --- writing -----------------------------------------------------------------------------------


def to_dict(workspace: Workspace) -> dict[str, Any]:
    """The Workspace as a plain dict in wire order, leaving out fields never set (and nulls)."""
    body = workspace.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    ordered: dict[str, Any] = {"apiVersion": workspace.apiVersion, "kind": workspace.kind}
    for key in ("metadata", "resource", "inference", "tuning", "status"):
        if key in body:
            ordered[key] = body[key]
    return ordered


def dump_yaml(objects: Iterable[Mapping[str, Any]]) -> str:
    """Plain objects as a multi-document YAML text, keys in their given order."""
    return "---\n".join(
        yaml.dump(dict(obj), Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)
        for obj in objects
    )


def dump_workspace(workspace: Workspace) -> str:
    """One Workspace as YAML that :func:`load_text` reads back equal."""
    return dump_yaml([to_dict(workspace)])


def dump_workspaces(workspaces: Iterable[Workspace]) -> str:
    """Several Workspaces as one multi-document YAML text."""
    return dump_yaml(to_dict(w) for w in workspaces)
