"""Config files checked against their JSON Schema, for the workflow (its config) and ``itlin train``
(run configs, whose training settings follow ``training.schema.yaml``, the schema of the workflow
config's ``training`` section): one set of types and ranges for both.

Stricter than JSON Schema in one way: an integer must be written as one (``1.0`` is a number, not
an integer, and would name a run ``seed1.0``). Errors name the key and the reason, one line each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
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
