"""The plan is a pure function: properties over random profiles, and exact plans for the shipped ones."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.load.facts import ExistingVm
from engine.load.placement import PlanError, compute_plan
from tests.conftest import REPO

CONFIG = yaml.safe_load((REPO / "cluster-config.yaml").read_text())
STAGING = yaml.safe_load((REPO / "clusters" / "talos-staging.yaml").read_text())
LOW, HIGH = CONFIG["vmid_ranges"]["vms"]["min"], CONFIG["vmid_ranges"]["vms"]["max"]


def config_with(nodes: int, capacity: tuple[int, int] | None = None) -> dict[str, Any]:
    config = copy.deepcopy(CONFIG)
    config["cluster"]["nodes"] = [
        {
            "name": f"pve{i:02d}",
            "host": f"pve{i:02d}.example.net",
            **({"cores": capacity[0], "memory": capacity[1]} if capacity else {}),
        }
        for i in range(1, nodes + 1)
    ]
    return config


def profile(
    cp: int, workers: int, placement: str = "spread", cp_start: int = 1031, w_start: int = 1041
) -> dict[str, Any]:
    group = {"cores": 2, "memory": 2048, "disk": "10G"}
    return {
        "name": "p",
        "type": "generic",
        "tags": ["p"],
        "nodes": {
            "controlplane": {"count": cp, "name_prefix": "cp", "start_vmid": cp_start, "placement": placement, **group},
            "workers": {"count": workers, "name_prefix": "w", "start_vmid": w_start, "placement": placement, **group},
        },
    }


def test_talos_staging_plan_is_exactly_its_assignments() -> None:
    plan = compute_plan(STAGING, CONFIG)
    assert [(vm.name, vm.role, vm.vmid, vm.node, vm.ip, vm.cores, vm.memory, vm.disk) for vm in plan.vms] == [
        ("stg-cp01", "controlplane", 1031, "pve01", "10.20.0.31", 4, 8192, "100G"),
        ("stg-cp02", "controlplane", 1032, "pve02", "10.20.0.32", 4, 8192, "100G"),
        ("stg-cp03", "controlplane", 1033, "pve03", "10.20.0.33", 4, 8192, "100G"),
    ]
    assert all(vm.tags == ("talos", "kubernetes", "staging", "controlplane") for vm in plan.vms)
    assert not plan.workers


def test_names_count_up_from_the_prefix_and_tags_carry_the_role() -> None:
    plan = compute_plan(profile(1, 2), config_with(3))
    assert [vm.name for vm in plan.vms] == ["cp01", "w01", "w02"]
    assert [vm.tags for vm in plan.vms] == [("p", "controlplane"), ("p", "worker"), ("p", "worker")]


def test_used_vmids_are_skipped() -> None:
    used = [ExistingVm(1031, "other", "pve01"), ExistingVm(1033, "other2", "pve02")]
    plan = compute_plan(profile(3, 0), config_with(3), used)
    assert [vm.vmid for vm in plan.vms] == [1032, 1034, 1035]


def test_existing_vms_of_the_profile_keep_their_vmid_and_are_placed_as_planned() -> None:
    """A re-run must plan the VMs that already exist, not new ones beside them; one left on the
    wrong node (an interrupted create) is planned back onto its own node."""
    existing = [ExistingVm(1031, "cp01", "pve03", ("p", "controlplane"))]
    plan = compute_plan(profile(2, 0), config_with(3), existing)
    first, second = plan.vms
    assert (first.vmid, first.node, first.current_node, first.existing) == (1031, "pve01", "pve03", True)
    assert (second.vmid, second.node, second.current_node, second.existing) == (1032, "pve02", None, False)


def test_a_same_named_vm_without_the_profile_tags_is_not_taken_over() -> None:
    existing = [ExistingVm(1031, "cp01", "pve03", ("someone-else",))]
    plan = compute_plan(profile(1, 0), config_with(3), existing)
    assert (plan.vms[0].vmid, plan.vms[0].existing) == (1032, False)


def test_explicit_vmid_in_use_by_another_vm_is_an_error() -> None:
    spec = copy.deepcopy(STAGING)
    with pytest.raises(PlanError, match=r"VMID 1032 planned for stg-cp02 is already used on the cluster by 'db01'"):
        compute_plan(spec, CONFIG, [ExistingVm(1032, "db01", "pve02")])


def test_running_out_of_range_names_the_field() -> None:
    with pytest.raises(PlanError) as caught:
        compute_plan(profile(3, 0, cp_start=HIGH - 1), CONFIG)
    assert caught.value.field == ("nodes", "controlplane", "start_vmid")
    assert "no free VMID left for cp03" in caught.value.message


@pytest.mark.parametrize("start", [LOW - 1, 100, HIGH + 1])
def test_start_vmid_outside_the_range_is_an_error_not_silently_moved(start: int) -> None:
    with pytest.raises(PlanError) as caught:
        compute_plan(profile(1, 0, cp_start=start), CONFIG)
    assert caught.value.field == ("nodes", "controlplane", "start_vmid")
    assert (
        f"start_vmid {start} is {'below' if start < LOW else 'above'} vmid_ranges.vms ({LOW}-{HIGH})"
        in caught.value.message
    )


def test_pack_fills_the_first_node_up_to_its_capacity() -> None:
    plan = compute_plan(profile(1, 4, placement="pack"), config_with(3, capacity=(4, 65536)))
    assert Counter(vm.node for vm in plan.vms) == {"pve01": 2, "pve02": 2, "pve03": 1}


def test_pack_without_declared_capacity_uses_one_node() -> None:
    plan = compute_plan(profile(1, 4, placement="pack"), config_with(3))
    assert {vm.node for vm in plan.vms} == {"pve01"}


def test_pack_that_cannot_fit_is_an_error() -> None:
    with pytest.raises(
        PlanError,
        match="cannot fit cp01 .* no node declares that many cores "
        r"\(the most is 1, in the cluster config's cluster.nodes\)",
    ):
        compute_plan(profile(1, 0, placement="pack"), config_with(2, capacity=(1, 65536)))


def test_pack_that_runs_out_says_what_is_left_of_each_node() -> None:
    with pytest.raises(PlanError) as caught:
        compute_plan(profile(1, 4, placement="pack"), config_with(2, capacity=(4, 65536)))
    assert "cannot fit w04 (2 cores, 2048 MB)" in caught.value.message
    assert (
        "left: pve01 0 of 4 cores and 61440 of 65536 MB; pve02 0 of 4 cores and 61440 of 65536 MB"
        in caught.value.message
    )


@settings(max_examples=300, deadline=None)
@given(
    cp=st.integers(0, 9),
    workers=st.integers(0, 12),
    nodes=st.integers(1, 6),
    cp_start=st.integers(LOW, LOW + 40),
    w_start=st.integers(LOW, LOW + 40),
    used=st.sets(st.integers(LOW, LOW + 80), max_size=30),
)
def test_vmids_unique_in_range_and_spread_balanced(
    cp: int, workers: int, nodes: int, cp_start: int, w_start: int, used: set[int]
) -> None:
    existing = [ExistingVm(vmid, f"other{vmid}", "pve01") for vmid in used]
    plan = compute_plan(profile(cp, workers, cp_start=cp_start, w_start=w_start), config_with(nodes), existing)
    vmids = [vm.vmid for vm in plan.vms]
    assert len(vmids) == cp + workers
    assert len(set(vmids)) == len(vmids), "two VMs share a VMID"
    assert all(LOW <= v <= HIGH for v in vmids)
    assert not set(vmids) & used, "a VMID in use was handed out again"
    names = [vm.name for vm in plan.vms]
    assert len(set(names)) == len(names)
    node_names = [n["name"] for n in config_with(nodes)["cluster"]["nodes"]]
    for role in ("controlplane", "worker"):
        load = Counter({n: 0 for n in node_names})
        load.update(vm.node for vm in plan.vms if vm.role == role)
        assert max(load.values()) - min(load.values()) <= 1, f"{role}s not spread within one: {load}"
    total = Counter({n: 0 for n in node_names})
    total.update(vm.node for vm in plan.vms)
    assert max(total.values()) - min(total.values()) <= 1, f"VMs not spread within one: {total}"


@settings(max_examples=100, deadline=None)
@given(cp=st.integers(1, 5), workers=st.integers(0, 5), nodes=st.integers(1, 4))
def test_plan_is_deterministic_and_stable_on_rerun(cp: int, workers: int, nodes: int) -> None:
    """Planning again with the first plan's VMs on the cluster gives the same plan, all existing."""
    config, spec = config_with(nodes), profile(cp, workers)
    first = compute_plan(spec, config)
    assert compute_plan(spec, config) == first
    on_cluster = [ExistingVm(vm.vmid, vm.name, vm.node, vm.tags) for vm in first.vms]
    again = compute_plan(spec, config, on_cluster)
    assert [(vm.name, vm.vmid, vm.node) for vm in again.vms] == [(vm.name, vm.vmid, vm.node) for vm in first.vms]
    assert all(vm.existing for vm in again.vms)


def test_a_clone_not_yet_configured_is_adopted_but_an_untagged_namesake_is_not() -> None:
    """An interrupted create leaves a clone with only the template's tags; resume must not clone again."""
    half_made = [ExistingVm(1031, "cp01", "pve01", ("template", "talos"))]
    assert compute_plan(profile(1, 0), config_with(3), half_made).vms[0].existing
    stranger = [ExistingVm(1031, "cp01", "pve01", ())]
    planned = compute_plan(profile(1, 0), config_with(3), stranger).vms[0]
    assert (planned.existing, planned.vmid) == (False, 1032)


# -- nodes the cluster reports offline, and a resumed run's placement -----------------------------


def test_an_offline_node_gets_no_new_vm_and_the_plan_says_so() -> None:
    plan = compute_plan(profile(3, 3), config_with(3), offline=["pve02"])
    assert {vm.node for vm in plan.vms} == {"pve01", "pve03"}
    assert plan.notes == ("pve02 is offline as the cluster reports it: no new VM is placed there",)
    packed = compute_plan(profile(1, 4, placement="pack"), config_with(3, capacity=(6, 65536)), offline=["pve01"])
    assert Counter(vm.node for vm in packed.vms) == {"pve02": 3, "pve03": 2}


def test_an_assignment_to_an_offline_node_is_an_error_naming_the_vm() -> None:
    with pytest.raises(PlanError) as caught:
        compute_plan(STAGING, CONFIG, offline=["pve03"])
    assert caught.value.field == ("nodes", "controlplane", "assignments", "2", "node")
    assert "stg-cp03 is assigned to node pve03, which the cluster reports offline" in caught.value.message


def test_with_every_node_offline_there_is_nowhere_to_place() -> None:
    with pytest.raises(PlanError) as caught:
        compute_plan(profile(1, 0), config_with(2), offline=["pve01", "pve02"])
    assert "every node of the cluster is offline (pve01, pve02)" in caught.value.message


def test_a_resumed_run_keeps_its_vms_where_it_placed_them_whatever_changed() -> None:
    first = compute_plan(profile(2, 2), config_with(3))
    placed = {vm.name: vm.node for vm in first.vms}
    # Since the run started, pve01 went offline: a fresh plan would move its VMs, a resume does not.
    again = compute_plan(profile(2, 2), config_with(3), offline=["pve01"], placed=placed)
    assert {vm.name: vm.node for vm in again.vms} == placed
    moved = compute_plan(profile(2, 2), config_with(3), offline=["pve01"])
    assert "pve01" not in {vm.node for vm in moved.vms}
