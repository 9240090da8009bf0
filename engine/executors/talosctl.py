"""Run ``TalosctlCommand`` actions: the talosctl binary with an argument vector, never a shell.

talosctl talks to the Talos API with the client certificate in TALOSCONFIG, so the command is
only ever as good as that file: it is set per command from the profile, not inherited by chance.
The child runs in its own process group with stdin closed: a talosctl waiting on a dead node, or
on a confirmation prompt, is killed at the step's timeout instead of hanging the run.
"""

from __future__ import annotations

import os
import shlex
import shutil

from ..load.facts import Facts
from ..run.credentials import DEFAULT_TOKEN_ENV
from ..run.secrets import ChildEnvironment
from ..runbook.actions import Result, StepFailed, TalosctlCommand
from .base import Change, Progress, not_installed
from .preview import talosctl_changes
from .shell import run_process

INSTALL_DOCS = "https://www.talos.dev/latest/talos-guides/install/talosctl/"


class TalosctlExecutor:
    """Runs talosctl with ``command.argv``; ``binary`` is a name looked up on PATH, or a path."""

    kind = "talosctl"

    def __init__(
        self, binary: str = "talosctl", default_timeout: float = 600, *, environment: ChildEnvironment | None = None
    ):
        self.binary = binary
        self.default_timeout = default_timeout
        self.environment = environment or ChildEnvironment([DEFAULT_TOKEN_ENV])

    def resolve(self) -> str:
        """The absolute path of the binary, looked up at call time (PATH may change between runs).

        Raises StepFailed (never sent) saying how to install talosctl and which PATH was searched.
        """
        search = os.environ.get("PATH", os.defpath)
        found = shutil.which(self.binary, path=search)
        if found:
            return os.path.abspath(found)
        if os.sep in self.binary:
            where = f"{self.binary} does not exist or is not executable"
        else:
            where = f"{self.binary} is not on PATH (searched: {search})"
        raise StepFailed(
            f"talosctl is not installed or not found: {where}. Install the talosctl release that "
            f"matches the cluster's Talos version, see {INSTALL_DOCS} "
            "(for example `curl -sL https://talos.dev/install | sh`), or put it on PATH.",
            sent=False,
        )

    def missing(self, command: TalosctlCommand) -> list[str]:
        """The talosctl binary, when it is not installed (looked up as ``resolve`` does)."""
        if os.sep in self.binary:
            return [] if os.access(self.binary, os.X_OK) else [self.binary]
        return not_installed([self.binary], os.environ.get("PATH", os.defpath))

    def preview(self, command: TalosctlCommand, facts: Facts) -> list[Change]:
        return talosctl_changes(command, facts)

    def close(self) -> None:
        """Nothing to release: every command is its own process, ended when it returns."""

    def execute(self, command: TalosctlCommand, progress: Progress | None = None) -> Result:
        """Run talosctl; stdout/stderr/exit_code in ``Result.data``, StepFailed on failure or timeout."""
        binary = self.resolve()
        timeout = command.timeout if command.timeout is not None else self.default_timeout
        if not timeout > 0:
            raise StepFailed(f"timeout must be a positive number of seconds, not {timeout!r}", sent=False)
        if command.cwd is not None and not os.path.isdir(command.cwd):
            raise StepFailed(f"talosctl working directory {command.cwd} does not exist", sent=False)
        env = self.environment()
        if command.talosconfig is not None:
            env["TALOSCONFIG"] = command.talosconfig
        shown = shlex.join(["talosctl", *command.argv])
        try:
            outcome = run_process([binary, *command.argv], timeout=timeout, env=env, cwd=command.cwd, progress=progress)
        except OSError as exc:
            raise StepFailed(f"could not start {binary}: {exc}", sent=False) from None
        if outcome.timed_out:
            raise StepFailed(
                f"`{shown}` timed out after {timeout:g} s and was killed. Is the node up and reachable "
                "on the Talos API (port 50000), and does TALOSCONFIG name its endpoints? Raise the "
                f"step's `timeout` if it needs longer. stderr so far:\n{outcome.stderr_tail()}",
                data=outcome.data(),
            )
        if outcome.exit_code != 0:
            raise StepFailed(
                f"`{shown}` exited with {outcome.exit_code}; stderr:\n{outcome.stderr_tail()}",
                data=outcome.data(),
            )
        return Result(data=outcome.data(), summary=f"talosctl {' '.join(command.argv[:2])}: done")
