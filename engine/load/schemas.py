"""The JSON Schemas in ``schemas/``, loaded once and applied with located, readable messages.

The schema files are the single statement of what a runbook, a step's attributes, the cluster
config and a profile may contain; the code validates against them rather than restating them.
jsonschema reports every error as data (``iter_errors``), which we turn into ``Problem`` values
that name the file, line and field, worded for an operator rather than for a schema author.

Most documents are valid, and jsonschema takes about 100 µs per step's attributes (most of what
``runbook validate`` spends). jsonschema-rs answers "valid?" in about 1 µs, so it decides first and
only an invalid document goes through jsonschema, whose errors the messages are built from.
"""

from __future__ import annotations

import difflib
import json
import re
from functools import cache
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator, ValidationError
from referencing import Registry, Resource

from ..resources import schema_dir
from .patterns import FORMAT_CHECKER, BoundedValidator, PatternTooSlow, regex_error
from .patterns import search as bounded_search
from .problems import Problem
from .yamlsource import YamlDoc, dotted


@cache
def _schema_resources() -> tuple[Resource, ...]:
    return tuple(
        Resource.from_contents(json.loads(path.read_text(encoding="utf-8")))
        for path in sorted(schema_dir().rglob("*.schema.json"))
    )


@cache
def _registry() -> Registry:
    return Registry().with_resources((resource.contents["$id"], resource) for resource in _schema_resources())


@cache
def validator(schema_id: str) -> Draft202012Validator:
    """A validator for the schema whose ``$id`` is ``schema_id`` (e.g. ``steps/api.schema.json``)."""
    schema = _registry()[schema_id].contents
    return Draft202012Validator(schema, registry=_registry(), format_checker=FORMAT_CHECKER)


@cache
def _quick(schema_id: str) -> Any:
    """jsonschema-rs's validator for the same schema, with the same ``regex`` format (Python's ``re``)."""
    resources = [(resource.contents["$id"], resource.contents) for resource in _schema_resources()]
    return jsonschema_rs.Draft202012Validator(
        {"$ref": schema_id},
        registry=jsonschema_rs.Registry(resources),
        validate_formats=True,
        formats={"regex": lambda text: regex_error(text) is None},
    )


def errors(schema_id: str, instance: Any) -> list[ValidationError]:
    """jsonschema's errors of ``instance`` against the schema ``schema_id``; none when jsonschema-rs
    finds it valid. Values jsonschema-rs cannot take (a YAML date, an integer past 64 bits) and
    anything it rejects go to jsonschema, which has the last word."""
    try:
        if _quick(schema_id).is_valid(instance):
            return []
    except (ValueError, TypeError, OverflowError):
        pass
    return list(validator(schema_id).iter_errors(instance))


def required_fields(schema_id: str) -> list[str]:
    """The top-level fields a schema requires, in the schema's order (for "the file is empty" messages)."""
    return [str(name) for name in _registry()[schema_id].contents.get("required", [])]


def field_list(names: list[str]) -> str:
    """``['name', 'type', 'tags']`` -> ``name:, type: and tags:``."""
    keys = [f"{name}:" for name in names]
    return keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + " and " + keys[-1] if keys else ""


def describe(value: object) -> str:
    """A short description of a YAML value for messages: 'a list', 'the text 'x'', '3'."""
    return _describe(value)


def check_document(doc: YamlDoc, schema_id: str, what: str) -> list[Problem]:
    """A whole YAML file checked against its schema: first that it holds a mapping at all (an empty
    file, or a list, gets one problem naming the fields it needs), then every YAML and schema problem.

    ``what`` names the file's role in the messages ("the cluster config", "a profile").
    """
    fields = field_list(required_fields(schema_id))
    if doc.data is None:
        return [Problem(doc.file, 1, None, f"the file is empty; {what} needs {fields} (see docs/profiles.md)")]
    if not isinstance(doc.data, dict):
        return [
            Problem(
                doc.file,
                doc.line_of(()),
                None,
                f"{what} is a YAML mapping ({fields}), but this file holds {describe(doc.data)}",
            )
        ]
    return list(doc.problems) + check(doc, schema_id)


def check(doc: YamlDoc, schema_id: str, data: Any = None, prefix: tuple[str, ...] = ()) -> list[Problem]:
    """Every schema violation of ``data`` (default: the whole document) as located problems."""
    instance = doc.data if data is None else data
    problems = []
    for error in errors(schema_id, instance):
        path = prefix + tuple(str(p) for p in error.absolute_path)
        for field, message in explain_all(error, path):
            problems.append(Problem(doc.file, doc.line_of(field), dotted(field) or None, message))
    return sorted(set(problems), key=lambda p: (p.line or 0, p.field or "", p.message))


def explain(error: ValidationError, path: tuple[str, ...]) -> tuple[tuple[str, ...], str]:
    """Reword one jsonschema error for an operator; returns the field it is about and the message."""
    found = explain_all(error, path)
    return found[0] if found else (path, error.message)


def explain_all(error: ValidationError, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], str]]:
    """Every (field, message) one jsonschema error stands for; empty when it only echoes another error.

    The schemas may carry operator-facing wording next to the rule it explains:

    * ``x-message``: a string, used when a value does not have the form the schema asks for
      (``pattern``, ``format``, ``minLength``...); or a mapping from a keyword (``pattern``,
      ``required``, ``type``, ``minProperties``, ``additionalProperties``...) to a string or to a
      list of cases ``{"if": SCHEMA, "message": TEXT}``, the first whose ``if`` the subject
      satisfies (a case without ``if`` always does). The subject is the offending value, or the
      field name for unknown fields and ``dependentRequired``. ``{got}``, ``{length}``, ``{limit}``,
      ``{name}`` and ``{unit}`` in a message are replaced by the value, its length, the keyword's
      limit, the field name and the unit.
    * ``x-unit``: the unit of a number ("seconds", "MB"), named in limit and type messages.
    * ``x-at``: report the problem at this field (relative to the erroring object) instead.
    """
    kind, value = error.validator, error.instance
    schema = error.schema if isinstance(error.schema, dict) else {}
    if kind in ("additionalProperties", "unevaluatedProperties") and isinstance(value, dict):
        return _unknown_fields(error, path, schema)
    if kind == "dependentRequired" and isinstance(value, dict):
        out = []
        for name, needs in error.validator_value.items():
            missing = [n for n in needs if name in value and n not in value]
            for need in missing:
                text = (
                    _custom(error, schema, name, name=name)
                    or f"{name} needs {need}, which is not given: add {need} or remove {name}"
                )
                out.append((path + (name,), text))
        return out
    if len(error.relative_schema_path) >= 2 and list(error.relative_schema_path)[-2] == "propertyNames":
        field = path + (str(value),)
        text = _custom(error, schema, value, name=str(value)) or f"the name {value!r} does not have the expected form"
        return [(field, text + _did_you_mean_form(error, value))]
    field = path
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        field = path + (missing,)
        text = _custom(error, schema, value, name=missing) or "missing: this field is required" + _misspelt(
            missing, value, schema
        )
    else:
        text = _custom(error, schema, value, name=path[-1] if path else "") or _generic(error, schema, path)
        if kind == "pattern":
            text += _did_you_mean_form(error, value)
    if schema.get("x-at"):
        field = path + (str(schema["x-at"]),)
    return [(field, text)]


_FORM = ("pattern", "format", "minLength", "maxLength", "minItems", "maxItems", "const")
_PLACEHOLDER = re.compile(r"\{(got|length|limit|name|unit)\}")


def _custom(error: ValidationError, schema: dict[str, Any], subject: Any, name: str = "") -> str | None:
    """The schema's own wording (``x-message``) for this error, if it has one."""
    spec = schema.get("x-message")
    if isinstance(spec, dict):
        spec = spec.get(error.validator)
    elif error.validator not in _FORM:
        spec = None
    if isinstance(spec, list):
        spec = next(
            (case["message"] for case in spec if "if" not in case or BoundedValidator(case["if"]).is_valid(subject)),
            None,
        )
    if not isinstance(spec, str):
        return None
    value = error.instance
    fills = {
        "got": _short(value),
        "length": str(len(value)) if isinstance(value, (str, list, dict)) else "",
        "limit": str(error.validator_value),
        "name": name,
        "unit": str(schema.get("x-unit", "")),
    }
    return _PLACEHOLDER.sub(lambda m: fills[m.group(1)], spec)


def _generic(error: ValidationError, schema: dict[str, Any], path: tuple[str, ...] = ()) -> str:
    """Plain wording for a keyword the schema gave no message for."""
    kind, value, limit = error.validator, error.instance, error.validator_value
    unit = f" {schema['x-unit']}" if schema.get("x-unit") else ""
    if kind == "enum":
        options = ", ".join(str(o) for o in limit)
        guess = _close(str(value), [str(o) for o in limit], cutoff=0.85, prefixes=True)
        return f"must be one of: {options} (got {_short(value)})" + (f"; did you mean {guess!r}?" if guess else "")
    if kind == "const":
        return f"must be {limit!r} (got {_short(value)})"
    if kind == "type":
        if value is None:
            after = f"'{path[-1]}:'" if path and not path[-1].isdigit() else "the ':'"
            return f"has no value: write {_article(limit)} after {after}"
        if unit.strip() == "MB" and isinstance(value, str) and _megabytes(value) is not None:
            return f"is a number of MB, without a unit: write {_megabytes(value)} for {_short(value)}"
        if isinstance(value, str) and value.strip().lstrip("-").isdigit() and limit in ("integer", "number"):
            return f"must be {_article(limit)}: write it without quotes (got {_short(value)})"
        return f"must be {_article(limit)}{unit and f' of{unit}'} (got {_describe(value)})"
    if kind == "pattern":
        return f"{_short(value)} does not match the pattern {limit}"
    if kind == "format" and limit == "regex" and (why := regex_error(str(value))) is not None:
        return f"pattern {_short(value)} is not a valid regular expression ({why})"
    if kind == "format":
        return f"{_short(value)} is not a valid {limit}"
    if kind == "minLength":
        return "is empty: write a value" if limit == 1 else f"must be at least {limit} characters (got {len(value)})"
    if kind == "maxLength":
        return f"must be at most {limit} characters (got {len(value)})"
    if kind == "minItems":
        return (
            "is an empty list: give at least one item"
            if limit == 1
            else f"needs at least {limit} items (got {len(value)})"
        )
    if kind == "maxItems":
        return f"may hold at most {limit} items (got {len(value)})"
    if kind == "minProperties":
        fields = ", ".join(sorted(schema.get("properties", {})))
        return f"is empty: give at least one of {fields}" if fields else "is empty: give at least one field"
    if kind == "minimum":
        return f"must be at least {limit}{unit} (got {value})"
    if kind == "maximum":
        return f"must be at most {limit}{unit} (got {value})"
    if kind == "exclusiveMinimum":
        return f"must be more than {limit}{unit} (got {value})"
    if kind == "exclusiveMaximum":
        return f"must be less than {limit}{unit} (got {value})"
    if kind == "uniqueItems" and isinstance(value, list):
        seen: list[Any] = []
        for item in value:
            if item in seen:
                return f"lists {_short(item)} twice: keep one"
            seen.append(item)
    return error.message


def _unknown_fields(
    error: ValidationError, path: tuple[str, ...], schema: dict[str, Any]
) -> list[tuple[tuple[str, ...], str]]:
    """One problem per field the schema does not know, with a guess at what was meant.

    ``unevaluatedProperties`` also fires for known fields whenever a sibling rule failed (their
    evaluation did not succeed); such an echo names no unknown field and is dropped.
    """
    known = set(schema.get("properties", {}))
    required = set(schema.get("required", []))
    for sub in schema.get("allOf", []):
        resolved = _resolved(error, sub)
        known |= set(resolved.get("properties", {}))
        required |= set(resolved.get("required", []))
    value = error.instance
    missing = sorted(r for r in required if r not in value)
    allowed = ", ".join(sorted(known)) or "none"
    out = []
    for name in (str(k) for k in value if str(k) not in known):
        custom = _custom(error, schema, name, name=name)
        if custom:  # e.g. a secret pasted into the config: say that first, and guess no alternative
            out.append((path + (name,), f"unknown field {name!r}: {custom} (allowed: {allowed})"))
            continue
        guess = _close(name, missing, cutoff=0.4) or _close(name, sorted(known))
        text = f"unknown field {name!r}" + (f": did you mean {guess!r}?" if guess else "") + f" (allowed: {allowed})"
        out.append((path + (name,), text))
    return out


def _misspelt(missing: str, value: Any, schema: dict[str, Any]) -> str:
    """For a missing field: a present field the schema does not know that looks like it."""
    known = set(schema.get("properties", {}))
    if not isinstance(value, dict) or not known:
        return ""
    guess = _close(missing, [str(k) for k in value if str(k) not in known], cutoff=0.4)
    return f" (is {guess!r} a misspelling of it?)" if guess else ""


def _did_you_mean_form(error: ValidationError, value: Any) -> str:
    """For a value failing a pattern: a simple rewrite of it (case, separators) that passes.

    The pattern may be a runbook's (hostile): it is matched within the time bound, and a candidate
    it is too slow for is no suggestion.
    """
    if not isinstance(value, str) or error.validator != "pattern":
        return ""
    lower = value.lower()
    words = [w for w in re.split(r"[^a-z0-9]+", lower) if w]
    for candidate in (lower, "_".join(words), "-".join(words)):
        try:
            if candidate and candidate != value and bounded_search(error.validator_value, candidate):
                return f"; did you mean {candidate!r}?"
        except PatternTooSlow:
            continue
    return ""


def _close(word: str, options: list[str], cutoff: float = 0.6, prefixes: bool = False) -> str | None:
    """The option ``word`` most likely meant: same but for case, else (with ``prefixes``) an option it
    abbreviates ('int' for 'integer'), else a close spelling."""
    for candidate in options:
        if candidate.lower() == word.lower() and candidate != word:
            return candidate
    if prefixes and len(word) >= 3:
        starting = [c for c in options if c.lower().startswith(word.lower())]
        if len(starting) == 1:
            return starting[0]
    found = difflib.get_close_matches(word, options, n=1, cutoff=cutoff)
    return found[0] if found else None


def _megabytes(text: str) -> int | None:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT])(?:i?B)?\s*", text, re.IGNORECASE)
    if not match:
        return None
    size = float(match[1]) * {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[match[2].upper()]
    return int(size) if size == int(size) and size >= 1 else None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
    return {
        "integer": "an integer",
        "object": "a mapping",
        "array": "a list",
        "string": "a string",
        "boolean": "true or false",
        "number": "a number",
        "null": "empty",
    }.get(str(kind), str(kind))


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return f"the text {_short(value)}"
    return _short(value)
