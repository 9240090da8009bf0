"""Routing each action to the executor of its kind, built from the cluster config on first use.

The dispatcher holds a ``Registry`` (``engine.executors.base``) with one factory per step kind.
Executors are created lazily: a runbook of only ``local`` steps never needs an API token or a
CA file, and a dry-run that runs only GETs never starts an ssh client. The simulation registers
its own factories over these (``Dispatcher.register``); nothing else about a run changes.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..executors.base import Change, Executor, ExecutorFactory, Progress, Registry, TaskStarted, TokenProvider
from ..load.facts import Facts
from ..runbook.actions import Action, ApiRequest, FileWrite, Result, StepFailed, TalosctlCommand, TaskFollow
from .credentials import DEFAULT_TOKEN_ENV, ENV_TOKEN_RE, ApiToken, TokenSource
from .identity import trust_of
from .secrets import ChildEnvironment, Masker, Secret
from .topass import insert

if TYPE_CHECKING:
    from ..executors.shell import SshExecutor


class Dispatcher:
    """One executor per kind, shared by every step of a run.

    The API token comes from the config's pass entry or ``env`` (None: the process environment),
    read at each use by the API executor and by local commands that ask for it. ``adjust_context``
    changes what templates see for this cluster (the simulation moves the Talos files); the real
    cluster needs no change.
    """

    def __init__(
        self,
        config_data: Mapping[str, Any],
        home_root: Path,
        env: Mapping[str, str] | None = None,
        *,
        adjust_context: Callable[[dict[str, Any]], None] | None = None,
        trust: str | None = None,
    ):
        self._config = config_data
        self._home = home_root
        self._env = env
        self._adjust_context = adjust_context
        #: How this machine checks the cluster's certificates, part of the cluster's identity
        #: (``engine.run.identity``); the simulation says its own.
        self.trust = trust if trust is not None else trust_of(config_data, home_root)
        self.warnings: list[str] = []
        #: Every secret this run resolved or was given, masked in whatever an executor returns or
        #: reports; children inherit no variable that holds one (``ChildEnvironment``).
        self.masker = Masker()
        token_env = str((config_data.get("credentials") or {}).get("token_env") or DEFAULT_TOKEN_ENV)
        given = (os.environ if env is None else env).get(token_env)
        if given:
            self.masker.add(given)
            token = ENV_TOKEN_RE.fullmatch(given.strip())
            if token:
                self.masker.add(token["secret"])
        self.child_env = ChildEnvironment({token_env, DEFAULT_TOKEN_ENV}, self.masker)
        #: Where a step's ``to_pass`` stores its entry: ``pass insert`` with the environment the token
        #: is read with (the simulation puts its own here, so the operator's store is never touched).
        self.pass_store: Callable[[str, Sequence[Secret]], str] = lambda path, lines: insert(
            path, lines, os.environ if self._env is None else self._env
        )
        #: How long PVE tasks of each type took in earlier runs; shared with the API executor, which
        #: polls a task of a known type when it is likely to have ended (``expect_tasks``).
        self.task_estimates: dict[str, float] = {}
        self.registry = Registry(
            [
                ("api", self._make_api),
                ("ssh", self._make_ssh),
                ("local", self._make_local),
                ("talosctl", self._make_talosctl),
                ("http", self._make_http),
                ("file", self._make_file),
            ]
        )

    def register(self, kind: str, factory: ExecutorFactory) -> None:
        """Build ``kind``'s executor with ``factory`` instead (before the first step of that kind)."""
        self.registry.register(kind, factory)

    def execute(self, action: Action | TaskFollow, progress: Progress, on_task: TaskStarted | None = None) -> Result:
        """Run ``action`` on its kind's executor; its output, progress lines and failure are masked
        against every secret the run knows, whichever executor (real or simulated) produced them.
        ``on_task`` (API requests only) is told the UPID of a task the request started, before it is polled."""
        if isinstance(action, TalosctlCommand) and action.cwd:
            # The Talos config dir holds cluster secrets: create it private, as talosctl would.
            Path(action.cwd).mkdir(parents=True, exist_ok=True, mode=0o700)
        if isinstance(action, FileWrite) and action.secret:
            self.mask_file(action)
        executor = self.registry.get(action.kind)
        lines = self.masker.lines(progress)
        try:
            if on_task is not None and isinstance(action, ApiRequest):
                result = executor.execute(action, lines, on_task=on_task)  # type: ignore[call-arg]
            else:
                result = executor.execute(action, lines)
        except StepFailed as failure:
            failure.message = self.masker.mask(failure.message)
            failure.args = (failure.message,)
            failure.data = self.masker.mask_data(failure.data)
            raise
        finally:
            lines.close()
        return dataclasses.replace(
            result, data=self.masker.mask_data(result.data), summary=self.masker.mask(result.summary)
        )

    def write_pass(self, path: str, lines: Sequence[Secret]) -> str:
        """Store ``lines`` as pass entry ``path`` (``engine.run.topass``); one line for progress."""
        return self.pass_store(path, lines)

    def watched(self, tokens: TokenProvider) -> TokenProvider:
        """``tokens``, with each token it gives added to the masker before anyone can print it."""
        return _MaskedTokens(tokens, self.masker)

    def missing(self, action: Action) -> list[str]:
        """The programs ``action`` needs on this machine that are not installed (nothing is run)."""
        return self.registry.get(action.kind).missing(action)

    def preview(self, action: Action, facts: Facts) -> list[Change]:
        """What ``action`` would change on the cluster described by ``facts``; nothing is sent."""
        if isinstance(action, FileWrite) and action.secret:
            self.mask_file(action)
        return self.registry.get(action.kind).preview(action, facts)

    def mask_file(self, action: FileWrite) -> None:
        """Mask a secret file's content from now on, whole and by the values in it, so a later step
        that prints the file (or a line of it) shows the mask."""
        from ..executors.filesecrets import secret_parts

        for part in secret_parts(action.content or "", action.format):
            self.masker.add(part)

    def expect_tasks(self, estimates: Mapping[str, float]) -> None:
        """Tell the API executor (built now or later) how long PVE tasks took in earlier runs."""
        self.task_estimates.clear()
        self.task_estimates.update(estimates)

    def adjust_context(self, context: dict[str, Any]) -> None:
        """Change what templates see for this cluster, before the first step renders."""
        if self._adjust_context is not None:
            self._adjust_context(context)

    def close(self) -> None:
        self.registry.close()

    def _tokens(self) -> TokenProvider:
        """Where the API token comes from; it reads nothing until asked, and then at each use."""
        return self.watched(TokenSource(dict(self._config), self._env))

    # ------------------------------------------------------------------ the real cluster's executors

    def _make_api(self) -> Executor:
        from ..executors.api import ApiExecutor, ApiSetupError

        try:
            return ApiExecutor.from_config(
                self._config,
                self._tokens(),
                base_dir=self._home,
                task_estimates=self.task_estimates,
                warnings=self.warnings,
            )
        except ApiSetupError as exc:
            raise StepFailed(str(exc), sent=False) from None

    def _make_ssh(self) -> Executor:
        return self._ssh()

    def _ssh(self) -> SshExecutor:
        from ..executors.shell import SshExecutor

        credentials = self._config["credentials"]
        ssh_config = credentials.get("ssh_config")
        if ssh_config:
            path = Path(str(ssh_config)).expanduser()
            ssh_config = str(path if path.is_absolute() else self._home / path)
        hosts = {str(n["name"]): str(n["host"]) for n in self._config["cluster"]["nodes"]}
        return SshExecutor(hosts, str(credentials["ssh_user"]), ssh_config=ssh_config, environment=self.child_env)

    def _make_local(self) -> Executor:
        from ..executors.shell import LocalExecutor

        return LocalExecutor(token_source=self._tokens(), environment=self.child_env)

    def _make_talosctl(self) -> Executor:
        from ..executors.talosctl import TalosctlExecutor

        return TalosctlExecutor(environment=self.child_env)

    def _make_file(self) -> Executor:
        from ..executors.file import FileExecutor, LocalFiles, SshFiles

        ssh = functools.cache(self._ssh)  # built for the first file on a node: local files need no ssh settings
        return FileExecutor(
            LocalFiles(), lambda action: SshFiles(ssh(), str(action.node), action.timeout), needs=("ssh",)
        )

    def _make_http(self) -> Executor:
        from ..executors.http import HttpExecutor

        return HttpExecutor()


class _MaskedTokens:
    """A token provider that tells the masker each token it gives (whole, and its secret alone)."""

    def __init__(self, tokens: TokenProvider, masker: Masker):
        self._tokens = tokens
        self._masker = masker

    def get(self) -> ApiToken:
        token = self._tokens.get()
        self._masker.add(f"{token.token_id}={token.secret.reveal()}")
        self._masker.add(token.secret)
        return token
