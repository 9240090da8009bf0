"""What a run read from the cluster, as one frozen snapshot taken at the edge.

The cluster is read once, before planning (see ``engine.run.execution.read_facts``); everything after
that (the VM plan, template rendering, an executor's ``preview``) is computed from this snapshot
and stays pure: no hidden GET in the middle of planning, and a plan can later be checked against
the facts it was computed from. The constructors take the API's own answers, so what the engine
fetches and what it knows are one thing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class ExistingVm:
    """A VM (or container) on the cluster, as ``/cluster/resources`` lists it."""

    vmid: int
    name: str
    node: str
    tags: tuple[str, ...] = ()
    template: bool = False
    status: str = ""  # running, stopped... ("" when the listing did not say)
    lock: str | None = None  # the guest's lock (backup, migrate, clone...), None when free
    type: str = "qemu"  # qemu | lxc
    figures: Figures = field(default_factory=lambda: Figures())

    def carries(self, tags: Iterable[str]) -> bool:
        """Whether this VM carries every one of ``tags`` (see ``members``)."""
        return carries_all(self.tags, tags)


def carries_all(have: Iterable[str], wanted: Iterable[str]) -> bool:
    """Whether the tags ``have`` include every one of ``wanted``: what "tagged" means everywhere."""
    return set(map(str, wanted)) <= set(map(str, have))


@dataclass(frozen=True)
class Figures:
    """What ``/cluster/resources`` says of a guest's or a node's size and use, in PVE's units: bytes
    for memory and disk, CPUs for ``maxcpu``, a share of them for ``cpu`` (0.25 = a quarter), seconds
    for ``uptime``. Each is None when the answer did not carry it."""

    cpu: float | None = None
    maxcpu: int | None = None
    mem: int | None = None
    maxmem: int | None = None
    disk: int | None = None
    maxdisk: int | None = None
    uptime: int | None = None

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Figures:
        def number(name: str, kind: type = int) -> Any:
            value = item.get(name)
            try:
                return None if value is None or value == "" else kind(value)
            except (TypeError, ValueError):
                return None

        return cls(
            number("cpu", float),
            number("maxcpu"),
            number("mem"),
            number("maxmem"),
            number("disk"),
            number("maxdisk"),
            number("uptime"),
        )


def members(vms: Iterable[ExistingVm], tags: Iterable[str]) -> tuple[ExistingVm, ...]:
    """The VMs of a profile: QEMU VMs (not templates) carrying ALL of its ``tags``. The one
    tag-membership rule of the engine: placement's existing VMs, ``profile.members`` in templates
    (status, teardown) and anything else that asks "which VMs are this cluster's" use it. A profile
    always has a tag no other profile has (validate enforces it), so no other cluster's VM is one.
    No tags select nothing (rather than every VM)."""
    wanted = tuple(tags)
    if not wanted:
        return ()
    return tuple(vm for vm in vms if vm.type == "qemu" and not vm.template and vm.carries(wanted))


@dataclass(frozen=True)
class ClusterNode:
    """A PVE node as the cluster sees it."""

    name: str
    status: str = ""  # online, offline, unknown
    figures: Figures = field(default_factory=lambda: Figures())


@dataclass(frozen=True)
class ClusterStorage:
    """One storage as one node sees it (a shared storage appears once per node)."""

    name: str
    node: str
    status: str = ""  # available, unknown...
    shared: bool = False
    content: tuple[str, ...] = ()
    used: int | None = None  # bytes in use (PVE's ``disk``)
    size: int | None = None  # bytes in all (PVE's ``maxdisk``)


#: ``Facts.read(path)`` of a path that was not read (offline, or nothing asked for it).
NOT_READ = None


@dataclass(frozen=True)
class Planned:
    """A resource an earlier step of the same plan creates or destroys: what a preview sees instead
    of the cluster (a VM cloned earlier has no values before; a VM destroyed earlier is gone)."""

    resource: str
    id: str
    action: str  # create | destroy | act (an action that leaves the resource with ``status``)
    name: str = ""
    status: str = ""  # the guest's status after it ("" when the action does not say)
    step: str = ""  # the step of the plan that does it ("" when not known)
    fields: tuple[str, ...] = ()  # the fields it sets (PVE's names: status, node, memory, tags, size...)


@dataclass(frozen=True)
class ClusterIdentity:
    """Which cluster answered: its name (PVE's cluster name; a standalone node's own name) and how
    this machine checks its certificates (the CA's digest, or the pinned fingerprints).

    A run belongs to one cluster: a leaf certificate renewed under the same CA is the same cluster;
    another CA, other pins or another name is not, whatever the address says.
    """

    name: str  # "" when the cluster did not say (the token may not read /cluster/status)
    trust: str

    @classmethod
    def from_cluster_status(cls, items: Iterable[Mapping[str, Any]] | None, trust: str) -> ClusterIdentity:
        """From ``GET /cluster/status``: the ``cluster`` entry's name, or the only node's on a standalone one."""
        entries = list(items or ())
        cluster = next((e for e in entries if e.get("type") == "cluster" and e.get("name")), None)
        nodes = [e for e in entries if e.get("type") == "node" and e.get("name")]
        name = cluster["name"] if cluster else (nodes[0]["name"] if len(nodes) == 1 else "")
        return cls(str(name), trust)

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "trust": self.trust}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClusterIdentity:
        return cls(str(data.get("name", "")), str(data.get("trust", "")))

    def differences(self, now: ClusterIdentity) -> list[str]:
        """How ``now`` differs from this identity, in words; empty when it is the same cluster."""
        found = []
        if self.name and now.name and self.name != now.name:
            found.append(f"the cluster is named '{now.name}', not '{self.name}'")
        if self.trust != now.trust:
            found.append(f"its certificates are checked with {now.trust}, not {self.trust}")
        return found

    def __str__(self) -> str:
        return f"cluster '{self.name or 'unnamed'}' ({self.trust})"


@dataclass(frozen=True)
class Facts:
    """The cluster as the run read it: its VMs, nodes and storages (each empty when not read).

    A live dry-run adds what it reads for a review's values before (``with_reads``: a guest's
    config, status, snapshots, each by its API path) and what earlier steps of the plan create or
    destroy (``with_planned``); each returns new facts, so a preview stays a pure function of them.
    ``offline`` says the cluster was not read at all, so values before are unknown, not absent.
    """

    vms: tuple[ExistingVm, ...] = ()
    nodes: tuple[ClusterNode, ...] = ()
    storages: tuple[ClusterStorage, ...] = ()
    reads: tuple[tuple[str, Any], ...] = ()  # (API path, its data; None when the read failed)
    planned: tuple[Planned, ...] = ()
    offline: bool = False
    name: str = ""  # the cluster's name (``GET /cluster/status``; "" when not read)

    def read(self, path: str) -> Any:
        """What a GET of ``path`` answered (its ``data``); ``NOT_READ`` when it was not read or failed."""
        return next((data for known, data in reversed(self.reads) if known == path), NOT_READ)

    def was_read(self, path: str) -> bool:
        return any(known == path for known, _ in self.reads)

    def with_reads(self, reads: Mapping[str, Any]) -> Facts:
        return replace(self, reads=self.reads + tuple(reads.items()))

    def with_planned(self, planned: Iterable[Planned]) -> Facts:
        return replace(self, planned=self.planned + tuple(planned))

    def plan_of(self, resource: str, id: str) -> Planned | None:
        """The last create or destroy of this resource planned by an earlier step, if any."""
        return next(
            (p for p in reversed(self.planned) if p.resource == resource and p.id == id and p.action != "act"), None
        )

    def planned_status(self, resource: str, id: str) -> str:
        """The status an earlier step of the plan leaves this guest in ("" when none says)."""
        return next(
            (p.status for p in reversed(self.planned) if p.resource == resource and p.id == id and p.status), ""
        )

    @classmethod
    def from_cluster_resources(cls, items: Iterable[Mapping[str, Any]] | None) -> Facts:
        """The facts in a ``GET /cluster/resources`` answer (its ``data``), whatever ``type`` it was
        asked for: an item without a ``type`` is a VM, as in the answer for ``type=vm``."""
        vms, nodes, storages = [], [], []
        for item in items or ():
            kind = item.get("type", "qemu")
            if kind in ("qemu", "lxc") and "vmid" in item:
                vms.append(
                    ExistingVm(
                        int(item["vmid"]),
                        str(item.get("name", "")),
                        str(item.get("node", "")),
                        _tags(item.get("tags")),
                        bool(item.get("template")),
                        str(item.get("status", "")),
                        str(item["lock"]) if item.get("lock") else None,
                        kind,
                        Figures.from_item(item),
                    )
                )
            elif kind == "node" and item.get("node"):
                nodes.append(ClusterNode(str(item["node"]), str(item.get("status", "")), Figures.from_item(item)))
            elif kind == "storage" and item.get("storage"):
                storages.append(
                    ClusterStorage(
                        str(item["storage"]),
                        str(item.get("node", "")),
                        str(item.get("status", "")),
                        bool(item.get("shared")),
                        tuple(c for c in str(item.get("content") or "").split(",") if c),
                        Figures.from_item(item).disk,
                        Figures.from_item(item).maxdisk,
                    )
                )
        return cls(tuple(vms), tuple(nodes), tuple(storages))

    def offline_nodes(self) -> tuple[str, ...]:
        """Nodes the cluster reports as not online (offline, unknown): no new VM goes there."""
        return tuple(node.name for node in self.nodes if node.status and node.status != "online")

    def vm(self, vmid: int | str) -> ExistingVm | None:
        """The VM with ``vmid``, if the cluster has it."""
        try:
            wanted = int(vmid)
        except ValueError:
            return None
        return next((vm for vm in self.vms if vm.vmid == wanted), None)


def _tags(value: Any) -> tuple[str, ...]:
    """PVE's tag list: separated by ``;`` in answers, though ``,`` and spaces are accepted on input."""
    return tuple(t for t in str(value or "").replace(",", ";").replace(" ", ";").split(";") if t)
