"""The cluster plan: every VM a profile asks for, with its VMID, node and size.

A pure function of the profile, the cluster config and (when known) the VMs already on the
cluster, so it is tested without a cluster and a dry-run shows exactly what a run will do. A VM
that already exists under its planned name with every profile tag keeps its VMID and node, which
is what makes a second ``cluster-create`` on an existing cluster a no-op instead of a duplicate.
Where a VM belongs is decided the same way whether it exists or not, so planning again gives the
same nodes; an existing VM's present node is kept apart as ``current_node``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import RunbookError
from .facts import ExistingVm, members

ROLES = (("controlplane", "controlplane"), ("workers", "worker"))


class PlanError(RunbookError):
    """The profile cannot be planned on this cluster; ``field`` names the profile field at fault."""

    def __init__(self, field: tuple[str, ...], message: str):
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class PlannedVm:
    """One VM of the plan; ``existing`` is true when it is already on the cluster.

    ``node`` is where the VM belongs; ``current_node`` is where an existing VM is now (None for a
    new one). They differ when a create was interrupted between clone and migrate, or when the VM
    was moved by hand: a create then moves it back to where the profile puts it.
    """

    name: str
    role: str
    group: str
    index: int
    vmid: int
    node: str
    ip: str | None
    cores: int
    memory: int
    disk: str
    tags: tuple[str, ...]
    existing: bool = False
    current_node: str | None = None

    @property
    def mac(self) -> str:
        """The VM's MAC address: the locally administered prefix 02:70:76 ("pv") and the VMID as
        three bytes, so a VM keeps its address (and its DHCP reservation) across a rebuild."""
        return "02:70:76:" + ":".join(f"{self.vmid >> shift & 0xFF:02X}" for shift in (16, 8, 0))

    @property
    def disk_bytes(self) -> int:
        """The planned disk size in bytes (``disk`` is PVE's size: 20G, 512M, 1T)."""
        units = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
        size = self.disk.strip().upper()
        return int(size[:-1]) * units[size[-1]] if size[-1:] in units else int(size)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tags"] = list(self.tags)
        return out


@dataclass(frozen=True)
class Plan:
    """Every VM of a profile, control planes first, in name order within each role."""

    profile: str
    vms: tuple[PlannedVm, ...]
    notes: tuple[str, ...] = ()  # what the operator must know about the placement (a node left out)

    @property
    def controlplanes(self) -> tuple[PlannedVm, ...]:
        return tuple(vm for vm in self.vms if vm.role == "controlplane")

    @property
    def workers(self) -> tuple[PlannedVm, ...]:
        return tuple(vm for vm in self.vms if vm.role == "worker")

    def by_node(self) -> dict[str, list[PlannedVm]]:
        out: dict[str, list[PlannedVm]] = {}
        for vm in self.vms:
            out.setdefault(vm.node, []).append(vm)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "vms": [vm.as_dict() for vm in self.vms], "notes": list(self.notes)}


def compute_plan(
    profile: Mapping[str, Any],
    config: Mapping[str, Any],
    cluster_vms: Iterable[ExistingVm] = (),
    *,
    offline: Iterable[str] = (),
    placed: Mapping[str, str] | None = None,
) -> Plan:
    """Plan every VM of ``profile`` on the cluster of ``config``.

    ``cluster_vms`` are the VMs already on the cluster: their VMIDs are never handed out again,
    and those that already are this profile's VMs (same name, and one of the profile's ``members``
    or a clone carrying only the template's tags: see ``_half_made``) keep their VMID. ``offline`` nodes (as the cluster reports
    them) get no new VM, and the plan says so. ``placed`` is where a run being resumed already put
    each VM (name -> node): those are never placed again, whatever changed since.
    """
    down = [str(node) for node in offline]
    configured = [str(n["name"]) for n in config["cluster"]["nodes"]]
    nodes = [node for node in configured if node not in down]
    notes = tuple(
        f"{node} is offline as the cluster reports it: no new VM is placed there" for node in configured if node in down
    )
    capacity = {str(n["name"]): (n.get("cores"), n.get("memory")) for n in config["cluster"]["nodes"]}
    low, high = int(config["vmid_ranges"]["vms"]["min"]), int(config["vmid_ranges"]["vms"]["max"])
    profile_tags = tuple(str(t) for t in profile.get("tags", ()))
    existing = list(cluster_vms)
    used = {vm.vmid for vm in existing}
    template_tags = set((config.get("tags") or {}).get("templates") or ())
    mine = {vm.name: vm for vm in (*_half_made(existing, template_tags), *members(existing, profile_tags))}

    drafts = _drafts(profile)
    for draft in drafts:
        if placed and draft["name"] in placed and draft["node"] is None:
            draft["node"] = placed[draft["name"]]
        elif draft["node"] in down and draft["name"] not in mine:
            raise PlanError(
                draft["field"] + ("node",),
                f"{draft['name']} is assigned to node {draft['node']}, which the cluster reports offline; "
                "bring the node back, or assign the VM to another node",
            )
    if not nodes and any(draft["node"] is None for draft in drafts):
        raise PlanError(("nodes",), f"every node of the cluster is offline ({', '.join(down)}): nowhere to place a VM")
    # Fix what is already decided (existing VMs, explicit VMIDs) before handing out the rest.
    taken: dict[int, str] = {}
    for draft in drafts:
        if draft["name"] in mine:
            draft["vmid"], draft["current_node"], draft["existing"] = (
                mine[draft["name"]].vmid,
                mine[draft["name"]].node,
                True,
            )
        vmid = draft["vmid"]
        if vmid is None:
            continue
        if vmid in taken:
            raise PlanError(
                draft["field"] + ("vmid",), f"VMID {vmid} is given to both {taken[vmid]} and {draft['name']}"
            )
        if not draft["existing"] and not low <= vmid <= high:
            raise PlanError(
                draft["field"] + ("vmid",),
                f"VMID {vmid} of {draft['name']} is outside vmid_ranges.vms "
                f"({low}-{high}) of the cluster config; give a VMID from "
                f"{low} to {high}",
            )
        if not draft["existing"] and vmid in used:
            owner = next((vm.name for vm in existing if vm.vmid == vmid), "another VM")
            raise PlanError(
                draft["field"] + ("vmid",),
                f"VMID {vmid} planned for {draft['name']} is already used on the cluster by '{owner}'",
            )
        taken[vmid] = draft["name"]
    for draft in drafts:
        start = draft["start_vmid"]
        if start is not None and not low <= start <= high:
            raise PlanError(
                draft["group_field"] + ("start_vmid",),
                f"start_vmid {start} is {'below' if start < low else 'above'} vmid_ranges.vms "
                f"({low}-{high}) of the cluster config; give a start_vmid from {low} to {high}",
            )
    for draft in drafts:
        if draft["vmid"] is None:
            candidate = draft["start_vmid"] or low
            while candidate in used or candidate in taken:
                candidate += 1
            if candidate > high:
                group = sum(1 for d in drafts if d["group"] == draft["group"])
                raise PlanError(
                    draft["group_field"] + ("start_vmid",),
                    f"no free VMID left for {draft['name']}: counting up from "
                    f"{draft['start_vmid'] or low}, past VMIDs already taken, runs past the end of "
                    f"vmid_ranges.vms ({low}-{high}); lower start_vmid so the group's {group} VMs fit",
                )
            draft["vmid"] = candidate
            taken[candidate] = draft["name"]
    _place(drafts, nodes, capacity)
    vms = tuple(
        PlannedVm(
            name=d["name"],
            role=d["role"],
            group=d["group"],
            index=d["index"],
            vmid=d["vmid"],
            node=d["node"],
            ip=d["ip"],
            cores=d["cores"],
            memory=d["memory"],
            disk=d["disk"],
            tags=profile_tags + (d["role"],),
            existing=d["existing"],
            current_node=d["current_node"],
        )
        for d in drafts
    )
    return Plan(profile=str(profile.get("name", "")), vms=vms, notes=notes)


def _half_made(existing: Iterable[ExistingVm], template_tags: set[str]) -> list[ExistingVm]:
    """Clones not configured yet (they carry only the template's tags), which an interrupted create
    leaves behind and a resume must adopt rather than clone a second time. With the profile's
    ``members`` (the one tag-membership rule), these are the VMs a planned name may be."""
    return [vm for vm in existing if not vm.template and vm.tags and set(vm.tags) <= template_tags]


def _drafts(profile: Mapping[str, Any]) -> list[dict[str, Any]]:
    drafts = []
    for group, role in ROLES:
        spec = (profile.get("nodes") or {}).get(group)
        if not spec:
            continue
        assignments = list(spec.get("assignments") or [])
        for index in range(1, int(spec.get("count", 0)) + 1):
            given = assignments[index - 1] if index <= len(assignments) else {}
            drafts.append(
                {
                    "name": given.get("name") or f"{spec['name_prefix']}{index:02d}",
                    "role": role,
                    "group": group,
                    "index": index,
                    "vmid": given.get("vmid"),
                    "node": given.get("node"),
                    "ip": given.get("ip"),
                    "cores": int(spec["cores"]),
                    "memory": int(spec["memory"]),
                    "disk": str(spec["disk"]),
                    "placement": spec.get("placement", "spread"),
                    "start_vmid": spec.get("start_vmid"),
                    "field": ("nodes", group, "assignments", str(index - 1)) if given else ("nodes", group),
                    "group_field": ("nodes", group),
                    "existing": False,
                    "current_node": None,
                }
            )
    return drafts


def _place(drafts: list[dict[str, Any]], nodes: list[str], capacity: Mapping[str, tuple[Any, Any]]) -> None:
    """Give every unplaced VM a node: ``spread`` balances each role, then the total, across nodes;
    ``pack`` fills nodes in config order up to their declared cores and memory."""
    per_role = {(node, role): 0 for node in nodes for role in ("controlplane", "worker")}
    total = {node: 0 for node in nodes}
    cores = {node: 0 for node in nodes}
    memory = {node: 0 for node in nodes}

    def book(draft: dict[str, Any]) -> None:
        node = draft["node"]
        per_role[(node, draft["role"])] = per_role.get((node, draft["role"]), 0) + 1
        total[node] = total.get(node, 0) + 1
        cores[node] = cores.get(node, 0) + draft["cores"]
        memory[node] = memory.get(node, 0) + draft["memory"]

    for draft in drafts:
        if draft["node"] is not None:
            book(draft)
    for draft in drafts:
        if draft["node"] is not None:
            continue
        if draft["placement"] == "pack":
            draft["node"] = next((n for n in nodes if _fits(n, draft, capacity, cores, memory)), None)
            if draft["node"] is None:
                raise PlanError(
                    draft["group_field"] + ("placement",), _cannot_pack(draft, nodes, capacity, cores, memory)
                )
        else:
            draft["node"] = min(nodes, key=lambda n: (per_role[(n, draft["role"])], total[n], nodes.index(n)))
        book(draft)


def _cannot_pack(
    draft: Mapping[str, Any],
    nodes: list[str],
    capacity: Mapping[str, tuple[Any, Any]],
    cores: Mapping[str, int],
    memory: Mapping[str, int],
) -> str:
    """Why ``placement: pack`` found no node for a VM: the nodes' declared capacity and what is left of it."""
    head = f"placement: pack cannot fit {draft['name']} ({draft['cores']} cores, {draft['memory']} MB) on any node"
    most_cores = max((c for c, _ in (capacity[n] for n in nodes) if c is not None), default=None)
    most_memory = max((m for _, m in (capacity[n] for n in nodes) if m is not None), default=None)
    if most_cores is not None and draft["cores"] > most_cores:
        return (
            f"{head}: no node declares that many cores (the most is {most_cores}, in the cluster config's "
            "cluster.nodes); give the group fewer cores, or use placement: spread"
        )
    if most_memory is not None and draft["memory"] > most_memory:
        return (
            f"{head}: no node declares that much memory (the most is {most_memory} MB, in the cluster config's "
            "cluster.nodes); give the group less memory, or use placement: spread"
        )

    def free(declared: Any, used: int, unit: str) -> str:
        return f"{unit} not declared" if declared is None else f"{declared - used} of {declared} {unit}"

    left = "; ".join(
        f"{n} {free(capacity[n][0], cores[n], 'cores')} and {free(capacity[n][1], memory[n], 'MB')}" for n in nodes
    )
    return (
        f"{head}: the VMs placed before it use up the nodes' declared capacity (left: {left}); make the VMs "
        "smaller, or use placement: spread"
    )


def _fits(
    node: str,
    draft: Mapping[str, Any],
    capacity: Mapping[str, tuple[Any, Any]],
    cores: Mapping[str, int],
    memory: Mapping[str, int],
) -> bool:
    max_cores, max_memory = capacity.get(node, (None, None))
    if max_cores is not None and cores[node] + draft["cores"] > max_cores:
        return False
    if max_memory is not None and memory[node] + draft["memory"] > max_memory:
        return False
    return True
