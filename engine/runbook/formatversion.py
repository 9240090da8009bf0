"""The runbook format version: ``format: 2`` in the frontmatter, and what a runbook without it must change.

A runbook without ``format`` was written for format 1, where ``cluster`` in a template meant the
config's ``cluster`` section and ``when: "steps.X or true"`` kept a dry-run going past a step. In
format 2 ``cluster`` is the live cluster facts and the engine itself shows a step that reads
another's output as waiting on it. The same text would silently mean something else, so such a
runbook is refused, with each old form found named on its line with what to write instead, then
the one-line fix that declares the new format. Operators migrate their own runbooks by these messages.
"""

from __future__ import annotations

import re
from typing import Any

from ..load.problems import Problem
from ..load.yamlsource import YamlDoc
from .headings import split_heading
from .model import STEP_KINDS

FORMAT = 2
#: What ``cluster.`` may be followed by in format 2: the live facts (docs/runbook-format.md).
CLUSTER_FACTS = ("vms", "nodes", "storages", "next_vmid")
_TEMPLATE_SPAN = re.compile(r"\{\{.*?\}\}|\{%.*?%\}")
_STEP_FENCE = re.compile(r"^[\s>]*(`{3,}|~{3,})\s*(?P<kind>" + "|".join(STEP_KINDS) + r")\s+(?P<attrs>\{.*)$")
_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(?P<text>.*)$")
_OLD_CLUSTER = re.compile(r"(?<![\w.])cluster\.(?!(?:" + "|".join(CLUSTER_FACTS) + r")\b)(?P<key>[A-Za-z_]\w*)")
_WHEN = re.compile(r"\bwhen:\s*(?P<quote>[\"']?)(?P<expr>.*?)(?P=quote)\s*(?:,\s*\w+:|\}\s*$)")
_OR_TRUE = re.compile(r"\bor\s+(?:true|True)\b")


def format_problems(meta: dict[str, Any], doc: YamlDoc, text: str, file: str) -> list[Problem]:
    """Why a runbook without ``format: 2`` is refused: each old form on its line, then "add format: 2".

    A runbook that declares a format is left to the frontmatter schema (which accepts only 2).
    """
    if "format" in meta or not isinstance(doc.data, dict):
        return []
    problems = [*old_forms(text, file)]
    done = "rewrite the old forms named on their lines, then " if problems else ""
    problems.append(
        Problem(
            file,
            doc.line_of(("name",)) or 1,
            "format",
            f"this runbook declares no format, so it is written for format 1, whose templates mean something "
            f"else now ('cluster' is the live cluster, no 'or true' in when); {done}add a line 'format: {FORMAT}' "
            "to the frontmatter (docs/runbook-format.md, 'Format version')",
        )
    )
    return problems


def old_forms(text: str, file: str) -> list[Problem]:
    """Format-1 forms in a runbook's text, each located on its line with what to write instead."""
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        attributes = _attribute_text(line)
        spans = [m.group(0) for m in _TEMPLATE_SPAN.finditer(line)]
        if attributes:
            spans.append(attributes)
        for span in spans:
            for match in _OLD_CLUSTER.finditer(span):
                key = match["key"]
                problems.append(
                    Problem(
                        file,
                        number,
                        "template",
                        f"'cluster.{key}' reads the config's cluster section, which format 2 calls "
                        f"'config.cluster.{key}' ('cluster' is now the live cluster: "
                        f"{', '.join('cluster.' + f for f in CLUSTER_FACTS)}): write 'config.cluster.{key}'",
                    )
                )
        when = _WHEN.search(attributes or "")
        guard = _OR_TRUE.search(when["expr"]) if when else None
        if when and guard:
            part = when["expr"][: guard.end()].rsplit("(", 1)[-1].strip()
            whole = part == when["expr"].strip()
            problems.append(
                Problem(
                    file,
                    number,
                    "attributes.when",
                    f"'{part}' is always true: it only kept a dry-run going past an earlier step, and in format 2 "
                    "a dry-run shows a step that reads another step's output, or what an earlier step changes, "
                    "as waiting for that step by itself: "
                    + ("remove this when" if whole else f"drop '{part}' from the when"),
                )
            )
    return sorted(set(problems), key=lambda p: (p.line or 0, p.field or "", p.message))


def _attribute_text(line: str) -> str | None:
    """The attribute mapping of a step fence or a heading on this line, None when the line has none."""
    fence = _STEP_FENCE.match(line)
    if fence:
        return fence["attrs"]
    heading = _HEADING.match(line)
    if heading:
        return split_heading(heading["text"])[1]
    return None
