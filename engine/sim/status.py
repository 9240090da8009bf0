"""What ``runbook sim status`` shows: the simulated cluster's nodes, VMs and Talos nodes, as data.

The simulation owns what its state means (which VM a Talos address belongs to, whether a node is
configured or healthy), so the CLI only prints this; it never rebuilds the simulation's maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..load.config import ClusterConfig
from ..load.home import Home
from ..load.profiles import load_profiles
from .server import state_path
from .state import SimState, SimVm, load
from .talos import TalosWorld


@dataclass(frozen=True)
class SimStatus:
    """One look at the simulated cluster."""

    state_file: str
    nodes: list[dict[str, Any]]
    vms: list[dict[str, Any]]
    talos: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"exists": True, "nodes": self.nodes, "vms": self.vms, "talos": self.talos}


def sim_status(home: Home, config: ClusterConfig) -> SimStatus | None:
    """The simulated cluster of ``home``, or None before the first ``--simulate`` run made one.

    A damaged state file raises ``SimStateError``, which names the file and ``runbook sim reset``.
    """
    path = state_path(home)
    state = load(path)
    if state is None:
        return None
    vms = [
        {
            "vmid": vm.vmid,
            "name": vm.name,
            "node": vm.node,
            "status": vm.status,
            "template": vm.template,
            "tags": str(vm.config.get("tags", "")),
            "cores": vm.config.get("cores"),
            "memory": vm.config.get("memory"),
        }
        for vm in sorted(state.vms, key=lambda v: v.vmid)
    ]
    return SimStatus(home.shown(path), [n.__dict__ for n in state.nodes], vms, _talos_rows(home, config, state))


def _talos_rows(home: Home, config: ClusterConfig, state: SimState) -> list[dict[str, Any]]:
    """Simulated Talos nodes by address, each tied to the VM the profiles plan at that address."""
    by_name = {vm.name: vm for vm in state.vms if not vm.template}
    planned_at = {
        planned.ip: planned.name
        for profile in load_profiles(home, config)[0]
        for planned in profile.plan(config).vms
        if planned.ip
    }

    def lookup(ip: str) -> SimVm | None:
        return by_name.get(planned_at.get(ip, ""))

    return TalosWorld(dict(state.talos)).rows(lookup)
