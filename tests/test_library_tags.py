"""The tag runbooks (tag-list, tag-power, tag-add, tag-remove) and cluster-rebuild, end to end in simulation.

Each test runs the runbooks through the CLI against the simulated cluster (the ``sim`` fixture of
test_runbooks_simulated, which also scans every output and file for secrets) and checks the
simulated cluster's state afterwards, not only the exit code: which VMs run, which tags each VM's
config holds, that a rebuilt cluster's VMs are new ones.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import engine.sim.server as sim_server
from engine.load.facts import ExistingVm, Facts, Planned
from engine.runbook.facts_view import PlanView
from tests.test_runbooks_simulated import Sim, sim  # noqa: F401  (the fixture)

GENERIC = {1201: "dev-cp01", 1211: "dev-w01", 1212: "dev-w02", 1213: "dev-w03"}
WORKERS = [1211, 1212, 1213]


def tags_of(scenario: Sim, vmid: int) -> list[str]:
    """The tags in the VM's config as the simulated cluster keeps it."""
    return [t for t in str(scenario.vm_state(vmid)["config"].get("tags", "")).split(";") if t]


def failed_run(scenario: Sim, *args: str) -> dict[str, Any]:
    """Run without the harness's success check; the last JSON line of a run that failed."""
    result = scenario.invoke("run", *args, "--simulate", "--json")
    assert result.exit_code != 0, result.stdout
    return json.loads(result.stdout.splitlines()[-1])


def test_tag_list_power_add_remove(sim: Sim) -> None:  # noqa: F811
    sim.run("cluster-create", profile="dev-generic")

    # op. 21/22: one tag, and all of several (AND); a tag matches whole, templates are listed too
    listed = sim.run("tag-list", "with_tags=talos")
    assert [vm["vmid"] for vm in listed.output("vms")] == [101, 102]
    assert all(vm["template"] is True for vm in listed.output("vms"))
    listed = sim.run("tag-list", "with_tags=dev,worker")
    assert [(vm["vmid"], vm["name"], vm["status"]) for vm in listed.output("vms")] == [
        (vmid, GENERIC[vmid], "running") for vmid in WORKERS
    ]
    assert sim.run("tag-list", "with_tags=dev,worke").output("vms") == []

    # op. 24: shutdown is gated: without approval nothing is shut down
    refused = failed_run(sim, "tag-power", "--param", "with_tags=dev,worker", "--param", "action=shutdown")
    assert refused["status"] != "succeeded"
    assert {sim.vms()[vmid]["status"] for vmid in WORKERS} == {"running"}

    power = sim.run("tag-power", "with_tags=dev,worker", "action=shutdown")
    vms = sim.vms()
    assert [vms[vmid]["status"] for vmid in WORKERS] == ["stopped"] * 3
    assert vms[1201]["status"] == "running"  # the control plane lacks the worker tag
    assert [vm["status"] for vm in power.output("after")] == ["stopped"] * 3
    assert power.statuses("settled") == ["succeeded"] * 3
    again = sim.run("tag-power", "with_tags=dev,worker", "action=shutdown")
    assert again.statuses("shutdown") == ["skipped"] * 3  # already stopped: left alone

    # op. 23: start
    sim.run("tag-power", "with_tags=dev", "action=start")
    assert {vm["status"] for vmid, vm in sim.vms().items() if vmid in GENERIC} == {"running"}

    # tags that select nothing stop the run before any change
    nothing = failed_run(sim, "tag-power", "--param", "with_tags=nosuchtag", "--param", "action=start", "--yes")
    assert "nosuchtag" in json.dumps(nothing)

    # op. 25: add to a VMID list (a template included), each PUT with the digest read just before
    added = sim.run("tag-add", "tag=nightly", "vmids=1211,1213,101")
    assert tags_of(sim, 1211) == ["kubernetes", "dev", "worker", "nightly"]
    assert "nightly" in tags_of(sim, 1213) and "nightly" in tags_of(sim, 101)
    assert "nightly" not in tags_of(sim, 1212)
    assert sorted(vm["vmid"] for vm in added.output("after")) == [101, 1211, 1213]
    again = sim.run("tag-add", "tag=nightly", "vmids=1211,1213,101")
    assert again.statuses("add") == ["skipped"] * 3  # idempotent: each already has it

    # op. 26: remove from every VM that has it, keeping the other tags
    removed = sim.run("tag-remove", "tag=nightly")
    assert removed.output("after") == []
    assert tags_of(sim, 1211) == ["kubernetes", "dev", "worker"]
    assert tags_of(sim, 101) == ["template", "talos"]
    again = sim.run("tag-remove", "tag=nightly")
    assert again.statuses("remove") == [] and again.output("after") == []  # nothing carries it: nothing to do
    # a VM whose only tag it was has its tags cleared
    sim.run("tag-remove", "tag=template")
    cleared = sim.run("tag-remove", "tag=talos")
    assert tags_of(sim, 101) == [] and tags_of(sim, 102) == []
    assert cleared.statuses("clear") == ["succeeded", "succeeded"]


def test_tag_add_refuses_a_concurrent_edit(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Another edit of VM 1212's config lands between tag-add's read and its change: PVE refuses the
    change (the digest no longer matches), and the other edit is kept, not overwritten."""
    sim.run("cluster-create", profile="dev-generic")
    original = sim_server.SimPve._apply_config

    async def edited_just_before(self: Any, vm: Any, user: Any, p: Any) -> Any:
        if vm.vmid == 1212 and "nightly" in str(p.get("tags")):
            vm.config["tags"] = "kubernetes;dev;worker;edited-meanwhile"  # the other edit lands first
        return await original(self, vm, user, p)

    monkeypatch.setattr(sim_server.SimPve, "_apply_config", edited_just_before)
    report = failed_run(sim, "tag-add", "--param", "tag=nightly", "--param", "vmids=1211,1212")
    assert "checksum mismatch" in json.dumps(report)
    assert tags_of(sim, 1212) == ["kubernetes", "dev", "worker", "edited-meanwhile"]
    assert "nightly" in tags_of(sim, 1211)


def test_cluster_rebuild_destroys_and_creates_again(sim: Sim) -> None:  # noqa: F811
    sim.run("cluster-create", profile="dev-generic")
    sim.run("tag-add", "tag=old", "vmids=1201,1211")  # marks the VMs of before the rebuild
    rebuilt = sim.run("cluster-rebuild", profile="dev-generic")
    assert set(rebuilt.statuses("teardown.delete")) == {"succeeded"}
    assert set(rebuilt.statuses("create.clone")) == {"succeeded"}
    vms = sim.vms()
    assert {vmid: (vms[vmid]["name"], vms[vmid]["status"]) for vmid in GENERIC} == {
        vmid: (name, "running") for vmid, name in GENERIC.items()
    }
    assert "old" not in tags_of(sim, 1201) and "old" not in tags_of(sim, 1211)  # new VMs, not the old ones


def test_cluster_rebuild_stops_at_a_declined_gate(sim: Sim) -> None:  # noqa: F811
    """Without approval the teardown's gates hold: nothing is destroyed, nothing cloned."""
    sim.run("cluster-create", profile="dev-generic")
    before = {vmid: sim.vm_state(vmid)["config"] for vmid in GENERIC}
    failed_run(sim, "cluster-rebuild", "--profile", "dev-generic")
    assert {vmid: sim.vm_state(vmid)["config"] for vmid in GENERIC} == before
    assert {sim.vms()[vmid]["status"] for vmid in GENERIC} == {"running"}


def test_a_planned_vm_destroyed_since_the_plan_no_longer_exists() -> None:
    """``plan.vms[*].existing``: what the plan found, but false for a VM destroyed since (in a run,
    gone from the cluster; in a dry-run, destroyed by an earlier step of the plan)."""
    plan = {
        "vms": [
            {"name": "a", "vmid": 1201, "existing": True, "current_node": "pve01", "role": "worker"},
            {"name": "b", "vmid": 1202, "existing": False, "current_node": None, "role": "worker"},
        ],
        "new_vms": [],
        "vmids": [1201, 1202],
    }
    there = Facts(vms=(ExistingVm(vmid=1201, name="a", node="pve01"),))
    assert [vm["existing"] for vm in PlanView(plan, None, lambda: there)["vms"]] == [True, False]
    assert [vm["existing"] for vm in PlanView(plan, None, lambda: None)["vms"]] == [True, False]
    gone = Facts(vms=())
    view = PlanView(plan, None, lambda: gone)
    assert view["vms"][0] == {**plan["vms"][0], "existing": False, "current_node": None}
    assert [vm["name"] for vm in view["new_vms"]] == ["a", "b"]
    destroying = Facts(vms=there.vms, planned=(Planned("vm", "1201", "destroy", step="delete"),))
    assert PlanView(plan, None, lambda: destroying)["vms"][0]["existing"] is False
