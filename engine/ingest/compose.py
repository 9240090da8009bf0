"""The runbook text: frontmatter (with the origin), the page's prose, and one fence per step."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from ..runbook.formatversion import FORMAT
from .adapt import Adapted

_BARE = re.compile(r"[A-Za-z_][\w.-]*")
_YAML_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"})


@dataclass
class Demoted:
    """A command left as prose: why, and what the page said."""

    line: int
    reason: str
    original: str


def frontmatter(
    name: str,
    description: str,
    parameters: dict[str, dict[str, Any]],
    origin: dict[str, str],
    requires: list[str] | None = None,
) -> str:
    data: dict[str, Any] = {"name": name, "format": FORMAT, "description": description}
    if requires:
        data["requires"] = requires
    if parameters:
        data["parameters"] = parameters
    data["origin"] = origin
    return "---\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000) + "---\n"


def step_fence(step: Adapted) -> str:
    attrs = ", ".join(f"{key}: {_flow(value)}" for key, value in step.attrs.items())
    runs = [len(m[0]) for m in re.finditer(r"^[ \t>]*(`{3,})", step.body, re.M)]
    ticks = "`" * max(3, max(runs, default=0) + 1)
    return f"{ticks}{step.kind} {{{attrs}}}\n{step.body.rstrip()}\n{ticks}\n"


def demoted(item: Demoted) -> str:
    runs = [len(m) for m in re.findall(r"`{3,}", item.original)]
    ticks = "`" * max(3, max(runs, default=0) + 1)
    return (
        f"> **Not made a step** (line {item.line} of the source): {item.reason}. The command as the source "
        f"wrote it, for reference only:\n\n{ticks}text\n{item.original.rstrip()}\n{ticks}\n"
    )


def _flow(value: Any) -> str:
    """A value as YAML flow text on the fence line (mappings and lists too: ``changes``)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_flow(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, dict):  # to_pass: {path: ..., lines: [...], secret: [...]}
        return "{" + ", ".join(f"{key}: {_flow(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(item) for item in value) + "]"
    text = str(value)
    if _BARE.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)


def compose(head: str, parts: list[str]) -> str:
    body = "\n".join(part.strip("\n") + "\n" for part in parts if part.strip())
    return head + "\n" + re.sub(r"\n{3,}", "\n\n", body)
