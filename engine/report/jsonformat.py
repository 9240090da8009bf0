"""The one JSON format of runbook's outputs for scripts, version ``FORMAT``.

Three outputs share it, each with a schema in ``schemas/`` (documented in docs/running.md, "JSON
output"): a plan (``run --dry-run --json``, ``plan.schema.json``), an event stream (``run --json``
and ``resume --json``, one event per line, ``events.schema.json``) and a recorded run (``runs show
--json``, ``run.schema.json``). A step appears in all three as the same object
(``step.schema.json``): the same keys, always all of them (null where that output cannot know a
value), and the same status words, so a script reads a plan, a live run and a past run alike.
``counts`` has every status, zeros included.

The journal keeps its own record layout on disk (``engine.run.journal``); a recorded run is
translated here (``finished`` is ``succeeded``, the skip codes become the plan's reasons).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from ..run.journal import RunState, StepKey, StepState
from ..run.runner import PlanEntry

#: Bumped when a reader of the old format would misread the new; new keys alone do not bump it.
FORMAT = 1

#: Every status a step can have, in the order they are counted.
#: would_run, unknown: a plan's (it would run; it depends on values known only at run time);
#: succeeded, skipped, failed, stopped_at_gate: a plan's read-only steps, a run's, a recorded run's;
#: in_doubt: a recorded run's step that started and has no outcome (resume checks it).
STEP_STATUSES = ("would_run", "unknown", "succeeded", "skipped", "failed", "stopped_at_gate", "in_doubt")

#: How the journal's skip codes read, the same words the runner gives a skipped step.
SKIP_REASONS = {"when_false": "when is false", "check_true": "check is true: already in place"}
_IN_DOUBT = "started but never finished: resume checks whether it took effect"
_JOURNAL_STATUS = {"finished": "succeeded", "skipped": "skipped", "failed": "failed", "in_doubt": "in_doubt"}
_KINDS = {"ApiRequest": "api", "TalosctlCommand": "talosctl", "HttpRequest": "http", "FileWrite": "file"}


def step(entry: PlanEntry) -> dict[str, Any]:
    """A planned or run step (or loop item) as every output shows it."""
    return {
        "step": entry.step_id,
        "item": entry.item_key,
        "label": entry.label,
        "kind": entry.kind,
        "title": entry.title,
        "line": entry.line,
        "status": entry.status,
        "reason": entry.reason,
        "waits_for": list(entry.waits_for),
        "error": entry.error,
        "duration": entry.duration,
        "attempts": None,
        "gated": entry.gated,
        "gate_reasons": list(entry.gate_reasons),
        "action": entry.action,
        "display": entry.display or None,
        "output": entry.output,
    }


def recorded_step(key: StepKey, state: StepState, approved: bool) -> dict[str, Any]:
    """A step as the journal recorded it; what the journal does not keep (title, line...) is null."""
    action = state.action
    kind = None
    if isinstance(action, dict):
        kind = _KINDS.get(action.get("type", "")) or (
            ("ssh" if action.get("node") else "local") if action.get("type") == "ShellCommand" else None
        )
    reason = SKIP_REASONS.get(state.reason or "", state.reason or "")
    return {
        "step": key.step,
        "item": key.item,
        "label": None,  # the journal keeps the item's key, not the name a run labels it by
        "kind": kind,
        "title": None,
        "line": None,
        "status": _JOURNAL_STATUS.get(state.status, state.status),
        "reason": _IN_DOUBT if state.status == "in_doubt" else reason,
        "waits_for": [],
        "error": state.error,
        "duration": state.duration,
        "attempts": state.attempts,
        "gated": approved,
        "gate_reasons": [],
        "action": action,
        "display": None,
        "output": state.outputs,
    }


def counts(steps: Iterable[dict[str, Any]]) -> dict[str, int]:
    """How many steps, how many gated, and how many of each status: every key, zeros included."""
    listed = list(steps)
    tally = {"steps": len(listed), "gated": sum(1 for s in listed if s["gated"])}
    tally.update({status: sum(1 for s in listed if s["status"] == status) for status in STEP_STATUSES})
    return tally


def event(kind: str, entry: PlanEntry) -> dict[str, Any]:
    """One line of an event stream: a step starts, notes its progress, or ends (the whole step object)."""
    head: dict[str, Any] = {"format": FORMAT, "event": kind, "ts": round(time.time(), 3)}
    if kind == "start":
        return {**head, "step": entry.step_id, "item": entry.item_key, "kind": entry.kind, "title": entry.title}
    if kind == "progress":
        return {**head, "step": entry.step_id, "item": entry.item_key, "note": entry.reason}
    return {**head, **step(entry)}


def finished(
    status: str, exit_code: int, run_id: str | None, message: str, entries: Iterable[PlanEntry], warnings: list[str]
) -> dict[str, Any]:
    """The last line of an event stream: how the run ended, and every step."""
    steps = [step(entry) for entry in entries]
    return {
        "format": FORMAT,
        "event": "finished",
        "ts": round(time.time(), 3),
        "status": status,
        "exit_code": exit_code,
        "run_id": run_id,
        "message": message,
        "steps": steps,
        "counts": counts(steps),
        "warnings": list(warnings),
    }


def recorded_run(meta: dict[str, Any], state: RunState, status: str, warnings: list[str]) -> dict[str, Any]:
    """``runs show --json``: a run as its journal tells it; ``status`` as ``runbook runs`` lists it."""
    approved = set(state.approved)
    steps = [recorded_step(key, one, key in approved) for key, one in state.steps.items()]
    if state.gate is not None and state.gate not in state.steps:
        # Stopped before this gated step: it has no record of its own, but a plan or a run lists it.
        waiting = recorded_step(state.gate, StepState(state.gate, "stopped_at_gate"), True)
        steps.append({**waiting, "attempts": 0, "reason": "gated: needs approval"})
    return {
        "format": FORMAT,
        "run_id": meta["run_id"],
        "status": status,
        "meta": meta,
        "gate": str(state.gate) if state.gate else None,
        "warnings": list(warnings),
        "steps": steps,
        "counts": counts(steps),
    }
