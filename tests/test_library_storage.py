"""The backup and storage runbooks of the library (issue 17, ops 32, 33, 35, 38, 39, 41, 42), run end to
end against the simulated cluster through the CLI, the cluster's state checked after each run.

What a runbook cannot make itself (a backup job, an ISO, a detached disk) is put there first through
the simulated cluster's API, as an operator's GUI would.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from engine.runbook.effects import _known
from engine.runbook.extract import extract_scope
from engine.runbook.render import StepOutputs
from engine.sim.server import ORPHAN_VMID
from tests.test_runbooks_simulated import Sim, sim  # noqa: F401  (the fixture)
from tests.test_sim_server import call, executor, start

ORPHAN = f"local-lvm:vm-{ORPHAN_VMID}-disk-0"


def through_api(scenario: Sim, *calls: tuple[str, str, dict[str, Any]]) -> list[Any]:
    """Make the calls on the simulated cluster of ``scenario``'s home; its state is saved when it stops."""
    cluster = start(scenario.home)
    try:
        with executor(cluster) as api:
            return [call(api, method, path, **params) for method, path, params in calls]
    finally:
        cluster.stop()


def failed(scenario: Sim, name: str, *params: str) -> str:
    """Run ``name`` expecting it to fail; what it printed."""
    args = ["run", name, "--simulate", "--yes"]
    for param in params:
        args += ["--param", param]
    result = scenario.invoke(*args)
    assert result.exit_code != 0, result.output
    return result.output + result.stderr


def test_backups_listed_per_node_newest_first_then_one_deleted(sim: Sim) -> None:  # noqa: F811
    sim.run("vm-clone", "template=102", "newid=1500", "name=web01", "target=pve02")
    first = sim.run("vm-backup", "vmid=1500").output("archive")["volid"]
    time.sleep(1.1)  # archives are named by the second they were made in
    second = sim.run("vm-backup", "vmid=1500").output("archive")["volid"]
    assert first != second

    listed = sim.run("backup-list", "vmid=1500")
    assert (
        listed.output("backups[name=storage/pve01/local]") == []
        and listed.output("backups[name=storage/pve03/local]") == []
    )
    rows = listed.output("backups[name=storage/pve02/local]")
    assert [r["volid"] for r in rows] == [second, first], "newest first"
    assert {(r["vmid"], r["node"]) for r in rows} == {(1500, "pve02")}
    assert re.fullmatch(r"\d+ MiB", rows[0]["size"]) and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", rows[0]["created"])
    assert sim.run("backup-list", "vmid=1600").output("backups[name=storage/pve02/local]") == []
    assert "no available storage takes backups by the name local-lvm: storage-overview" in failed(
        sim, "backup-list", "storage=local-lvm"
    )

    deleted = sim.run("backup-delete", f"volid={first}")
    assert deleted.status("delete[pve02]") == "succeeded"
    assert deleted.statuses("delete") == ["skipped", "succeeded", "skipped"], "only the node that holds it"
    assert deleted.output("remaining[pve02]") == [second]
    stored = sim.volumes("local")
    assert first.split(":", 1)[1] not in stored and second.split(":", 1)[1] in stored
    again = sim.run("backup-delete", f"volid={first}")
    assert again.statuses("delete") == ["skipped"] * 3, "gone already: nothing deleted"
    assert second.split(":", 1)[1] in sim.volumes("local")


def test_backup_jobs_are_listed(sim: Sim) -> None:  # noqa: F811
    through_api(
        sim,
        (
            "POST",
            "/cluster/backup",
            {"id": "nightly", "schedule": "21:00", "storage": "local", "all": 1, "exclude": "101"},
        ),
        (
            "POST",
            "/cluster/backup",
            {"id": "weekly", "schedule": "sun 01:00", "storage": "local", "vmid": "102", "enabled": 0},
        ),
    )
    jobs = {job["id"]: job for job in sim.run("backup-jobs").output("jobs")}
    assert (jobs["nightly"]["vms"], jobs["nightly"]["schedule"], jobs["nightly"]["enabled"]) == (
        "all except 101",
        "21:00",
        True,
    )
    assert (jobs["weekly"]["vms"], jobs["weekly"]["enabled"], jobs["weekly"]["storage"]) == ("102", False, "local")
    assert set(sim.state()["files"]["pve01"]) >= {"/etc/pve/jobs.cfg"}, "nothing listed was changed or lost"


def test_iso_and_image_lists(sim: Sim) -> None:  # noqa: F811
    through_api(
        sim,
        (
            "POST",
            "/nodes/pve02/storage/local/download-url",
            {"url": "https://cdimage.example.org/debian-12.iso", "filename": "debian-12.iso", "content": "iso"},
        ),
    )
    isos = sim.run("iso-list", "storage=local")
    rows = isos.output("isos[name=storage/pve02/local]")
    assert [r["volid"] for r in rows] == ["local:iso/debian-12.iso"] and rows[0]["node"] == "pve02"
    images = sim.run("image-list", "storage=local-lvm")
    assert [(r["volid"], r["vmid"], r["size"]) for r in images.output("images[name=storage/pve03/local-lvm]")] == [
        (ORPHAN, ORPHAN_VMID, "4 GiB")
    ]
    assert {r["volid"] for r in images.output("images[name=storage/pve01/local-lvm]")} >= {"local-lvm:base-101-disk-0"}
    assert sim.run("image-list", "vmid=101").output("images[name=storage/pve03/local-lvm]") == []


def test_orphans_found_then_an_unused_disk_and_an_orphaned_volume_removed(sim: Sim) -> None:  # noqa: F811
    sim.run("vm-clone", "template=102", "newid=1500", "name=web01", "target=pve02")
    through_api(
        sim,
        ("POST", "/nodes/pve02/qemu/1500/config", {"scsi1": "local-lvm:2"}),
        ("PUT", "/nodes/pve02/qemu/1500/config", {"delete": "scsi1"}),  # stopped: kept as unused0
    )
    detached = sim.vm_state(1500)["config"]["unused0"]

    scan = sim.run("disk-orphans")
    assert scan.output("unused") == [
        {"vmid": 1500, "node": "pve02", "key": "unused0", "volid": detached, "snapshots": 0}
    ]
    orphaned = scan.output("orphaned")
    assert [(o["volid"], o["owner"], o["node"], o["vm_exists"]) for o in orphaned] == [
        (ORPHAN, ORPHAN_VMID, "pve03", False)
    ], "the template's base disks, the clone's disks and its unused disk are referenced"

    removed = sim.run("disk-remove-unused", "vmid=1500", "disk=unused0")
    assert removed.output("volume") == {"disk": "unused0", "volid": detached, "volume": "destroyed"}
    assert "unused0" not in sim.vm_state(1500)["config"]
    assert detached.split(":", 1)[1] not in sim.volumes("local-lvm")
    assert sim.run("disk-remove-unused", "vmid=1500", "disk=unused0").status("remove") == "skipped"

    gone = sim.run("disk-remove-unused", f"volid={ORPHAN}")
    assert gone.output("gone[node=pve03]") == {"volid": ORPHAN, "node": "pve03", "deleted": True}
    assert f"vm-{ORPHAN_VMID}-disk-0" not in sim.volumes("local-lvm")
    assert sim.run("disk-orphans").output("orphaned") == []
    assert sim.run("disk-remove-unused", f"volid={ORPHAN}").statuses("delete") == [], "gone already"
    assert "vm-1500-disk-0" in sim.volumes("local-lvm"), "the VM's own disk is untouched"


def test_disk_remove_unused_refuses_what_is_not_free(sim: Sim) -> None:  # noqa: F811
    sim.run("vm-clone", "template=102", "newid=1500", "name=web01", "target=pve02")
    assert "give either vmid and disk" in failed(sim, "disk-remove-unused")
    assert "is a template" in failed(sim, "disk-remove-unused", "vmid=101", "disk=unused0")
    # a volume named after VM 1500, which no config references: it exists, so it is not deleted as an orphan
    through_api(
        sim,
        ("POST", "/nodes/pve02/qemu/1500/config", {"scsi1": "local-lvm:1"}),
        ("PUT", "/nodes/pve02/qemu/1500/config", {"delete": "scsi1"}),
    )
    volume = sim.vm_state(1500)["config"]["unused0"]
    state = sim.state()
    vm = next(v for v in state["vms"] if v["vmid"] == 1500)
    del vm["config"]["unused0"]  # as a VM left with a volume it no longer names (a failed disk operation)
    (sim.home.state_dir / "sim" / "state.json").write_text(json.dumps(state), encoding="utf-8")
    said = failed(sim, "disk-remove-unused", f"volid={volume}")
    assert "is named after a VM that exists" in said and "qm disk rescan" in said
    assert volume.split(":", 1)[1] in sim.volumes("local-lvm"), "nothing deleted"


# -- what the runbooks above rely on: extract's loop variable and $steps, a volid in a path --------


def test_extract_sees_the_loop_variable_and_only_the_steps_it_names() -> None:
    steps = StepOutputs({"vms": [{"vmid": 1500}], "big": list(range(5)), "scan.configs": [{"vmid": 7}]})
    context = {"store": {"node": "pve03"}, "steps": steps}
    scope = extract_scope("[$steps.vms[].vmid, $store.node]", context, "store")
    assert scope == {"store": {"node": "pve03"}, "steps": {"vms": [{"vmid": 1500}]}}
    assert extract_scope(". | length", context, "store") == {}, "nothing named, nothing converted"
    inside_a_call = {"steps": steps.scoped("scan.")}
    assert extract_scope("$steps.configs", inside_a_call, None) == {"steps": {"configs": [{"vmid": 7}]}}


def test_a_template_holding_a_slash_is_one_segment_of_a_known_path() -> None:
    assert _known("DELETE", "/nodes/{{ n }}/storage/{{ s }}/content/{{ volid | replace('/', '%2F') }}")
    assert not _known("DELETE", "/nodes/{{ n }}/storage/{{ s }}/content/a/b")
