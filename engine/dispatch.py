"""Routing each action to its executor, built from the cluster config on first use.

Executors are created lazily: a runbook of only ``local`` steps never needs an API token or a CA
file, and a dry-run that runs only GETs never starts an ssh client.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .actions import Action, ApiRequest, HttpRequest, Result, ShellCommand, StepFailed, TalosctlCommand
from .credentials import CredentialError, TokenSource
from .secrets import Secret


class Dispatcher:
    """One executor per kind, shared by every step of a run."""

    def __init__(
        self,
        config_data: Mapping[str, Any],
        home_root: Path,
        env: Mapping[str, str] | None = None,
        *,
        api_factory: Callable[[], Any] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ):
        self._config = config_data
        self._home = home_root
        self._env = env
        self._api_factory = api_factory
        self.token_source: Any = None  # set by simulation; else the config's pass entry or environment
        self._made: dict[str, Any] = dict(overrides or {})  # executors given ready-made (simulation)
        self._task_estimates: dict[str, float] = {}
        self.warnings: list[str] = []

    def _get(self, kind: str) -> Any:
        if kind not in self._made:
            self._made[kind] = self._make(kind)
        return self._made[kind]

    def _make(self, kind: str) -> Any:
        if kind == "api":
            if self._api_factory is not None:
                executor = self._api_factory()
            else:
                from .executors.api import ApiExecutor, ApiSetupError

                try:
                    executor = ApiExecutor.from_config(self._config, self._token_source(), base_dir=self._home)
                except ApiSetupError as exc:
                    raise StepFailed(str(exc), sent=False) from None
            self.warnings.extend(executor.warnings)
            executor.expect_tasks(self._task_estimates)
            return executor
        if kind == "ssh":
            from .executors.shell import SshExecutor

            credentials = self._config["credentials"]
            ssh_config = credentials.get("ssh_config")
            if ssh_config:
                path = Path(str(ssh_config)).expanduser()
                ssh_config = str(path if path.is_absolute() else self._home / path)
            hosts = {str(n["name"]): str(n["host"]) for n in self._config["cluster"]["nodes"]}
            return SshExecutor(hosts, str(credentials["ssh_user"]), ssh_config=ssh_config)
        if kind == "local":
            from .executors.shell import LocalExecutor

            return LocalExecutor()
        if kind == "talosctl":
            from .executors.talosctl import TalosctlExecutor

            return TalosctlExecutor()
        from .executors.http import HttpExecutor

        return HttpExecutor()

    def execute(self, action: Action, progress: Callable[[str], None]) -> Result:
        if isinstance(action, ApiRequest):
            return self._get("api").call(action, progress)
        if isinstance(action, ShellCommand):
            if action.token_env:
                return self._get("local").run(action, progress, secret_env={action.token_env: self._token_value()})
            return self._get("ssh" if action.node else "local").run(action, progress)
        if isinstance(action, TalosctlCommand):
            if action.cwd:
                # The Talos config dir holds cluster secrets: create it private, as talosctl would.
                Path(action.cwd).mkdir(parents=True, exist_ok=True, mode=0o700)
            return self._get("talosctl").run(action, progress)
        if isinstance(action, HttpRequest):
            return self._get("http").request(action, progress)
        raise TypeError(f"no executor for {type(action).__name__}")

    def expect_tasks(self, estimates: Mapping[str, float]) -> None:
        """Hand the API executor (now, or when it is made) how long PVE tasks took in earlier runs."""
        self._task_estimates = dict(estimates)
        if "api" in self._made:
            self._made["api"].expect_tasks(self._task_estimates)

    def adjust_context(self, context: dict[str, Any]) -> None:
        """Change what templates see for this cluster; the real cluster needs no change."""

    def _token_value(self) -> Secret:
        """The API token as ``user@realm!tokenid=secret`` (the form Ansible's PROXMOX_API_TOKEN takes)."""
        try:
            token = self._token_source().get()
        except CredentialError as exc:
            raise StepFailed(f"cannot get the Proxmox VE API token for the command: {exc}", sent=False) from None
        return Secret(f"{token.token_id}={token.secret.reveal()}")

    def _token_source(self) -> Any:
        return self.token_source or TokenSource(dict(self._config), self._env)

    def close(self) -> None:
        for executor in self._made.values():
            close = getattr(executor, "close", None)
            if close is not None:
                close()
        self._made.clear()
