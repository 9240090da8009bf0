"""Steps whose effect a review cannot tell, found without rendering: ``runbook validate`` warns about them.

A review shows what a run changes from the table of PVE calls (``api`` steps) and from the
``changes`` attribute (``ssh``, ``local``, ``talosctl``). A changing call the table does not know,
or a changing script step without ``changes``, would be shown as a change of unknown effect: not
an error (the run works), but a review the operator cannot fully trust, so validate says where.
"""

from __future__ import annotations

import re

from ..load.problems import InputError, Problem
from ..load.pvetable import table
from .model import Runbook, Step
from .render import split_api_body

_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def effect_warnings(runbook: Runbook) -> list[Problem]:
    """One warning per step that changes something the review could only show as ``unknown``."""
    out = []
    for step in runbook.steps:
        if step.attrs.get("readonly") or step.call is not None:
            continue  # a step that came through a call is warned about in its own runbook
        message = _unknown_effect(step, runbook.file)
        if message:
            out.append(Problem(runbook.file, step.line, f"step {step.id}", message))
    return out


def _unknown_effect(step: Step, file: str) -> str | None:
    if step.kind == "http":
        if "changes" in step.attrs or _http_method(step) in _READS:
            return None
        return (
            "an http step that may change something, without `changes`: a review shows it as a change of unknown "
            "effect. Say what it changes (changes: {action: ..., resource: ..., id: ...}), or changes: [] when "
            "it changes nothing"
        )
    if step.kind in ("ssh", "local", "talosctl"):
        if "changes" in step.attrs:
            return None
        return (
            f"a {step.kind} step that may change something, without `changes`: a review shows it as a change of "
            "unknown effect. Say what it changes (changes: {action: ..., resource: ..., id: ...}), "
            "changes: [] when it changes nothing, or readonly: true when it only reads"
        )
    if step.kind != "api":
        return None
    try:
        body = split_api_body(step, file)
    except (InputError, StopIteration):
        return None  # a malformed body is an error reported elsewhere
    if body.method.upper() in _READS or _known(body.method, body.path):
        return None
    return (
        f"{body.method.upper()} {body.path} is not in the table of PVE calls a review knows "
        "(engine/data/pve-changes.yaml): a review shows it as a change of unknown effect"
    )


def _known(method: str, path: str) -> bool:
    """Whether a rule of the table matches the path as written: a segment holding a template may be
    anything, a rule's ``{name}`` segment matches anything."""
    # A template is one segment whatever it holds (``{{ volid | replace('/', '%2F') }}``).
    wanted = re.sub(r"\{\{.*?\}\}|\{%.*?%\}", "{{ }}", path.strip()).strip("/").split("/")
    for rule in table().rules:
        if method.upper() not in rule.methods:
            continue
        have = rule.template.strip("/").split("/")
        if len(have) == len(wanted) and all(
            h.startswith("{") or "{{" in w or "{%" in w or h == w for h, w in zip(have, wanted)
        ):
            return True
    return False


def _http_method(step: Step) -> str:
    first = next((line for line in step.body.splitlines() if line.strip()), "")
    return first.strip().split(" ", 1)[0].upper()
