"""The gates a run will meet, known before its first change, so they are approved (or refused) up front.

A gate met in the middle of a run leaves the run half done: without a terminal it stops there, and
the changes before it stay applied. So a real run is first planned (the same ``Runner`` in
dry-run, reading the cluster as a dry-run does), and the gated steps of that plan are collected
here. Approving them happens once, before anything changes; without a terminal, a gate that
``--yes``/``--approve`` did not approve refuses the whole run before it starts.

Some gates cannot be known before the run: a step whose rendered body depends on values only an
earlier step produces. When its unrendered body already looks destructive (an API ``DELETE``, a
``qm destroy``...), it is listed as "may need approval"; should the gate appear at run time, it is
asked (or stops the run) there, as it always was.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..runbook.actions import Action, ApiRequest, ShellCommand, TalosctlCommand
from ..runbook.model import Runbook, Step
from .gates import gate_reasons
from .runner import PlanEntry

_REQUEST_LINE = re.compile(r"^\s*([A-Z]+)\s+(\S.*?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Gate:
    """A gated step of the plan: every item of it that is gated, and why.

    ``certain`` is False for a step whose gating is known only once its values are (see module doc).
    """

    step: str
    items: tuple[str, ...]
    reasons: tuple[str, ...]
    certain: bool = True
    shown: tuple[str, ...] = ()  # what each gated item would send or run, rendered, as a reader sees it

    def describe(self) -> str:
        """``grow (2 items: name=a, name=b): marked confirm``, one line for the list shown up front."""
        items = f" ({len(self.items)} item{'s' if len(self.items) > 1 else ''}: {', '.join(self.items)})"
        return f"{self.step}{items if self.items else ''}: {'; '.join(self.reasons)}"


def gates_ahead(entries: Iterable[PlanEntry], runbook: Runbook) -> list[Gate]:
    """The gates of a dry-run's entries, one per step in plan order: certain ones, then those that may be."""
    steps = {step.id: step for step in runbook.steps}
    found: dict[str, tuple[list[str], list[str], bool]] = {}
    shown: dict[str, list[str]] = {}
    for entry in entries:
        if entry.status == "would_run" and entry.gated:
            reasons, certain = entry.gate_reasons, True
        elif entry.status == "unknown" and entry.step_id in steps:
            reasons = entry.gate_reasons or gate_reasons(steps[entry.step_id], None)
            certain = bool(reasons)
            if not certain:
                reasons = _looks_gated(steps[entry.step_id])
        else:
            continue
        if not reasons:
            continue
        items, known, was_certain = found.setdefault(entry.step_id, ([], [], certain))
        if entry.item_key is not None:
            items.append(entry.item_label or entry.item_key)
        known.extend(reason for reason in reasons if reason not in known)
        found[entry.step_id] = (items, known, was_certain or certain)
        if entry.display:
            shown.setdefault(entry.step_id, []).append(entry.display)
    gates = [
        Gate(step, tuple(items), tuple(reasons), certain, tuple(shown.get(step, ())))
        for step, (items, reasons, certain) in found.items()
    ]
    return [g for g in gates if g.certain] + [g for g in gates if not g.certain]


def _looks_gated(step: Step) -> list[str]:
    """Gate reasons its unrendered body shows already (empty when nothing in it looks destructive)."""
    action: Action | None = None
    if step.kind == "api":
        match = _REQUEST_LINE.search(step.body)
        action = ApiRequest(match[1], match[2]) if match else None
    elif step.kind in ("ssh", "local"):
        action = ShellCommand(step.body)
    elif step.kind == "talosctl":
        action = TalosctlCommand(tuple(step.body.split()))
    return gate_reasons(step, action) if action is not None else []
