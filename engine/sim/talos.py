"""A simulated Talos Linux per VM, for ``talosctl`` steps under ``--simulate``.

``SimTalosctlExecutor`` takes the place of ``TalosctlExecutor``: same ``run(command, progress)``,
same ``Result.data`` (``stdout``, ``stderr``, ``exit_code``), same failure wording, but the far end
is a small model instead of a binary and a network:

- a node is found by IP through an injected ``vm_lookup(ip) -> SimVm | None`` (the profiles'
  planned IPs); no running VM there means ``connection refused`` on port 50000, as for real;
- a running VM without a machine config is in **maintenance** mode (only ``--insecure`` calls);
  ``apply-config --insecure --file F`` makes it **installed** (F must be a Talos machine config,
  ``machine.type`` controlplane or worker); ``bootstrap`` on one control plane makes its cluster
  **bootstrapped**, once (a second one is refused as Talos does: etcd data directory is not
  empty); ``health`` passes (**healthy**) when every control plane of the cluster is installed and
  running and etcd is bootstrapped, and otherwise says what is not ready;
- authenticated calls go through an endpoint (``--endpoints`` or the talosconfig's) with the
  talosconfig's CA, which must be the cluster's: a talosconfig from other secrets gets
  ``x509: certificate signed by unknown authority``, and the cluster's virtual IP answers only once
  etcd is bootstrapped, as the VIP does on a real cluster;
- ``gen secrets``, ``gen config``, ``kubeconfig``, ``etcd snapshot`` and ``images cache-create``
  write real files (YAML where Talos writes YAML) on this machine, relative to the command's cwd.

The Talos side is kept in ``TalosWorld``, a JSON-able dict (the ``talos`` section of the simulation
state; the ``kubectl`` shim reads it). Each subcommand is a module of ``engine.sim.talosctl``, found through
its ``COMMANDS`` registry. Anything talosctl can do that is not modelled fails clearly:
``simulation: talosctl X is not simulated``.
"""

from __future__ import annotations

import os
import shlex
import threading
from collections.abc import Callable, Mapping
from typing import Any

from ..executors.base import Change, Progress
from ..executors.preview import talosctl_changes
from ..load.facts import Facts
from ..runbook.actions import Result, StepFailed, TalosctlCommand
from .state import SimVm
from .talosctl import COMMANDS
from .talosctl.base import Args, Call, Fail, NotSimulated, ip_key

DEFAULT_TALOS_VERSION = "v1.9.5"
SIMULATED = (
    "apply-config, bootstrap, health, kubeconfig, version, get members|disks, etcd snapshot|members|status|remove-member, "
    "upgrade, upgrade-k8s, reset, gen secrets|config, machineconfig patch, images default|cache-create, "
    "config endpoint|node|info"
)

VmLookup = Callable[[str], "SimVm | None"]
"""IP address -> the VM that has it (running or not), or None."""

Planned = Callable[[str], Mapping[str, list[str]]]
"""Cluster name -> {"controlplane": [ip, ...], "worker": [ip, ...]}: the nodes a cluster should have."""


# ---------------------------------------------------------------- the Talos side of the world


class TalosWorld:
    """Per-node and per-cluster Talos state in one JSON-able dict (kept by reference, mutated in place).

    Layout::

        {"nodes": {ip: {"vmid", "vm_uid", "vm_name", "role", "cluster_id", "cluster_name", "hostname",
                        "talos_version", "install_image", "config_sha256", "addresses", "upgrades",
                        "installed_at"}},
         "clusters": {cluster_id: {"name", "endpoint", "ca", "vips", "bootstrapped_on",
                                   "kubernetes_version", "healthy"}}}

    A node without a record is in maintenance mode (when its VM runs). Records are tied to the VM
    they were made on: a VM that was destroyed and made again (another vmid, or another ``uid``)
    boots from a fresh disk, so its old record is dropped; ``forget_vm`` does it explicitly.
    """

    def __init__(self, data: dict[str, Any] | None = None):
        self.data = data if data is not None else {}
        self.data.setdefault("nodes", {})
        self.data.setdefault("clusters", {})

    @property
    def nodes(self) -> dict[str, dict[str, Any]]:
        return self.data["nodes"]

    @property
    def clusters(self) -> dict[str, dict[str, Any]]:
        return self.data["clusters"]

    def node(self, ip: str) -> dict[str, Any] | None:
        return self.nodes.get(ip)

    def reconcile(self, ip: str, vm: SimVm | None) -> dict[str, Any] | None:
        """The node's record if it still belongs to ``vm``; a stale one (VM made again) is dropped."""
        record = self.nodes.get(ip)
        if record is None or vm is None:
            return record
        if record.get("vmid") != vm.vmid or (record.get("vm_uid") and vm.uid and record["vm_uid"] != vm.uid):
            del self.nodes[ip]
            self.prune()
            return None
        return record

    def forget_vm(self, vmid: int) -> None:
        """The VM is gone: its Talos state goes with its disk."""
        for ip in [ip for ip, rec in self.nodes.items() if rec.get("vmid") == vmid]:
            del self.nodes[ip]
        self.prune()

    def forget_node(self, ip: str) -> None:
        self.nodes.pop(ip, None)
        self.prune()

    def prune(self) -> None:
        """Clusters without a single installed control plane are gone (their etcd with them)."""
        alive = {rec.get("cluster_id") for rec in self.nodes.values() if rec.get("role") == "controlplane"}
        for cluster_id in [c for c in self.clusters if c not in alive]:
            del self.clusters[cluster_id]

    def members(self, cluster_id: str) -> dict[str, dict[str, Any]]:
        return {
            ip: rec
            for ip, rec in sorted(self.nodes.items(), key=lambda kv: ip_key(kv[0]))
            if rec.get("cluster_id") == cluster_id
        }

    def vip_cluster(self, ip: str) -> str | None:
        """The cluster whose virtual IP (or endpoint host that is no node) this address is."""
        for cluster_id, cluster in self.clusters.items():
            if ip in cluster.get("vips", []):
                return cluster_id
        return None

    def rows(self, vm_lookup: VmLookup) -> list[dict[str, Any]]:
        """One row per known node for ``runbook sim status``: ip, vmid, hostname, role, cluster, state, version."""
        rows = []
        for ip, rec in sorted(self.nodes.items(), key=lambda kv: ip_key(kv[0])):
            vm = vm_lookup(ip)
            cluster = self.clusters.get(rec.get("cluster_id", ""), {})
            if vm is None or vm.status != "running":
                state = "stopped" if vm is not None else "absent"
            elif not cluster.get("bootstrapped_on"):
                state = "installed"
            else:
                state = "healthy" if cluster.get("healthy") else "bootstrapped"
            rows.append(
                {
                    "ip": ip,
                    "vmid": rec.get("vmid"),
                    "hostname": rec.get("hostname"),
                    "role": rec.get("role"),
                    "cluster": rec.get("cluster_name"),
                    "state": state,
                    "talos_version": rec.get("talos_version"),
                    "kubernetes_version": cluster.get("kubernetes_version"),
                }
            )
        return rows


# ---------------------------------------------------------------- flags

# name -> (kind, short); kinds: bool, str, list (comma-separated, repeatable), array (repeatable as is)
_GLOBAL = {
    "nodes": ("list", "n"),
    "endpoints": ("list", "e"),
    "talosconfig": ("str", None),
    "context": ("str", None),
    "cluster": ("str", None),
}

_ALIASES = {"apply": "apply-config", "mc": "machineconfig", "machineconfigs": "machineconfig", "image": "images"}
_SUB_ALIASES = {"endpoints": "endpoint", "nodes": "node"}
_GROUPS = {path[0] for path in COMMANDS if len(path) == 2}


def _parse_argv(argv: list[str]) -> Args:
    """Find the (sub)command and parse flags as cobra does: global flags anywhere, ``--x=v``, ``-x v``."""
    path: list[str] = []
    flags: dict[str, Any] = {}
    positional: list[str] = []
    spec: dict[str, tuple[str, str | None]] = dict(_GLOBAL)
    resolved = False
    tokens = list(argv)
    minimum = maximum = 0
    only_positional = False
    while tokens:
        token = tokens.pop(0)
        if not only_positional and token == "--":
            only_positional = True
            continue
        if not only_positional and token.startswith("-") and token != "-":
            _take_flag(token, tokens, spec, flags)
            continue
        if resolved:
            positional.append(token)
            continue
        path.append(_SUB_ALIASES.get(token, token) if path else _ALIASES.get(token, token))
        key = tuple(path)
        if key in COMMANDS:
            command = COMMANDS[key]
            minimum, maximum = command.min_args, command.max_args
            spec = {**_GLOBAL, **command.flags}
            resolved = True
            continue
        if len(path) == 1 and path[0] in _GROUPS:
            continue
        raise NotSimulated(f"simulation: talosctl {' '.join(path)} is not simulated (simulated: {SIMULATED})")
    if not resolved:
        if path:
            raise NotSimulated(f"simulation: talosctl {path[0]} needs a subcommand; simulated: {SIMULATED}")
        raise NotSimulated(f"simulation: talosctl without a command is not simulated (simulated: {SIMULATED})")
    if len(positional) < minimum or len(positional) > maximum:
        usage = " ".join(path)
        if minimum == maximum:
            raise Fail(f"Error: accepts {minimum} arg(s), received {len(positional)}\n(talosctl {usage})")
        raise Fail(
            f"Error: accepts between {minimum} and {maximum} arg(s), received {len(positional)}\n(talosctl {usage})"
        )
    return Args(tuple(path), flags, positional)


def _take_flag(token: str, tokens: list[str], spec: dict[str, tuple[str, str | None]], flags: dict[str, Any]) -> None:
    if token.startswith("--"):
        name, eq, value = token[2:].partition("=")
        if name not in spec:
            raise Fail(
                f"unknown flag: --{name}\nsimulation: if talosctl has this flag, the simulation does not know it"
            )
        kind = spec[name][0]
    else:
        letters = token[1:]
        short, rest = letters[0], letters[1:]
        name = next((n for n, (_, s) in spec.items() if s == short), "")
        if not name:
            raise Fail(f"unknown shorthand flag: '{short}' in {token}")
        kind = spec[name][0]
        eq = "=" if rest.startswith("=") else ("=" if rest and kind != "bool" else "")
        value = rest[1:] if rest.startswith("=") else rest
        if kind == "bool" and rest and not rest.startswith("="):
            # -fi: several boolean shorthands together
            flags[name] = True
            _take_flag("-" + rest, tokens, spec, flags)
            return
    if kind == "bool":
        if eq:
            if value.lower() not in ("true", "false", "1", "0", "t", "f"):
                raise Fail(
                    f'invalid argument "{value}" for "--{name}" flag: strconv.ParseBool: parsing "{value}": invalid syntax'
                )
            flags[name] = value.lower() in ("true", "1", "t")
        else:
            flags[name] = True
        return
    if not eq:
        if not tokens:
            raise Fail(f"flag needs an argument: --{name}")
        value = tokens.pop(0)
    if kind == "str":
        flags[name] = value
    elif kind == "list":
        flags.setdefault(name, []).extend(v for v in value.split(",") if v)
    else:
        flags.setdefault(name, []).append(value)


# ---------------------------------------------------------------- the executor


class SimTalosctlExecutor:
    """``TalosctlExecutor`` for ``--simulate``.

    ``world`` holds the Talos state; ``vm_lookup(ip)`` finds the VM with an address; ``planned``
    (optional) names the nodes a cluster should have, so ``health`` can say which are missing;
    ``version`` is the simulated talosctl's (and a fresh node's) Talos version; ``environ`` is where
    TALOSCONFIG and HOME are read when the command does not set them (default ``os.environ``).
    """

    kind = "talosctl"

    def __init__(
        self,
        world: TalosWorld,
        vm_lookup: VmLookup,
        *,
        planned: Planned | None = None,
        version: str = DEFAULT_TALOS_VERSION,
        environ: Mapping[str, str] | None = None,
    ):
        self.world = world
        self.vm_lookup = vm_lookup
        self.planned = planned
        self.version = version
        self.environ = environ if environ is not None else os.environ
        self._lock = threading.Lock()

    def missing(self, command: TalosctlCommand) -> list[str]:
        """Nothing: the simulated talosctl is part of this process."""
        return []

    def preview(self, command: TalosctlCommand, facts: Facts) -> list[Change]:
        return talosctl_changes(command, facts)

    def close(self) -> None:
        """Nothing to release: the Talos state belongs to the simulation."""

    def execute(self, command: TalosctlCommand, progress: Progress | None = None) -> Result:
        shown = shlex.join(["talosctl", *command.argv])
        if command.cwd is not None and not os.path.isdir(command.cwd):
            raise StepFailed(f"talosctl working directory {command.cwd} does not exist", sent=False)
        call = Call(self, command)
        with self._lock:
            try:
                args = _parse_argv(list(command.argv))
                call.args = args
                COMMANDS[args.path].run(call)
                code = 0
            except NotSimulated as exc:
                data = {"stdout": call.out_text(), "stderr": call.err_text(), "exit_code": None}
                raise StepFailed(f"`{shown}`: {exc}", sent=False, data=data) from None
            except Fail as exc:
                call.err(exc.text if exc.text.endswith("\n") else exc.text + "\n")
                code = exc.code
        data = {"stdout": call.out_text(), "stderr": call.err_text(), "exit_code": code}
        if progress is not None:
            for text in (data["stdout"], data["stderr"]):
                for line in text.splitlines():
                    progress(line)
        if code != 0:
            tail = data["stderr"].rstrip("\n").splitlines()[-20:]
            lines = "\n".join("  " + line for line in tail) or "  (nothing on stderr)"
            raise StepFailed(f"`{shown}` exited with {code}; stderr:\n{lines}", data=data)
        return Result(data=data, summary=f"talosctl {' '.join(command.argv[:2])}: done (simulated)")
