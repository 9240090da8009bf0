"""Every shipped runbook validates, and runs end to end against the embedded simulated cluster.

Each scenario is a fresh home (``make_home``) and runs its runbooks with ``--simulate --yes
--json`` through the CLI, in the order an operator would, with the parameters an operator would
give. After each run the simulated cluster itself is checked (``runbook sim status --json`` and
``.runbook/sim/state.json``), not only the exit code: the clone is there with its name and node,
the VM is stopped after a shutdown, the snapshot exists and then is gone, and so on.

The API token of the simulated cluster, and the secret PVE answers for a token the runbooks
create, are replaced by known values, so that every output of every run and every file the runs
leave under ``.runbook/`` can be searched for them: a secret must never be printed or written.

``SCENARIOS`` names the runbooks each scenario runs; together they must be every runbook in
``runbooks/`` (``_template.md`` aside), so a new runbook without a simulated run fails the suite.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import engine.sim.server as sim_server
from engine.load.home import Home
from tests.conftest import REPO

#: The simulated cluster's API token secret and a created token's secret, for the duration of a test.
API_SECRET = "c0ffee" * 10 + "5ec2e7"
TOKEN_VALUE = "7e57c0de-5ec2-4e7a-9a11-0b5e55ed5ec2"

#: The Image Factory schematic of the talos-staging profile (its extensions).
SCHEMATIC = "6ebbfe35c8225645c05d4d19eaad385bd1ec795954932d0ada671388272fec19"
STAGING = {
    "stg-cp01": (1031, "pve01", "10.20.0.31"),
    "stg-cp02": (1032, "pve02", "10.20.0.32"),
    "stg-cp03": (1033, "pve03", "10.20.0.33"),
}

SCENARIOS: dict[str, tuple[str, ...]] = {
    "talos": (
        "cluster-create",
        "cluster-status",
        "talos-etcd-backup",
        "talos-image-factory",
        "talos-image-cache",
        "talos-upgrade",
        "talos-cluster-bootstrap",
        "cluster-teardown",
    ),
    "generic": ("cluster-create", "cluster-status", "cluster-teardown"),
    "vm_operations": (
        "talos-template-create",
        "vm-clone",
        "vm-power",
        "vm-resize",
        "vm-migrate",
        "snapshot-create",
        "snapshot-list",
        "snapshot-rollback",
        "snapshot-delete",
        "vm-backup",
        "vm-restore",
        "storage-overview",
        "node-evacuate",
    ),
    "access_and_ansible": ("api-token-bootstrap", "ansible-provision"),
    # tests/test_library_vm.py
    "vm_library": ("vm-status",),
    # tests/test_library_inventory.py
    "inventory": ("api-check", "vmid-next", "cluster-health", "node-usage", "vm-list", "vm-delete"),
    # tests/test_library_tags.py
    "tags": ("cluster-create", "tag-list", "tag-power", "tag-add", "tag-remove", "cluster-rebuild"),
    # tests/test_library_talos.py
    "talos_library": ("talos-discover", "talos-node-replace", "cloud-image-template"),
    # tests/test_library_storage.py
    "storage_and_backups": (
        "backup-list",
        "backup-jobs",
        "backup-delete",
        "iso-list",
        "image-list",
        "disk-orphans",
        "disk-remove-unused",
    ),
    # tests/test_library_iso.py
    "iso_upload": ("iso-upload", "iso-list"),
}


#: A test-only runbook: the SHA-256 of the token secret a local step is given (never the secret itself).
TOKEN_PROBE = """---
name: token-probe
format: 2
description: Test only - which API token secret a simulated run hands to a local step, as a hash.
---

# Token probe

```local {id: probe, api_token_env: PROXMOX_API_TOKEN}
printf '%s' "${PROXMOX_API_TOKEN#*=}" | sha256sum
```
"""


def shipped_runbooks() -> set[str]:
    return {path.stem for path in (REPO / "runbooks").glob("*.md") if path.name != "_template.md"}


# -- the harness -----------------------------------------------------------------------------------


class Run:
    """The report of one run: its steps by id (``id[item_key]`` for loop items)."""

    def __init__(self, report: dict[str, Any]):
        self.report = report
        self.steps = {s["step"] + (f"[{s['item']}]" if s["item"] else ""): s for s in report["steps"]}

    def output(self, step: str) -> Any:
        return self.steps[step]["output"]

    def status(self, step: str) -> str:
        return self.steps[step]["status"]

    def statuses(self, step: str) -> list[str]:
        """The status of every item of a loop step."""
        return [s["status"] for key, s in self.steps.items() if key.startswith(step + "[")]


class Sim:
    """One scenario: a fresh home, the CLI run in it, and everything it printed (for the secret scan)."""

    def __init__(self, cli: Callable[..., Any], home: Home, user_home: Path):
        self.cli = cli
        self.home = home
        self.user_home = user_home
        self.ran: list[str] = []
        self.outputs: list[str] = []

    def invoke(self, *args: str) -> Any:
        # HOME is a temporary folder: "~" in a runbook (backup folders, the fleet-infra path) stays in the test.
        result = self.cli("--home", str(self.home.root), *args, env={"HOME": str(self.user_home)})
        self.outputs.append(result.output + "\n" + result.stderr)
        return result

    def run(self, name: str, *params: str, profile: str | None = None) -> Run:
        args = ["run", name, "--simulate", "--yes", "--json"]
        if profile:
            args += ["--profile", profile]
        for param in params:
            args += ["--param", param]
        result = self.invoke(*args)
        assert result.exit_code == 0, f"{name} exited with {result.exit_code}:\n{result.stdout}\n{result.stderr}"
        assert "SIMULATED cluster" in result.stderr
        report = json.loads(result.stdout.splitlines()[-1])
        assert report["event"] == "finished" and report["status"] == "succeeded", report["message"]
        self.ran.append(name)
        return Run(report)

    def status(self) -> dict[str, Any]:
        """``runbook sim status --json``."""
        result = self.invoke("sim", "status", "--json")
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["exists"] is True
        return data

    def vms(self) -> dict[int, dict[str, Any]]:
        return {vm["vmid"]: vm for vm in self.status()["vms"]}

    def state(self) -> dict[str, Any]:
        """``.runbook/sim/state.json``: configs, snapshots, storages and node files too."""
        return json.loads((self.home.state_dir / "sim" / "state.json").read_text(encoding="utf-8"))

    def vm_state(self, vmid: int) -> dict[str, Any]:
        return next(vm for vm in self.state()["vms"] if vm["vmid"] == vmid)

    def volumes(self, storage: str) -> dict[str, dict[str, Any]]:
        return next(s for s in self.state()["storages"] if s["id"] == storage)["volumes"]

    def talos_dir(self, profile: str) -> Path:
        """Where a simulated run keeps a profile's Talos files (never the profile's real config_dir)."""
        return self.home.state_dir / "sim" / "talos" / profile

    def check_no_secret_leaked(self) -> None:
        """No output and no file under .runbook/ (nor the test's HOME) holds a secret or an auth header."""
        for text in self.outputs:
            assert API_SECRET not in text
            assert TOKEN_VALUE not in text
            assert "PVEAPIToken=" not in text
        files = [p for root in (self.home.state_dir, self.user_home) for p in root.rglob("*") if p.is_file()]
        assert any(p.name == "journal.jsonl" for p in files)
        for path in files:
            data = path.read_bytes()
            assert API_SECRET.encode() not in data, path
            assert TOKEN_VALUE.encode() not in data, path
            assert b"PVEAPIToken=" not in data, path


@pytest.fixture
def sim(
    cli: Callable[..., Any], make_home: Callable[..., Home], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Sim]:
    monkeypatch.setattr(sim_server, "_api_secret", lambda: API_SECRET)
    monkeypatch.setattr(sim_server, "_new_token_value", lambda: TOKEN_VALUE)
    user_home = tmp_path / "user"
    user_home.mkdir()
    scenario = Sim(cli, make_home(), user_home)
    yield scenario
    scenario.check_no_secret_leaked()


def mac(net: str) -> str:
    return re.search(r"virtio=([0-9A-Fa-f:]{17})", net).group(1).upper()


# -- the suite covers every runbook ----------------------------------------------------------------


def test_every_shipped_runbook_validates(cli: Callable[..., Any]) -> None:
    paths = sorted(str(p) for p in (REPO / "runbooks").glob("*.md"))
    result = cli("--home", str(REPO), "validate", "--json", *paths)
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["ok"], report["problems"]
    assert {Path(p).stem for p in report["checked"]} >= shipped_runbooks()


def test_the_scenarios_run_every_shipped_runbook() -> None:
    covered = {name for names in SCENARIOS.values() for name in names}
    assert covered == shipped_runbooks(), (
        f"runbooks without a simulated run: {sorted(shipped_runbooks() - covered)}; "
        f"named but not shipped: {sorted(covered - shipped_runbooks())}"
    )


# -- scenario: a Talos cluster from create to teardown ---------------------------------------------


def test_talos_cluster_lifecycle(sim: Sim, tmp_path: Path) -> None:
    create = sim.run("cluster-create", profile="talos-staging")
    vms = sim.vms()
    for name, (vmid, node, _ip) in STAGING.items():
        assert (vms[vmid]["name"], vms[vmid]["node"], vms[vmid]["status"]) == (name, node, "running")
        assert (str(vms[vmid]["cores"]), str(vms[vmid]["memory"])) == ("4", "8192")
        assert vms[vmid]["tags"] == "talos;kubernetes;staging;controlplane"
    config = sim.vm_state(1031)["config"]
    assert mac(config["net0"]) == "02:70:76:00:04:07" and "size=100G" in config["scsi0"]
    talos = {row["ip"]: row for row in sim.status()["talos"]}
    assert {ip: (row["hostname"], row["state"]) for ip, row in talos.items()} == {
        ip: (name, "healthy") for name, (_vmid, _node, ip) in STAGING.items()
    }
    assert create.status("talos.flux") == "succeeded"
    assert (sim.talos_dir("talos-staging") / "kubeconfig").is_file()

    status = sim.run("cluster-status", profile="talos-staging")
    assert [(vm["name"], vm["vmid"], vm["node"], vm["status"]) for vm in status.output("vms")] == [
        (name, vmid, node, "running") for name, (vmid, node, _ip) in STAGING.items()
    ]
    assert status.statuses("missing") == ["skipped"] * 3
    assert status.status("talos_health") == "succeeded"
    assert "stg-cp03" in status.output("talos_members")["stdout"]

    backups = tmp_path / "etcd-backups"
    etcd = sim.run("talos-etcd-backup", f"backup_dir={backups}", "node=stg-cp02", profile="talos-staging")
    assert "10.20.0.32" in etcd.steps["etcd_snapshot"]["action"]["argv"]
    snapshots = sorted(backups.glob("talos-staging-etcd-*.db"))
    assert len(snapshots) == 1 and snapshots[0].stat().st_size > 0
    assert (backups / (snapshots[0].name + ".sha256")).read_text().split()[1] == snapshots[0].name

    factory = sim.run("talos-image-factory", profile="talos-staging")
    assert factory.output("schematic")["json"]["id"] == SCHEMATIC
    assert factory.status("schematic_matches") == "succeeded" and factory.status("schematic_differs") == "skipped"
    assert f"id {SCHEMATIC}" in (sim.talos_dir("talos-staging") / "factory-schematic.yaml").read_text()

    cache = sim.run("talos-image-cache", 'extra_images=["docker.io/library/nginx:1.27"]', profile="talos-staging")
    assert cache.output("client_version") == "v1.9.5"
    assert (sim.talos_dir("talos-staging") / "image-cache.oci").exists()
    patch = sim.talos_dir("talos-staging") / "patches" / "image-cache.yaml"
    assert "localEnabled: true" in patch.read_text()

    upgrade = sim.run(
        "talos-upgrade",
        "talos_version=v1.9.6",
        "kubernetes_version=v1.32.4",
        f"backup_dir={backups}",
        profile="talos-staging",
    )
    assert upgrade.output("kubernetes_versions") == ["v1.32.3"]
    assert upgrade.status("upgrade_kubernetes") == "succeeded"
    assert upgrade.statuses("rolling_upgrade") == ["succeeded"] * 6
    assert len(list(backups.glob("talos-staging-etcd-*-before-upgrade.db"))) == 1
    rows = sim.status()["talos"]
    assert {(r["talos_version"], r["kubernetes_version"], r["state"]) for r in rows} == {
        ("v1.9.6", "v1.32.4", "healthy")
    }

    # After cluster-create everything is done already: bootstrap recognises it and skips every change.
    bootstrap = sim.run("talos-cluster-bootstrap", profile="talos-staging")
    for step in ("apply", "applied"):
        assert bootstrap.statuses(step) == ["skipped"] * 3
    for step in ("secrets", "gen_config", "bootstrap[name=stg-cp01]", "flux"):
        assert bootstrap.status(step) == "skipped", step
    assert bootstrap.status("health") == "succeeded"
    assert {r["state"] for r in sim.status()["talos"]} == {"healthy"}

    teardown = sim.run("cluster-teardown", profile="talos-staging")
    assert teardown.statuses("delete") == ["succeeded"] * 3
    vms = sim.vms()
    assert not [vm for vm in vms.values() if not vm["template"]]
    assert {101, 102} <= set(vms) and vms[101]["template"]
    assert not [v for v in sim.volumes("local-lvm") if re.search(r"-103[123]-", v)]
    assert set(SCENARIOS["talos"]) <= set(sim.ran)


# -- scenario: a generic (non-Talos) cluster -------------------------------------------------------


def test_generic_cluster_create_and_teardown(sim: Sim) -> None:
    sim.run("cluster-create", profile="dev-generic")
    expected = {1201: "dev-cp01", 1211: "dev-w01", 1212: "dev-w02", 1213: "dev-w03"}
    vms = sim.vms()
    for vmid, name in expected.items():
        # placement: pack puts them all on the first node that fits; the template (102) is there too
        assert (vms[vmid]["name"], vms[vmid]["node"], vms[vmid]["status"]) == (name, "pve01", "running")
        assert vms[vmid]["tags"].split(";")[:2] == ["kubernetes", "dev"]
    config = sim.vm_state(1201)["config"]
    assert config["ciuser"] == "ops" and config["ipconfig0"] == "ip=dhcp" and "size=32G" in config["scsi0"]
    assert sim.status()["talos"] == []

    status = sim.run("cluster-status", profile="dev-generic")
    assert sorted(vm["vmid"] for vm in status.output("vms")) == [1201, 1211, 1212, 1213]
    assert status.status("talos_version") == "skipped"

    sim.run("cluster-teardown", profile="dev-generic")
    assert set(sim.vms()) == {101, 102}
    assert set(SCENARIOS["generic"]) <= set(sim.ran)


# -- scenario: a template, then one VM through its whole life --------------------------------------


def test_template_and_vm_operations(sim: Sim) -> None:
    image = f"/var/lib/vz/template/iso/talos-v1.9.6-{SCHEMATIC[:12]}-nocloud-amd64.raw"
    template = sim.run(
        "talos-template-create",
        "vmid=110",
        "node=pve02",
        "version=v1.9.6",
        f"schematic={SCHEMATIC}",
        "remove_image=true",
    )
    assert template.status("remove_image_files") == "succeeded"
    made = sim.vm_state(110)
    assert (made["name"], made["node"], made["template"]) == ("talos-v1.9.6", "pve02", True)
    assert made["config"]["tags"] == "template;talos" and made["config"]["boot"] == "order=scsi0"
    assert re.match(r"local-lvm:base-110-disk-\d+,", made["config"]["scsi0"])
    assert "ide2" not in made["config"] and "cloudinit" not in json.dumps(made["config"])
    node_files = sim.state()["files"].get("pve02", {})
    assert image not in node_files and image + ".xz" not in node_files

    clone = sim.run("vm-clone", "template=102", "newid=1500", "name=web01", "target=pve02")
    assert clone.output("result") == {
        "vmid": 1500,
        "name": "web01",
        "node": "pve02",
        "status": "stopped",
        "tags": "talos",
    }
    assert sim.vm_state(102)["config"]["tags"] == "template;talos"  # the clone leaves the template tag behind
    web = sim.vms()[1500]
    assert (web["name"], web["node"], web["status"], web["template"]) == ("web01", "pve02", "stopped", False)
    assert mac(sim.vm_state(1500)["config"]["net0"]) != mac(sim.vm_state(102)["config"]["net0"])  # a MAC of its own
    rerun = sim.run("vm-clone", "template=102", "newid=1500", "name=web01", "target=pve02")
    assert (rerun.status("clone"), rerun.status("move")) == ("skipped", "skipped")  # made by the first run

    for action, after in (
        ("start", "running"),
        ("reboot", "running"),
        ("shutdown", "stopped"),
        ("start", "running"),
        ("stop", "stopped"),
    ):
        power = sim.run("vm-power", "vmid=1500", f"action={action}")
        assert power.status(action) == "succeeded" and power.output("settled")["status"] == after
        assert sim.vms()[1500]["status"] == after, action
    again = sim.run("vm-power", "vmid=1500", "action=stop")
    assert again.status("stop") == "skipped"  # already stopped: nothing sent

    resize = sim.run("vm-resize", "vmid=1500", "cores=4", "memory=4096", "disk_size=32G")
    assert resize.output("current")["size"] == "8G"
    config = sim.vm_state(1500)["config"]
    assert (int(config["cores"]), int(config["memory"])) == (4, 4096) and "size=32G" in config["scsi0"]
    assert sim.volumes("local-lvm")["vm-1500-disk-0"]["size"] == 32 * 1024**3

    migrate = sim.run("vm-migrate", "vmid=1500", "target=pve03")
    assert migrate.output("precheck") == {"local_disks": ["local-lvm:vm-1500-disk-0"]}
    assert migrate.output("arrived") == {"node": "pve03", "status": "stopped"}
    assert sim.vms()[1500]["node"] == "pve03"

    sim.run("snapshot-create", "vmid=1500", "snapname=before-change", "description=before the cores change")
    snapshot = sim.vm_state(1500)["snapshots"]["before-change"]
    assert snapshot["description"] == "before the cores change" and int(snapshot["cores"]) == 4
    listed = sim.run("snapshot-list", "vmid=1500").output("snapshots")
    assert (listed["count"], listed["current_parent"]) == (1, "before-change")
    assert [s["name"] for s in listed["snapshots"]] == ["before-change"]

    sim.run("vm-resize", "vmid=1500", "cores=8")  # stopped: applies at once
    assert int(sim.vm_state(1500)["config"]["cores"]) == 8
    sim.run("vm-power", "vmid=1500", "action=start")
    running = sim.run("vm-resize", "vmid=1500", "memory=6144")  # running: waits for a restart
    assert running.output("pending") == {"restart_needed_for": ["memory"]}
    rollback = sim.run("snapshot-rollback", "vmid=1500", "snapname=before-change")
    assert rollback.status("stop") == "succeeded" and rollback.output("settled")["status"] == "stopped"
    after = sim.vm_state(1500)
    assert (int(after["config"]["cores"]), int(after["config"]["memory"]), after["pending"]) == (4, 4096, {})
    assert after["status"] == "stopped" and after["config"]["parent"] == "before-change"

    # A snapshot with the memory of the running VM: the rollback resumes it, no stop first.
    sim.run("vm-power", "vmid=1500", "action=start")
    sim.run("snapshot-create", "vmid=1500", "snapname=live", "vmstate=true")
    assert sim.run("snapshot-create", "vmid=1500", "snapname=live").status("snapshot") == "skipped"  # taken already
    chain = sim.run("snapshot-list", "vmid=1500").output("snapshots")
    assert [(s["name"], s["vmstate"], s["parent"]) for s in chain["snapshots"]] == [
        ("before-change", False, None),
        ("live", True, "before-change"),
    ]
    resumed = sim.run("snapshot-rollback", "vmid=1500", "snapname=live")
    assert resumed.status("stop") == "skipped" and resumed.output("settled")["status"] == "running"
    assert sim.vms()[1500]["status"] == "running"

    deleted = sim.run("snapshot-delete", "vmid=1500", "snapname=before-change")
    assert deleted.output("remaining") == {"remaining": ["live"]}
    assert sim.run("snapshot-delete", "vmid=1500", "snapname=live").output("remaining") == {"remaining": []}
    assert sim.vm_state(1500)["snapshots"] == {}
    assert sim.run("snapshot-list", "vmid=1500").output("snapshots")["count"] == 0

    backup = sim.run("vm-backup", "vmid=1500")
    archive = backup.output("archive")
    assert re.fullmatch(r"local:backup/vzdump-qemu-1500-\d{4}_\d\d_\d\d-\d\d_\d\d_\d\d\.vma\.zst", archive["volid"])
    assert archive["notes"] == "web01: manual backup (runbook vm-backup)"
    stored = sim.volumes("local")[archive["volid"].split(":", 1)[1]]
    assert (stored["vmid"], stored["node"], stored["content"]) == (1500, "pve03", "backup")

    restore = sim.run("vm-restore", f"archive={archive['volid']}", "vmid=1600", "node=pve03")
    chosen = restore.output("chosen")
    assert (chosen["volid"], chosen["node"], chosen["replacing"]) == (archive["volid"], "pve03", None)
    assert restore.output("restored") == {"name": "web01", "status": "stopped"}
    assert (sim.vms()[1600]["node"], sim.vms()[1600]["status"]) == ("pve03", "stopped")
    restored, original = sim.vm_state(1600)["config"], sim.vm_state(1500)["config"]
    assert restored["scsi0"].startswith("local-lvm:vm-1600-disk-0,") and "size=32G" in restored["scsi0"]
    assert int(restored["cores"]) == 4 and mac(restored["net0"]) != mac(original["net0"])  # unique=true

    overview = sim.run("storage-overview", "node=pve03")
    assert {s["node"] for s in overview.output("usage")} == {"pve03"}
    usage = {s["storage"]: s for s in overview.output("usage")}
    # the disks of 1500 and 1600, 32 GiB each, and the orphan a new simulated cluster has on pve03 (4 GiB)
    assert usage["local-lvm"]["used_gib"] == 64.0 + sim_server.ORPHAN_SIZE / 1024**3
    assert usage["local"]["used_gib"] == int(stored["size"] / 1024**3 * 10) / 10 > 0  # the backup archive
    assert overview.output("warnings") == []

    sim.run("vm-power", "vmid=1500", "action=start")
    evacuate = sim.run("node-evacuate", "node=pve03")
    plan = {vm["vmid"]: vm for vm in evacuate.output("where")}
    assert set(plan) == {1500, 1600} and plan[1500]["status"] == "running"
    assert evacuate.output("remaining") == []
    vms = sim.vms()
    assert not [vm for vm in vms.values() if vm["node"] == "pve03" and not vm["template"]]
    assert {vms[1500]["node"], vms[1600]["node"]} == {"pve01", "pve02"}
    assert (vms[1500]["status"], vms[1600]["status"]) == ("running", "stopped")  # moved live, moved offline
    assert sim.run("node-evacuate", "node=pve03").output("where") == []  # nothing left to move
    assert set(SCENARIOS["vm_operations"]) <= set(sim.ran)


# -- scenario: RBAC bootstrap and the Ansible delegation --------------------------------------------


def test_api_token_bootstrap_and_ansible_provision(sim: Sim) -> None:
    first = sim.run("api-token-bootstrap")
    token = first.output("token")  # the secret went to pass (not written in a simulation), masked here
    assert (token["full-tokenid"], token["value"]) == ("runbook@pve!runbook", "*MASKED*")
    for step in ("user", "create_role", "acl", "token"):
        assert first.status(step) == "succeeded", step
    access = sim.state()["files"]["pve01"]["/etc/pve/user.cfg"]["access"]
    assert access["users"]["runbook@pve"]["tokens"] == {
        "runbook": {"privsep": 0, "comment": "runbook automation token (api-token-bootstrap)"}
    }
    assert "VM.Migrate" in access["roles"]["RunbookOperator"] and "Sys.Modify" not in access["roles"]["RunbookOperator"]
    assert access["acl"] == [
        {"path": "/", "type": "user", "ugid": "runbook@pve", "roleid": "RunbookOperator", "propagate": 1}
    ]

    # A second run (another process, the cluster read back from the state) finds everything and changes nothing.
    second = sim.run("api-token-bootstrap")
    assert second.output("users") == {"user_exists": True, "token_exists": True}
    assert second.output("roles") == {"exists": True, "privs_match": True}
    for step in ("user", "create_role", "role_privileges", "acl", "token"):
        assert second.status(step) == "skipped", step

    sim.run("vm-clone", "template=101", "newid=1300", "name=talos-a")
    provision = sim.run("ansible-provision", "part=controlplane", "check_mode=true")
    # The secret searched for is the one the runs used: a local step gets it as ansible-playbook does.
    (sim.home.root / "runbooks" / "token-probe.md").write_text(TOKEN_PROBE, encoding="utf-8")
    probe = sim.run("token-probe").output("probe")["stdout"]
    assert probe.split()[0] == hashlib.sha256(API_SECRET.encode()).hexdigest()
    assert "PLAY RECAP" in provision.output("playbook")["stdout"]
    [call] = [json.loads(line) for line in (sim.home.state_dir / "sim" / "tools.jsonl").read_text().splitlines()]
    assert call["tool"] == "ansible-playbook" and call["token_in_env"] is True
    assert call["argv"][-4:] == ["--tags", "controlplane", "--check", "--diff"]
    assert call["argv"][1] == f"{sim.user_home}/src/fleet-infra/inventory/hosts.yaml"
    assert [vm["name"] for vm in provision.output("vms")] == ["talos-a"]
    assert set(SCENARIOS["access_and_ansible"]) <= set(sim.ran)
