"""The regular expressions a runbook declares, matched within a time bound.

A parameter's ``pattern`` comes from the runbook's frontmatter, and a runbook may come from a web
page (``runbook ingest``), so the pattern is hostile input. Python's ``re`` backtracks without
limit: ``(a|aa)+$`` against forty ``a`` and a ``!`` never ends, and ``runbook validate`` (which
checks defaults) or ``runbook run`` (which checks ``--param`` values) would hang with it. These
patterns are therefore matched with the ``regex`` package, which is compatible with ``re`` and
takes a ``timeout``: matching that takes longer than ``MATCH_SECONDS`` raises ``PatternTooSlow``,
which callers report as a located problem. Inside ``budget()`` (one parameter value checked, its
items and the messages' "did you mean" rewrites included) all matches share one ``MATCH_SECONDS``,
so a default of ten thousand items cannot take ten thousand times the bound. Time is processor
time (``regex`` counts C ``clock()``), so a loaded machine does not make a sane pattern "too slow".

Semantics are JSON Schema's, as before (jsonschema uses ``re.search``): a pattern is *searched*
for anywhere in the value, so ``^...$`` anchors it. Only the matching engine changes.

The regular expressions of the engine's own schemas are trusted and keep jsonschema's validator.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import re
import time
from collections.abc import Iterator
from typing import Any

import regex
from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators

from ..errors import RunbookError
from .problems import Problem
from .yamlsource import dotted

#: How long one match of a runbook's pattern may take. A sane pattern matches a parameter value in
#: microseconds; only catastrophic backtracking comes near this, even on a loaded machine.
MATCH_SECONDS = 0.1
#: When the current ``budget()`` runs out (``time.process_time()``), or None outside one.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("pattern_deadline", default=None)


class PatternTooSlow(RunbookError):
    """Matching ``pattern`` against ``text`` took longer than ``MATCH_SECONDS``."""

    def __init__(self, pattern: str, text: str):
        super().__init__(f"pattern {pattern!r} took longer than {MATCH_SECONDS} s to match {text!r}")
        self.pattern = pattern
        self.text = text

    def problem(self, file: str, line: int | None, name: str, spec: Any, what: str) -> Problem:
        """The runbook's fault, not the value's: a problem on parameter ``name``'s pattern in ``spec``
        (declared on ``line`` of ``file``); ``what`` names the value matched ("the default 'x'")."""
        field = dotted(("parameters", name, *path_of(spec, self.pattern)))
        return Problem(
            file,
            line,
            field,
            f"the pattern {short(self.pattern)} of parameter '{name}' takes too long to match {what} "
            f"(gave up after {MATCH_SECONDS} s): it backtracks catastrophically; rewrite it without "
            "nested quantifiers, i.e. without a repeated group whose contents can match the same text "
            "in more than one way, such as (a+)+ or (a|aa)* (write a+ instead)",
        )


@contextlib.contextmanager
def budget() -> Iterator[None]:
    """Let every match inside share one ``MATCH_SECONDS`` (a budget inside another keeps the outer one)."""
    if _DEADLINE.get() is not None:
        yield
        return
    token = _DEADLINE.set(time.process_time() + MATCH_SECONDS)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def search(pattern: str, text: str) -> bool:
    """Whether ``pattern`` occurs in ``text`` (``re.search`` semantics); raises ``PatternTooSlow``."""
    deadline = _DEADLINE.get()
    timeout = MATCH_SECONDS if deadline is None else deadline - time.process_time()
    if timeout <= 0:
        raise PatternTooSlow(pattern, text)
    try:
        return regex.search(pattern, text, timeout=timeout) is not None
    except TimeoutError:
        raise PatternTooSlow(pattern, text) from None


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    """jsonschema's ``pattern`` keyword, matched within the time bound."""
    if validator.is_type(instance, "string") and not search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


#: A JSON Schema validator for schemas written in runbooks (parameter specs): ``pattern`` is matched
#: within the time bound. ``patternProperties`` (matched by jsonschema with ``re``, also from
#: ``additionalProperties`` and ``unevaluatedProperties``) is refused in parameter specs by the
#: parser instead (``unbounded_keywords``).
BoundedValidator = validators.extend(Draft202012Validator, {"pattern": _pattern})


#: Keywords whose values are data, not schemas: a ``pattern`` key inside them is no regular expression.
_DATA_KEYWORDS = frozenset({"default", "enum", "const", "examples", "description", "title"})


def _keywords(spec: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str, Any]]:
    """Every (path, keyword, value) of a schema, nested schemas included, skipping data values."""
    if isinstance(spec, dict):
        for key, value in spec.items():
            where = path + (str(key),)
            yield where, str(key), value
            if key not in _DATA_KEYWORDS:
                yield from _keywords(value, where)
    elif isinstance(spec, list):
        for index, value in enumerate(spec):
            yield from _keywords(value, path + (str(index),))


def unbounded_keywords(spec: Any) -> Iterator[tuple[str, ...]]:
    """Where in ``spec`` jsonschema would match a regular expression without the time bound
    (``patternProperties``, whose keys it searches with ``re``)."""
    return (where for where, key, value in _keywords(spec) if key == "patternProperties" and value)


def pattern_paths(spec: Any) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every ``pattern`` keyword in ``spec`` (nested ones too, e.g. ``items.pattern``) and its value."""
    return ((where, value) for where, key, value in _keywords(spec) if key == "pattern")


def path_of(spec: Any, pattern: str) -> tuple[str, ...]:
    """Where ``pattern`` is declared in ``spec`` (``('pattern',)``, ``('items', 'pattern')``...)."""
    return next((where for where, value in pattern_paths(spec) if value == pattern), ("pattern",))


def regex_error(text: str) -> str | None:
    """Why Python cannot compile ``text`` as a regular expression, or None when it can.

    ``re`` raises more than ``re.error`` on hostile text: ``OverflowError`` for a huge repeat count
    (``a{99999999999999999999}``), ``RecursionError`` for groups nested a thousand deep.
    """
    try:
        re.compile(text)
    except (re.error, OverflowError) as exc:
        return str(exc)
    except RecursionError:
        return "its groups are nested too deeply"
    return None


def _is_regex(instance: object) -> bool:
    problem = regex_error(instance) if isinstance(instance, str) else None
    if problem is not None:
        raise re.error(problem)
    return True


#: Draft 2020-12's format checker, whose ``regex`` format also refuses (rather than crashing on) the
#: patterns ``re`` overflows or recurses on; ``schemas`` checks documents with it.
FORMAT_CHECKER: FormatChecker = copy.copy(Draft202012Validator.FORMAT_CHECKER)
FORMAT_CHECKER.checkers = dict(FORMAT_CHECKER.checkers)
FORMAT_CHECKER.checks("regex", raises=re.error)(_is_regex)


def short(value: object) -> str:
    """``repr(value)``, cut to 60 characters for messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
