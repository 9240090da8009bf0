"""The refusals of the VM operations runbooks, run against the simulated cluster: each stops before
anything changes, saying why in words an operator can act on (snapshot-create, snapshot-rollback,
vm-power, vm-backup find their VM in the facts and refuse in readable guard steps)."""

from __future__ import annotations

import json

from tests.test_runbooks_simulated import Sim, sim  # noqa: F401  (the fixture)


def refused(scenario: Sim, name: str, *params: str) -> str:
    """Run ``name`` expecting a refusal by a step; what it wrote on stderr."""
    args = ["run", name, "--simulate", "--yes"]
    for param in params:
        args += ["--param", param]
    result = scenario.invoke(*args)
    assert result.exit_code == 5, result.output + result.stderr
    assert "changed: nothing (every step that ran only read)" in result.stdout + result.stderr
    return result.stderr


def test_what_is_not_a_vm_and_a_reboot_of_a_stopped_vm_are_refused(sim: Sim) -> None:  # noqa: F811
    sim.run("vm-clone", "template=102", "newid=1500", "name=web01", "target=pve02")
    assert "VMID 1501 is not a VM of this cluster" in refused(sim, "vm-power", "vmid=1501", "action=start")
    stopped = refused(sim, "vm-power", "vmid=1500", "action=reboot")
    assert "VM 1500 (web01) is stopped: reboot restarts a running VM; use action=start" in stopped
    assert sim.vms()[1500]["status"] == "stopped"
    assert "VMID 1501 is not a VM of this cluster" in refused(sim, "snapshot-create", "vmid=1501", "snapname=a1")


def test_an_old_snapshot_of_the_name_and_a_missing_one_are_refused(sim: Sim) -> None:  # noqa: F811
    sim.run("vm-clone", "template=102", "newid=1500", "name=web01", "target=pve02")
    missing = refused(sim, "snapshot-rollback", "vmid=1500", "snapname=nope")
    assert "VM 1500 has no snapshot nope; it has: none" in missing
    sim.run("snapshot-create", "vmid=1500", "snapname=before")
    assert "VM 1500 has no snapshot nope; it has: before" in refused(
        sim, "snapshot-rollback", "vmid=1500", "snapname=nope"
    )

    # Taken more than 12 hours ago: not the result of an earlier run of the same procedure.
    path = sim.home.state_dir / "sim" / "state.json"
    state = json.loads(path.read_text(encoding="utf-8"))
    vm = next(v for v in state["vms"] if v["vmid"] == 1500)
    vm["snapshots"]["before"]["snaptime"] = 1700000000  # 2023-11-14T22:13:20Z
    path.write_text(json.dumps(state), encoding="utf-8")
    old = refused(sim, "snapshot-create", "vmid=1500", "snapname=before")
    assert "VM 1500 already has a snapshot before, taken 2023-11-14T22:13:20Z: choose another name" in old
    assert list(sim.vm_state(1500)["snapshots"]) == ["before"]


def test_a_storage_that_takes_no_backups_is_refused(sim: Sim) -> None:  # noqa: F811
    sim.run("vm-clone", "template=102", "newid=1500", "name=web01", "target=pve02")
    stderr = refused(sim, "vm-backup", "vmid=1500", "storage=local-lvm")
    assert "storage local-lvm does not take backups on this node; storages that do: local" in stderr
    assert not [v for v in sim.volumes("local") if "vzdump-qemu-1500-" in v]


def test_storage_overview_of_a_node_that_reports_no_storage_says_so(sim: Sim) -> None:  # noqa: F811
    stderr = refused(sim, "storage-overview", "node=pve09")
    assert "no storage reported for node pve09: is it a node of this cluster, and online?" in stderr
