"""``--simulate``: the simulated cluster started for one invocation, and executors pointed at it.

Only the far ends are simulated: the API executor is the real one (talking HTTPS to the in-process
fakepve with its fresh certificate and token), the runner, gates and journal are the real ones.
``ssh``, ``talosctl`` and ``http`` steps go to the simulated node shell, Talos and Image Factory, and a
``file`` step for a node to the simulated node's files (one on this machine is written for real);
``local`` steps run for real with simulated ``ansible-playbook``, ``flux`` and ``kubectl`` first
on PATH. The state is saved after every step, so a run that dies leaves the cluster as it was at
its last step, like a real one. The simulation registers its executors with an ordinary
``Dispatcher``, each wrapped to save after every action; the dispatcher itself is the real one.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..executors.api import ApiExecutor, configured_outage_window
from ..executors.base import Change, Executor, ExecutorFactory, Progress, TokenProvider
from ..executors.file import FileExecutor, LocalFiles
from ..executors.shell import LocalExecutor
from ..load.config import ClusterConfig
from ..load.facts import Facts
from ..load.home import Home
from ..load.profiles import Profile, load_profiles
from ..run.credentials import ApiToken
from ..run.dispatch import Dispatcher
from ..run.runlock import ProfileLock
from ..run.secrets import ChildEnvironment, Secret
from ..runbook.actions import Result, ShellCommand
from .filestore import SimNodeFileStore
from .http import Factory, SimHttpExecutor
from .nodefiles import NodeFiles
from .server import SimCluster, sim_dir
from .shell import SimShellExecutor
from .shims import write_shims
from .state import SimVm
from .talos import SimTalosctlExecutor, TalosWorld

LOCK_NAME = "simulated-cluster"


class _Tokens:
    """The simulated cluster's token, as the API executor and ``api_token_env`` ask for it."""

    def __init__(self, cluster: SimCluster):
        self.cluster = cluster

    def get(self) -> ApiToken:
        return self.cluster.token()


class _PathLocal:
    """Local steps run for real, with the simulated tools first on PATH (and the simulated token)."""

    kind = "local"

    def __init__(self, bin_dir: Path, token_source: TokenProvider, environment: ChildEnvironment):
        self.bin_dir = bin_dir
        self.local = LocalExecutor(token_source=token_source, environment=environment)

    def execute(self, command: ShellCommand, progress: Progress | None = None) -> Result:
        return self.local.execute(self._on_path(command), progress)

    def _on_path(self, command: ShellCommand) -> ShellCommand:
        """The command with the simulated tools first on its PATH."""
        env = {**command.env, "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}"}
        return dataclasses.replace(command, env=env)

    def preview(self, command: ShellCommand, facts: Facts) -> list[Change]:
        return self.local.preview(command, facts)

    def missing(self, command: ShellCommand) -> list[str]:
        return self.local.missing(self._on_path(command))

    def close(self) -> None:
        self.local.close()


def _simulated_pass(path: str, lines: Sequence[Secret]) -> str:
    """``to_pass`` in a simulation: the operator's pass store is never written (the entry would replace
    a real cluster's token by one that only this process's simulated cluster knows); the values are dropped."""
    return f"simulated: pass entry '{path}' not written ({len(lines)} line(s) dropped; a real run stores them)"


class _Saving:
    """An executor that saves the simulated cluster after every action, whatever its outcome."""

    def __init__(self, executor: Executor, save: Callable[[], None]):
        self.executor = executor
        self.kind = executor.kind
        self.save = save

    def execute(self, action: Any, progress: Progress | None = None, **options: Any) -> Result:
        try:
            return self.executor.execute(action, progress, **options)
        finally:
            self.save()

    def preview(self, action: Any, facts: Facts) -> list[Change]:
        return self.executor.preview(action, facts)

    def missing(self, action: Any) -> list[str]:
        return self.executor.missing(action)

    def close(self) -> None:
        self.executor.close()


class Simulation:
    """The simulated cluster for one invocation: ``with Simulation(home, config) as sim: sim.dispatcher()``."""

    def __init__(self, home: Home, config: ClusterConfig, run_id: str = "simulation"):
        self.home = home
        self.config = config
        self.lock = ProfileLock(home.state_dir, LOCK_NAME, run_id)
        self.cluster: SimCluster | None = None

    def __enter__(self) -> Simulation:
        self.lock.acquire()
        try:
            profiles = load_profiles(self.home, self.config)[0]
            self.cluster = SimCluster.start(self.home, self.config, profiles)
            self._wire(profiles)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wire(self, profiles: list[Profile]) -> None:
        cluster = self.cluster
        assert cluster is not None
        self.world = TalosWorld(cluster.section("talos"))
        self.files = NodeFiles(cluster.section("files"))
        # The ISO images the node shell downloads are storage content (engine.sim.pvestorage).
        files = self.files.data
        cluster.do(lambda: setattr(cluster.fake, "node_files", files))
        names_by_ip: dict[str, str] = {}
        planned: dict[str, dict[str, list[str]]] = {}
        for profile in profiles:
            roles: dict[str, list[str]] = {"controlplane": [], "worker": []}
            for vm in profile.plan(self.config).vms:
                if vm.ip:
                    names_by_ip[vm.ip] = vm.name
                    roles[vm.role].append(vm.ip)
            planned[profile.name] = roles

        def vm_lookup(ip: str) -> SimVm | None:
            name = names_by_ip.get(ip)
            return cluster.by_name(name) if name else None

        image_factory = Factory()
        bin_dir = sim_dir(self.home) / "bin"
        write_shims(bin_dir, cluster.state_file)
        self.tokens = _Tokens(cluster)
        self.bin_dir = bin_dir
        self.factories: dict[str, ExecutorFactory] = {
            "ssh": lambda: SimShellExecutor(cluster, self.files, image_factory),
            "talosctl": lambda: SimTalosctlExecutor(self.world, vm_lookup, planned=planned.get),
            "http": lambda: SimHttpExecutor(image_factory),
            "file": lambda: FileExecutor(
                LocalFiles(), lambda action: SimNodeFileStore(self.files, str(action.node), secret=action.secret)
            ),
        }

    def dispatcher(self) -> Dispatcher:
        """A dispatcher whose every executor is the simulation's, each saving after every action.

        The API executor and local steps get the simulated token through the dispatcher's masker,
        and local steps its child environment, as on a real cluster."""
        cluster = self.cluster
        assert cluster is not None
        dispatcher = Dispatcher(
            self.config.data, self.home.root, adjust_context=self.adjust_context, trust="the simulated cluster's own CA"
        )
        tokens = dispatcher.watched(self.tokens)
        dispatcher.pass_store = _simulated_pass
        for kind, make in self.factories.items():
            dispatcher.register(kind, lambda make=make: _Saving(make(), self.save))
        dispatcher.register(
            "api",
            lambda: _Saving(
                ApiExecutor(
                    cluster.endpoints(),
                    tokens,
                    cluster.verify(),
                    task_estimates=dispatcher.task_estimates,
                    outage_window=configured_outage_window(self.config.data),
                    warnings=dispatcher.warnings,
                ),
                self.save,
            ),
        )
        dispatcher.register("local", lambda: _Saving(_PathLocal(self.bin_dir, tokens, dispatcher.child_env), self.save))
        return dispatcher

    def adjust_context(self, context: dict[str, Any]) -> None:
        """Keep a simulated cluster's Talos files (secrets, configs, kubeconfig) inside the simulation's
        folder: a simulated run must never overwrite a real cluster's secrets in ``talos.config_dir``."""
        profile = context.get("profile")
        if profile and context.get("talos_config_dir"):
            context["talos_config_dir"] = str(sim_dir(self.home) / "talos" / str(profile["name"]))

    def banner(self) -> str:
        assert self.cluster is not None
        return (
            f"SIMULATED cluster: fakepve at {self.cluster.url}, state in "
            f"{self.home.shown(self.cluster.state_file)}; no real node is contacted"
        )

    def save(self) -> None:
        if self.cluster is not None:
            self.cluster.set_section("talos", self.world.data)
            self.cluster.set_section("files", self.files.data)
            self.cluster.save()

    def close(self) -> None:
        try:
            if self.cluster is not None:
                self.save()
                self.cluster.stop()
        finally:
            self.cluster = None
            if self.lock.held:
                self.lock.release()
