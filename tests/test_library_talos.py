"""The Talos and template runbooks of issue 17 (talos-discover, talos-node-replace, cloud-image-template),
run end to end against the simulated cluster, whose state is checked after each run.

The scenario key is ``talos_library`` in ``tests.test_runbooks_simulated.SCENARIOS``.
"""

from __future__ import annotations

import json

from tests.test_runbooks_simulated import SCENARIOS, STAGING, Sim
from tests.test_runbooks_simulated import sim as sim  # noqa: F401 - the fixture, shared


def _discover(sim: Sim, *params: str) -> dict[str, dict[str, str]]:
    run = sim.run("talos-discover", *params, profile="talos-staging")
    return {row["name"]: row for row in run.output("discovered")}


def _fails(sim: Sim, *args: str) -> str:
    result = sim.invoke(*args)
    assert result.exit_code != 0, result.output
    return result.output + result.stderr


def test_discover_then_replace_a_control_plane(sim: Sim) -> None:
    # Nothing exists yet: no VM answers at a planned address.
    rows = _discover(sim)
    assert {name: row["state"] for name, row in rows.items()} == dict.fromkeys(STAGING, "unreachable")
    assert rows["stg-cp02"]["mac"] == "02:70:76:00:04:08"

    # A VM made from the template and started boots in maintenance mode: it shows its disks.
    sim.run("vm-clone", "template=101", "newid=1031", "name=stg-cp01", "target=pve01")
    sim.run("vm-power", "vmid=1031", "action=start")
    rows = _discover(sim, "node=stg-cp01")
    assert list(rows) == ["stg-cp01"]
    assert rows["stg-cp01"]["state"] == "maintenance"
    assert rows["stg-cp01"]["disks"].startswith("/dev/sda ") and rows["stg-cp01"]["install_disk"] == "yes"

    sim.run("cluster-create", profile="talos-staging")
    rows = _discover(sim)
    assert {name: row["state"] for name, row in rows.items()} == dict.fromkeys(STAGING, "configured")

    old_uid = sim.vm_state(1032)["config"]["smbios1"]
    replace = sim.run("talos-node-replace", "node=stg-cp02", profile="talos-staging")
    old_member = replace.output("old_member[name=stg-cp02]")
    assert len(old_member) == 16
    for step in ("stop_old", "remove_member", "destroy_old", "configure", "start", "apply"):
        assert replace.status(f"{step}[name=stg-cp02]") == "succeeded", step
    assert replace.status("quorum_before[name=stg-cp02]") == "succeeded"
    members = {row["hostname"]: row["member"] for row in replace.output("members_after")}
    assert set(members) == set(STAGING) and members["stg-cp02"] != old_member
    assert replace.status("health_after") == "succeeded"

    # The cluster: a new VM 1032 with the old name, MAC and node, running, and a healthy Talos node.
    vm = sim.vms()[1032]
    assert (vm["name"], vm["node"], vm["status"]) == ("stg-cp02", "pve02", "running")
    config = sim.vm_state(1032)["config"]
    assert config["smbios1"] != old_uid and "02:70:76:00:04:08" in config["net0"].upper()
    assert config["tags"] == "talos;kubernetes;staging;controlplane" and "size=100G" in config["scsi0"]
    talos = {row["ip"]: row for row in sim.status()["talos"]}
    assert {ip: row["state"] for ip, row in talos.items()} == {ip: "healthy" for _v, _n, ip in STAGING.values()}
    assert "etcd_removed" not in json.dumps(sim.state()["talos"]["nodes"]["10.20.0.32"])
    assert set(SCENARIOS["talos_library"][:2]) <= set(sim.ran)


def test_replace_refuses_without_quorum_and_unknown_nodes(sim: Sim) -> None:
    sim.run("cluster-create", profile="talos-staging")
    run = ["run", "talos-node-replace", "--simulate", "--yes", "--profile", "talos-staging"]

    text = _fails(sim, *run, "--param", "node=stg-cp09")
    assert "stg-cp09 is not a VM of profile talos-staging (its VMs: stg-cp01,stg-cp02,stg-cp03)" in text

    # cp03 is down: replacing cp02 would leave one etcd member of three running.
    sim.run("vm-power", "vmid=1033", "action=stop")
    text = _fails(sim, *run, "--param", "node=stg-cp02")
    assert "quorum_before" in text and "10.20.0.33" in text
    vm = sim.vms()[1032]
    assert (vm["name"], vm["status"]) == ("stg-cp02", "running")
    assert not sim.state()["talos"]["nodes"]["10.20.0.32"].get("etcd_removed")


def test_cloud_image_template(sim: Sim) -> None:
    run = ["run", "cloud-image-template", "--simulate", "--yes"]
    params = ["--param", "vmid=110", "--param", "node=pve02", "--param", "name=debian-12-cloud"]

    # Without the public keys file nothing is made.
    text = _fails(sim, *run, *params)
    assert "id_ed25519.pub" in text
    assert 110 not in sim.vms()

    keys = sim.user_home / ".ssh"
    keys.mkdir()
    (keys / "id_ed25519.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2e ops@lab\n")
    made = sim.run("cloud-image-template", "vmid=110", "node=pve02", "name=debian-12-cloud")
    shown = made.output("template")
    assert shown["template"] is True and shown["user"] == "ops" and shown["network"] == "ip=dhcp"

    vm = sim.vms()[110]
    assert (vm["name"], vm["node"], vm["template"]) == ("debian-12-cloud", "pve02", True)
    config = sim.vm_state(110)["config"]
    assert config["tags"] == "template;cloudinit"
    assert config["sshkeys"] == "ssh-ed25519%20AAAAC3NzaC1lZDI1NTE5AAAAIE2e%20ops%40lab%0A"
    assert config["ide2"].startswith("local-lvm:") and "cloudinit" in config["ide2"]
    assert config["scsi0"].startswith("local-lvm:base-110-disk-") and config["boot"] == "order=scsi0"
    image = "/var/lib/vz/import/debian-12-genericcloud-amd64.qcow2"
    assert image in sim.state()["files"]["pve02"]

    # Again: everything is in place, nothing changes.
    again = sim.run("cloud-image-template", "vmid=110", "node=pve02", "name=debian-12-cloud", "remove_image=true")
    for step in ("create_vm", "download_image", "import_disk", "cloudinit_drive", "make_template", "tag_template"):
        assert again.status(step) == "skipped", step
    assert image not in sim.state()["files"]["pve02"]

    # A VMID another VM holds is refused before anything changes.
    text = _fails(sim, *run, "--param", "vmid=101", "--param", "node=pve01", "--param", "name=debian-12-cloud")
    assert "VMID 101 is used by" in text
    assert "cloud-image-template" in sim.ran
