"""The dry-run plan as text for a terminal and as JSON for review tooling, from the same entries."""

from __future__ import annotations

from typing import Any

from ..run.runner import PlanEntry
from ..run.session import Session
from .progress import shown_output

_STATUS = {
    "would_run": "would run",
    "unknown": "depends on run-time values",
    "skipped": "skipped",
    "succeeded": "ran (read-only)",
    "failed": "FAILED",
}


def plan_json(session: Session, entries: list[PlanEntry], *, offline: bool) -> dict[str, Any]:
    return {
        "runbook": session.runbook.name,
        "file": session.runbook.file,
        "profile": session.profile.name if session.profile else None,
        "cluster": session.config.data["cluster"]["name"],
        "parameters": session.params,
        "offline": offline,
        "hashes": session.hashes(),
        "plan": session.plan.as_dict() if session.plan else None,
        "steps": [entry.as_dict() for entry in entries],
        "summary": summary(entries),
    }


def summary(entries: list[PlanEntry]) -> dict[str, int]:
    counts: dict[str, int] = {"steps": len(entries), "gated": sum(1 for e in entries if e.gated)}
    for entry in entries:
        counts[entry.status] = counts.get(entry.status, 0) + 1
    return counts


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
        out += shown_output(entry)  # a read-only step the dry-run ran, marked show: what it found
    counts = summary(entries)
    out.append("")
    out.append(
        f"{counts['steps']} steps: {counts.get('would_run', 0)} would run, {counts['gated']} gated, "
        f"{counts.get('unknown', 0)} depend on run-time values, {counts.get('skipped', 0)} skipped"
    )
    return "\n".join(out)
