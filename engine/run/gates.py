"""Which steps must be approved before they run, and why.

A step is gated when its author asks (``confirm: true``), says it is destructive
(``destructive: true``), or when what it does is recognisably destructive whatever the author
said: an API DELETE, stopping/shutting down/resetting a VM, a snapshot rollback, destroying a VM
on a node, resetting or upgrading a Talos node. Recognition errs on the side of asking.
"""

from __future__ import annotations

import re

from ..runbook.actions import Action, ApiRequest, ShellCommand, TalosctlCommand
from ..runbook.model import Step

_API_DESTRUCTIVE = (
    (re.compile(r"/status/(stop|shutdown|reset|reboot|suspend)$"), "stops or restarts a VM"),
    (re.compile(r"/snapshot/[^/]+/rollback$"), "rolls a VM back to a snapshot (later changes are lost)"),
)
_SHELL_DESTRUCTIVE = (
    (re.compile(r"\bqm\s+(destroy|stop|shutdown|reset|rollback|delsnapshot|unlink)\b"), "qm \\1"),
    (re.compile(r"\bpct\s+(destroy|stop|shutdown|rollback)\b"), "pct \\1"),
    (re.compile(r"\bpvesm\s+free\b"), "pvesm free (deletes a volume)"),
    (re.compile(r"\brm\s+-[a-zA-Z]*[rf]"), "rm -r/-f"),
    (re.compile(r"\b(shutdown|reboot|poweroff)\b"), "powers off or reboots a machine"),
)
_TALOS_DESTRUCTIVE = {
    "reset": "wipes a Talos node",
    "upgrade": "upgrades and reboots a Talos node",
    "reboot": "reboots a Talos node",
    "shutdown": "shuts down a Talos node",
    "upgrade-k8s": "upgrades Kubernetes across the cluster",
}


def gate_reasons(step: Step, action: Action | None) -> list[str]:
    """Why ``step`` (rendered as ``action``) needs approval; empty when it may run unasked."""
    reasons = []
    if step.attrs.get("confirm"):
        reasons.append("marked confirm")
    if step.attrs.get("destructive"):
        reasons.append("marked destructive")
    if step.attrs.get("review"):
        reasons.append("ingested command not yet reviewed")
    if isinstance(action, ApiRequest):
        if action.method == "DELETE":
            reasons.append(f"DELETE {action.path}")
        for pattern, why in _API_DESTRUCTIVE:
            if action.method == "POST" and pattern.search(action.path):
                reasons.append(why)
    elif isinstance(action, ShellCommand):
        for pattern, why in _SHELL_DESTRUCTIVE:
            match = pattern.search(action.script)
            if match:
                reasons.append(match.expand(why))
    elif isinstance(action, TalosctlCommand):
        words = [a for a in action.argv if not a.startswith("-")]
        if words and words[0] in _TALOS_DESTRUCTIVE:
            reasons.append(_TALOS_DESTRUCTIVE[words[0]])
        if words[:2] == ["etcd", "remove-member"]:
            reasons.append("removes an etcd member")
    return reasons
