"""The VM runbooks of the library (issue 17, ops 6 and 34): vm-status, and vm-restore finding the archive
itself, run end to end against the simulated cluster through the CLI, the cluster's state checked after
each run."""

from __future__ import annotations

import time

from engine.run.runner import _item_keys
from tests.test_library_storage import failed
from tests.test_runbooks_simulated import Sim, sim  # noqa: F401  (the fixture)


def test_vm_restore_without_an_archive_takes_the_newest_backup_of_the_vmid(sim: Sim) -> None:  # noqa: F811
    sim.run("vm-clone", "template=102", "newid=1500", "name=web01", "target=pve02")
    older = sim.run("vm-backup", "vmid=1500").output("archive")["volid"]
    time.sleep(1.1)  # archives are named by the second they were made in
    newest = sim.run("vm-backup", "vmid=1500").output("archive")["volid"]
    sim.run("vm-resize", "vmid=1500", "cores=8")  # after the backups: the restore brings the 2 cores back
    sim.run("vm-power", "vmid=1500", "action=start")

    # In use, and no overwrite: refused before anything changes; so is a node the VM is not on.
    assert "VMID 1500 is in use by web01 on pve02: choose a free VMID" in failed(sim, "vm-restore", "vmid=1500")
    assert "on its own node (leave node empty)" in failed(
        sim, "vm-restore", "vmid=1500", "overwrite=true", "node=pve01"
    )
    assert "no backup of 1600 on the backup storages, as any node sees them" in failed(sim, "vm-restore", "vmid=1600")
    assert "no backup local:backup/vzdump-qemu-1500-2000_01_01-00_00_00.vma.zst on the backup storages" in failed(
        sim, "vm-restore", "vmid=1600", "archive=local:backup/vzdump-qemu-1500-2000_01_01-00_00_00.vma.zst"
    )
    assert sim.vms()[1500]["status"] == "running" and 1600 not in sim.vms()

    # Replaced by its newest backup, on its node: stopped first, then restored over.
    over = sim.run("vm-restore", "vmid=1500", "overwrite=true")
    chosen = over.output("chosen")
    assert (chosen["volid"], chosen["node"], chosen["replacing"]) == (newest, "pve02", "running")
    assert (over.status("stop_existing"), over.status("restore_over"), over.status("restore")) == (
        "succeeded",
        "succeeded",
        "skipped",
    )
    # every storage of every node was looked at, each its own item (local is a storage of each node)
    assert {key for key in over.steps if key.startswith("backups[")} == {
        f"backups[name={store},node={node}]" for store in ("local", "local-lvm") for node in ("pve01", "pve02", "pve03")
    }
    vm = sim.vm_state(1500)
    assert (vm["node"], vm["status"], int(vm["config"]["cores"])) == ("pve02", "stopped", 2)

    # Deleted, then brought back from its newest backup on the node that holds the archive.
    sim.run("vm-delete", "vmid=1500", "name=web01")
    assert 1500 not in sim.vms()
    back = sim.run("vm-restore", "vmid=1500", "node=pve02")
    assert back.output("chosen")["volid"] == newest and back.status("restore") == "succeeded"
    assert back.output("restored") == {"name": "web01", "status": "stopped"}
    assert (sim.vms()[1500]["node"], sim.vms()[1500]["name"]) == ("pve02", "web01")

    # The older archive, given, as a new VM beside it.
    copy = sim.run("vm-restore", f"archive={older}", "vmid=1601")
    assert copy.output("chosen")["volid"] == older and sim.vms()[1601]["node"] == "pve02"


def test_vm_status_shows_one_vm_and_changes_nothing(sim: Sim) -> None:  # noqa: F811
    sim.run("vm-clone", "template=102", "newid=1500", "name=web01", "target=pve02")
    stopped = sim.run("vm-status", "vmid=1500").output("status")
    assert stopped == {
        "name": "web01",
        "node": "pve02",
        "status": "stopped",
        "qmpstatus": "stopped",
        "uptime": None,
        "cpu": "0% of 2 CPUs",
        "memory": "0 B of 2 GiB",
        "disk": "8 GiB",
        "ha": "not managed",
        "lock": None,
        "pending": [],
    }
    sim.run("vm-power", "vmid=1500", "action=start")
    sim.run("vm-resize", "vmid=1500", "memory=4096")  # running: held as pending until a restart
    before = sim.state()
    running = sim.run("vm-status", "vmid=1500").output("status")
    assert (running["status"], running["qmpstatus"], running["pending"]) == ("running", "running", ["memory"])
    assert running["memory"] == "64 MiB of 2 GiB" and running["cpu"] == "2% of 2 CPUs"
    assert sim.state() == before, "vm-status changes nothing"

    assert "no VM with VMID 1777 in the cluster (containers are not shown here): vm-list shows the VMs" in failed(
        sim, "vm-status", "vmid=1777"
    )


def test_loop_items_sharing_a_name_get_keys_of_their_own() -> None:
    local = [{"name": "local", "node": node} for node in ("pve01", "pve02")]
    assert _item_keys([*local, {"name": "ceph", "node": "pve01"}]) == [
        "name=local,node=pve01",
        "name=local,node=pve02",
        "name=ceph",
    ]
    assert _item_keys([{"name": "a"}, {"name": "a"}, "x", "x"]) == ["name=a#0", "name=a#1", "x#2", "x#3"]
    assert _item_keys([{"name": "a"}, {"vmid": 7}, "x"]) == ["name=a", "vmid=7", "x"], "distinct keys stay as they were"
