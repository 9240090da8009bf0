"""The proof that a review tells the truth: what the dry-run said would change is what the run changed.

For every shipped runbook that runs on the simulated cluster, in the scenarios and with the
parameters of ``test_runbooks_simulated``: the live dry-run's change set (``run --dry-run
--json``) is taken, then the simulated cluster and the local Talos and backup folders are captured,
the run is made for real (``--yes``), and captured again. ``tests/support/clusterdiff.py`` holds
the change set against the difference both ways: every resource the review said is created,
changed or destroyed is so, with the fields it gave; every action word (start, stop, migrate...)
shows in the VM's status or node; and nothing changed that the review did not list. A change the
review marks as depending on run-time values may or may not happen, but explains what it names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.support.clusterdiff import capture, diff, unexplained
from tests.test_runbooks_simulated import SCHEMATIC, Sim, shipped_runbooks
from tests.test_runbooks_simulated import sim as sim  # noqa: F401 - the fixture, shared

#: Local files a read-only step writes: the kubeconfig is fetched again by talos_kubeconfig on every run
#: and resume (readonly: true), a local copy of what the cluster holds, not a change to it.
IGNORED = ("kubeconfig",)


def proved(sim: Sim, name: str, *params: str, profile: str | None = None, roots: tuple[Path, ...] = ()) -> dict:
    """Review ``name``, run it, and check the review against what the run did; the review's JSON."""
    args = ["run", name, "--simulate", "--dry-run", "--json"]
    if profile:
        args += ["--profile", profile]
    for param in params:
        args += ["--param", param]
    result = sim.invoke(*args)
    assert result.exit_code == 0, f"review of {name}: {result.stdout}\n{result.stderr}"
    review = json.loads(result.stdout)
    local = (sim.home.state_dir / "sim" / "talos", *roots)
    before = capture(sim.home.state_dir, local, IGNORED)
    sim.run(name, *params, profile=profile)
    after = capture(sim.home.state_dir, local, IGNORED)
    found = diff(before, after)
    errors = unexplained(review["changes"], found)
    assert errors == [], (
        f"{name}: the review did not tell what the run did:\n"
        + "\n".join(errors)
        + ("\n\nreview: " + json.dumps(review["changes"], indent=1)[:6000])
    )
    return review


def _certain(review: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(c["action"], c["resource"], c["id"]) for c in review["changes"] if not c["when"]]


def test_talos_cluster_lifecycle_reviews_are_exact(sim: Sim, tmp_path: Path) -> None:
    create = proved(sim, "cluster-create", profile="talos-staging")
    made = [c["id"] for c in create["changes"] if (c["action"], c["resource"]) == ("create", "vm")]
    assert made == ["1031", "1032", "1033"] and create["change_counts"]["start"] == 3
    # A second create changes nothing: the Talos patches and markers already hold what they would be given.
    again = proved(sim, "cluster-create", profile="talos-staging")
    assert _certain(again) == []
    assert again["change_summary"].startswith("Plan: 0 to create, 0 to change, 0 to destroy.")
    proved(sim, "cluster-status", profile="talos-staging")
    backups = tmp_path / "etcd-backups"
    proved(
        sim, "talos-etcd-backup", f"backup_dir={backups}", "node=stg-cp02", profile="talos-staging", roots=(backups,)
    )
    proved(sim, "talos-image-factory", profile="talos-staging")
    proved(sim, "talos-image-cache", 'extra_images=["docker.io/library/nginx:1.27"]', profile="talos-staging")
    proved(
        sim,
        "talos-upgrade",
        "talos_version=v1.9.6",
        "kubernetes_version=v1.32.4",
        f"backup_dir={backups}",
        profile="talos-staging",
        roots=(backups,),
    )
    proved(sim, "talos-cluster-bootstrap", profile="talos-staging")
    teardown = proved(sim, "cluster-teardown", profile="talos-staging")
    destroyed = [c for c in teardown["changes"] if c["action"] == "destroy"]
    assert {c["id"] for c in destroyed} == {"1031", "1032", "1033"}
    assert all(any(lost["kind"] == "disk" for lost in c["lost"]) for c in destroyed)


def test_generic_cluster_reviews_are_exact(sim: Sim) -> None:
    proved(sim, "cluster-create", profile="dev-generic")
    proved(sim, "cluster-status", profile="dev-generic")
    proved(sim, "cluster-teardown", profile="dev-generic")


def test_template_and_vm_operation_reviews_are_exact(sim: Sim) -> None:
    proved(
        sim,
        "talos-template-create",
        "vmid=110",
        "node=pve02",
        "version=v1.9.6",
        f"schematic={SCHEMATIC}",
        "remove_image=true",
    )
    proved(sim, "vm-clone", "template=102", "newid=1500", "name=web01", "target=pve02")
    proved(sim, "vm-clone", "template=102", "newid=1500", "name=web01", "target=pve02")
    for action in ("start", "reboot", "shutdown", "start", "stop"):
        proved(sim, "vm-power", "vmid=1500", f"action={action}")
    proved(sim, "vm-power", "vmid=1500", "action=stop")
    resize = proved(sim, "vm-resize", "vmid=1500", "cores=4", "memory=4096", "disk_size=32G")
    assert [c["resource"] for c in resize["changes"]] == ["vm", "disk"]
    proved(sim, "vm-migrate", "vmid=1500", "target=pve03")
    proved(sim, "snapshot-create", "vmid=1500", "snapname=before-change", "description=before the cores change")
    proved(sim, "snapshot-list", "vmid=1500")
    proved(sim, "vm-resize", "vmid=1500", "cores=8")
    proved(sim, "vm-power", "vmid=1500", "action=start")
    running = proved(sim, "vm-resize", "vmid=1500", "memory=6144")  # running: waits for a restart
    (memory,) = [f for c in running["changes"] for f in c["fields"] if f["name"] == "memory"]
    assert memory["pending"] is True
    proved(sim, "snapshot-rollback", "vmid=1500", "snapname=before-change")
    proved(sim, "vm-power", "vmid=1500", "action=start")
    proved(sim, "snapshot-create", "vmid=1500", "snapname=live", "vmstate=true")
    proved(sim, "snapshot-rollback", "vmid=1500", "snapname=live")
    proved(sim, "snapshot-delete", "vmid=1500", "snapname=before-change")
    proved(sim, "snapshot-delete", "vmid=1500", "snapname=live")
    proved(sim, "vm-backup", "vmid=1500")
    archive = next(v for s in sim.state()["storages"] for v in s["volumes"] if "vzdump-qemu-1500-" in v)
    storage = next(s["id"] for s in sim.state()["storages"] if archive in s["volumes"])
    proved(sim, "vm-restore", f"archive={storage}:{archive}", "vmid=1600", "node=pve03")
    proved(sim, "storage-overview", "node=pve03")
    proved(sim, "vm-power", "vmid=1500", "action=start")
    proved(sim, "node-evacuate", "node=pve03")


def test_access_and_ansible_reviews_are_exact(sim: Sim) -> None:
    first = proved(sim, "api-token-bootstrap")
    assert {c["resource"] for c in first["changes"]} >= {"user", "role", "acl", "token"}
    proved(sim, "api-token-bootstrap")
    proved(sim, "vm-clone", "template=101", "newid=1300", "name=talos-a")
    proved(sim, "ansible-provision", "part=controlplane", "check_mode=true")


def test_inventory_and_vm_delete_reviews_are_exact(sim: Sim) -> None:
    assert proved(sim, "api-check")["changes"] == []
    assert proved(sim, "vmid-next")["changes"] == []
    assert proved(sim, "cluster-health")["changes"] == []
    assert proved(sim, "node-usage")["changes"] == []
    assert proved(sim, "vm-list")["changes"] == []
    proved(sim, "vm-clone", "template=102", "newid=1500", "name=web01", "target=pve02")
    proved(sim, "vm-power", "vmid=1500", "action=start")
    deleted = proved(sim, "vm-delete", "vmid=1500", "name=web01")
    assert ("destroy", "vm", "1500") in _certain(deleted)
    assert proved(sim, "vm-delete", "vmid=1500", "name=web01")["changes"] == []  # gone: nothing to do


def test_tag_and_rebuild_reviews_are_exact(sim: Sim) -> None:
    proved(sim, "cluster-create", profile="dev-generic")
    proved(sim, "tag-list", "with_tags=dev,worker")
    shutdown = proved(sim, "tag-power", "with_tags=dev,worker", "action=shutdown")
    assert shutdown["change_counts"]["shutdown"] == 3
    proved(sim, "tag-power", "with_tags=dev", "action=start")
    added = proved(sim, "tag-add", "tag=nightly", "vmids=1211,1213,101")
    assert sorted(c["id"] for c in added["changes"]) == ["101", "1211", "1213"]
    proved(sim, "tag-remove", "tag=nightly")
    proved(sim, "cluster-rebuild", profile="dev-generic")


def test_talos_library_reviews_are_exact(sim: Sim) -> None:
    proved(sim, "talos-discover", profile="talos-staging")
    proved(sim, "cluster-create", profile="talos-staging")
    replace = proved(sim, "talos-node-replace", "node=stg-cp02", profile="talos-staging")
    assert {("stop", "vm", "1032"), ("destroy", "vm", "1032")} <= set(_certain(replace))
    assert any(c["resource"] == "etcd-member" and c["action"] == "destroy" for c in replace["changes"])
    keys = sim.user_home / ".ssh"
    keys.mkdir()
    (keys / "id_ed25519.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2e ops@lab\n")
    proved(sim, "cloud-image-template", "vmid=110", "node=pve02", "name=debian-12-cloud", "remove_image=true")


def test_storage_and_backup_reviews_are_exact(sim: Sim) -> None:
    from tests.test_library_storage import ORPHAN, through_api

    sim.run("vm-clone", "template=102", "newid=1500", "name=web01", "target=pve02")
    volid = sim.run("vm-backup", "vmid=1500").output("archive")["volid"]
    proved(sim, "backup-list")
    proved(sim, "backup-jobs")
    deleted = proved(sim, "backup-delete", f"volid={volid}")
    assert _certain(deleted) == [("destroy", "backup", volid)]
    proved(sim, "iso-list")
    proved(sim, "image-list")
    proved(sim, "disk-orphans")
    through_api(
        sim,
        ("POST", "/nodes/pve02/qemu/1500/config", {"scsi1": "local-lvm:2"}),
        ("PUT", "/nodes/pve02/qemu/1500/config", {"delete": "scsi1"}),
    )
    proved(sim, "disk-remove-unused", "vmid=1500", "disk=unused0")
    orphan = proved(sim, "disk-remove-unused", f"volid={ORPHAN}")
    assert _certain(orphan) == [("destroy", "storage-content", ORPHAN)]


def test_vm_library_reviews_are_exact(sim: Sim) -> None:
    proved(sim, "vm-clone", "template=102", "newid=1500", "name=web01", "target=pve02")
    assert proved(sim, "vm-status", "vmid=1500")["changes"] == []
    volid = sim.run("vm-backup", "vmid=1500").output("archive")["volid"]
    sim.run("vm-power", "vmid=1500", "action=start")
    over = proved(sim, "vm-restore", "vmid=1500", "overwrite=true")  # its newest backup, found by the run
    assert {("stop", "vm", "1500"), ("replace", "vm", "1500")} <= set(_certain(over))
    new = proved(sim, "vm-restore", f"archive={volid}", "vmid=1600")
    assert ("create", "vm", "1600") in _certain(new)


def test_iso_upload_review_is_exact(sim: Sim) -> None:
    from tests.test_library_iso import SHA256, URL

    upload = proved(sim, "iso-upload", f"url={URL}", "node=pve02", f"checksum={SHA256}")
    assert _certain(upload) == [("download", "file", "pve02:/var/lib/vz/template/iso/debian-12.9.0-amd64-netinst.iso")]
    assert proved(sim, "iso-upload", f"url={URL}", "node=pve02", f"checksum={SHA256}")["changes"] == []


def test_every_shipped_runbook_is_proved() -> None:
    """No runbook escapes the proof: each is reviewed and run by one of the scenarios above."""
    named = set(re.findall(r'proved\(\s*sim,\s*"([a-z0-9-]+)"', Path(__file__).read_text(encoding="utf-8")))
    assert named == shipped_runbooks()
