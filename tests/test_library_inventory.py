"""The inventory runbooks (api-check, vmid-next, cluster-health, node-usage, vm-list) and vm-delete,
run end to end against the simulated cluster, with the cluster's state checked after each run.

The reads must show what the cluster holds and change nothing (the saved state is compared before
and after); the health check must fail, naming the node, when a node is offline; vm-delete must
remove exactly one VM with its disks, refuse templates and a mistyped VMID, and do nothing once the
VM is gone. The ``sim`` fixture also checks that no secret reached an output or a file.
"""

from __future__ import annotations

import json
from typing import Any

from engine.runbook.stepcheck import _placeholders
from engine.runbook.unknown import Unknown
from tests.test_runbooks_simulated import SCENARIOS, Sim
from tests.test_runbooks_simulated import sim as sim  # noqa: F401 - the fixture, shared


def fails(sim: Sim, name: str, *params: str, approve: bool = True) -> Any:
    """Run a runbook that must stop; the CLI's result (exit code, stderr)."""
    args = ["run", name, "--simulate", *(["--yes"] if approve else [])]
    for param in params:
        args += ["--param", param]
    result = sim.invoke(*args)
    assert result.exit_code != 0, result.output
    return result


def set_online(sim: Sim, node: str, online: bool) -> None:
    """Take a node of the simulated cluster down (or back up) between two runs."""
    path = sim.home.state_dir / "sim" / "state.json"
    state = json.loads(path.read_text(encoding="utf-8"))
    for entry in state["nodes"]:
        if entry["name"] == node:
            entry["online"] = online
    path.write_text(json.dumps(state), encoding="utf-8")


def test_the_inventory_reads_show_the_cluster_and_change_nothing(sim: Sim) -> None:
    assert sim.run("api-check").output("version") == {"version": "9.0.10", "release": "9.0", "repoid": "fakepve"}

    assert sim.run("vmid-next").output("next") == {"range": "vms", "from": 1000, "to": 1999, "vmid": 1000}
    sim.run("vm-clone", "template=102", "newid=1000", "name=web01")
    sim.run("vm-clone", "template=102", "newid=1001", "name=web02", "target=pve02")
    sim.run("vm-power", "vmid=1001", "action=start")
    assert sim.run("vmid-next").output("next")["vmid"] == 1002  # 1000 and 1001 are taken now
    assert sim.run("vmid-next", "range=templates").output("next")["vmid"] == 100  # 101 and 102 are templates
    wrong = fails(sim, "vmid-next", "range=vmz")
    assert "has no range vmz in vmid_ranges; its ranges: templates, vms" in wrong.stderr

    before = sim.state()
    health = sim.run("cluster-health").output("status")
    assert health["quorate"] is True
    assert [(m["name"], m["online"]) for m in health["members"]] == [("pve01", True), ("pve02", True), ("pve03", True)]

    usage = {row["node"]: row for row in sim.run("node-usage").output("usage")}
    assert set(usage) == {"pve01", "pve02", "pve03"}
    assert (usage["pve02"]["cores"], usage["pve02"]["memory_total"]) == (32, "128 GiB")  # cluster-config.yaml
    # pve02 runs web02 (2 GiB configured): its memory in use is the host's own plus that
    assert usage["pve02"]["memory"] != usage["pve03"]["memory"]

    listed = sim.run("vm-list")
    assert [(vm["vmid"], vm["name"], vm["node"], vm["status"]) for vm in listed.output("vms")] == [
        (1000, "web01", "pve01", "stopped"),
        (1001, "web02", "pve02", "running"),
    ]
    assert [t["vmid"] for t in listed.output("templates_by_flag")] == [101, 102]
    assert listed.status("templates_by_range") == "skipped"
    running = sim.run("vm-list", "list=vms", "status=running")
    assert [vm["vmid"] for vm in running.output("vms")] == [1001]
    assert running.status("templates_by_flag") == "skipped"
    by_range = sim.run("vm-list", "list=templates", "template_by=range").output("templates_by_range")
    assert [(t["vmid"], t["template"]) for t in by_range] == [(101, True), (102, True)]
    # vm-clone drops the template tag from its clones, so by tag only the templates are listed.
    by_tag = sim.run("vm-list", "list=templates", "template_by=tag").output("templates_by_tag")
    assert [(t["vmid"], t["template"]) for t in by_tag] == [(101, True), (102, True)]
    assert sim.state()["vms"] == before["vms"] and sim.state()["nodes"] == before["nodes"]  # only read

    set_online(sim, "pve03", False)
    down = fails(sim, "cluster-health")
    assert "offline: pve03" in down.stderr
    usage = {row["node"]: row for row in sim.run("node-usage").output("usage")}
    assert usage["pve03"]["status"] == "offline" and usage["pve03"]["memory"] is None
    set_online(sim, "pve03", True)
    assert sim.run("cluster-health").status("offline") == "skipped"
    assert set(SCENARIOS["inventory"]) - {"vm-delete"} <= set(sim.ran)


def test_vm_delete_removes_one_vm_with_its_disks_and_refuses_templates(sim: Sim) -> None:
    sim.run("vm-clone", "template=102", "newid=1500", "name=web01", "target=pve02")
    sim.run("vm-clone", "template=102", "newid=1501", "name=web02", "target=pve02")
    sim.run("vm-power", "vmid=1500", "action=start")
    assert "vm-1500-disk-0" in sim.volumes("local-lvm")

    # Templates, their range and a VMID that names another VM are refused before anything changes.
    assert "templates are never deleted" in fails(sim, "vm-delete", "vmid=101").stderr
    assert "VM 1500 is named web01, not web02" in fails(sim, "vm-delete", "vmid=1500", "name=web02").stderr
    # Without approval the gated shutdown stops the run (exit 4): the VM still runs.
    assert fails(sim, "vm-delete", "vmid=1500", approve=False).exit_code == 4
    vms = sim.vms()
    assert vms[101]["template"] and vms[1500]["status"] == "running"

    deleted = sim.run("vm-delete", "vmid=1500", "name=web01")
    assert deleted.output("config")["disks"]["scsi0"].startswith("local-lvm:vm-1500-disk-0,")
    assert (deleted.status("shutdown"), deleted.status("force_stop")) == ("succeeded", "skipped")
    assert deleted.status("delete") == "succeeded"
    assert deleted.output("verify_gone") == {"vmid": 1500, "on_cluster": False}
    vms = sim.vms()
    assert 1500 not in vms and vms[1501]["name"] == "web02"  # only that one
    assert "vm-1500-disk-0" not in sim.volumes("local-lvm") and "vm-1501-disk-0" in sim.volumes("local-lvm")

    again = sim.run("vm-delete", "vmid=1500", "name=web01")
    assert again.output("gone")["stdout"] == "VM 1500 is not on the cluster: nothing to delete.\n"
    assert [again.status(step) for step in ("shutdown", "force_stop", "delete")] == ["skipped"] * 3
    assert set(sim.vms()) == {101, 102, 1501}


def test_a_fact_indexed_by_an_unknown_value_names_it_without_nesting() -> None:
    """validate renders vm-delete with its VMID unknown: ``cluster.vms[vmid].node`` must read as one
    run-time value in the API path, else the path check sees half of it and calls it a bad node name."""
    node = Unknown("cluster.vms")[Unknown("vmid")].node
    assert str(node) == "(known after run: cluster.vms[vmid].node)"
    assert _placeholders(f"/nodes/{node}/qemu/1500/config") == "/nodes/unknown/qemu/1500/config"
