"""A simulated Talos Linux per VM, for ``talosctl`` steps under ``--simulate``.

``SimTalosctlExecutor`` takes the place of ``TalosctlExecutor``: same ``run(command, progress)``,
same ``Result.data`` (``stdout``, ``stderr``, ``exit_code``), same failure wording, but the far end
is a small model instead of a binary and a network:

- a node is found by IP through an injected ``vm_lookup(ip) -> VmInfo | None`` (the profiles'
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
state; the ``kubectl`` shim reads it). Anything talosctl can do that is not modelled fails clearly:
``simulation: talosctl X is not simulated``.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import ipaddress
import json
import os
import re
import secrets as random_secrets
import shlex
import textwrap
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ..executors.base import Change, Progress
from ..executors.preview import talosctl_changes
from ..load.facts import Facts
from ..runbook.actions import Result, StepFailed, TalosctlCommand
from .http import VERSIONS
from .shell import VmInfo

DEFAULT_TALOS_VERSION = "v1.9.5"
DEFAULT_KUBERNETES_VERSION = "v1.32.3"
SIMULATED = (
    "apply-config, bootstrap, health, kubeconfig, version, get members|disks, etcd snapshot|members, "
    "upgrade, upgrade-k8s, reset, gen secrets|config, machineconfig patch, images default|cache-create, "
    "config endpoint|node|info"
)

VmLookup = Callable[[str], "VmInfo | None"]
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

    def reconcile(self, ip: str, vm: VmInfo | None) -> dict[str, Any] | None:
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
            for ip, rec in sorted(self.nodes.items(), key=lambda kv: _ip_key(kv[0]))
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
        for ip, rec in sorted(self.nodes.items(), key=lambda kv: _ip_key(kv[0])):
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


# ---------------------------------------------------------------- failures


class _Fail(Exception):
    """talosctl failed: ``text`` goes to stderr and the exit code is ``code``."""

    def __init__(self, text: str, code: int = 1):
        super().__init__(text)
        self.text = text
        self.code = code


class _NotSimulated(Exception):
    pass


def _refused(what: str, ip: str, why: str) -> _Fail:
    return _Fail(
        f'error {what}: rpc error: code = Unavailable desc = connection error: desc = "transport: Error while '
        f'dialing: dial tcp {ip}:50000: connect: connection refused"\nsimulation: {why}'
    )


# ---------------------------------------------------------------- flags

# name -> (kind, short); kinds: bool, str, list (comma-separated, repeatable), array (repeatable as is)
_GLOBAL = {
    "nodes": ("list", "n"),
    "endpoints": ("list", "e"),
    "talosconfig": ("str", None),
    "context": ("str", None),
    "cluster": ("str", None),
}

_COMMANDS: dict[tuple[str, ...], tuple[dict[str, tuple[str, str | None]], int, int]] = {
    ("apply-config",): (
        {
            "file": ("str", "f"),
            "insecure": ("bool", "i"),
            "mode": ("str", "m"),
            "dry-run": ("bool", None),
            "config-patch": ("array", "p"),
            "timeout": ("str", None),
            "cert-fingerprint": ("array", None),
        },
        0,
        0,
    ),
    ("bootstrap",): ({"recover-from": ("str", None), "recover-skip-hash-check": ("bool", None)}, 0, 0),
    ("health",): (
        {
            "wait-timeout": ("str", None),
            "control-plane-nodes": ("list", None),
            "worker-nodes": ("list", None),
            "init-node": ("str", None),
            "server": ("bool", None),
            "k8s-endpoint": ("str", None),
            "run-e2e": ("bool", None),
        },
        0,
        0,
    ),
    ("kubeconfig",): ({"force": ("bool", "f"), "merge": ("bool", "m"), "force-context-name": ("str", None)}, 0, 1),
    ("version",): ({"client": ("bool", None), "short": ("bool", None), "insecure": ("bool", "i")}, 0, 0),
    ("get",): (
        {"output": ("str", "o"), "namespace": ("str", None), "insecure": ("bool", "i"), "watch": ("bool", "w")},
        1,
        2,
    ),
    ("etcd", "snapshot"): ({}, 1, 1),
    ("etcd", "members"): ({}, 0, 0),
    ("upgrade",): (
        {
            "image": ("str", "i"),
            "preserve": ("bool", "p"),
            "stage": ("bool", "s"),
            "wait": ("bool", None),
            "debug": ("bool", None),
            "force": ("bool", "f"),
            "reboot-mode": ("str", "m"),
            "timeout": ("str", None),
            "insecure": ("bool", None),
        },
        0,
        0,
    ),
    ("upgrade-k8s",): (
        {
            "to": ("str", None),
            "from": ("str", None),
            "dry-run": ("bool", None),
            "endpoint": ("str", None),
            "upgrade-kubelet": ("bool", None),
            "pre-pull-images": ("bool", None),
        },
        0,
        0,
    ),
    ("reset",): (
        {
            "graceful": ("bool", None),
            "reboot": ("bool", None),
            "system-labels-to-wipe": ("list", None),
            "user-disks-to-wipe": ("list", None),
            "wait": ("bool", None),
            "wipe-mode": ("str", None),
            "insecure": ("bool", None),
            "timeout": ("str", None),
        },
        0,
        0,
    ),
    ("gen", "secrets"): ({"output-file": ("str", "o"), "talos-version": ("str", None), "force": ("bool", "f")}, 0, 0),
    ("gen", "config"): (
        {
            "install-disk": ("str", None),
            "install-image": ("str", None),
            "additional-sans": ("list", None),
            "dns-domain": ("str", None),
            "version": ("str", None),
            "talos-version": ("str", None),
            "kubernetes-version": ("str", None),
            "config-patch": ("array", None),
            "config-patch-control-plane": ("array", None),
            "config-patch-worker": ("array", None),
            "registry-mirror": ("list", None),
            "with-examples": ("bool", None),
            "with-docs": ("bool", None),
            "with-cluster-discovery": ("bool", None),
            "with-kubespan": ("bool", None),
            "with-secrets": ("str", None),
            "output-types": ("list", "t"),
            "output": ("str", "o"),
            "output-dir": ("str", None),
            "force": ("bool", "f"),
        },
        2,
        2,
    ),
    ("machineconfig", "patch"): ({"patch": ("array", "p"), "output": ("str", "o")}, 1, 1),
    ("images", "default"): ({}, 0, 0),
    ("images", "cache-create"): (
        {
            "image-cache-path": ("str", None),
            "images": ("list", None),
            "layout": ("str", None),
            "platform": ("list", None),
            "force": ("bool", None),
            "insecure": ("bool", None),
            "image-layer-cache-path": ("str", None),
        },
        0,
        0,
    ),
    ("config", "endpoint"): ({}, 0, 99),
    ("config", "node"): ({}, 0, 99),
    ("config", "info"): ({"output": ("str", "o")}, 0, 0),
}
_ALIASES = {"apply": "apply-config", "mc": "machineconfig", "machineconfigs": "machineconfig", "image": "images"}
_SUB_ALIASES = {"endpoints": "endpoint", "nodes": "node"}
_GROUPS = {path[0] for path in _COMMANDS if len(path) == 2}


class _Args:
    def __init__(self, path: tuple[str, ...], flags: dict[str, Any], positional: list[str]):
        self.path = path
        self.flags = flags
        self.positional = positional

    def get(self, name: str, default: Any = None) -> Any:
        return self.flags.get(name, default)

    def has(self, name: str) -> bool:
        return name in self.flags


def _parse_argv(argv: list[str]) -> _Args:
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
        if key in _COMMANDS:
            command_flags, minimum, maximum = _COMMANDS[key]
            spec = {**_GLOBAL, **command_flags}
            resolved = True
            continue
        if len(path) == 1 and path[0] in _GROUPS:
            continue
        raise _NotSimulated(f"simulation: talosctl {' '.join(path)} is not simulated (simulated: {SIMULATED})")
    if not resolved:
        if path:
            raise _NotSimulated(f"simulation: talosctl {path[0]} needs a subcommand; simulated: {SIMULATED}")
        raise _NotSimulated(f"simulation: talosctl without a command is not simulated (simulated: {SIMULATED})")
    if len(positional) < minimum or len(positional) > maximum:
        usage = " ".join(path)
        if minimum == maximum:
            raise _Fail(f"Error: accepts {minimum} arg(s), received {len(positional)}\n(talosctl {usage})")
        raise _Fail(
            f"Error: accepts between {minimum} and {maximum} arg(s), received {len(positional)}\n(talosctl {usage})"
        )
    return _Args(tuple(path), flags, positional)


def _take_flag(token: str, tokens: list[str], spec: dict[str, tuple[str, str | None]], flags: dict[str, Any]) -> None:
    if token.startswith("--"):
        name, eq, value = token[2:].partition("=")
        if name not in spec:
            raise _Fail(
                f"unknown flag: --{name}\nsimulation: if talosctl has this flag, the simulation does not know it"
            )
        kind = spec[name][0]
    else:
        letters = token[1:]
        short, rest = letters[0], letters[1:]
        name = next((n for n, (_, s) in spec.items() if s == short), "")
        if not name:
            raise _Fail(f"unknown shorthand flag: '{short}' in {token}")
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
                raise _Fail(
                    f'invalid argument "{value}" for "--{name}" flag: strconv.ParseBool: parsing "{value}": invalid syntax'
                )
            flags[name] = value.lower() in ("true", "1", "t")
        else:
            flags[name] = True
        return
    if not eq:
        if not tokens:
            raise _Fail(f"flag needs an argument: --{name}")
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

    def preview(self, command: TalosctlCommand, facts: Facts) -> list[Change]:
        return talosctl_changes(command, facts)

    def close(self) -> None:
        """Nothing to release: the Talos state belongs to the simulation."""

    def execute(self, command: TalosctlCommand, progress: Progress | None = None) -> Result:
        shown = shlex.join(["talosctl", *command.argv])
        if command.cwd is not None and not os.path.isdir(command.cwd):
            raise StepFailed(f"talosctl working directory {command.cwd} does not exist", sent=False)
        call = _Call(self, command)
        with self._lock:
            try:
                args = _parse_argv(list(command.argv))
                call.dispatch(args)
                code = 0
            except _NotSimulated as exc:
                data = {"stdout": call.out_text(), "stderr": call.err_text(), "exit_code": None}
                raise StepFailed(f"`{shown}`: {exc}", sent=False, data=data) from None
            except _Fail as exc:
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


class _Call:
    """One talosctl invocation: its paths, its talosconfig and its output."""

    def __init__(self, executor: SimTalosctlExecutor, command: TalosctlCommand):
        self.x = executor
        self.world = executor.world
        self.command = command
        self.cwd = Path(command.cwd) if command.cwd is not None else Path.cwd()
        self._out: list[str] = []
        self._err: list[str] = []
        self.args: _Args

    # -- output and paths

    def out(self, text: str) -> None:
        self._out.append(text)

    def err(self, text: str) -> None:
        self._err.append(text)

    def out_text(self) -> str:
        return "".join(self._out)

    def err_text(self) -> str:
        return "".join(self._err)

    def path(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else self.cwd / path

    def talosconfig_path(self) -> Path:
        if self.args.get("talosconfig"):
            return self.path(os.path.expanduser(self.args.get("talosconfig")))
        if self.command.talosconfig:
            return self.path(os.path.expanduser(self.command.talosconfig))
        if self.x.environ.get("TALOSCONFIG"):
            return self.path(os.path.expanduser(self.x.environ["TALOSCONFIG"]))
        return Path(self.x.environ.get("HOME", os.path.expanduser("~"))) / ".talos" / "config"

    def dispatch(self, args: _Args) -> None:
        self.args = args
        handler = getattr(self, "cmd_" + "_".join(args.path).replace("-", "_"))
        handler()

    # -- the network

    def machine(self, ip: str) -> tuple[str, VmInfo | None, dict[str, Any] | None]:
        """(state, vm, record): state is absent, stopped, maintenance or installed."""
        vm = self.x.vm_lookup(ip)
        if vm is None or vm.template:
            return "absent", None, None
        record = self.world.reconcile(ip, vm)
        if vm.status != "running":
            return "stopped", vm, record
        return ("installed" if record else "maintenance"), vm, record

    def down_reason(self, ip: str, state: str, vm: VmInfo | None) -> str:
        if state == "absent":
            cluster_id = self.world.vip_cluster(ip)
            if cluster_id is not None:
                return (
                    f"{ip} is the virtual IP of cluster {self.world.clusters[cluster_id]['name']}, which comes up "
                    "only once etcd is bootstrapped and a control plane runs; until then use a control plane "
                    "node's address as endpoint (--endpoints, or talosctl config endpoint)"
                )
            return f"no running VM has the address {ip}"
        assert vm is not None
        return f"VM {vm.vmid} ({vm.name}) on {vm.node} with address {ip} is {vm.status}"

    def nodes_flag(self) -> list[str]:
        return list(self.args.get("nodes") or [])

    def insecure_targets(self, what: str) -> list[tuple[str, VmInfo]]:
        """Maintenance-mode nodes reached directly (``--insecure``): the nodes given, or the endpoints."""
        targets = self.nodes_flag() or list(self.args.get("endpoints") or [])
        if not targets:
            raise _Fail(
                "error: nodes are not set for the command: please use `--nodes` flag or configuration "
                "file to set the nodes to run the command against"
            )
        found = []
        for ip in targets:
            state, vm, record = self.machine(ip)
            if state in ("absent", "stopped"):
                raise _refused(what, ip, self.down_reason(ip, state, vm))
            if state == "installed":
                raise _Fail(
                    f'error {what}: rpc error: code = Unavailable desc = connection error: desc = "error reading '
                    f'server preface: remote error: tls: certificate required"\nsimulation: {ip} is installed '
                    "(it has a machine config), so it accepts only authenticated calls: drop --insecure and use "
                    "the cluster's talosconfig"
                )
            assert vm is not None
            found.append((ip, vm))
        return found

    def talosconfig(self) -> tuple[dict[str, Any], str, dict[str, Any]]:
        """(whole file, context name, context) of the talosconfig in use."""
        path = self.talosconfig_path()
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise _Fail(
                f"error constructing client: failed to determine endpoints\nsimulation: there is no "
                f"talosconfig at {path} (set TALOSCONFIG or --talosconfig, or run talosctl gen config)"
            ) from None
        except yaml.YAMLError as exc:
            raise _Fail(f"failed to parse config: {' '.join(str(exc).split())}") from None
        if not isinstance(data, dict):
            raise _Fail(f"failed to parse config: {path} is not a talosconfig")
        name = self.args.get("context") or data.get("context")
        contexts = data.get("contexts") or {}
        if not name or name not in contexts:
            raise _Fail(f"error constructing client: context {name!r} is not defined in 'talosconfig'")
        return data, name, contexts[name] or {}

    def connect(self, what: str) -> tuple[str, list[tuple[str, VmInfo, dict[str, Any]]]]:
        """Authenticated calls: (cluster id, [(ip, vm, record)] of the target nodes), or _Fail as talosctl fails."""
        _data, _name, context = self.talosconfig()
        endpoints = list(self.args.get("endpoints") or context.get("endpoints") or [])
        if not endpoints:
            raise _Fail("error constructing client: failed to determine endpoints")
        nodes = self.nodes_flag() or list(context.get("nodes") or []) or endpoints[:1]
        ca = context.get("ca")
        failures: list[tuple[int, _Fail]] = []  # (rank, failure): a node in maintenance says more than a refusal
        cluster_id: str | None = None
        for endpoint in endpoints:
            host = _host(endpoint)
            vip = self.world.vip_cluster(host)
            if vip is not None and self.vip_up(vip):
                cluster_id = vip
                break
            state, vm, record = self.machine(host)
            if state in ("absent", "stopped"):
                failures.append((1, _refused(what, host, self.down_reason(host, state, vm))))
                continue
            if state == "maintenance":
                failures.append(
                    (
                        0,
                        _Fail(
                            f'error {what}: rpc error: code = Unavailable desc = connection error: desc = "transport: '
                            f"authentication handshake failed: tls: failed to verify certificate: x509: certificate signed "
                            f'by unknown authority"\nsimulation: the endpoint {host} is in maintenance mode (no machine '
                            "config applied yet): apply one with talosctl apply-config --insecure first"
                        ),
                    )
                )
                continue
            assert record is not None
            cluster_id = record["cluster_id"]
            break
        if cluster_id is None:
            raise min(failures, key=lambda item: item[0])[1]
        cluster = self.world.clusters[cluster_id]
        if ca != cluster.get("ca"):
            raise _Fail(
                f'error {what}: rpc error: code = Unavailable desc = connection error: desc = "transport: '
                "authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by "
                f'unknown authority"\nsimulation: the talosconfig ({self.talosconfig_path()}) was not generated '
                f"from the secrets of cluster {cluster['name']}"
            )
        targets = []
        for ip in nodes:
            vip = self.world.vip_cluster(ip)
            if vip == cluster_id and self.vip_up(vip):
                ip = self.vip_holder(vip) or ip
            state, vm, record = self.machine(ip)
            if state in ("absent", "stopped"):
                raise _refused(what, ip, self.down_reason(ip, state, vm))
            if state == "maintenance":
                raise _Fail(
                    f"error {what}: 1 error occurred:\n\t* {ip}: rpc error: code = Unavailable desc = "
                    f"connection error: node is in maintenance mode\nsimulation: {ip} has no machine config "
                    "yet: apply one with talosctl apply-config --insecure"
                )
            assert vm is not None and record is not None
            if record["cluster_id"] != cluster_id:
                raise _Fail(
                    f"error {what}: 1 error occurred:\n\t* {ip}: rpc error: code = Unavailable desc = "
                    'connection error: desc = "transport: authentication handshake failed: x509: certificate '
                    f'signed by unknown authority"\nsimulation: {ip} belongs to cluster '
                    f"{record['cluster_name']}, not {cluster['name']}"
                )
            targets.append((ip, vm, record))
        return cluster_id, targets

    def vip_holder(self, cluster_id: str) -> str | None:
        cluster = self.world.clusters.get(cluster_id, {})
        if not cluster.get("bootstrapped_on"):
            return None
        for ip, record in self.world.members(cluster_id).items():
            if record.get("role") == "controlplane":
                state, _vm, _rec = self.machine(ip)
                if state == "installed":
                    return ip
        return None

    def vip_up(self, cluster_id: str) -> bool:
        return self.vip_holder(cluster_id) is not None

    def single(self, what: str) -> tuple[str, str, VmInfo, dict[str, Any]]:
        cluster_id, targets = self.connect(what)
        if len(targets) != 1:
            raise _Fail(f"error {what}: this command takes exactly one node (--nodes), got {len(targets)}")
        ip, vm, record = targets[0]
        return cluster_id, ip, vm, record

    # -- cluster health

    def health_problems(
        self, cluster_id: str, cps: list[str], workers: list[str]
    ) -> tuple[list[str], list[str], list[str]]:
        """(control planes, workers, problems) of a cluster, including the nodes it should have."""
        cluster = self.world.clusters[cluster_id]
        members = self.world.members(cluster_id)
        cp_set = set(cps) | {ip for ip, rec in members.items() if rec.get("role") == "controlplane"}
        worker_set = set(workers) | {ip for ip, rec in members.items() if rec.get("role") == "worker"}
        if self.x.planned is not None:
            plan = self.x.planned(cluster["name"]) or {}
            cp_set |= set(plan.get("controlplane", []))
            worker_set |= set(plan.get("worker", []))
        problems = []
        for role, group in (("controlplane", cp_set), ("worker", worker_set)):
            for ip in sorted(group, key=_ip_key):
                state, vm, record = self.machine(ip)
                if state in ("absent", "stopped"):
                    problems.append(f"{ip}: not reachable ({self.down_reason(ip, state, vm)})")
                elif state == "maintenance":
                    problems.append(f"{ip}: in maintenance mode (no machine config applied)")
                elif record is not None and record.get("cluster_id") != cluster_id:
                    problems.append(f"{ip}: belongs to cluster {record.get('cluster_name')}")
                elif record is not None and record.get("role") != role:
                    problems.append(f"{ip}: is a {record.get('role')}, expected a {role}")
        if not cluster.get("bootstrapped_on"):
            problems.append("etcd is not bootstrapped (run talosctl bootstrap on one control plane node)")
        return sorted(cp_set, key=_ip_key), sorted(worker_set, key=_ip_key), problems

    # ---------------------------------------------------------------- commands

    def cmd_apply_config(self) -> None:
        what = "applying new configuration"
        file = self.args.get("file")
        if not file:
            raise _Fail(
                "error: no filename specified: use --file (simulation: interactive apply-config is not simulated)"
            )
        path = self.path(file)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise _Fail(f"failed to read configuration from {file!r}: open {file}: no such file or directory") from None
        except (IsADirectoryError, UnicodeDecodeError) as exc:
            raise _Fail(f"failed to read configuration from {file!r}: {exc}") from None
        docs = _load_config_docs(text, file)
        docs = _apply_patches(docs, self.args.get("config-patch") or [], self)
        config = _v1alpha1(docs)
        problems = _validate_machine_config(config)
        if problems:
            detail = "".join(f"\n\t* {p}" for p in problems)
            raise _Fail(
                f"error {what}: rpc error: code = InvalidArgument desc = configuration validation failed: "
                f"{len(problems)} error{'s' if len(problems) > 1 else ''} occurred:{detail}"
            )
        if self.args.get("insecure"):
            targets = [(ip, vm, None) for ip, vm in self.insecure_targets(what)]
        else:
            cluster_id, connected = self.connect(what)
            targets = [(ip, vm, rec) for ip, vm, rec in connected]
        dry_run = self.args.get("dry-run")
        for ip, vm, record in targets:
            addresses = _config_addresses(config)
            if addresses and not any(_in_network(ip, address) for address in addresses):
                raise _Fail(
                    f"error {what}: simulation: the machine config gives this node the address(es) "
                    f"{', '.join(addresses)}, but it was sent to {ip}; it would come up at another address "
                    "(a patch for another node?)"
                )
            if record is not None:
                if record["role"] != config["machine"]["type"]:
                    raise _Fail(
                        f"error {what}: rpc error: code = InvalidArgument desc = configuration validation "
                        f"failed: 1 error occurred:\n\t* machine type can't be changed from "
                        f"{record['role']!r} to {config['machine']['type']!r}"
                    )
                if record["cluster_id"] != _cluster_id(config):
                    raise _Fail(
                        f"error {what}: simulation: the config belongs to another cluster (other secrets) "
                        f"than the one {ip} is installed in; reset the node first"
                    )
            if dry_run:
                self.out("Dry run summary:\nApplied configuration without a reboot (skipped in dry-run).\n")
                continue
            self.install(ip, vm, config, docs)
            self.out("Applied configuration without a reboot\n" if record is not None else "")

    def install(self, ip: str, vm: VmInfo, config: dict[str, Any], docs: list[Any]) -> None:
        """Record node ``ip`` as installed with this config (and its cluster, if new)."""
        machine = config["machine"]
        cluster_section = config["cluster"]
        cluster_id = _cluster_id(config)
        endpoint = str(cluster_section["controlPlane"]["endpoint"])
        endpoint_host = _host(endpoint)
        image = str((machine.get("install") or {}).get("image") or f"ghcr.io/siderolabs/installer:{self.x.version}")
        kube = _kubernetes_version(config)
        cluster = self.world.clusters.setdefault(
            cluster_id,
            {
                "name": str(cluster_section.get("clusterName") or "cluster"),
                "endpoint": endpoint,
                "ca": machine["ca"]["crt"],
                "vips": [],
                "bootstrapped_on": None,
                "kubernetes_version": kube,
                "healthy": False,
            },
        )
        vips = set(cluster.get("vips", [])) | set(_config_vips(config))
        if not self.x.vm_lookup(endpoint_host) and endpoint_host not in self.world.nodes:
            vips.add(endpoint_host)  # the endpoint is no node: a VIP or load balancer the cluster answers on
        cluster["vips"] = sorted(vips, key=_ip_key)
        hostname = (machine.get("network") or {}).get("hostname") or _default_hostname(ip)
        previous = self.world.nodes.get(ip, {})
        self.world.nodes[ip] = {
            "vmid": vm.vmid,
            "vm_uid": vm.uid,
            "vm_name": vm.name,
            "role": machine["type"],
            "cluster_id": cluster_id,
            "cluster_name": cluster["name"],
            "hostname": hostname,
            "talos_version": previous.get("talos_version") or _image_version(image) or self.x.version,
            "install_image": previous.get("install_image") or image,
            "config_sha256": hashlib.sha256(yaml.safe_dump_all(docs, sort_keys=True).encode()).hexdigest(),
            "addresses": _config_addresses(config),
            "upgrades": previous.get("upgrades", []),
            "installed_at": previous.get("installed_at") or int(time.time()),
        }
        cluster["healthy"] = False

    def cmd_bootstrap(self) -> None:
        what = "executing bootstrap"
        if self.args.get("recover-from"):
            raise _NotSimulated("simulation: talosctl bootstrap --recover-from is not simulated")
        cluster_id, ip, _vm, record = self.single(what)
        cluster = self.world.clusters[cluster_id]
        if record["role"] != "controlplane":
            raise _Fail(
                f"error {what}: rpc error: code = FailedPrecondition desc = bootstrap is not available on "
                "worker nodes\nsimulation: bootstrap one control plane node"
            )
        if cluster.get("bootstrapped_on"):
            raise _Fail(
                f"error {what}: rpc error: code = AlreadyExists desc = etcd data directory is not empty\n"
                f"simulation: etcd of cluster {cluster['name']} was already bootstrapped on "
                f"{cluster['bootstrapped_on']}; bootstrap runs once per cluster"
            )
        cluster["bootstrapped_on"] = ip

    def cmd_health(self) -> None:
        cluster_id, targets = self.connect("checking cluster health")
        cluster = self.world.clusters[cluster_id]
        cps, workers, problems = self.health_problems(
            cluster_id, list(self.args.get("control-plane-nodes") or []), list(self.args.get("worker-nodes") or [])
        )
        discovered = " ".join(f'"{ip}"' for ip in cps + workers)
        self.err(f"discovered nodes: [{discovered}]\n")
        if problems:
            cluster["healthy"] = False
            self.err("waiting for etcd to be healthy: ...\n")
            first = cps[0] if cps else (targets[0][0] if targets else "?")
            self.err(
                f'waiting for etcd to be healthy: 1 error occurred:\n\t* {first}: service "etcd" not in expected '
                'state "Running": current state [Preparing] Running pre state\n'
            )
            wait = self.args.get("wait-timeout") or "20m0s"
            raise _Fail(
                f"healthcheck error: rpc error: code = DeadlineExceeded desc = context deadline exceeded "
                f"(after --wait-timeout {wait})\nsimulation: cluster {cluster['name']} is not healthy: "
                + "; ".join(problems)
            )
        for check in (
            "etcd to be healthy",
            "etcd members to be consistent across nodes",
            "etcd members to be control plane nodes",
            "apid to be ready",
            "all nodes memory sizes",
            "all nodes disk sizes",
            "no diagnostics",
            "kubelet to be healthy",
            "all nodes to finish boot sequence",
            "all k8s nodes to report",
            "all control plane static pods to be running",
            "all control plane components to be ready",
            "all k8s nodes to report ready",
            "kube-proxy to report ready",
            "coredns to report ready",
            "all k8s nodes to report schedulable",
        ):
            self.err(f"waiting for {check}: ...\nwaiting for {check}: OK\n")
        cluster["healthy"] = True

    def cmd_kubeconfig(self) -> None:
        what = "retrieving kubeconfig"
        if not self.args.positional:
            raise _NotSimulated(
                "simulation: talosctl kubeconfig without a path would merge into ~/.kube/config; "
                "give it a path (the simulation never touches your own kubeconfig)"
            )
        cluster_id, ip, _vm, record = self.single(what)
        if record["role"] != "controlplane":
            raise _Fail(
                f"error {what}: rpc error: code = Unimplemented desc = kubeconfig is only available on "
                "control plane nodes"
            )
        cluster = self.world.clusters[cluster_id]
        target = self.path(self.args.positional[0])
        if target.is_dir():
            target = target / "kubeconfig"
        name = cluster["name"]
        context_name = self.args.get("force-context-name") or f"admin@{name}"
        entry = _kubeconfig(name, context_name, cluster["endpoint"], cluster["ca"])
        if target.exists() and not self.args.get("force") and self.args.get("merge", True):
            try:
                existing = yaml.safe_load(target.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise _Fail(f"error {what}: error merging kubeconfig: {' '.join(str(exc).split())}") from None
            for section, key in (("clusters", "name"), ("users", "name"), ("contexts", "name")):
                kept = [
                    item
                    for item in existing.get(section) or []
                    if item.get(key) not in {e[key] for e in entry[section]}
                ]
                existing[section] = kept + entry[section]
            existing["current-context"] = context_name
            existing.setdefault("apiVersion", "v1")
            existing.setdefault("kind", "Config")
            entry = existing
        _write(target, yaml.safe_dump(entry, sort_keys=False), 0o600)

    def cmd_version(self) -> None:
        client = (
            f"Client:\n\tTag:         {self.x.version}\n\tSHA:         {_sha(self.x.version)}\n"
            f"\tBuilt:       \n\tGo version:  go1.23.7\n\tOS/Arch:     linux/amd64\n"
        )
        if self.args.get("short"):
            client = f"Client:\nTalos {self.x.version}\n"
        self.out(client)
        if self.args.get("client"):
            return
        if self.args.get("insecure"):
            servers = [(ip, None) for ip, _vm in self.insecure_targets("getting version")]
        else:
            _cluster, targets = self.connect("getting version")
            servers = [(ip, rec) for ip, _vm, rec in targets]
        self.out("Server:\n")
        for ip, record in servers:
            version = record["talos_version"] if record else self.x.version
            if self.args.get("short"):
                self.out(f"\tNODE:        {ip}\n\tTag:         {version}\n")
                continue
            self.out(
                f"\tNODE:        {ip}\n\tTag:         {version}\n\tSHA:         {_sha(version)}\n\tBuilt:       \n"
                f"\tGo version:  go1.23.7\n\tOS/Arch:     linux/amd64\n\tEnabled:     RBAC\n"
            )

    def cmd_get(self) -> None:
        resource = self.args.positional[0].lower()
        output = self.args.get("output") or "table"
        if output not in ("table", "json", "yaml"):
            raise _NotSimulated(f"simulation: talosctl get -o {output} is not simulated (table, json, yaml)")
        if resource in ("members", "member", "cm", "clustermembers"):
            if self.args.get("insecure"):
                raise _Fail(
                    "error getting resources: rpc error: code = Unimplemented desc = members are not "
                    "available in maintenance mode"
                )
            cluster_id, targets = self.connect("getting resources")
            rows = []
            for ip, _vm, _record in targets:
                for member_ip, member in self.world.members(cluster_id).items():
                    state, _v, _r = self.machine(member_ip)
                    if state != "installed":
                        continue
                    rows.append(
                        (
                            ip,
                            "cluster",
                            "Member",
                            member["hostname"],
                            {
                                "nodeId": member["hostname"],
                                "addresses": [member_ip],
                                "hostname": member["hostname"],
                                "machineType": member["role"],
                                "operatingSystem": f"Talos ({member['talos_version']})",
                            },
                        )
                    )
            self._resources(
                rows,
                output,
                ["HOSTNAME", "MACHINE TYPE", "OS", "ADDRESSES"],
                lambda s: [s["hostname"], s["machineType"], s["operatingSystem"], json.dumps(s["addresses"])],
                "Members.cluster.talos.dev",
            )
            return
        if resource in ("disks", "disk"):
            if self.args.get("insecure"):
                targets = [(ip, vm) for ip, vm in self.insecure_targets("getting resources")]
            else:
                _cluster, connected = self.connect("getting resources")
                targets = [(ip, vm) for ip, vm, _rec in connected]
            rows = []
            for ip, vm in targets:
                size = _disk_bytes(vm.config)
                rows.append(
                    (
                        ip,
                        "runtime",
                        "Disk",
                        "sda",
                        {
                            "size": size,
                            "readonly": False,
                            "transport": "virtio",
                            "rotational": True,
                            "model": "QEMU HARDDISK",
                            "serial": "",
                            "dev_path": "/dev/sda",
                        },
                    )
                )
            self._resources(
                rows,
                output,
                ["SIZE", "READ ONLY", "TRANSPORT", "ROTATIONAL", "WWID", "MODEL", "SERIAL"],
                lambda s: [_human(s["size"]), "false", s["transport"], "true", "", s["model"], s["serial"]],
                "Disks.block.talos.dev",
            )
            return
        raise _NotSimulated(f"simulation: talosctl get {resource} is not simulated (simulated: members, disks)")

    def _resources(
        self,
        rows: list[tuple[str, str, str, str, dict[str, Any]]],
        output: str,
        columns: list[str],
        cells: Callable[[dict[str, Any]], list[str]],
        type_name: str,
    ) -> None:
        if output == "json":
            for node, namespace, _kind, ident, spec in rows:
                self.out(
                    json.dumps(
                        {
                            "node": node,
                            "metadata": {
                                "namespace": namespace,
                                "type": type_name,
                                "id": ident,
                                "version": 1,
                                "phase": "running",
                            },
                            "spec": spec,
                        },
                        indent=4,
                    )
                    + "\n"
                )
            return
        if output == "yaml":
            for node, namespace, _kind, ident, spec in rows:
                self.out(
                    yaml.safe_dump(
                        {
                            "node": node,
                            "metadata": {
                                "namespace": namespace,
                                "type": type_name,
                                "id": ident,
                                "version": 1,
                                "phase": "running",
                            },
                            "spec": spec,
                        },
                        sort_keys=False,
                    )
                    + "---\n"
                )
            return
        table = [["NODE", "NAMESPACE", "TYPE", "ID", "VERSION", *columns]]
        for node, namespace, kind, ident, spec in rows:
            table.append([node, namespace, kind, ident, "1", *cells(spec)])
        self.out(_table(table))

    def cmd_etcd_snapshot(self) -> None:
        what = "reading etcd snapshot"
        cluster_id, ip, _vm, record = self.single(what)
        cluster = self.world.clusters[cluster_id]
        if record["role"] != "controlplane":
            raise _Fail(f"error {what}: rpc error: code = Unavailable desc = etcd is not running on worker nodes")
        if not cluster.get("bootstrapped_on"):
            raise _Fail(
                f"error {what}: rpc error: code = Unavailable desc = etcd is not running yet (not bootstrapped)"
            )
        target = self.path(self.args.positional[0])
        members = len([r for r in self.world.members(cluster_id).values() if r.get("role") == "controlplane"])
        header = (
            f"runbook simulated etcd snapshot\ncluster: {cluster['name']}\nnode: {ip}\n"
            f"kubernetes: {cluster.get('kubernetes_version')}\nmembers: {members}\n"
        ).encode()
        payload = header + random_secrets.token_bytes(4096)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".part")
            partial.write_bytes(payload)
            partial.replace(target)
        except OSError as exc:
            raise _Fail(f"error {what}: {exc}") from None
        digest = hashlib.sha256(payload).hexdigest()
        self.out(
            f"etcd snapshot saved to {json.dumps(self.args.positional[0])} ({len(payload)} bytes)\n"
            f"snapshot info: hash {digest[:8]}, revision {1000 + len(payload) % 997}, total keys 512, "
            f"total size {len(payload)}\n"
        )

    def cmd_etcd_members(self) -> None:
        cluster_id, targets = self.connect("getting etcd members")
        cluster = self.world.clusters[cluster_id]
        if not cluster.get("bootstrapped_on"):
            raise _Fail("error getting etcd members: rpc error: code = Unavailable desc = etcd is not running yet")
        table = [["NODE", "ID", "HOSTNAME", "PEER URLS", "CLIENT URLS", "LEARNER"]]
        for ip, _vm, _rec in targets:
            for member_ip, member in self.world.members(cluster_id).items():
                if member.get("role") == "controlplane":
                    table.append(
                        [
                            ip,
                            hashlib.sha256(member_ip.encode()).hexdigest()[:16],
                            member["hostname"],
                            f"https://{member_ip}:2380",
                            f"https://{member_ip}:2379",
                            "false",
                        ]
                    )
        self.out(_table(table))

    def cmd_upgrade(self) -> None:
        what = "performing upgrade"
        image = self.args.get("image") or f"ghcr.io/siderolabs/installer:{self.x.version}"
        cluster_id, ip, _vm, record = self.single(what)
        version = _image_version(image)
        if version is None:
            raise _Fail(
                f"error {what}: rpc error: code = Unknown desc = failed to pull installer image {image!r}: "
                "no version tag (expected ...:vX.Y.Z)"
            )
        if version not in VERSIONS:
            raise _Fail(
                f"error {what}: rpc error: code = Unknown desc = failed to pull installer image {image!r}: "
                f"{image}: not found"
            )
        _cps, _workers, problems = self.health_problems(cluster_id, [], [])
        if problems and not self.args.get("force"):
            raise _Fail(
                f"error {what}: rpc error: code = FailedPrecondition desc = etcd quorum check failed: cluster "
                f"is not healthy\nsimulation: upgrade only a healthy cluster (talosctl health); not ready: "
                + "; ".join(problems)
            )
        if self.args.get("stage"):
            raise _NotSimulated("simulation: talosctl upgrade --stage is not simulated")
        record.setdefault("upgrades", []).append(
            {
                "from": record["talos_version"],
                "to": version,
                "image": image,
                "preserve": bool(self.args.get("preserve")),
            }
        )
        record["talos_version"] = version
        record["install_image"] = image
        self.out(f"watching nodes: [{ip}]\n    * {ip}: post check passed\n")

    def cmd_upgrade_k8s(self) -> None:
        what = "upgrading Kubernetes"
        cluster_id, ip, _vm, record = self.single(what)
        cluster = self.world.clusters[cluster_id]
        if record["role"] != "controlplane":
            raise _Fail(f"error {what}: upgrade-k8s must target a control plane node, {ip} is a worker")
        target = _k8s(self.args.get("to") or DEFAULT_KUBERNETES_VERSION)
        current = _k8s(self.args.get("from") or cluster.get("kubernetes_version") or DEFAULT_KUBERNETES_VERSION)
        if target is None or current is None:
            raise _Fail(f"error {what}: invalid Kubernetes version {self.args.get('to') or self.args.get('from')!r}")
        _cps, _workers, problems = self.health_problems(cluster_id, [], [])
        if problems:
            raise _Fail(f"error {what}: cluster is not healthy\nsimulation: not ready: " + "; ".join(problems))
        if target[:2] < current[:2] or (target[0] == current[0] and target[1] - current[1] > 1):
            raise _Fail(
                f"error {what}: unsupported upgrade path {_k8s_text(current)}->{_k8s_text(target)} "
                f"(from {_k8s_text(current)[1:]} to {_k8s_text(target)[1:]})"
            )
        self.out(
            f"automatically detected the lowest Kubernetes version {_k8s_text(current)[1:]}\n"
            f"discovered controlplane nodes [{' '.join(json.dumps(i) for i, r in self.world.members(cluster_id).items() if r.get('role') == 'controlplane')}]\n"
        )
        if target == current:
            self.out(f"> all components are already at version {_k8s_text(target)[1:]}\n")
            return
        for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubelet"):
            self.out(f'updating "{component}" to version "{_k8s_text(target)[1:]}"\n > "{ip}": starting update\n')
        if self.args.get("dry-run"):
            return
        cluster["kubernetes_version"] = _k8s_text(target)

    def cmd_reset(self) -> None:
        what = "executing reset"
        if self.args.get("insecure"):
            for ip, _vm in self.insecure_targets(what):
                self.out(f"watching nodes: [{ip}]\n    * {ip}: events check condition met\n")
            return
        _cluster, targets = self.connect(what)
        for ip, _vm, _record in targets:
            self.world.forget_node(ip)
            self.out(f"watching nodes: [{ip}]\n    * {ip}: events check condition met\n")

    def cmd_gen_secrets(self) -> None:
        output = self.args.get("output-file") or "secrets.yaml"
        text = yaml.safe_dump(_new_secrets(), sort_keys=False, indent=4)
        if output == "-":
            self.out(text)
            return
        target = self.path(output)
        if target.exists() and not self.args.get("force"):
            raise _Fail(f"file {json.dumps(output)} already exists, use --force to overwrite")
        _write(target, text, 0o600)

    def cmd_gen_config(self) -> None:
        name, endpoint = self.args.positional
        _validate_endpoint(endpoint)
        types = list(self.args.get("output-types") or ["controlplane", "worker", "talosconfig"])
        for kind in types:
            if kind not in ("controlplane", "worker", "talosconfig"):
                raise _Fail(f"1 error occurred:\n\t* invalid output type: {json.dumps(kind)}")
        if self.args.get("version", "v1alpha1") != "v1alpha1":
            raise _Fail(f'unknown config version: "{self.args.get("version")}"')
        secrets_file = self.args.get("with-secrets")
        if secrets_file:
            bundle = _load_secrets(self.path(secrets_file), secrets_file)
        else:
            bundle = _new_secrets()
        kube = _k8s(self.args.get("kubernetes-version") or DEFAULT_KUBERNETES_VERSION)
        if kube is None:
            raise _Fail(
                f"failed to generate config bundle: invalid Kubernetes version {self.args.get('kubernetes-version')!r}"
            )
        options = {
            "kubernetes_version": _k8s_text(kube),
            "install_disk": self.args.get("install-disk") or "/dev/sda",
            "install_image": self.args.get("install-image") or f"ghcr.io/siderolabs/installer:{self.x.version}",
            "sans": list(self.args.get("additional-sans") or []),
            "dns_domain": self.args.get("dns-domain") or "cluster.local",
            "discovery": self.args.get("with-cluster-discovery", True),
            "kubespan": bool(self.args.get("with-kubespan")),
        }
        common = self.args.get("config-patch") or []
        outputs: dict[str, str] = {}
        for kind in ("controlplane", "worker"):
            if kind not in types:
                continue
            docs: list[Any] = [_machine_config(kind, name, endpoint, bundle, options)]
            patches = common + (
                self.args.get("config-patch-control-plane" if kind == "controlplane" else "config-patch-worker") or []
            )
            docs = _apply_patches(docs, patches, self)
            outputs[kind] = yaml.safe_dump_all(docs, sort_keys=False, indent=4)
        if "talosconfig" in types:
            outputs["talosconfig"] = yaml.safe_dump(
                _talosconfig(name, [_host(endpoint)], bundle), sort_keys=False, indent=4
            )
        output = self.args.get("output") or self.args.get("output-dir")
        if output == "-":
            if len(types) > 1:
                raise _Fail("can't use multiple output types with stdout")
            self.out(next(iter(outputs.values())))
            return
        single_file = output and len(types) == 1 and not self.args.get("output-dir")
        base = self.path(output) if output else self.cwd
        self.err("generating PKI and tokens\n")
        for kind, text in outputs.items():
            target = base if single_file else base / (kind + ".yaml" if kind != "talosconfig" else kind)
            if target.exists() and not self.args.get("force"):
                raise _Fail(f"file {json.dumps(str(target))} already exists, use --force to overwrite")
            _write(target, text, 0o600 if kind == "talosconfig" else 0o644)
            self.err(f"Created {target}\n")

    def cmd_machineconfig_patch(self) -> None:
        source = self.args.positional[0]
        try:
            text = self.path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise _Fail(f"open {source}: {exc.strerror.lower() if exc.strerror else exc}") from None
        docs = _apply_patches(_load_config_docs(text, source), self.args.get("patch") or [], self)
        result = yaml.safe_dump_all(docs, sort_keys=False, indent=4)
        output = self.args.get("output")
        if output and output != "-":
            _write(self.path(output), result, 0o600)
        else:
            self.out(result)

    def cmd_images_default(self) -> None:
        self.out("".join(image + "\n" for image in _default_images(self.x.version, DEFAULT_KUBERNETES_VERSION)))

    def cmd_images_cache_create(self) -> None:
        path = self.args.get("image-cache-path")
        if not path:
            raise _Fail('Error: required flag(s) "image-cache-path" not set')
        images = list(self.args.get("images") or [])
        if not images:
            raise _Fail('Error: required flag(s) "images" not set')
        if "-" in images:
            raise _NotSimulated(
                "simulation: talosctl images cache-create --images=- reads standard input, which "
                "talosctl steps do not have; list the images with --images"
            )
        target = self.path(path)
        if target.exists() and not self.args.get("force"):
            raise _Fail(f"error creating image cache: output path {path!r} already exists, use --force to overwrite")
        layout = self.args.get("layout") or "oci"
        if layout not in ("oci", "flat"):
            raise _Fail(f"error creating image cache: unknown layout {layout!r}")
        target.mkdir(parents=True, exist_ok=True)
        (target / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        manifests = []
        for image in images:
            self.err(f'fetching image "{image}"\n')
            digest = hashlib.sha256(image.encode()).hexdigest()
            manifests.append(
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": f"sha256:{digest}",
                    "size": 1024,
                    "annotations": {"org.opencontainers.image.ref.name": image},
                }
            )
            (target / "blobs" / "sha256" / digest).write_text(
                json.dumps({"schemaVersion": 2, "simulated": True, "image": image}) + "\n", encoding="utf-8"
            )
        (target / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}\n', encoding="utf-8")
        (target / "index.json").write_text(
            json.dumps({"schemaVersion": 2, "manifests": manifests}, indent=2) + "\n", encoding="utf-8"
        )

    def _edit_talosconfig(self, key: str) -> None:
        data, name, context = self.talosconfig()
        context[key] = list(self.args.positional)
        data["contexts"][name] = context
        _write(self.talosconfig_path(), yaml.safe_dump(data, sort_keys=False, indent=4), 0o600)

    def cmd_config_endpoint(self) -> None:
        self._edit_talosconfig("endpoints")

    def cmd_config_node(self) -> None:
        self._edit_talosconfig("nodes")

    def cmd_config_info(self) -> None:
        _data, name, context = self.talosconfig()
        self.out(
            f"Current context:     {name}\nNodes:               {', '.join(context.get('nodes') or []) or 'not defined'}\n"
            f"Endpoints:           {', '.join(context.get('endpoints') or []) or 'not defined'}\n"
        )


# ---------------------------------------------------------------- machine configs


def _fake_pem(kind: str) -> str:
    """A PEM block (base64, as Talos stores them) that says it is simulated; not a usable key."""
    body = base64.b64encode(f"runbook simulation {kind.lower()} ".encode() + random_secrets.token_bytes(48)).decode()
    pem = f"-----BEGIN {kind}-----\n" + "\n".join(textwrap.wrap(body, 64)) + f"\n-----END {kind}-----\n"
    return base64.b64encode(pem.encode()).decode()


def _token() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return (
        "".join(random_secrets.choice(alphabet) for _ in range(6))
        + "."
        + "".join(random_secrets.choice(alphabet) for _ in range(16))
    )


def _pair() -> dict[str, str]:
    return {"crt": _fake_pem("CERTIFICATE"), "key": _fake_pem("EC PRIVATE KEY")}


def _new_secrets() -> dict[str, Any]:
    """A secrets bundle shaped like ``talosctl gen secrets`` writes it."""
    return {
        "cluster": {
            "id": base64.b64encode(random_secrets.token_bytes(32)).decode(),
            "secret": base64.b64encode(random_secrets.token_bytes(32)).decode(),
        },
        "secrets": {
            "bootstraptoken": _token(),
            "secretboxencryptionsecret": base64.b64encode(random_secrets.token_bytes(32)).decode(),
        },
        "trustdinfo": {"token": _token()},
        "certs": {
            "etcd": _pair(),
            "k8s": _pair(),
            "k8saggregator": _pair(),
            "k8sserviceaccount": {"key": _fake_pem("RSA PRIVATE KEY")},
            "os": {"crt": _fake_pem("CERTIFICATE"), "key": _fake_pem("ED25519 PRIVATE KEY")},
        },
    }


_SECRET_PATHS = (
    "cluster.id",
    "cluster.secret",
    "secrets.bootstraptoken",
    "secrets.secretboxencryptionsecret",
    "trustdinfo.token",
    "certs.etcd.crt",
    "certs.etcd.key",
    "certs.k8s.crt",
    "certs.k8s.key",
    "certs.k8saggregator.crt",
    "certs.k8saggregator.key",
    "certs.k8sserviceaccount.key",
    "certs.os.crt",
    "certs.os.key",
)


def _load_secrets(path: Path, shown: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _Fail(f"failed to load secrets bundle: open {shown}: no such file or directory") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise _Fail(f"failed to load secrets bundle: {' '.join(str(exc).split())}") from None
    missing = [p for p in _SECRET_PATHS if not _dig(data, p)]
    if missing:
        raise _Fail(
            f"failed to validate secrets bundle: {shown} is not a Talos secrets bundle (missing "
            f"{', '.join(missing[:4])}{'...' if len(missing) > 4 else ''})"
        )
    return data


def _dig(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _validate_endpoint(endpoint: str) -> None:
    parts = urlsplit(endpoint if "://" in endpoint else "//" + endpoint)
    host = parts.hostname or endpoint
    fixed = f"https://{host}:{parts.port or 6443}"
    if "://" not in endpoint:
        if parts.port is None:
            raise _Fail(f'no scheme and port specified for the cluster endpoint URL\ntry: "{fixed}"')
        raise _Fail(f'no scheme specified for the cluster endpoint URL\ntry: "{fixed}"')
    if parts.scheme != "https":
        raise _Fail(f'the control plane endpoint URL should have scheme https://\ntry: "{fixed}"')
    if not parts.hostname:
        raise _Fail("error validating the cluster endpoint URL: missing host")


def _machine_config(kind: str, name: str, endpoint: str, bundle: dict[str, Any], o: dict[str, Any]) -> dict[str, Any]:
    """A v1alpha1 machine config for ``kind`` (controlplane or worker), shaped like ``talosctl gen config``'s."""
    kube = o["kubernetes_version"]
    certs = bundle["certs"]
    control = kind == "controlplane"
    features: dict[str, Any] = {
        "rbac": True,
        "stableHostname": True,
        "apidCheckExtKeyUsage": True,
        "diskQuotaSupport": True,
        "kubePrism": {"enabled": True, "port": 7445},
        "hostDNS": {"enabled": True, "forwardKubeDNSToHost": True},
    }
    machine: dict[str, Any] = {
        "type": kind,
        "token": bundle["trustdinfo"]["token"],
        "ca": {"crt": certs["os"]["crt"], "key": certs["os"]["key"] if control else ""},
        "certSANs": list(o["sans"]),
        "kubelet": {
            "image": f"ghcr.io/siderolabs/kubelet:{kube}",
            "defaultRuntimeSeccompProfileEnabled": True,
            "disableManifestsDirectory": True,
        },
        "network": {},
        "install": {"disk": o["install_disk"], "image": o["install_image"], "wipe": False},
        "features": features,
    }
    if control:
        machine["nodeLabels"] = {"node.kubernetes.io/exclude-from-external-load-balancers": ""}
    if o["kubespan"]:
        machine["network"] = {"kubespan": {"enabled": True}}
    cluster: dict[str, Any] = {
        "id": bundle["cluster"]["id"],
        "secret": bundle["cluster"]["secret"],
        "controlPlane": {"endpoint": endpoint},
        "clusterName": name,
        "network": {"dnsDomain": o["dns_domain"], "podSubnets": ["10.244.0.0/16"], "serviceSubnets": ["10.96.0.0/12"]},
        "token": bundle["secrets"]["bootstraptoken"],
        "ca": {"crt": certs["k8s"]["crt"], "key": certs["k8s"]["key"] if control else ""},
        "discovery": {"enabled": bool(o["discovery"]), "registries": {"kubernetes": {"disabled": True}, "service": {}}},
    }
    if control:
        cluster.update(
            {
                "secretboxEncryptionSecret": bundle["secrets"]["secretboxencryptionsecret"],
                "aggregatorCA": certs["k8saggregator"],
                "serviceAccount": {"key": certs["k8sserviceaccount"]["key"]},
                "apiServer": {
                    "image": f"registry.k8s.io/kube-apiserver:{kube}",
                    "certSANs": [_host(endpoint), *o["sans"]],
                    "disablePodSecurityPolicy": True,
                },
                "controllerManager": {"image": f"registry.k8s.io/kube-controller-manager:{kube}"},
                "proxy": {"image": f"registry.k8s.io/kube-proxy:{kube}"},
                "scheduler": {"image": f"registry.k8s.io/kube-scheduler:{kube}"},
                "etcd": {"ca": certs["etcd"]},
                "extraManifests": [],
                "inlineManifests": [],
            }
        )
    return {"version": "v1alpha1", "debug": False, "persist": True, "machine": machine, "cluster": cluster}


def _talosconfig(name: str, endpoints: list[str], bundle: dict[str, Any]) -> dict[str, Any]:
    return {
        "context": name,
        "contexts": {
            name: {
                "endpoints": endpoints,
                "ca": bundle["certs"]["os"]["crt"],
                "crt": _fake_pem("CERTIFICATE"),
                "key": _fake_pem("ED25519 PRIVATE KEY"),
            }
        },
    }


def _kubeconfig(name: str, context: str, server: str, ca: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [
            {
                "name": context,
                "user": {
                    "client-certificate-data": _fake_pem("CERTIFICATE"),
                    "client-key-data": _fake_pem("EC PRIVATE KEY"),
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": name, "namespace": "default", "user": context}}],
        "current-context": context,
    }


def _load_config_docs(text: str, shown: str) -> list[Any]:
    try:
        docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise _Fail(f"failed to parse machine configuration {shown!r}: yaml: {' '.join(str(exc).split())}") from None
    if not docs:
        raise _Fail(f"failed to parse machine configuration {shown!r}: the file is empty")
    return docs


def _v1alpha1(docs: list[Any]) -> dict[str, Any]:
    for doc in docs:
        if isinstance(doc, dict) and ("machine" in doc or doc.get("version") == "v1alpha1"):
            return doc
    raise _Fail(
        "error applying new configuration: rpc error: code = InvalidArgument desc = configuration validation "
        "failed: 1 error occurred:\n\t* the file is not a Talos machine config (no v1alpha1 document with "
        "machine and cluster sections)"
    )


def _validate_machine_config(config: dict[str, Any]) -> list[str]:
    problems = []
    machine = config.get("machine")
    cluster = config.get("cluster")
    if not isinstance(machine, dict):
        return ["machine instructions are required"]
    if machine.get("type") not in ("controlplane", "worker"):
        problems.append(f"unknown machine type {machine.get('type')!r} (expected controlplane or worker)")
    if not isinstance(cluster, dict):
        return problems + ["cluster instructions are required"]
    if not _dig(cluster, "controlPlane.endpoint"):
        problems.append("cluster.controlPlane.endpoint is required")
    if not cluster.get("id") or not cluster.get("secret"):
        problems.append("cluster.id and cluster.secret are required (generate the config from a secrets bundle)")
    if not _dig(machine, "ca.crt"):
        problems.append("machine.ca.crt is required")
    if not machine.get("token"):
        problems.append("machine.token is required")
    return problems


def _cluster_id(config: dict[str, Any]) -> str:
    return hashlib.sha256(f"{config['cluster']['id']}/{config['cluster']['secret']}".encode()).hexdigest()[:16]


def _kubernetes_version(config: dict[str, Any]) -> str:
    for image in (_dig(config, "cluster.apiServer.image"), _dig(config, "machine.kubelet.image")):
        if isinstance(image, str) and ":" in image:
            version = _k8s(image.rsplit(":", 1)[1])
            if version is not None:
                return _k8s_text(version)
    return DEFAULT_KUBERNETES_VERSION


def _config_vips(config: dict[str, Any]) -> list[str]:
    vips = []
    for interface in _dig(config, "machine.network.interfaces") or []:
        if isinstance(interface, dict):
            ip = _dig(interface, "vip.ip")
            if ip:
                vips.append(str(ip))
            for vlan in interface.get("vlans") or []:
                if isinstance(vlan, dict) and _dig(vlan, "vip.ip"):
                    vips.append(str(_dig(vlan, "vip.ip")))
    return vips


def _config_addresses(config: dict[str, Any]) -> list[str]:
    addresses = []
    for interface in _dig(config, "machine.network.interfaces") or []:
        if isinstance(interface, dict):
            addresses += [str(a) for a in interface.get("addresses") or []]
    return addresses


def _in_network(ip: str, address: str) -> bool:
    try:
        return ipaddress.ip_interface(address).ip == ipaddress.ip_address(ip)
    except ValueError:
        return True  # not an IP: nothing to compare


def _default_hostname(ip: str) -> str:
    digest = hashlib.sha256(ip.encode()).hexdigest()
    return f"talos-{digest[:3]}-{digest[3:6]}"


# ---- patches


def _apply_patches(docs: list[Any], patches: list[str], call: _Call) -> list[Any]:
    """Apply ``--config-patch`` values (``@file`` or inline YAML/JSON): strategic merge or JSON 6902."""
    docs = copy.deepcopy(docs)
    for patch in patches:
        if patch.startswith("@"):
            name = patch[1:]
            try:
                text = call.path(name).read_text(encoding="utf-8")
            except OSError:
                raise _Fail(f"error parsing config JSON patch: open {name}: no such file or directory") from None
        elif patch.startswith(("http://", "https://")):
            raise _NotSimulated("simulation: config patches from URLs are not simulated")
        else:
            text = patch
        try:
            parts = [p for p in yaml.safe_load_all(text) if p is not None]
        except yaml.YAMLError as exc:
            raise _Fail(f"error parsing config JSON patch: {' '.join(str(exc).split())}") from None
        for part in parts:
            if isinstance(part, list):
                base = _v1alpha1_index(docs)
                docs[base] = _json6902(docs[base], part)
            elif isinstance(part, dict) and "apiVersion" in part and "kind" in part:
                same = [
                    i
                    for i, d in enumerate(docs)
                    if isinstance(d, dict) and d.get("kind") == part["kind"] and d.get("name") == part.get("name")
                ]
                if same:
                    docs[same[0]] = _merge(docs[same[0]], part)
                else:
                    docs.append(part)
            elif isinstance(part, dict):
                base = _v1alpha1_index(docs)
                docs[base] = _merge(docs[base], part)
            else:
                raise _Fail(
                    "error parsing config JSON patch: a patch must be a mapping (strategic merge) or a list "
                    "of operations (JSON 6902)"
                )
    return docs


def _v1alpha1_index(docs: list[Any]) -> int:
    for index, doc in enumerate(docs):
        if isinstance(doc, dict) and ("machine" in doc or doc.get("version") == "v1alpha1"):
            return index
    docs.insert(0, {"version": "v1alpha1"})
    return 0


def _merge(base: Any, patch: Any) -> Any:
    """Talos' strategic merge, simplified: mappings merge deeply, lists append, ``$patch: delete`` removes."""
    if isinstance(base, dict) and isinstance(patch, dict):
        result = dict(base)
        for key, value in patch.items():
            if isinstance(value, dict) and value.get("$patch") == "delete":
                result.pop(key, None)
            elif key in result:
                result[key] = _merge(result[key], value)
            else:
                result[key] = value
        return result
    if isinstance(base, list) and isinstance(patch, list):
        return base + [item for item in patch if item not in base]
    return patch


def _json6902(doc: Any, operations: list[Any]) -> Any:
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise _Fail("error parsing config JSON patch: each operation needs op and path")
        parts = [p.replace("~1", "/").replace("~0", "~") for p in str(op["path"]).split("/")[1:]]
        if not parts:
            raise _Fail(f"error applying JSON patch: unsupported path {op['path']!r}")
        parent = doc
        for part in parts[:-1]:
            if isinstance(parent, list):
                parent = parent[int(part)]
            else:
                if part not in parent and op["op"] == "add":
                    parent[part] = {}
                if part not in parent:
                    raise _Fail(f"error applying JSON patch: path {op['path']!r} does not exist")
                parent = parent[part]
        last = parts[-1]
        kind = op["op"]
        if kind in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op.get("value"))
                elif kind == "add":
                    parent.insert(int(last), op.get("value"))
                else:
                    parent[int(last)] = op.get("value")
            else:
                if kind == "replace" and last not in parent:
                    raise _Fail(
                        f"error applying JSON patch: replace operation does not apply: doc is missing key: {op['path']}"
                    )
                parent[last] = op.get("value")
        elif kind == "remove":
            try:
                if isinstance(parent, list):
                    del parent[int(last)]
                else:
                    del parent[last]
            except (KeyError, IndexError, ValueError):
                raise _Fail(
                    f"error applying JSON patch: remove operation does not apply: doc is missing path: {op['path']}"
                ) from None
        else:
            raise _NotSimulated(f"simulation: JSON patch operation {kind!r} is not simulated (add, replace, remove)")
    return doc


# ---------------------------------------------------------------- small helpers


def _host(endpoint: str) -> str:
    """The host of an endpoint given as URL, host:port or bare host/IP."""
    text = endpoint.strip()
    if "://" in text:
        return urlsplit(text).hostname or text
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    if text.count(":") == 1:
        return text.split(":", 1)[0]
    return text


def _ip_key(ip: str) -> tuple[int, Any]:
    try:
        return (0, ipaddress.ip_address(ip))
    except ValueError:
        return (1, ip)


def _image_version(image: str) -> str | None:
    match = re.search(r":(v\d+\.\d+\.\d+)$", image)
    return match.group(1) if match else None


def _k8s(text: str) -> tuple[int, int, int] | None:
    match = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)", str(text).strip())
    return (int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None


def _k8s_text(version: tuple[int, int, int]) -> str:
    return "v{}.{}.{}".format(*version)


def _default_images(talos: str, kube: str) -> list[str]:
    return [
        "ghcr.io/siderolabs/flannel:v0.26.4",
        "registry.k8s.io/coredns/coredns:v1.12.0",
        "gcr.io/etcd-development/etcd:v3.5.18",
        f"registry.k8s.io/kube-apiserver:{kube}",
        f"registry.k8s.io/kube-controller-manager:{kube}",
        f"registry.k8s.io/kube-scheduler:{kube}",
        f"registry.k8s.io/kube-proxy:{kube}",
        f"ghcr.io/siderolabs/kubelet:{kube}",
        f"ghcr.io/siderolabs/installer:{talos}",
        "registry.k8s.io/pause:3.10",
    ]


def _sha(version: str) -> str:
    return hashlib.sha1(version.encode()).hexdigest()[:8]


def _disk_bytes(config: Mapping[str, Any]) -> int:
    for key in ("scsi0", "virtio0", "sata0", "ide0"):
        match = re.search(r"size=(\d+(?:\.\d+)?)([KMGT]?)", str(config.get(key, "")))
        if match:
            factor = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "": 1}[match.group(2)]
            return int(float(match.group(1)) * factor)
    return 10 * 1024**3


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "".join("   ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip() + "\n" for row in rows)


def _write(path: Path, text: str, mode: int) -> None:
    """Write a file whole (temporary file, then rename), with ``mode`` from the start."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temp, mode)
        os.replace(temp, path)
    except OSError as exc:
        raise _Fail(f"open {path}: {exc.strerror.lower() if exc.strerror else exc}") from None
