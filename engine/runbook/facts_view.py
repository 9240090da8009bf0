"""What templates see of the cluster: ``cluster``, ``profile.members``, ``plan.template``.

Small read-only views over the ``Facts`` a run read at the edge. They never read anything: each
access asks ``current()`` for the snapshot the runner holds now (a run refreshes it before a step
that reads facts when a changing step finished since; a dry-run gives the facts it read, plus what
earlier steps of the plan create, change or destroy). So rendering stays a pure function of the
context, and the same view serves a run, a dry-run and ``validate``.

Three answers a template may get:

- the value, as plain data (a VM is a dict: ``vm.vmid``, ``vm.tags``...);
- an ``Unknown`` when the value is not known before the run: offline (``known after run:
  cluster.vms``), or because an earlier step of the plan creates, changes or destroys it (``known
  after run: cluster.vms[1031].status (step shutdown changes it)``), so a review never shows what
  the run would not see;
- a ``FactMissing`` error (a ``ValueError``, which the renderer turns into a located problem) for a
  VM, node or VMID range that is not there: ``cluster.vms[99999]`` names what exists instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ..load.facts import ClusterNode, ClusterStorage, ExistingVm, Facts, Planned, carries_all, members
from .unknown import Unknown, UnknownValue

#: Returns the facts to answer from now; None when the cluster was not read (offline, validate).
Current = Callable[[], Facts | None]

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?)(?:i?B)?\s*$", re.IGNORECASE)
#: The PVE resources a guest's planned change is kept under (``disk`` and ``snapshot`` ids are ``VMID/...``).
_GUEST_RESOURCES = ("vm", "container", "guest")
#: Which fact of a VM a planned change of a PVE field makes unknown.
_VM_FIELDS = {
    "status": ("status", "uptime"),
    "node": ("node",),
    "memory": ("memory_bytes",),
    "cores": ("cpus",),
    "sockets": ("cpus",),
    "name": ("name",),
    "tags": ("tags",),
    "template": ("template",),
    "size": ("disk_bytes",),
    "lock": ("lock",),
}


class FactMissing(ValueError):
    """A template asked for a VM, node, storage or VMID range that is not there."""


def to_bytes(size: Any) -> int | Unknown:
    """``'100G'`` -> 107374182400: PVE's sizes (K, M, G, T, P; powers of 1024; ``GiB``/``GB`` read
    the same), or a number of bytes as is. The ``bytes`` filter and function. A size known only at run
    time (``bytes(steps.current.size)`` in a dry-run) stays unknown, as any value computed from it."""
    if isinstance(size, Unknown):
        return size
    if isinstance(size, bool):
        raise ValueError(f"bytes() takes a size such as '100G' or a number of bytes, not {size!r}")
    if isinstance(size, (int, float)):
        return int(size)
    found = _SIZE.match(str(size))
    if found is None:
        raise ValueError(
            f"bytes() takes a size such as '100G', '512M' or '2T' (K, M, G, T: powers of 1024), not {size!r}"
        )
    return int(float(found[1]) * _UNITS[found[2].upper()])


def tagged(vms: Iterable[Any], tags: Any) -> list[Any]:
    """The filter ``vms | tagged(['a', 'b'])``: the VMs carrying every one of ``tags`` (a list or one tag)."""
    wanted = [tags] if isinstance(tags, str) else list(tags)
    return [vm for vm in vms if carries_all(_get(vm, "tags") or (), wanted)]


def _get(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


def _touching(facts: Facts, vmid: int) -> list[Planned]:
    """Planned changes of the guest ``vmid`` (its disks and snapshots included), in plan order."""
    own = str(vmid)
    return [
        p
        for p in facts.planned
        if (p.resource in _GUEST_RESOURCES and p.id == own) or (p.resource == "disk" and p.id.startswith(own + "/"))
    ]


def _by(planned: Planned) -> str:
    return f"step {planned.step}" if planned.step else "an earlier step"


def _listing_moved(facts: Facts) -> Planned | None:
    """The first planned change that changes which VMs there are (or which carry which tags): after
    it, a listing of the cluster's VMs is known only after run."""
    for planned in facts.planned:
        if planned.resource not in _GUEST_RESOURCES:
            continue
        if planned.action in ("create", "destroy") or {"tags", "template"} & set(planned.fields):
            return planned
    return None


def vm_dict(vm: ExistingVm, facts: Facts | None = None, origin: str = "") -> dict[str, Any]:
    """One VM as templates see it; fields an earlier step of the plan changes are Unknown."""
    f = vm.figures
    data: dict[str, Any] = {
        "vmid": vm.vmid,
        "name": vm.name,
        "node": vm.node,
        "status": vm.status,
        "tags": list(vm.tags),
        "template": vm.template,
        "type": vm.type,
        "lock": vm.lock,
        "disk_bytes": f.maxdisk,
        "memory_bytes": f.maxmem,
        "memory_used_bytes": f.mem,
        "cpus": f.maxcpu,
        "cpu": f.cpu,
        "uptime": f.uptime,
    }
    for planned in _touching(facts, vm.vmid) if facts is not None else ():
        for name in planned.fields or (("status",) if planned.status else ()):
            for key in _VM_FIELDS.get(name, ()):
                data[key] = Unknown(f"{origin}.{key} ({_by(planned)} changes it)")
    return data


def node_dict(node: ClusterNode) -> dict[str, Any]:
    f = node.figures
    free = f.maxmem - f.mem if f.maxmem is not None and f.mem is not None else None
    return {
        "name": node.name,
        "status": node.status,
        "online": node.status == "online",
        "cpus": f.maxcpu,
        "cpu": f.cpu,
        "memory_bytes": f.maxmem,
        "memory_used_bytes": f.mem,
        "memory_free_bytes": free,
        "disk_bytes": f.maxdisk,
        "disk_used_bytes": f.disk,
        "uptime": f.uptime,
    }


def storage_dict(storage: ClusterStorage) -> dict[str, Any]:
    avail = storage.size - storage.used if storage.size is not None and storage.used is not None else None
    return {
        "name": storage.name,
        "node": storage.node,
        "status": storage.status,
        "shared": storage.shared,
        "content": list(storage.content),
        "size_bytes": storage.size,
        "used_bytes": storage.used,
        "avail_bytes": avail,
    }


def _shown(key: Any) -> str:
    return f'"{key}"' if isinstance(key, str) else str(key)


class VmList:
    """``cluster.vms`` and ``profile.members``, in VMID order: iterate, ``| length``, ``1031 in ...``, and index by VMID
    (``[1031]``, ``["1031"]``) or name (``["stg-cp01"]``); ``.get(key)`` gives none when absent."""

    def __init__(self, facts: Facts, vms: Iterable[ExistingVm], origin: str):
        self._facts, self._origin = facts, origin
        self._vms = tuple(sorted(vms, key=lambda vm: vm.vmid))  # in VMID order, whatever the API's order

    def _known(self) -> None:
        moved = _listing_moved(self._facts)
        if moved is not None:
            raise UnknownValue(Unknown(f"{self._origin} ({_by(moved)} changes which VMs there are)"))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._known()
        return iter([self._item(vm) for vm in self._vms])

    def __len__(self) -> int:
        self._known()
        return len(self._vms)

    def __contains__(self, key: Any) -> bool:
        self._known()
        if isinstance(key, Mapping):
            key = key.get("vmid")
        return self._find(key) is not None

    def __getitem__(self, key: Any) -> Any:
        found = self._find(key)
        if found is not None:
            creates = [p for p in _touching(self._facts, found.vmid) if p.action in ("create", "destroy")]
            if creates:
                return Unknown(f"{self._origin}[{_shown(key)}] ({_by(creates[-1])} {creates[-1].action}s it)")
            return self._item(found)
        moved = _listing_moved(self._facts)
        if moved is not None:
            return Unknown(f"{self._origin}[{_shown(key)}] ({_by(moved)} changes which VMs there are)")
        some = ", ".join(f"{vm.vmid} {vm.name}" for vm in self._vms[:8]) or "none"
        raise FactMissing(
            f"no VM {_shown(key)} in {self._origin} ({some}{', ...' if len(self._vms) > 8 else ''}); "
            f"use {self._origin}.get({_shown(key)}) where it may be absent"
        )

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self[key]
        except FactMissing:
            return default

    def _find(self, key: Any) -> ExistingVm | None:
        if isinstance(key, bool):
            return None
        if isinstance(key, int) or (isinstance(key, str) and key.strip().isdigit()):
            return next((vm for vm in self._vms if vm.vmid == int(key)), None)
        return next((vm for vm in self._vms if vm.name == key), None)

    def _item(self, vm: ExistingVm) -> dict[str, Any]:
        return vm_dict(vm, self._facts, f"{self._origin}[{vm.vmid}]")

    def __repr__(self) -> str:
        return f"<{self._origin}: {len(self._vms)} VMs>"


class _Named:
    """``cluster.nodes`` and ``cluster.storages``: a list of dicts, also indexed by name."""

    what = "item"

    def __init__(self, items: list[dict[str, Any]], origin: str):
        self._items, self._origin = items, origin

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Any) -> bool:
        return any(item["name"] == key for item in self._items)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        found = [item for item in self._items if item["name"] == key]
        if not found:
            names = ", ".join(dict.fromkeys(item["name"] for item in self._items)) or "none"
            raise FactMissing(
                f"no {self.what} {_shown(key)} in {self._origin} ({names}); "
                f"use {self._origin}.get({_shown(key)}) where it may be absent"
            )
        return self._one(key, found)

    def _one(self, key: Any, found: list[dict[str, Any]]) -> dict[str, Any]:
        return found[0]

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self[key]
        except FactMissing:
            return default


class NodeList(_Named):
    what = "node"


class StorageList(_Named):
    """A shared storage is listed once per node with the same figures: ``["ceph"]`` is any of them. A
    storage of each node's own (``local``) under one name is several: pick one by its node."""

    what = "storage"

    def _one(self, key: Any, found: list[dict[str, Any]]) -> dict[str, Any]:
        if len(found) > 1 and not found[0]["shared"]:
            nodes = ", ".join(item["node"] for item in found)
            raise FactMissing(
                f"storage {_shown(key)} is a storage of each node ({nodes}), not one storage: pick a node's with "
                f"{self._origin} | selectattr('name', '==', {_shown(key)}) | selectattr('node', '==', NODE) | first"
            )
        return found[0]


class ClusterView:
    """``cluster``: the live cluster (``config.cluster`` is the config's section)."""

    def __init__(self, current: Current, vmid_ranges: Mapping[str, Any], reserved: Iterable[int] = ()):
        self._current, self._ranges, self._reserved = current, vmid_ranges, frozenset(reserved)

    def _facts(self) -> Facts | None:
        facts = self._current()
        return None if facts is None or facts.offline else facts

    @property
    def vms(self) -> Any:
        facts = self._facts()
        return Unknown("cluster.vms") if facts is None else VmList(facts, facts.vms, "cluster.vms")

    @property
    def nodes(self) -> Any:
        facts = self._facts()
        if facts is None:
            return Unknown("cluster.nodes")
        return NodeList([node_dict(node) for node in sorted(facts.nodes, key=lambda n: n.name)], "cluster.nodes")

    @property
    def storages(self) -> Any:
        facts = self._facts()
        if facts is None:
            return Unknown("cluster.storages")
        ordered = sorted(facts.storages, key=lambda s: (s.name, s.node))
        return StorageList([storage_dict(s) for s in ordered], "cluster.storages")

    @property
    def name(self) -> Any:
        facts = self._facts()
        return Unknown("cluster.name") if facts is None or not facts.name else facts.name

    def next_vmid(self, within: Any) -> Any:
        """The lowest VMID of ``within`` (a ``vmid_ranges`` name of the cluster config, or ``[low, high]``)
        that no VM on the cluster, no VM an earlier step of the plan creates, and no VM of the profile's
        plan has."""
        low, high = self._range(within)
        shown = f"cluster.next_vmid({within!r})"
        facts = self._facts()
        if facts is None:
            return Unknown(shown)
        used = {vm.vmid for vm in facts.vms} | set(self._reserved)
        used |= {int(p.id) for p in facts.planned if p.resource in _GUEST_RESOURCES and p.id.isdigit()}
        free = next((vmid for vmid in range(low, high + 1) if vmid not in used), None)
        if free is None:
            raise FactMissing(f"{shown}: every VMID from {low} to {high} is taken")
        return free

    def _range(self, within: Any) -> tuple[int, int]:
        if isinstance(within, str):
            if within not in self._ranges:
                names = ", ".join(self._ranges) or "none"
                raise FactMissing(
                    f"cluster.next_vmid({within!r}): no range {within!r} in vmid_ranges of the cluster config "
                    f"(ranges: {names}); or give [low, high]"
                )
            spec = self._ranges[within]
            return int(spec["min"]), int(spec["max"])
        if isinstance(within, (list, tuple)) and len(within) == 2 and all(type(v) is int for v in within):
            low, high = within
            if low <= high:
                return low, high
        raise FactMissing(
            f"cluster.next_vmid({within!r}): give a vmid_ranges name of the cluster config (such as 'vms') "
            "or [low, high] with low <= high"
        )

    def __repr__(self) -> str:
        return "<cluster facts>"


class ProfileView(dict):  # type: ignore[type-arg]
    """``profile``: the profile's fields, and ``profile.members`` (the one tag-membership rule, from
    ``engine.load.facts.members``). A dict, so it passes to jq and JSON as the profile itself."""

    def __init__(self, data: Mapping[str, Any], current: Current):
        super().__init__(data)
        self._current = current

    @property
    def members(self) -> Any:
        facts = self._current()
        if facts is None or facts.offline:
            return Unknown("profile.members")
        return VmList(facts, members(facts.vms, (str(t) for t in self.get("tags") or ())), "profile.members")


class PlanView(dict):  # type: ignore[type-arg]
    """``plan``: the profile's plan, and ``plan.template`` (the profile's template as the cluster has it:
    ``vmid``, ``node``, ``exists``).

    A planned VM's ``existing`` (and ``current_node``) say what the plan found, with one correction:
    a VM the run has destroyed since (or, in a dry-run, that an earlier step of the plan destroys) no
    longer exists. So a runbook that tears a cluster down and creates it again in one run
    (``cluster-rebuild``) clones the VMs again instead of skipping them as existing. A VM created by
    the run keeps ``existing: false``: it is the plan's, made now."""

    #: The lists of planned VMs whose ``existing`` is corrected against the cluster as it is now.
    _VM_LISTS = ("vms", "controlplanes", "workers")

    def __init__(self, data: Mapping[str, Any], template: Any, current: Current):
        super().__init__(data)
        self._template, self._current = template, current

    def __getitem__(self, key: Any) -> Any:
        if key == "new_vms":
            return [vm for vm in self["vms"] if not vm["existing"]]
        value = super().__getitem__(key)
        return [self._now(vm) for vm in value] if key in self._VM_LISTS else value

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default

    def _now(self, vm: Any) -> Any:
        """``vm`` with ``existing: false`` when it is gone since the plan was made."""
        if not isinstance(vm, Mapping) or not vm.get("existing"):
            return vm
        facts = self._current()
        if facts is None or facts.offline:
            return vm
        vmid = int(vm["vmid"])
        destroyed = any(p.action == "destroy" for p in _touching(facts, vmid) if p.resource in _GUEST_RESOURCES)
        found = facts.vm(vmid)
        if destroyed or found is None or found.name != vm.get("name"):
            return {**vm, "existing": False, "current_node": None}
        return vm

    @property
    def template(self) -> Any:
        if self._template is None:
            return None
        vmid = int(self._template)
        facts = self._current()
        if facts is None or facts.offline:
            return Unknown("plan.template")
        touched = [p for p in _touching(facts, vmid) if p.action in ("create", "destroy") or "node" in p.fields]
        if touched:
            return Unknown(f"plan.template ({_by(touched[-1])} changes template {vmid})")
        found = facts.vm(vmid)
        return {"vmid": vmid, "node": found.node if found else None, "exists": found is not None}
