"""Config files checked against their JSON Schema, for the workflow (its config) and ``itlin train``
(run configs, whose training settings follow ``training.schema.yaml``, the schema of the workflow
config's ``training`` section): one set of types and ranges for both.

Stricter than JSON Schema in one way: an integer must be written as one (``1.0`` is a number, not
an integer, and would name a run ``seed1.0``). Errors name the key and the reason, one line each.
``schema_keys`` lists the keys a schema defines, with their annotations (``x-examples``), for the checks
a schema cannot express.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse
from urllib.request import url2pathname

import jsonschema
import yaml
from referencing import Registry, Resource

MAX_REPORTED = 10
"""Errors listed at most; a config with more has a deeper problem than its values."""


class ConfigError(ValueError):
    """A config file is not valid YAML, or a value breaks its schema; the message names the key."""


def load_yaml(path: Path) -> Any:
    """The contents of a YAML file; a missing file or a syntax error (with its line and column) is
    a ``ConfigError`` naming the file."""
    path = Path(path)
    try:
        with path.open() as stream:
            return yaml.safe_load(stream)
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        raise ConfigError(f"{path}, line {mark.line + 1}, column {mark.column + 1}: not valid YAML: "
                          f"{error.problem}" + (f" ({error.context})" if error.context else "")) from None


def _is_integer(checker, value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)


def _retrieve(uri: str) -> Resource:
    """A schema referenced by a relative ``$ref``: a local YAML file."""
    return Resource.from_contents(load_yaml(Path(url2pathname(urlparse(uri).path))))


def validate(instance: Any, schema_path: Path, what: str = "config key") -> None:
    """Raise ``ConfigError`` listing every value of ``instance`` that breaks the schema at
    ``schema_path`` (relative ``$ref`` to other schema files allowed), one line per value:
    ``{what} 'training.steps': 'abc' is not of type 'integer'``."""
    schema_path = Path(schema_path).resolve()
    schema = {**load_yaml(schema_path), "$id": schema_path.as_uri()}
    validator = _Validator(schema, registry=Registry(retrieve=_retrieve))
    errors = sorted(validator.iter_errors(instance), key=lambda error: [str(part) for part in error.absolute_path])
    if errors:
        lines = [f"{what} {_key(error.absolute_path)}: {_reason(error)}" for error in errors[:MAX_REPORTED]]
        if len(errors) > MAX_REPORTED:
            lines.append(f"... and {len(errors) - MAX_REPORTED} more")
        raise ConfigError("\n".join(lines))


def _key(path) -> str:
    """'training.optimizer.name', 'K[0]', or '(top level)' for the whole config."""
    key = ""
    for part in path:
        key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else str(part)
    return f"'{key}'" if key else "(top level)"


def _reason(error: jsonschema.ValidationError) -> str:
    """The error's message; for a value matching none of several alternatives, each one's reason."""
    if error.context:
        reasons = list(dict.fromkeys(sub.message for sub in error.context))
        return f"{error.instance!r} matches none of the allowed forms: " + "; ".join(reasons)
    return error.message


class SchemaKey(NamedTuple):
    """A key that a schema defines: dotted (``*`` for any name: ``models.*.mem_mb``), its schema with every
    ``$ref`` replaced by what it points to, and the conditions under which the schema allows it."""

    key: str
    schema: dict
    when: tuple[tuple[str, dict], ...]
    """(the key of an object, the ``if`` schema that object must match): a key of an ``allOf``'s ``then``
    branch, such as one dataset's options."""


def schema_keys(schema_path: Path) -> list[SchemaKey]:
    """Every key the schema at ``schema_path`` defines (with its relative ``$ref`` to other schema files),
    in the order written: through ``properties``, ``additionalProperties`` and the ``then`` of an ``allOf``;
    a key defined in several places is listed once for each."""
    schema_path = Path(schema_path).resolve()
    document = load_yaml(schema_path)
    keys = []

    def children(node: dict, key: str, when: tuple) -> None:
        named = dict(node.get("properties", {}))
        if isinstance(node.get("additionalProperties"), dict):
            named["*"] = node["additionalProperties"]
        for name, child in named.items():
            keys.append(SchemaKey(f"{key}.{name}" if key else name, child, when))
            children(child, keys[-1].key, when)
        for branch in node.get("allOf", []):
            if "then" in branch:
                children(branch["then"], key, (*when, (key, branch.get("if", {}))))

    children(_dereferenced(document, schema_path, document), "", ())
    return keys


def _dereferenced(node: Any, location: Path, document: dict) -> Any:
    """``node`` of the schema file at ``location`` (whose contents are ``document``) with every ``$ref``
    replaced by what it points to; a ``$ref``'s siblings (a description, an annotation) are kept."""
    if isinstance(node, list):
        return [_dereferenced(item, location, document) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" not in node:
        return {name: _dereferenced(value, location, document) for name, value in node.items()}
    file, _, pointer = node["$ref"].partition("#")
    if file:
        location = (location.parent / file).resolve()
        document = load_yaml(location)
    target = functools.reduce(lambda parent, part: parent[part], filter(None, pointer.split("/")), document)
    return _dereferenced({**target, **{name: value for name, value in node.items() if name != "$ref"}},
                         location, document)
