"""Before the first change: the programs a run will need are installed, and talosctl fits the cluster.

Found on a real cluster: a Talos profile's run cloned, configured and started five VMs, and only
then failed on "talosctl is not installed". What a run needs is known before it starts: the plan
says which steps may run (a step whose ``when`` is false needs nothing), each step's kind says
which executor runs it, and the executor says which of the programs it would start are missing
here (``Executor.missing``: a local script's commands are read with the shell parser, not from a
hand-kept list). A talosctl older than the profile's Talos version cannot write configs for it.

The functions here are pure; ``engine.run.execution`` runs them on the plan and the dispatcher.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .. import exitcodes
from ..errors import RunbookError
from ..runbook.actions import Action, ShellCommand, TalosctlCommand, action_from_dict
from ..runbook.model import Runbook, Step
from .runner import PlanEntry

#: How to install what runbooks commonly start; anything else: "install it, or put it on PATH".
INSTALL_HINTS = {
    "talosctl": "https://www.talos.dev/latest/talos-guides/install/talosctl/ (curl -sL https://talos.dev/install | sh)",
    "kubectl": "https://kubernetes.io/docs/tasks/tools/",
    "flux": "https://fluxcd.io/flux/installation/",
    "ansible-playbook": "pipx install ansible-core (or apt-get install ansible)",
    "ssh": "apt-get install openssh-client",
    "jq": "apt-get install jq",
    "curl": "apt-get install curl",
    "wget": "apt-get install wget",
    "xz": "apt-get install xz-utils",
    "pass": "apt-get install pass",
    "gpg": "apt-get install gnupg",
    "python3": "apt-get install python3",
    "git": "apt-get install git",
}

#: The version ``talosctl version --client`` prints: "Talos v1.9.5" (--short) or "Tag: v1.9.5".
_TALOS_VERSION = re.compile(r"(?:Talos|Tag:)\s+v?(\d+)\.(\d+)(?:\.(\d+))?")
_TEMPLATE = re.compile(r"\{\{.*?\}\}", re.DOTALL)
_STATEMENT = re.compile(r"\{%.*?%\}|\{#.*?#\}", re.DOTALL)


@dataclass(frozen=True)
class MissingProgram:
    """A program some steps of the run start, not installed on this machine."""

    program: str
    steps: tuple[str, ...]

    def line(self) -> str:
        steps = ", ".join(self.steps[:4]) + (f" and {len(self.steps) - 4} more" if len(self.steps) > 4 else "")
        hint = INSTALL_HINTS.get(self.program, "install it, or put it on PATH")
        return f"  - {self.program} (needed by {steps}): {hint}"


class NotReady(RunbookError):
    """This machine cannot run the whole runbook; found before anything was changed."""

    exit_code = exitcodes.TOOL_MISSING

    def __init__(self, missing: Sequence[MissingProgram], version_problem: str | None = None):
        lines = [line.line() for line in missing] + ([f"  - {version_problem}"] if version_problem else [])
        super().__init__(
            "this run needs what this machine does not have, so it stopped before changing anything:\n"
            + "\n".join(lines)
            + "\nInstall it, then run the same command again."
        )
        self.missing = tuple(missing)
        self.version_problem = version_problem


def planned_actions(runbook: Runbook, entries: Iterable[PlanEntry]) -> list[tuple[str, Action]]:
    """(step id, action) of every step the plan may run. A rendered step counts as planned; one whose
    values come from earlier steps counts by its body with the templates blanked out (its program
    names are literal in practice); a step the plan skips (``when`` false) needs nothing."""
    steps = {step.id: step for step in runbook.steps}
    found: list[tuple[str, Action]] = []
    for entry in entries:
        if entry.status == "skipped":
            continue
        if entry.action is not None:
            found.append((entry.step_id, action_from_dict(entry.action)))
        elif (action := _unrendered(steps[entry.step_id])) is not None:
            found.append((entry.step_id, action))
    return found


def _unrendered(step: Step) -> Action | None:
    if step.kind in ("local", "ssh"):
        script = _TEMPLATE.sub("x", _STATEMENT.sub("", step.body))
        return ShellCommand(script=script, node="?" if step.kind == "ssh" else None)
    if step.kind == "talosctl":
        return TalosctlCommand(argv=())
    return None


def missing_programs(
    actions: Iterable[tuple[str, Action]], missing: Callable[[Action], list[str]]
) -> list[MissingProgram]:
    """The programs ``missing`` (the dispatcher's, asking each kind's executor) reports, with the steps needing each."""
    needed: dict[str, list[str]] = {}
    for step_id, action in actions:
        for program in missing(action):
            steps = needed.setdefault(program, [])
            if step_id not in steps:
                steps.append(step_id)
    return [MissingProgram(program, tuple(steps)) for program, steps in needed.items()]


def talosctl_version(output: str) -> tuple[int, int] | None:
    """(major, minor) of the client in ``talosctl version --client`` output; None when it says none."""
    match = _TALOS_VERSION.search(output)
    return (int(match[1]), int(match[2])) if match else None


def version_problem(client: tuple[int, int] | None, wanted: str, where: str) -> tuple[str | None, str | None]:
    """(a reason to stop, a warning) comparing talosctl's version with the profile's Talos version.

    An older talosctl cannot write machine configs for a newer Talos; a much newer one (two minor
    versions or more) is outside the range Talos supports between client and nodes.
    """
    expected = talosctl_version(f"Talos {wanted}")
    if expected is None:
        return None, None
    if client is None:
        return None, f"could not tell which version talosctl is; {where} wants Talos {wanted}"
    shown = f"v{client[0]}.{client[1]}"
    if client < expected:
        return (
            f"talosctl {shown} is older than Talos {wanted} ({where}): it cannot write machine configs for "
            f"it; install talosctl {wanted} ({INSTALL_HINTS['talosctl']})",
            None,
        )
    if client[0] != expected[0] or client[1] > expected[1] + 1:
        return None, f"talosctl {shown} is much newer than Talos {wanted} ({where}); install talosctl {wanted}"
    return None, None
