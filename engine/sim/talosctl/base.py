"""What every simulated talosctl subcommand shares: failures, arguments, the call with its talosconfig and network."""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import secrets as random_secrets
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

import yaml

from ..state import SimVm

if TYPE_CHECKING:
    from ...runbook.actions import TalosctlCommand
    from ..talos import SimTalosctlExecutor


DEFAULT_KUBERNETES_VERSION = "v1.32.3"


class Fail(Exception):
    """talosctl failed: ``text`` goes to stderr and the exit code is ``code``."""

    def __init__(self, text: str, code: int = 1):
        super().__init__(text)
        self.text = text
        self.code = code


class NotSimulated(Exception):
    pass


def _refused(what: str, ip: str, why: str) -> Fail:
    return Fail(
        f'error {what}: rpc error: code = Unavailable desc = connection error: desc = "transport: Error while '
        f'dialing: dial tcp {ip}:50000: connect: connection refused"\nsimulation: {why}'
    )


class Args:
    def __init__(self, path: tuple[str, ...], flags: dict[str, Any], positional: list[str]):
        self.path = path
        self.flags = flags
        self.positional = positional

    def get(self, name: str, default: Any = None) -> Any:
        return self.flags.get(name, default)

    def has(self, name: str) -> bool:
        return name in self.flags


class Command(NamedTuple):
    """A simulated subcommand: its handler, its flags (name -> (kind, shorthand)) and how many arguments it takes."""

    run: Callable[[Call], None]
    flags: dict[str, tuple[str, str | None]]
    min_args: int
    max_args: int


class Call:
    """One talosctl invocation: its paths, its talosconfig and its output."""

    def __init__(self, executor: SimTalosctlExecutor, command: TalosctlCommand):
        self.x = executor
        self.world = executor.world
        self.command = command
        self.cwd = Path(command.cwd) if command.cwd is not None else Path.cwd()
        self._out: list[str] = []
        self._err: list[str] = []
        self.args: Args

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

    # -- the network

    def machine(self, ip: str) -> tuple[str, SimVm | None, dict[str, Any] | None]:
        """(state, vm, record): state is absent, stopped, maintenance or installed."""
        vm = self.x.vm_lookup(ip)
        if vm is None or vm.template:
            return "absent", None, None
        record = self.world.reconcile(ip, vm)
        if vm.status != "running":
            return "stopped", vm, record
        return ("installed" if record else "maintenance"), vm, record

    def down_reason(self, ip: str, state: str, vm: SimVm | None) -> str:
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

    def insecure_targets(self, what: str) -> list[tuple[str, SimVm]]:
        """Maintenance-mode nodes reached directly (``--insecure``): the nodes given, or the endpoints."""
        targets = self.nodes_flag() or list(self.args.get("endpoints") or [])
        if not targets:
            raise Fail(
                "error: nodes are not set for the command: please use `--nodes` flag or configuration "
                "file to set the nodes to run the command against"
            )
        found = []
        for ip in targets:
            state, vm, record = self.machine(ip)
            if state in ("absent", "stopped"):
                raise _refused(what, ip, self.down_reason(ip, state, vm))
            if state == "installed":
                raise Fail(
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
            raise Fail(
                f"error constructing client: failed to determine endpoints\nsimulation: there is no "
                f"talosconfig at {path} (set TALOSCONFIG or --talosconfig, or run talosctl gen config)"
            ) from None
        except yaml.YAMLError as exc:
            raise Fail(f"failed to parse config: {' '.join(str(exc).split())}") from None
        if not isinstance(data, dict):
            raise Fail(f"failed to parse config: {path} is not a talosconfig")
        name = self.args.get("context") or data.get("context")
        contexts = data.get("contexts") or {}
        if not name or name not in contexts:
            raise Fail(f"error constructing client: context {name!r} is not defined in 'talosconfig'")
        return data, name, contexts[name] or {}

    def connect(self, what: str) -> tuple[str, list[tuple[str, SimVm, dict[str, Any]]]]:
        """Authenticated calls: (cluster id, [(ip, vm, record)] of the target nodes), or Fail as talosctl fails."""
        _data, _name, context = self.talosconfig()
        endpoints = list(self.args.get("endpoints") or context.get("endpoints") or [])
        if not endpoints:
            raise Fail("error constructing client: failed to determine endpoints")
        nodes = self.nodes_flag() or list(context.get("nodes") or []) or endpoints[:1]
        ca = context.get("ca")
        failures: list[tuple[int, Fail]] = []  # (rank, failure): a node in maintenance says more than a refusal
        cluster_id: str | None = None
        for endpoint in endpoints:
            host = host_of(endpoint)
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
                        Fail(
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
            raise Fail(
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
                raise Fail(
                    f"error {what}: 1 error occurred:\n\t* {ip}: rpc error: code = Unavailable desc = "
                    f"connection error: node is in maintenance mode\nsimulation: {ip} has no machine config "
                    "yet: apply one with talosctl apply-config --insecure"
                )
            assert vm is not None and record is not None
            if record["cluster_id"] != cluster_id:
                raise Fail(
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

    def single(self, what: str) -> tuple[str, str, SimVm, dict[str, Any]]:
        cluster_id, targets = self.connect(what)
        if len(targets) != 1:
            raise Fail(f"error {what}: this command takes exactly one node (--nodes), got {len(targets)}")
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
            for ip in sorted(group, key=ip_key):
                state, vm, record = self.machine(ip)
                if state in ("absent", "stopped"):
                    problems.append(f"{ip}: not reachable ({self.down_reason(ip, state, vm)})")
                elif state == "maintenance":
                    problems.append(f"{ip}: in maintenance mode (no machine config applied)")
                elif record is not None and record.get("cluster_id") != cluster_id:
                    problems.append(f"{ip}: belongs to cluster {record.get('cluster_name')}")
                elif record is not None and record.get("role") != role:
                    problems.append(f"{ip}: is a {record.get('role')}, expected a {role}")
                elif record is not None and record.get("etcd_removed"):
                    problems.append(f"{ip}: its etcd member was removed from the cluster (replace or reset the node)")
        if not cluster.get("bootstrapped_on"):
            problems.append("etcd is not bootstrapped (run talosctl bootstrap on one control plane node)")
        return sorted(cp_set, key=ip_key), sorted(worker_set, key=ip_key), problems


def host_of(endpoint: str) -> str:
    """The host of an endpoint given as URL, host:port or bare host/IP."""
    text = endpoint.strip()
    if "://" in text:
        return urlsplit(text).hostname or text
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    if text.count(":") == 1:
        return text.split(":", 1)[0]
    return text


def ip_key(ip: str) -> tuple[int, Any]:
    try:
        return (0, ipaddress.ip_address(ip))
    except ValueError:
        return (1, ip)


def image_version(image: str) -> str | None:
    match = re.search(r":(v\d+\.\d+\.\d+)$", image)
    return match.group(1) if match else None


def parse_k8s(text: str) -> tuple[int, int, int] | None:
    match = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)", str(text).strip())
    return (int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None


def k8s_text(version: tuple[int, int, int]) -> str:
    return "v{}.{}.{}".format(*version)


def fake_pem(kind: str) -> str:
    """A PEM block (base64, as Talos stores them) that says it is simulated; not a usable key."""
    body = base64.b64encode(f"runbook simulation {kind.lower()} ".encode() + random_secrets.token_bytes(48)).decode()
    pem = f"-----BEGIN {kind}-----\n" + "\n".join(textwrap.wrap(body, 64)) + f"\n-----END {kind}-----\n"
    return base64.b64encode(pem.encode()).decode()


def render_table(rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "".join("   ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip() + "\n" for row in rows)


def write_file(path: Path, text: str, mode: int) -> None:
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
        raise Fail(f"open {path}: {exc.strerror.lower() if exc.strerror else exc}") from None
