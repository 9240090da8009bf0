"""The simulated cluster's storage content for the library's runbooks: backups on a backup storage,
backup jobs, ISO images (from the node shell, and ``download-url``), disk images and orphaned disks.

Driven as runbooks drive it: the real ``ApiExecutor`` over verified HTTPS, and the simulated node
shell for what the reference does over SSH (``wget`` into the ISO folder).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from engine.executors.api import ApiExecutor
from engine.load.config import load_config
from engine.load.home import Home
from engine.runbook.actions import ShellCommand, StepFailed
from engine.sim.server import ORPHAN_VMID, SimCluster
from engine.sim.wiring import Simulation
from tests.test_sim_server import call, clone, executor, start, vms


@pytest.fixture
def home(make_home: Callable[..., Home]) -> Home:
    return make_home(runbooks=False)


@pytest.fixture
def sim(home: Home) -> Iterator[SimCluster]:
    cluster = start(home)
    yield cluster
    cluster.stop()


@pytest.fixture
def api(sim: SimCluster) -> Iterator[ApiExecutor]:
    with executor(sim) as client:
        yield client


def content(api: ApiExecutor, node: str, storage: str, kind: str) -> dict[str, dict[str, Any]]:
    listed = call(api, "GET", f"/nodes/{node}/storage/{storage}/content", content=kind)
    return {item["volid"]: item for item in listed}


# ------------------------------------------------------------------ backups


def test_a_backup_is_content_of_its_storage_on_its_node_and_is_deleted_there_only(api: ApiExecutor) -> None:
    clone(api, 1050, "app01")
    call(
        api,
        "POST",
        "/nodes/pve01/vzdump",
        vmid=1050,
        storage="local",
        mode="snapshot",
        compress="zstd",
        **{"notes-template": "{{guestname}} on {{node}}"},
    )
    ((volid, item),) = content(api, "pve01", "local", "backup").items()
    assert volid.startswith("local:backup/vzdump-qemu-1050-") and volid.endswith(".vma.zst")
    assert (item["vmid"], item["content"], item["format"], item["notes"]) == (
        1050,
        "backup",
        "vma.zst",
        "app01 on pve01",
    )
    assert item["size"] > 0 and item["ctime"] > 0
    assert content(api, "pve02", "local", "backup") == {}, "local is each node's own disk"
    assert content(api, "pve01", "local", "iso") == {}, "content=backup lists backups only"

    call(api, "DELETE", f"/nodes/pve02/storage/local/content/{volid}")  # PVE: no such file there, nothing removed
    assert volid in content(api, "pve01", "local", "backup")
    call(api, "DELETE", f"/nodes/pve01/storage/local/content/{volid}")
    assert content(api, "pve01", "local", "backup") == {}


# ------------------------------------------------------------------ backup jobs


def test_backup_jobs_are_listed_created_changed_kept_and_removed(home: Home, sim: SimCluster) -> None:
    with executor(sim) as api:
        assert call(api, "GET", "/cluster/backup") == []
        call(
            api,
            "POST",
            "/cluster/backup",
            id="nightly",
            schedule="21:00",
            storage="local",
            all=1,
            mode="snapshot",
            compress="zstd",
        )
        call(api, "POST", "/cluster/backup", schedule="sun 01:00", storage="local", vmid="101,102")
        jobs = {job["id"]: job for job in call(api, "GET", "/cluster/backup")}
        assert jobs["nightly"] == {
            "id": "nightly",
            "type": "vzdump",
            "schedule": "21:00",
            "storage": "local",
            "all": 1,
            "mode": "snapshot",
            "compress": "zstd",
            "enabled": 1,
        }
        (other,) = (job for job in jobs.values() if job["id"] != "nightly")
        assert other["id"].startswith("backup-") and other["vmid"] == "101,102"
        call(api, "PUT", "/cluster/backup/nightly", enabled=0, delete="compress")
        assert call(api, "GET", "/cluster/backup/nightly")["enabled"] == 0
        assert "compress" not in call(api, "GET", "/cluster/backup/nightly")
        for params, says in [
            ({"id": "nightly", "schedule": "22:00", "all": 1}, "Job 'nightly' already exists"),
            ({"schedule": "22:00", "all": 1, "storage": "nope"}, "storage 'nope' does not exist"),
            ({"schedule": "22:00", "all": 1, "storage": "local-lvm"}, "does not support backups"),
            ({"schedule": "22:00"}, "you need to specify 'vmid' or 'all'"),
        ]:
            with pytest.raises(StepFailed, match=says):
                call(api, "POST", "/cluster/backup", **params)
        with pytest.raises(StepFailed, match="job 'gone' does not exist"):
            call(api, "GET", "/cluster/backup/gone")
    sim.stop()
    again = start(home)
    try:
        with executor(again) as api:
            assert sorted(job["id"] for job in call(api, "GET", "/cluster/backup")) == sorted(jobs)
            call(api, "DELETE", "/cluster/backup/nightly")
            assert [job["id"] for job in call(api, "GET", "/cluster/backup")] == [other["id"]]
    finally:
        again.stop()


# ------------------------------------------------------------------ ISO images


def test_an_iso_fetched_on_a_node_is_listed_there_and_removed_through_the_api(home: Home) -> None:
    with Simulation(home, load_config(home)) as simulation:
        dispatcher = simulation.dispatcher()
        try:
            path = "/var/lib/vz/template/iso/debian-12.iso"
            fetched = dispatcher.execute(
                ShellCommand(f"wget -q -O {path} https://cdimage.example.org/debian-12.iso", node="pve01"), print
            )
            assert fetched.data["exit_code"] == 0
            cluster = simulation.cluster
            assert cluster is not None
            with executor(cluster) as api:
                isos = content(api, "pve01", "local", "iso")
                assert isos["local:iso/debian-12.iso"]["size"] == 50 * 1024 * 1024
                assert isos["local:iso/debian-12.iso"]["format"] == "iso"
                assert content(api, "pve02", "local", "iso") == {}, "on pve01's own disk only"
                call(
                    api,
                    "POST",
                    "/nodes/pve02/storage/local/download-url",
                    url="https://example.org/tools.iso",
                    filename="tools.iso",
                    content="iso",
                )
                assert "local:iso/tools.iso" in content(api, "pve02", "local", "iso")
                call(api, "DELETE", "/nodes/pve01/storage/local/content/local:iso/debian-12.iso")
                assert "local:iso/debian-12.iso" not in content(api, "pve01", "local", "iso")
            assert not simulation.files.is_file("pve01", path), "the file is gone from the node's disk"
        finally:
            dispatcher.close()


# ------------------------------------------------------------------ disk images, orphans, unusedN


def test_disk_images_and_the_seeded_orphan_on_the_vm_storage(api: ApiExecutor) -> None:
    images = content(api, "pve03", "local-lvm", "images")
    orphan = f"local-lvm:vm-{ORPHAN_VMID}-disk-0"
    assert images[orphan]["vmid"] == ORPHAN_VMID and images[orphan]["size"] == 4 * 1024**3
    assert "local-lvm:base-101-disk-0" in content(api, "pve01", "local-lvm", "images"), "a template's base disk too"
    assert ORPHAN_VMID not in vms(api), "no VM config references it"
    assert orphan not in content(api, "pve01", "local-lvm", "images"), "on pve03's disk only"


def test_a_detached_disk_becomes_unused_and_deleting_that_destroys_it(api: ApiExecutor) -> None:
    clone(api, 1050, "app01")
    call(api, "POST", "/nodes/pve01/qemu/1050/config", scsi1="local-lvm:2")
    volume = call(api, "GET", "/nodes/pve01/qemu/1050/config")["scsi1"].split(",")[0]
    call(api, "POST", "/nodes/pve01/qemu/1050/snapshot", snapname="before")
    call(api, "PUT", "/nodes/pve01/qemu/1050/config", delete="scsi1")
    config = call(api, "GET", "/nodes/pve01/qemu/1050/config")
    assert "scsi1" not in config and config["unused0"] == volume
    assert volume in content(api, "pve01", "local-lvm", "images"), "still on the storage"
    call(api, "PUT", "/nodes/pve01/qemu/1050/config", delete="unused0")
    assert "unused0" not in call(api, "GET", "/nodes/pve01/qemu/1050/config")
    assert volume in content(api, "pve01", "local-lvm", "images"), "the snapshot still references it: kept"
    call(api, "DELETE", "/nodes/pve01/qemu/1050/snapshot/before")
    call(api, "POST", "/nodes/pve01/qemu/1050/config", scsi2="local-lvm:1")
    second = call(api, "GET", "/nodes/pve01/qemu/1050/config")["scsi2"].split(",")[0]
    call(api, "PUT", "/nodes/pve01/qemu/1050/config", delete="scsi2")
    call(api, "PUT", "/nodes/pve01/qemu/1050/config", delete="unused0")
    assert second not in content(api, "pve01", "local-lvm", "images"), "an unused disk deleted is destroyed"
