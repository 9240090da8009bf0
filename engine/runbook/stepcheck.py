"""Checking a rendered step before it is gated or sent: its kind's schema, then, for ``api`` steps,
the Proxmox VE API schema itself. Values not known until run time are not checked yet."""

from __future__ import annotations

import re
from typing import Any

from ..load import pveschema, schemas
from ..load.problems import Problem
from ..load.yamlsource import dotted
from .model import Step
from .render import split_api_body
from .unknown import contains_unknown

_SCHEMAS = {
    "ApiRequest": "rendered/api.schema.json",
    "ShellCommand": "rendered/shell.schema.json",
    "TalosctlCommand": "rendered/talosctl.schema.json",
    "HttpRequest": "rendered/http.schema.json",
    "FileWrite": "rendered/file.schema.json",
}


def rendered_problems(action: dict[str, Any], step: Step, file: str) -> list[Problem]:
    """Every reason the rendered ``action`` (``action_as_dict`` form) must not be sent."""
    problems = []
    shaped = _placeholders(action)
    if action["type"] == "FileWrite" and _UNKNOWN.match(str(action.get("path", ""))):
        # A path that an earlier step names (``{{ steps.x.stdout }}.sha256``) is checked at run time;
        # its known rest is still checked here, as if what comes first were an absolute folder.
        shaped["path"] = "/" + shaped["path"]
    for error in schemas.errors(_SCHEMAS[action["type"]], shaped):
        for field, message in schemas.explain_all(error, tuple(str(p) for p in error.absolute_path)):
            where = f"step {step.id}" + (f" (rendered {dotted(field)})" if field else " (rendered)")
            problems.append(Problem(file, step.line, where, message))
    if problems or action["type"] != "ApiRequest":
        return problems
    shown = _placeholders(action)
    lines = split_api_body(step, file).lines
    for name, objection in pveschema.check_request(
        shown["method"], shown["path"], shown["params"], unknown=_PLACEHOLDER if contains_unknown(action) else None
    ):
        problems.append(
            Problem(file, lines.get(name or "", step.body_line), f"step {step.id}", f"Proxmox API: {objection}")
        )
    return sorted(problems, key=lambda p: (p.line or 0, p.message))


_PLACEHOLDER = "unknown"
# one level of parentheses inside: a fact an earlier step changes says which (``cluster.vms["web01"] (step clone
# changes which VMs there are).node``)
_UNKNOWN = re.compile(r"\(known after run: (?:[^()]|\([^()]*\))*\)")


def _placeholders(value: Any) -> Any:
    """``value`` with each run-time unknown replaced by a neutral word, so the shape is still checked."""
    if isinstance(value, str):
        return _UNKNOWN.sub(_PLACEHOLDER, value)
    if isinstance(value, dict):
        return {k: _placeholders(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_placeholders(v) for v in value]
    return value
