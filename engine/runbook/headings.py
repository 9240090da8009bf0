"""Attributes on a heading: ``## Title {when: "profile.type == 'talos'"}``.

A YAML flow mapping at the end of a heading line (like Pandoc's header attributes) applies to every
step under that heading and its sub-headings, until the next heading of the same or a higher level.
``when`` conditions add up (heading AND sub-heading AND step), each kept with the line it was
written on so an error in one names that line; for the other attributes the step's own value wins,
then the nearest heading's. The title shown in plans and the ids derived from it leave the mapping
out. Kept apart from ``parser`` so the fence and heading grammars can change independently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..load import schemas
from ..load.problems import InputError, Problem
from ..load.yamlsource import YamlDoc, load_yaml

#: Where each attribute of a step came from, for messages and ``runbook show``: the fence's own line or a heading's.
Origins = dict[str, int]
_OPENING = re.compile(r"(?:^|\s)\{")


@dataclass(frozen=True)
class Condition:
    """One ``when`` condition of a step, with the line it was written on (a heading's or the fence's)."""

    expression: str
    line: int


@dataclass
class HeadingScope:
    """The headings above the current point of the document, each with the attributes it carries."""

    levels: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)  # (level, line, attributes)

    def enter(self, level: int, line: int, attributes: dict[str, Any]) -> None:
        """A heading of ``level`` ends every open heading of the same or a deeper level."""
        while self.levels and self.levels[-1][0] >= level:
            self.levels.pop()
        self.levels.append((level, line, attributes))

    def inherited(self) -> tuple[dict[str, tuple[Any, int]], tuple[Condition, ...]]:
        """Attributes (other than when) of the nearest heading carrying each, and every heading's when, outermost first."""
        values: dict[str, tuple[Any, int]] = {}
        conditions = []
        for _, line, attributes in self.levels:
            for name, value in attributes.items():
                if name == "when":
                    conditions.append(Condition(str(value), line))
                else:
                    values[name] = (value, line)
        return values, tuple(conditions)


def split_heading(text: str) -> tuple[str, str | None]:
    """A heading's text and the attribute mapping at its end (None without one).

    The mapping is the first ``{`` (at the start or after a space) whose flow mapping closes exactly
    at the end of the line, so braces inside a title (``## Clone {{ vm }} now``) stay title text.
    """
    stripped = text.rstrip()
    for match in _OPENING.finditer(stripped):
        start = match.end() - 1
        end = closing_brace(stripped[start:])
        if end is not None and start + end == len(stripped) - 1 and not stripped[start:].startswith("{{"):
            return stripped[:start].rstrip(), stripped[start:]
    return stripped, None


def heading_attributes(text: str, line: int, file: str, problems: list[Problem]) -> dict[str, Any]:
    """The attributes of one heading, checked against the heading schema; problems located on its line."""
    try:
        doc = load_yaml(text, file, first_line=line, within="the heading attributes")
    except InputError as exc:
        problems.extend(Problem(p.file, line, "heading attributes", p.message) for p in exc.problems)
        return {}
    problems.extend(_at_heading(p, line) for p in doc.problems)
    if not isinstance(doc.data, dict):
        problems.append(
            Problem(
                file,
                line,
                "heading attributes",
                f"heading attributes are a mapping like {{when: \"profile.type == 'talos'\"}} (got {text!r})",
            )
        )
        return {}
    found = [_at_heading(p, line) for p in schemas.check(doc, "steps/heading.schema.json")]
    problems.extend(found)
    return {} if found else dict(doc.data)


def _at_heading(problem: Problem, line: int) -> Problem:
    field_name = f"heading attributes.{problem.field}" if problem.field else "heading attributes"
    return Problem(problem.file, line, field_name, problem.message)


def merge(
    own: dict[str, Any], fence_line: int, scope: HeadingScope
) -> tuple[dict[str, Any], Origins, tuple[Condition, ...]]:
    """A step's effective attributes, where each came from, and its when conditions in order.

    The effective ``when`` is the conditions joined with ``and`` (each in parentheses), so
    everything that reads a step's attributes sees what the step does; the runner evaluates the
    conditions one by one, so an error names the line of the one that failed.
    """
    values, conditions = scope.inherited()
    attrs = {name: value for name, (value, _) in values.items() if name not in own}
    origins: Origins = {name: line for name, (_, line) in values.items() if name not in own}
    attrs.update(own)
    origins.update({name: fence_line for name in own})
    if "when" in own:
        conditions += (Condition(str(own["when"]), fence_line),)
    if len(conditions) > 1:
        attrs["when"] = " and ".join(f"({c.expression})" for c in conditions)
    elif conditions:
        attrs["when"] = conditions[0].expression
    if conditions:
        origins["when"] = conditions[0].line if len(conditions) == 1 else fence_line
    return attrs, origins, conditions


def check_merged(
    kind: str, attrs: dict[str, Any], origins: Origins, fence_line: int, file: str, problems: list[Problem]
) -> None:
    """The step's kind schema over its effective attributes; a problem about an inherited one is put on its heading."""
    for problem in schemas.check(YamlDoc(attrs, file), f"steps/{kind}.schema.json"):
        top = (problem.field or "").split(".")[0].split("[")[0]
        line = origins.get(top, fence_line)
        where = "" if line == fence_line else f" (from the heading on line {line})"
        name = f"attributes.{problem.field}" if problem.field else "attributes"
        problems.append(Problem(file, line, name, problem.message + where))


def closing_brace(text: str) -> int | None:
    """Index of the '}' closing the flow mapping that ``text`` opens, skipping quoted text; None if unclosed."""
    depth, quote, index = 0, "", 0
    while index < len(text):
        char = text[index]
        if quote:
            if char == "\\" and quote == '"':
                index += 1
            elif char == quote:
                if quote == "'" and text[index + 1 : index + 2] == "'":
                    index += 1
                else:
                    quote = ""
        elif char in "'\"":
            quote = char
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    return None
