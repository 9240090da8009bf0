"""The JSON Schemas in ``schemas/``, loaded once and applied with located, readable messages.

The schema files are the single statement of what a runbook, a step's attributes, the cluster
config and a profile may contain; the code validates against them rather than restating them.
jsonschema reports every error as data (``iter_errors``), which we turn into ``Problem`` values
that name the file, line and field, worded for an operator rather than for a schema author.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError
from referencing import Registry, Resource

from .problems import Problem
from .yamlsource import YamlDoc, dotted


def schema_dir() -> Path:
    """Where the schema files are: inside the package when installed from a wheel, else the source tree."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "schemas", here.parent / "schemas"):
        if (candidate / "cluster-config.schema.json").is_file():
            return candidate
    raise RuntimeError(f"runbook is installed without its schemas (looked in {here / 'schemas'} and "
                       f"{here.parent / 'schemas'}); reinstall the package")


@lru_cache(maxsize=None)
def _registry() -> Registry:
    base = schema_dir()
    resources = []
    for path in sorted(base.rglob("*.schema.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        resources.append((contents["$id"], Resource.from_contents(contents)))
    return Registry().with_resources(resources)


@lru_cache(maxsize=None)
def validator(schema_id: str) -> Draft202012Validator:
    """A validator for the schema whose ``$id`` is ``schema_id`` (e.g. ``steps/api.schema.json``)."""
    schema = _registry()[schema_id].contents
    return Draft202012Validator(schema, registry=_registry(), format_checker=Draft202012Validator.FORMAT_CHECKER)


def check(doc: YamlDoc, schema_id: str, data: Any = None, prefix: tuple[str, ...] = ()) -> list[Problem]:
    """Every schema violation of ``data`` (default: the whole document) as located problems."""
    instance = doc.data if data is None else data
    problems = []
    for error in validator(schema_id).iter_errors(instance):
        path = prefix + tuple(str(p) for p in error.absolute_path)
        field, message = explain(error, path)
        problems.append(Problem(doc.file, doc.line_of(field), dotted(field) or None, message))
    return sorted(set(problems), key=lambda p: (p.line or 0, p.field or "", p.message))


def explain(error: ValidationError, path: tuple[str, ...]) -> tuple[tuple[str, ...], str]:
    """Reword one jsonschema error for an operator; returns the field it is about and the message."""
    kind, value, schema = error.validator, error.instance, error.schema
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return path + (missing,), "missing: this field is required"
    if kind in ("additionalProperties", "unevaluatedProperties") and isinstance(value, dict):
        known = set(schema.get("properties", {}))
        for sub in schema.get("allOf", []):
            known |= set(_resolved(error, sub).get("properties", {}))
        extra = sorted(str(k) for k in value if k not in known)
        if extra:
            allowed = ", ".join(sorted(known)) or "none"
            return path + (extra[0],), (f"unknown field{'s' if len(extra) > 1 else ''} "
                                        f"{', '.join(repr(e) for e in extra)} (allowed: {allowed})")
    if kind == "enum":
        options = ", ".join(str(o) for o in error.validator_value)
        return path, f"must be one of: {options} (got {value!r})"
    if kind == "type":
        return path, f"must be {_article(error.validator_value)} (got {_describe(value)})"
    if kind == "pattern":
        hint = schema.get("description")
        return path, f"{value!r} does not have the expected form{f' ({hint})' if hint else ''}: must match {error.validator_value}"
    if kind == "dependentRequired":
        return path, error.message.replace("is a dependency of", "is needed by")
    return path, error.message


def _resolved(error: ValidationError, sub: dict[str, Any]) -> dict[str, Any]:
    """Follow ``sub``'s ``$ref`` (relative to the erroring schema) to list the fields it allows."""
    ref = sub.get("$ref")
    if not ref:
        return sub
    base = error.schema.get("$id", "") if isinstance(error.schema, dict) else ""
    return _registry().resolver(base_uri=base).lookup(ref).contents


def _article(kind: object) -> str:
    if isinstance(kind, list):
        return " or ".join(_article(k) for k in kind)
    return {"integer": "an integer", "object": "a mapping", "array": "a list", "string": "a string",
            "boolean": "true or false", "number": "a number", "null": "empty"}.get(str(kind), str(kind))


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"
