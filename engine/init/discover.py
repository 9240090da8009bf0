"""What ``runbook init --from`` reads from a live cluster, through the engine's own reading.

The reads go through an ordinary ``Dispatcher`` (the real API executor: failover, TLS checked
before the token is sent, the token masked) and ``execution.read_facts``, the snapshot every run
plans with, so what init sees is what a run would see. On top of the facts it reads what a config
needs and a run does not: which node answered and the others' addresses (``/cluster/status``), and
each online node's bridges (``/nodes/{node}/network``). Deriving the config from these answers is
pure (``Discovery``); the reading is the only I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..load.facts import ClusterNode, ExistingVm, Facts
from ..run.dispatch import Dispatcher
from ..run.execution import read_facts
from ..runbook.actions import ApiRequest, StepFailed, quiet


@dataclass(frozen=True)
class NodeSeen:
    name: str
    host: str  # the address the node is reached at: the --from host for the node that answered
    host_guessed: bool  # True when the address is the cluster's own record of it (/cluster/status)
    online: bool
    cores: int | None
    memory_mb: int | None
    bridges: tuple[str, ...]


@dataclass(frozen=True)
class Discovery:
    """A cluster as init saw it: its name, nodes, storages, templates and the VMIDs in use."""

    name: str
    nodes: tuple[NodeSeen, ...]
    facts: Facts

    @property
    def templates(self) -> tuple[ExistingVm, ...]:
        return tuple(sorted((vm for vm in self.facts.vms if vm.template), key=lambda vm: vm.vmid))

    @property
    def vmids(self) -> tuple[int, ...]:
        return tuple(sorted(vm.vmid for vm in self.facts.vms))

    def image_storages(self) -> list[tuple[str, bool, tuple[str, ...]]]:
        """(storage, shared, nodes having it) of every storage that holds VM disks, shared first."""
        found: dict[str, tuple[bool, list[str]]] = {}
        for storage in self.facts.storages:
            if "images" in storage.content:
                shared, nodes = found.setdefault(storage.name, (storage.shared, []))
                nodes.append(storage.node)
        return sorted(
            ((name, shared, tuple(nodes)) for name, (shared, nodes) in found.items()),
            key=lambda item: (not item[1], -len(item[2]), item[0]),
        )

    def common_bridges(self) -> list[str]:
        """Bridges every online node has (a VM's bridge must exist wherever it may be placed)."""
        online = [node for node in self.nodes if node.online and node.bridges]
        if not online:
            return []
        common = set(online[0].bridges).intersection(*(node.bridges for node in online[1:]))
        return sorted(common, key=lambda name: (name != "vmbr0", name))


def discover(dispatcher: Dispatcher, contacted_host: str | None) -> Discovery:
    """Read the cluster behind ``dispatcher``; ``contacted_host`` is where the node that answers is reached
    (None: nowhere the config could use, as for the simulated cluster)."""
    facts = read_facts(dispatcher, named=True)
    status = _get(dispatcher, "/cluster/status") or []
    entries = {str(e["name"]): e for e in status if isinstance(e, dict) and e.get("type") == "node" and e.get("name")}
    local = next((name for name, e in entries.items() if e.get("local")), None)
    known = {node.name: node for node in facts.nodes}
    names = sorted(set(known) | set(entries))
    nodes = []
    for name in names:
        node = known.get(name, ClusterNode(name))
        online = node.status == "online" or (not node.status and bool(entries.get(name, {}).get("online")))
        bridges = _bridges(dispatcher, name) if online else ()
        here = contacted_host and (name == local or len(names) == 1)
        host = contacted_host if here else str(entries.get(name, {}).get("ip") or name)
        nodes.append(
            NodeSeen(
                name,
                host,
                not here,
                online,
                node.figures.maxcpu,
                node.figures.maxmem // (1024 * 1024) if node.figures.maxmem else None,
                bridges,
            )
        )
    name = facts.name or (names[0] if len(names) == 1 else "")
    return Discovery(_config_name(name), tuple(nodes), facts)


def _get(dispatcher: Dispatcher, path: str, **params: Any) -> Any:
    """A GET's data; None when the token may not read it (the config then says what was not read)."""
    try:
        return dispatcher.execute(ApiRequest("GET", path, params), quiet).data
    except StepFailed:
        return None


def _bridges(dispatcher: Dispatcher, node: str) -> tuple[str, ...]:
    answer = _get(dispatcher, f"/nodes/{node}/network", type="any_bridge") or []
    return tuple(
        sorted(
            str(item["iface"])
            for item in answer
            if isinstance(item, dict) and item.get("iface") and item.get("type") in ("bridge", "OVSBridge")
        )
    )


def _config_name(name: str) -> str:
    """A name ``cluster.name`` accepts (letters, digits, '.', '_', '-'); "cluster" when PVE gave none."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", name).strip(".-_")
    return cleaned or "cluster"
