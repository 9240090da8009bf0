"""The dry-run plan as text for a terminal and as JSON for review tooling, from the same entries."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from ..executors.base import Change
from ..executors.changeset import counts, summary_line
from ..run.runner import PlanEntry
from ..run.sections import reads_only
from ..run.session import Session
from . import jsonformat
from .changes import change_lines
from .progress import shown_output

_STATUS = {
    "would_run": "would run",
    "unknown": "depends on run-time values",
    "skipped": "skipped",
    "succeeded": "ran (read-only)",
    "failed": "FAILED",
}


def plan_json(
    session: Session | None,
    entries: list[PlanEntry],
    *,
    offline: bool,
    changes: Sequence[Change] = (),
    name: str | None = None,
    error: str | None = None,
    exit_code: int = 0,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """The plan document (``schemas/plan.schema.json``). With ``error``, planning stopped (a read-only
    step failed, the cluster could not be read, or the inputs are wrong, when there is no ``session``):
    the document says so, with what is known up to there."""
    steps = [jsonformat.step(entry) for entry in entries]
    runbook = session.runbook if session else None
    return {
        "format": jsonformat.FORMAT,
        "status": "failed" if error else "planned",
        "exit_code": exit_code,
        "error": error,
        "runbook": runbook.name if runbook else name,
        "file": runbook.file if runbook else None,
        "profile": session.profile.name if session and session.profile else None,
        "cluster": session.config.data["cluster"]["name"] if session else None,
        "parameters": session.params if session else {},
        "secret_parameters": dict(session.secrets.sources) if session else {},
        "offline": offline,
        "hashes": session.hashes() if session else {},
        "plan": session.plan.as_dict() if session and session.plan else None,
        "steps": steps,
        "counts": jsonformat.counts(steps),
        "warnings": list(warnings or []),
        "changes": [change.as_dict() for change in changes],
        "change_counts": {**counts(c for c in changes if not c.when), "possible": sum(1 for c in changes if c.when)},
        "change_summary": change_summary(entries, changes, _read_only(session) if session else ()),
    }


def change_summary(entries: list[PlanEntry], changes: Sequence[Change], read_only: Collection[str] = ()) -> str:
    """The Terraform-like line over the changes the run will make; then, apart, the changes that
    depend on a run-time condition, and the changing steps (not in ``read_only``) whose effect the
    plan cannot tell at all. The line never counts what the run may not do."""
    certain = [c for c in changes if not c.when]
    line = summary_line(certain)
    possible = len(changes) - len(certain)
    if possible:
        line += (
            f" {possible} more change{'s' if possible > 1 else ''} may happen, depending on values known "
            "only at run time."
        )
    covered = {(c.step, c.item) for c in changes}
    later = sum(
        1
        for e in entries
        if e.status == "unknown" and e.step_id not in read_only and (e.step_id, e.item_key) not in covered
    )
    if later:
        line += (
            f" {later} more step{'s' if later > 1 else ''} depend{'' if later > 1 else 's'} on values known "
            f"only when the run gets there: what {'they change is' if later > 1 else 'it changes is'} not listed."
        )
    return line


def _read_only(session: Session) -> set[str]:
    """The ids of the steps that change nothing: what they do is not a change to count."""
    return {step.id for step in session.runbook.steps if reads_only(step)}


def summary(entries: list[PlanEntry]) -> dict[str, int]:
    """Every step status counted (zeros included), with the number of steps and of gated ones."""
    return jsonformat.counts(jsonformat.step(entry) for entry in entries)


def plan_text(session: Session, entries: list[PlanEntry], *, offline: bool, changes: Sequence[Change] = ()) -> str:
    out = []
    target = f" on profile {session.profile.name}" if session.profile else ""
    out.append(
        f"DRY RUN of {session.runbook.name}{target} (cluster {session.config.data['cluster']['name']}): "
        "nothing is changed"
        + (", nothing is contacted (--offline)" if offline else "; read-only steps query the cluster")
    )
    if session.params:
        out.append("parameters: " + ", ".join(f"{k}={v!r}" for k, v in session.params.items()))
    if session.secrets.sources:
        out.append(
            "secret parameters (values not shown): "
            + ", ".join(f"{k} from {v}" for k, v in session.secrets.sources.items())
        )
    for name, digest in session.hashes().items():
        out.append(f"{name} sha256: {digest}")
    if session.plan:
        out.append("")
        out.append("VMs:")
        for vm in session.plan.vms:
            state = "exists" if vm.existing else "new"
            out.append(
                f"  {vm.name:<14} {vm.role:<12} vmid {vm.vmid:<6} on {vm.node:<8} "
                f"{vm.cores} cores {vm.memory} MB {vm.disk}  ({state})"
            )
    out.append("")
    for number, entry in enumerate(entries, 1):
        item = f" [{entry.item_key}]" if entry.item_key else ""
        gate = "  GATED: " + "; ".join(entry.gate_reasons) if entry.gated else ""
        title = f"  {entry.title}" if entry.title else ""
        out.append(f"{number:>3}. {entry.step_id}{item} ({entry.kind}, line {entry.line}){title}")
        status = _STATUS.get(entry.status, entry.status)
        out.append(f"       {status}{': ' + entry.reason if entry.reason else ''}{gate}")
        for line in entry.display.splitlines():
            out.append(f"       | {line}")
        out += shown_output(entry)  # a read-only step the dry-run ran, marked show: what it found
    steps = summary(entries)
    out.append("")
    out.append(
        f"{steps['steps']} steps: {steps['would_run']} would run, {steps['gated']} gated, "
        f"{steps['unknown']} depend on run-time values, {steps['skipped']} skipped"
    )
    gated = {(e.step_id, e.item_key) for e in entries if e.gated}
    certain = [c for c in changes if not c.when]
    possible = [c for c in changes if c.when]
    if certain:
        out.append("")
        out.append("Changes (+ create, ~ change, - destroy, > action, ? unknown effect):")
        out += change_lines(certain, gated)
    if possible:
        out.append("")
        out.append("Changes that depend on values known only at run time (not counted below):")
        out += change_lines(possible, gated)
    out.append("")
    out.append(change_summary(entries, changes, _read_only(session)))
    return "\n".join(out)
