"""The dry-run plan as text for a terminal and as JSON for review tooling, from the same entries."""

from __future__ import annotations

from typing import Any

from ..run.runner import PlanEntry
from ..run.session import Session
from . import jsonformat

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
        "offline": offline,
        "hashes": session.hashes() if session else {},
        "plan": session.plan.as_dict() if session and session.plan else None,
        "steps": steps,
        "counts": jsonformat.counts(steps),
        "warnings": list(warnings or []),
    }


def summary(entries: list[PlanEntry]) -> dict[str, int]:
    """Every step status counted (zeros included), with the number of steps and of gated ones."""
    return jsonformat.counts(jsonformat.step(entry) for entry in entries)


def plan_text(session: Session, entries: list[PlanEntry], *, offline: bool) -> str:
    out = []
    target = f" on profile {session.profile.name}" if session.profile else ""
    out.append(
        f"DRY RUN of {session.runbook.name}{target} (cluster {session.config.data['cluster']['name']}): "
        "nothing is changed"
        + (", nothing is contacted (--offline)" if offline else "; read-only steps query the cluster")
    )
    if session.params:
        out.append("parameters: " + ", ".join(f"{k}={v!r}" for k, v in session.params.items()))
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
    counts = summary(entries)
    out.append("")
    out.append(
        f"{counts['steps']} steps: {counts['would_run']} would run, {counts['gated']} gated, "
        f"{counts['unknown']} depend on run-time values, {counts['skipped']} skipped"
    )
    return "\n".join(out)
