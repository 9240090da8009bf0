"""Facts: the cluster as one read of it says, built from the API's own answers and handed to planning."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from engine.load.facts import ClusterNode, ClusterStorage, ExistingVm, Facts
from engine.load.placement import compute_plan
from tests.conftest import REPO

# A /cluster/resources answer (no type filter), trimmed to the fields the facts keep.
RESOURCES = [
    {"id": "node/pve01", "type": "node", "node": "pve01", "status": "online"},
    {"id": "node/pve02", "type": "node", "node": "pve02", "status": "offline"},
    {
        "id": "qemu/1031",
        "type": "qemu",
        "vmid": 1031,
        "name": "stg-cp01",
        "node": "pve01",
        "status": "running",
        "tags": "k8s;talos-staging",
        "template": 0,
    },
    {
        "id": "qemu/9000",
        "type": "qemu",
        "vmid": 9000,
        "name": "talos-1.9",
        "node": "pve02",
        "status": "stopped",
        "template": 1,
        "lock": "clone",
    },
    {"id": "lxc/200", "type": "lxc", "vmid": 200, "name": "dns", "node": "pve01", "status": "running"},
    {
        "id": "storage/pve01/local-lvm",
        "type": "storage",
        "storage": "local-lvm",
        "node": "pve01",
        "status": "available",
        "shared": 0,
        "content": "images,rootdir",
    },
    {"id": "sdn/pve01/localnetwork", "type": "sdn", "sdn": "localnetwork", "node": "pve01"},
]


def test_a_cluster_resources_answer_becomes_vms_nodes_and_storages() -> None:
    facts = Facts.from_cluster_resources(RESOURCES)
    assert facts.vms == (
        ExistingVm(1031, "stg-cp01", "pve01", ("k8s", "talos-staging"), False, "running", None),
        ExistingVm(9000, "talos-1.9", "pve02", (), True, "stopped", "clone"),
        ExistingVm(200, "dns", "pve01", (), False, "running", None, "lxc"),
    )
    assert facts.nodes == (ClusterNode("pve01", "online"), ClusterNode("pve02", "offline"))
    assert facts.storages == (ClusterStorage("local-lvm", "pve01", "available", False, ("images", "rootdir")),)


def test_the_vm_only_answer_has_no_type_on_some_items_and_is_read_as_vms() -> None:
    """``GET /cluster/resources?type=vm`` is what the engine asks; an item without a type is a VM."""
    facts = Facts.from_cluster_resources([{"vmid": "1032", "name": "w1", "node": "pve02", "tags": "a, b,c"}])
    assert facts.vms == (ExistingVm(1032, "w1", "pve02", ("a", "b", "c")),)
    assert facts.nodes == () and facts.storages == ()


def test_no_answer_is_no_facts_and_a_vm_is_found_by_its_vmid() -> None:
    assert Facts.from_cluster_resources(None) == Facts()
    facts = Facts.from_cluster_resources(RESOURCES)
    assert facts.vm(1031) is facts.vms[0] and facts.vm("9000") is facts.vms[1]
    assert facts.vm(4242) is None and facts.vm("{{ vmid }}") is None


def test_facts_are_frozen() -> None:
    facts = Facts.from_cluster_resources(RESOURCES)
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts.vms = ()  # type: ignore[misc]


def test_planning_adopts_the_profiles_vms_the_facts_list() -> None:
    """What ``prepare`` hands the planner: a VM of the profile already on the cluster is planned as it is."""
    config = yaml.safe_load((REPO / "cluster-config.yaml").read_text())
    profile = yaml.safe_load((REPO / "clusters" / "talos-staging.yaml").read_text())
    first = compute_plan(profile, config).vms[0]
    item = {"type": "qemu", "vmid": first.vmid, "name": first.name, "node": "elsewhere", "tags": ";".join(first.tags)}
    adopted = compute_plan(profile, config, Facts.from_cluster_resources([item]).vms).vms[0]
    assert adopted.existing and adopted.vmid == first.vmid and adopted.current_node == "elsewhere"
