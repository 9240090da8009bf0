"""A step body that is one head line and then a YAML mapping: ``api`` (``GET /path``) and ``runbook`` calls.

Both kinds write their target on the first line that is not blank or a comment and their values
under it, one ``name: value`` a line; reading them the same way keeps their line numbers and their
messages about a body that is not a mapping alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..load.problems import InputError, Problem
from ..load.yamlsource import load_yaml
from .model import Step


@dataclass(frozen=True)
class HeadedBody:
    head: str  # the first line that is not blank or a comment, stripped
    line: int  # its file line
    values: dict[str, Any]
    lines: dict[str, int]  # the file line of each value, for messages about it


def headed_body(step: Step, file: str, field: str, not_a_mapping: str, within: str | None = None) -> HeadedBody:
    """The head line and the mapping under it; ``InputError`` (at ``field``) for a body that is not one."""
    lines = step.body.splitlines()
    first = next(i for i, text in enumerate(lines) if text.strip() and not text.lstrip().startswith("#"))
    line = step.body_line + first
    rest = "\n".join(lines[first + 1 :])
    values: dict[str, Any] = {}
    where: dict[str, int] = {}
    if rest.strip():
        doc = load_yaml(rest, file, first_line=line + 1, within=within)
        if doc.problems:
            raise InputError(doc.problems)
        if not isinstance(doc.data, dict):
            raise InputError(Problem(file, line + 1, field, not_a_mapping))
        for key, value in doc.data.items():
            values[str(key)] = value
            where[str(key)] = doc.line_of((key,)) or line + 1
    return HeadedBody(lines[first].strip(), line, values, where)
