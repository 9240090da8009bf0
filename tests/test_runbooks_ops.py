"""The VM operations runbooks (runbooks/vm-*.md, snapshot-*.md, node-evacuate, storage-overview,
api-token-bootstrap, ansible-provision): each validates, each plans offline with the requests and
gates an operator expects, and the guards that make them safe hold against fakepve over HTTPS."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.support.passstore import create_pass_store

OPS = (
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
    "node-evacuate",
    "api-token-bootstrap",
    "storage-overview",
    "ansible-provision",
)
STOPS = "stops or restarts a VM"
UNKNOWN_NODE = "(known after run: steps.where.node)"
NODE_1031 = "(known after run: cluster.vms[1031].node)"


def plan(cli: Callable[..., Any], name: str, *params: str, home: Path = REPO) -> dict[str, dict[str, Any]]:
    """The offline dry-run plan of ``name``, its steps by id (loop items as ``id[key]``)."""
    args = ["--home", str(home), "run", name, "--dry-run", "--offline", "--json"]
    for param in params:
        args += ["--param", param]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    steps = json.loads(result.stdout)["steps"]
    return {s["step"] + (f"[{s['item']}]" if s["item"] else ""): s for s in steps}


def runbook_json(cli: Callable[..., Any], name: str) -> dict[str, Any]:
    result = cli("--home", str(REPO), "show", name, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# -- every runbook ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OPS)
def test_the_runbook_validates(cli, name: str) -> None:
    result = cli("--home", str(REPO), "validate", str(REPO / "runbooks" / f"{name}.md"))
    assert result.exit_code == 0, result.output
    assert "ok: 1 files checked, no problems" in result.stdout


@pytest.mark.parametrize("name", OPS)
def test_every_step_has_an_explicit_id_and_nothing_runs_over_ssh(cli, name: str) -> None:
    steps = runbook_json(cli, name)["steps"]
    assert steps and all(s["id_given"] for s in steps)
    # Everything these runbooks do, PVE's API offers: no ssh step (the simulation's shell knows few commands).
    assert {s["kind"] for s in steps} <= {"api", "local"}


@pytest.mark.parametrize(
    "name",
    [n for n in OPS if n not in ("node-evacuate", "api-token-bootstrap", "storage-overview", "ansible-provision")],
)
def test_vmid_parameters_match_the_ranges_of_cluster_config(cli, name: str) -> None:
    ranges = yaml.safe_load((REPO / "cluster-config.yaml").read_text())["vmid_ranges"]
    params = {p["name"]: p for p in runbook_json(cli, name)["parameters"]}
    for param in ("vmid", "newid"):
        if param in params:
            # newid may be 0, the default: the lowest free VMID of the range
            low = 0 if param == "newid" and params[param].get("default") == 0 else ranges["vms"]["min"]
            assert (params[param]["minimum"], params[param]["maximum"]) == (low, ranges["vms"]["max"])
    if "template" in params:
        assert (params["template"]["minimum"], params["template"]["maximum"]) == (
            ranges["templates"]["min"],
            ranges["templates"]["max"],
        )


@pytest.mark.parametrize(
    "name",
    [n for n in OPS if n not in ("node-evacuate", "api-token-bootstrap", "storage-overview", "ansible-provision")],
)
def test_a_vmid_runbook_first_checks_the_vmid_against_the_config_then_finds_the_vm(cli, name: str) -> None:
    steps = runbook_json(cli, name)["steps"]
    # vm-restore looks for the backups (read-only) first: which VM it may replace, and on which node, decide together
    check = "chosen" if name == "vm-restore" else "where"
    assert steps[0]["id"] == "vmid_range" and check in [s["id"] for s in steps]
    guard = steps[0]
    assert guard["kind"] == "local" and guard["attributes"]["readonly"] is True
    assert "vmid_ranges" in guard["attributes"]["when"] and "exit 1" in guard["body"]
    found = next(s for s in steps if s["id"] == check)
    before = steps[1 : steps.index(found)]
    assert all(s["kind"] == "api" and s["body"].startswith("GET ") for s in before), "only reads before the check"
    # the VM as the cluster lists it: its resources read by the step, or the facts the engine read
    assert found["body"].startswith("GET /cluster/resources") or "cluster.vms" in found["body"]


def test_an_out_of_range_vmid_is_refused_before_anything_runs(cli) -> None:
    result = cli(
        "--home",
        str(REPO),
        "run",
        "vm-power",
        "--param",
        "vmid=100",
        "--param",
        "action=stop",
        "--dry-run",
        "--offline",
    )
    assert result.exit_code == 1
    assert "vmid: must be at least 1000 (got 100)" in result.stderr


def test_the_config_range_guard_runs_when_the_config_range_is_narrower(cli, make_home) -> None:
    original = (REPO / "cluster-config.yaml").read_text()
    config = original.replace("vms: {min: 1000, max: 1999}", "vms: {min: 1000, max: 1099}")
    assert config != original
    home = make_home({"cluster-config.yaml": config})
    steps = plan(cli, "vm-power", "vmid=1500", "action=start", home=home.root)
    assert steps["vmid_range"]["status"] == "would_run" and steps["vmid_range"]["reason"] == "read-only"
    assert "outside vmid_ranges.vms" in steps["vmid_range"]["display"]
    assert plan(cli, "vm-power", "vmid=1050", "action=start", home=home.root)["vmid_range"]["status"] == "skipped"


# -- vm-clone -----------------------------------------------------------------------------------


def test_vm_clone_clones_on_the_templates_node_and_moves_only_when_asked(cli) -> None:
    steps = plan(cli, "vm-clone", "template=101", "newid=1040", "name=web01")
    assert list(steps) == ["vmid_range", "where", "clone", "tags", "move", "result"]
    assert steps["vmid_range"]["status"] == "skipped"
    assert steps["clone"]["display"] == (
        "POST /nodes/(known after run: cluster.vms[101].node)/qemu/101/clone  "
        "newid=1040 name=web01 full=1 storage=local-lvm"
    )
    assert "waits for step where" in steps["clone"]["reason"] and "cluster.vms" in steps["clone"]["reason"]
    assert steps["move"]["status"] == "skipped" and steps["move"]["reason"] == "when is false"
    assert not any(s["gated"] for s in steps.values())

    moved = plan(cli, "vm-clone", "template=101", "name=web01", "target=pve02", "storage=ceph-vm")
    assert "storage=ceph-vm" in moved["clone"]["display"]
    assert moved["move"]["display"] == (
        'POST /nodes/(known after run: cluster.vms["web01"].node)/qemu/(known after run: steps.where)/migrate  '
        'target=pve02 online=(known after run: cluster.vms["web01"].status) '
        'with-local-disks=(known after run: cluster.vms["web01"].status)'
    )


def test_a_linked_clone_sends_no_storage(cli) -> None:
    steps = plan(cli, "vm-clone", "template=101", "newid=1040", "name=web01", "full=false")
    assert steps["clone"]["action"]["params"]["full"] == "0" and "storage" not in steps["clone"]["action"]["params"]


def test_vm_clone_refuses_a_template_vmid_outside_the_template_range(cli) -> None:
    result = cli(
        "--home",
        str(REPO),
        "run",
        "vm-clone",
        "--param",
        "template=1031",
        "--param",
        "newid=1040",
        "--param",
        "name=web01",
        "--dry-run",
        "--offline",
    )
    assert result.exit_code == 1 and "template: must be at most 199 (got 1031)" in result.stderr


# -- vm-power -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "reasons"),
    [
        ("start", []),
        ("shutdown", [STOPS]),
        ("stop", ["marked destructive", STOPS]),
        ("reboot", [STOPS]),
    ],
)
def test_vm_power_runs_only_the_asked_action_and_gates_all_but_start(cli, action: str, reasons: list[str]) -> None:
    steps = plan(cli, "vm-power", "vmid=1031", f"action={action}")
    actions = ("start", "shutdown", "stop", "reboot")
    assert [steps[a]["status"] for a in actions] == ["skipped" if a != action else "unknown" for a in actions]
    step = steps[action]
    assert step["display"] == f"POST /nodes/{NODE_1031}/qemu/1031/status/{action}"
    assert step["gate_reasons"] == reasons and step["gated"] == bool(reasons)
    assert steps["settled"]["reason"].endswith(f"depends on steps.{action}")


def test_vm_power_needs_an_action(cli) -> None:
    result = cli("--home", str(REPO), "run", "vm-power", "--param", "vmid=1031", "--dry-run", "--offline")
    assert result.exit_code == 1 and "required parameter missing: add --param action=VALUE" in result.stderr


# -- vm-resize ----------------------------------------------------------------------------------


def test_vm_resize_sends_only_what_was_asked_and_gates_the_disk(cli) -> None:
    steps = plan(cli, "vm-resize", "vmid=1031", "cores=4", "memory=8192", "disk_size=64G")
    assert steps["cpu_memory"]["display"] == (
        f"PUT /nodes/{NODE_1031}/qemu/1031/config  cores=4 memory=8192 digest=(known after run: steps.current.digest)"
    )
    assert not steps["cpu_memory"]["gated"]
    assert steps["grow"]["display"] == f"PUT /nodes/{NODE_1031}/qemu/1031/resize  disk=scsi0 size=64G"
    assert steps["grow"]["gate_reasons"] == ["marked confirm"]

    memory_only = plan(cli, "vm-resize", "vmid=1031", "memory=4096")
    assert memory_only["cpu_memory"]["action"]["params"]["memory"] == "4096"
    assert "cores" not in memory_only["cpu_memory"]["action"]["params"]
    assert memory_only["grow"]["status"] == "skipped"


def test_vm_resize_takes_a_new_total_size_never_a_relative_one(cli) -> None:
    result = cli(
        "--home",
        str(REPO),
        "run",
        "vm-resize",
        "--param",
        "vmid=1031",
        "--param",
        "disk_size=+10G",
        "--dry-run",
        "--offline",
    )
    assert result.exit_code == 1 and "disk_size" in result.stderr


# -- vm-migrate ---------------------------------------------------------------------------------


def test_vm_migrate_asks_pve_first_and_moves_online_when_running(cli) -> None:
    steps = plan(cli, "vm-migrate", "vmid=1031", "target=pve02")
    assert list(steps) == ["vmid_range", "where", "precheck", "migrate", "arrived"]
    node = "(known after run: cluster.vms[1031].node)"
    assert steps["precheck"]["display"] == f"GET /nodes/{node}/qemu/1031/migrate  target=pve02"
    assert steps["migrate"]["display"] == (
        f"POST /nodes/{node}/qemu/1031/migrate  target=pve02 "
        "online=(known after run: cluster.vms[1031].status) "
        "with-local-disks=(known after run: cluster.vms[1031].status)"
    )
    assert "cluster.vms[1031].node" in steps["migrate"]["reason"]  # the guard: already on the target
    assert not steps["migrate"]["gated"]


# -- snapshots ----------------------------------------------------------------------------------


def test_snapshot_create_is_guarded_and_refuses_the_reserved_name(cli) -> None:
    steps = plan(cli, "snapshot-create", "vmid=1031", "snapname=pre-upgrade", "description=before 1.10")
    assert steps["snapshot"]["display"] == (
        f"POST /nodes/{NODE_1031}/qemu/1031/snapshot  snapname=pre-upgrade description=before 1.10 vmstate=0"
    )
    assert "steps.existing.exists" in steps["snapshot"]["reason"] and not steps["snapshot"]["gated"]
    result = cli(
        "--home",
        str(REPO),
        "run",
        "snapshot-create",
        "--param",
        "vmid=1031",
        "--param",
        "snapname=current",
        "--dry-run",
        "--offline",
    )
    assert result.exit_code == 1 and "snapname" in result.stderr


def test_snapshot_list_only_reads(cli) -> None:
    steps = plan(cli, "snapshot-list", "vmid=1031")
    assert not any(s["gated"] for s in steps.values())
    assert [s["action"]["method"] for s in steps.values() if s["kind"] == "api"] == ["GET", "GET"]


def test_snapshot_rollback_gates_the_stop_and_the_rollback(cli) -> None:
    steps = plan(cli, "snapshot-rollback", "vmid=1031", "snapname=pre-upgrade", "start=true")
    assert steps["stop"]["display"] == f"POST /nodes/{NODE_1031}/qemu/1031/status/stop"
    assert steps["stop"]["gate_reasons"] == ["marked destructive", STOPS]
    assert steps["rollback"]["display"] == f"POST /nodes/{NODE_1031}/qemu/1031/snapshot/pre-upgrade/rollback  start=1"
    assert steps["rollback"]["gate_reasons"] == [
        "marked destructive",
        "rolls a VM back to a snapshot (later changes are lost)",
    ]


def test_snapshot_delete_is_gated_and_guarded(cli) -> None:
    steps = plan(cli, "snapshot-delete", "vmid=1031", "snapname=pre-upgrade")
    delete = steps["delete"]
    assert delete["display"] == f"DELETE /nodes/{UNKNOWN_NODE}/qemu/1031/snapshot/pre-upgrade"
    assert delete["gate_reasons"] == [
        "marked destructive",
        f"DELETE /nodes/{UNKNOWN_NODE}/qemu/1031/snapshot/pre-upgrade",
    ]
    assert "steps.snapshot.exists" in delete["reason"]


# -- backup and restore -------------------------------------------------------------------------


def test_vm_backup_is_a_snapshot_mode_zstd_vzdump_that_prunes_nothing(cli) -> None:
    steps = plan(cli, "vm-backup", "vmid=1031", "storage=backup-nfs")
    assert steps["backup"]["action"]["path"] == f"/nodes/{NODE_1031}/vzdump"
    assert steps["backup"]["action"]["params"] == {
        "vmid": "1031",
        "storage": "backup-nfs",
        "mode": "snapshot",
        "compress": "zstd",
        "remove": 0,
        "notes-template": "{{guestname}}: manual backup (runbook vm-backup)",
    }
    assert not steps["backup"]["gated"]
    assert steps["target"]["display"] == f"GET /nodes/{NODE_1031}/storage  content=backup"


ARCHIVE = "local:backup/vzdump-qemu-1031-2026_11_28-10_00_00.vma.zst"
CHOSEN = "(known after run: steps.chosen.node)"


def test_vm_restore_as_a_new_vm_is_not_gated_and_never_forces(cli) -> None:
    steps = plan(cli, "vm-restore", f"archive={ARCHIVE}", "vmid=1050")
    assert steps["restore"]["display"].startswith(f"POST /nodes/{CHOSEN}/qemu  vmid=1050 archive=")
    assert steps["restore"]["display"].endswith("storage=local-lvm unique=1")
    assert not steps["restore"]["gated"] and "force" not in steps["restore"]["display"]


def test_vm_restore_over_an_existing_vm_is_gated_and_destructive(cli) -> None:
    steps = plan(cli, "vm-restore", f"archive={ARCHIVE}", "vmid=1031", "overwrite=true", "unique=false")
    over = steps["restore_over"]
    assert over["display"].startswith(f"POST /nodes/{CHOSEN}/qemu  vmid=1031 archive=")
    assert over["display"].endswith("storage=local-lvm unique=0 force=1")
    assert over["gate_reasons"] == ["marked destructive"]
    assert steps["stop_existing"]["gate_reasons"] == ["marked destructive", STOPS]
    assert not steps["restore"]["gated"] and "steps.chosen" in steps["restore"]["reason"]


# -- node-evacuate, storage-overview, api-token-bootstrap, ansible-provision ----------------------


def test_node_evacuate_plans_from_the_cluster(cli) -> None:
    steps = plan(cli, "node-evacuate", "node=pve01")
    assert steps["where"]["status"] == "unknown" and "cluster.nodes" in steps["where"]["reason"]
    assert steps["migrate"]["status"] == "unknown" and "steps.where" in steps["migrate"]["reason"]
    attrs = {s["id"]: s["attributes"] for s in runbook_json(cli, "node-evacuate")["steps"]}
    assert attrs["migrate"]["confirm"] is True and "parallel" not in attrs["migrate"]


def test_storage_overview_only_reads(cli) -> None:
    steps = plan(cli, "storage-overview")
    reads = [s for s in steps.values() if s["step"] != "no_storage"]
    assert [s["display"] for s in reads] == ["GET /storage"] + ["GET /cluster/resources  type=storage"] * 2
    assert all(s["reason"] == "read-only" and not s["gated"] for s in reads)
    assert steps["no_storage"]["status"] == "skipped"  # no node given: nothing to refuse


def test_api_token_bootstrap_creates_the_token_last_and_stores_its_secret_in_pass(cli) -> None:
    steps = plan(cli, "api-token-bootstrap")
    assert list(steps)[-2:] == ["token", "token_now"]
    token = steps["token"]
    assert token["display"] == (
        "POST /access/users/runbook@pve/token/runbook  privsep=0 comment=runbook automation token (api-token-bootstrap)"
    )
    assert token["gate_reasons"] == ["marked confirm"]
    assert steps["acl"]["display"] == "PUT /access/acl  path=/ users=runbook@pve roles=RunbookOperator propagate=1"
    privs = steps["create_role"]["action"]["params"]["privs"].split(",")
    assert "VM.Snapshot.Rollback" in privs and not {
        "Permissions.Modify",
        "User.Modify",
        "Sys.Modify",
        "Sys.PowerMgmt",
    } & set(privs)
    attrs = {s["id"]: s["attributes"] for s in runbook_json(cli, "api-token-bootstrap")["steps"]}
    assert attrs["token"]["to_pass"] == {
        "path": "{{ pass_path or credentials.pass_path }}",
        "lines": ["full-tokenid", "value"],
        "secret": ["value"],
    }
    assert "register" not in attrs["token"] and "show" not in attrs["token"]


def test_api_token_bootstrap_refuses_privileges_that_escalate(cli) -> None:
    result = cli(
        "--home",
        str(REPO),
        "run",
        "api-token-bootstrap",
        "--param",
        "privileges=VM.Audit,Permissions.Modify",
        "--dry-run",
        "--offline",
    )
    assert result.exit_code == 1 and "(got 'Permissions.Modify')" in result.stderr


def test_ansible_provision_hands_the_token_over_in_the_environment_only(cli) -> None:
    steps = plan(cli, "ansible-provision", "part=workers")
    playbook = steps["playbook"]
    assert playbook["gate_reasons"] == ["marked confirm"]
    assert playbook["action"]["token_env"] == "PROXMOX_API_TOKEN"
    assert (
        playbook["action"]["script"].splitlines()[-1].split()
        == (
            'ansible-playbook -i "$fleet"/inventory/hosts.yaml "$fleet"/playbooks/talos-provision-vms.yaml --tags workers'
        ).split()
    )
    assert "PROXMOX_API_TOKEN" not in playbook["action"]["script"]
    everything = plan(cli, "ansible-provision", "check_mode=true")["playbook"]["action"]["script"]
    assert "--tags" not in everything and everything.rstrip().endswith("--check --diff")


def test_ansible_provision_without_an_ansible_section_stops_before_any_step(cli, make_home) -> None:
    """The config schema calls ``ansible:`` optional and the runbook reads it: the runbook says so
    (``requires: [ansible]``), and a config without it gets a message naming the section and its
    fields, before anything renders, instead of an undefined-variable error in the middle."""
    config = (REPO / "cluster-config.yaml").read_text()
    start = config.index("\nansible:")
    end = config.index("\n\n", start + 1) if "\n\n" in config[start + 1 :] else len(config)
    home = make_home({"cluster-config.yaml": config[:start] + config[end:]})
    assert cli("--home", str(home.root), "validate").exit_code == 0, "the config without ansible: is valid"
    result = cli("--home", str(home.root), "run", "ansible-provision", "--dry-run", "--offline")
    assert result.exit_code == 1
    assert "ansible-provision needs the ansible section of cluster-config.yaml, which has none" in result.stderr
    assert "ansible: (fleet_infra_path:, inventory: and playbooks_dir:)" in result.stderr


# -- against fakepve over HTTPS ------------------------------------------------------------------

TOKEN_SECRET = "sekret-ops-4b1e-runbook-token"
NEW_TOKEN_SECRET = "new-token-secret-2f9d-never-written"


@pytest.fixture
def pve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """fakepve (nodes pve01-03) with token creation and migration modelled, and a home pointing at it."""
    import fakepve
    from fakepve.routing import die

    import tests.support.fakepve_server as server
    from tests.support.cluster import node_endpoints

    class Pve(fakepve.FakePve):  # type: ignore[misc]
        def _routes_ops_test(self) -> list:
            return [
                ("POST", "/access/users/{userid}/token/{tokenid}", self._token_add),
                ("POST", "/nodes/{node}/qemu/{vmid}/migrate", self._migrate),
            ]

        async def _token_add(self, v: dict, user: str) -> dict:
            full = f"{v['userid']}!{v['tokenid']}"
            return {"full-tokenid": full, "info": {"privsep": int(v.get("privsep", 1))}, "value": NEW_TOKEN_SECRET}

        async def _migrate(self, v: dict, user: str) -> Any:
            vm = self.find(v["node"], v["vmid"])
            if vm.status == "running" and not int(v.get("online") or 0):
                raise die("can't migrate running VM without --online")

            async def body() -> None:
                vm.node = v["target"]

            return await self.task(v["node"], "qmigrate", vm.vmid, user, body, vm=vm)

    monkeypatch.setattr(server, "FakePve", Pve)
    (tmp_path / "pve").mkdir()
    with server.FakePveServer(tmp_path / "pve", TOKEN_SECRET) as srv:
        home = tmp_path / "home"
        (home / "runbooks").mkdir(parents=True)
        config = yaml.safe_load((REPO / "cluster-config.yaml").read_text())
        config["cluster"]["nodes"] = [
            {"name": name, "host": url.split("//")[1].split(":")[0], "port": int(url.rsplit(":", 1)[1])}
            for name, url in zip(("pve01", "pve02", "pve03"), node_endpoints(srv))
        ]
        config["tls"] = {"ca_file": str(srv.certfile)}
        (home / "cluster-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        shutil.copytree(REPO / "clusters", home / "clusters")
        for name in OPS:
            shutil.copy(REPO / "runbooks" / f"{name}.md", home / "runbooks")
        srv.home = home
        yield srv


def live(cli: Callable[..., Any], pve: Any, name: str, *args: str, env: dict[str, str] | None = None) -> Any:
    return cli(
        "--home",
        str(pve.home),
        "run",
        name,
        *args,
        env={**(env or {}), "PROXMOX_API_TOKEN": f"{server_token_id()}={TOKEN_SECRET}"},
    )


def server_token_id() -> str:
    from tests.support.fakepve_server import TOKEN_ID

    return TOKEN_ID


def report(result: Any) -> dict[str, Any]:
    return json.loads(result.stdout.splitlines()[-1])


def statuses(result: Any) -> dict[str, str]:
    return {s["step"] + (f"[{s['item']}]" if s["item"] else ""): s["status"] for s in report(result)["steps"]}


def recorded(home: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in (home / ".runbook").rglob("*") if p.is_file())


def test_node_evacuate_moves_every_vm_round_robin_each_gated_and_leaves_templates(cli, pve) -> None:
    for vmid, name in ((1031, "a"), (1032, "b"), (1033, "c")):
        pve.do(pve.pve.add_vm, vmid, name, node="pve01", config={"memory": 1024})
    pve.do(pve.pve.add_vm, 101, "tpl", node="pve01", template=True)
    pve.do(lambda: setattr(pve.pve.vm(1031), "status", "running"))

    planned = live(cli, pve, "node-evacuate", "--param", "node=pve01", "--dry-run", "--json")
    assert planned.exit_code == 0, planned.output
    steps = json.loads(planned.stdout)["steps"]
    moves = [s for s in steps if s["step"] == "migrate"]
    assert [s["display"] for s in moves] == [
        "POST /nodes/pve01/qemu/1031/migrate  target=pve02 online=1 with-local-disks=1",
        "POST /nodes/pve01/qemu/1032/migrate  target=pve03 online=0 with-local-disks=0",
        "POST /nodes/pve01/qemu/1033/migrate  target=pve02 online=0 with-local-disks=0",
    ]
    assert all(s["gate_reasons"] == ["marked confirm"] for s in moves)
    assert [vm["vmid"] for vm in steps[0]["output"]] == [1031, 1032, 1033], "the template stays"

    stopped = live(cli, pve, "node-evacuate", "--param", "node=pve01", "--json")
    assert stopped.exit_code == 4 and report(stopped)["run_id"] is None, "refused before any change"
    assert "migrate (3 items: a, b, c): marked confirm" in report(stopped)["message"]
    assert pve.do(lambda: {vm.node for vm in pve.pve.vms}) == {"pve01"}
    done = live(cli, pve, "node-evacuate", "--param", "node=pve01", "--approve", "migrate", "--json")
    assert done.exit_code == 0, done.output
    assert statuses(done)["remaining"] == "succeeded"
    assert pve.do(lambda: sorted((vm.vmid, vm.node) for vm in pve.pve.vms)) == [
        (101, "pve01"),
        (1031, "pve02"),
        (1032, "pve03"),
        (1033, "pve02"),
    ]
    again = live(cli, pve, "node-evacuate", "--param", "node=pve01", "--json")
    assert again.exit_code == 0 and statuses(again)["remaining"] == "succeeded"
    assert "migrate" not in statuses(again), "nothing left to move"


def test_api_token_bootstrap_never_records_the_new_tokens_secret(cli, pve, tmp_path: Path) -> None:
    store = create_pass_store(tmp_path / "pass")
    try:
        result = live(cli, pve, "api-token-bootstrap", "--yes", "--json", env=store.env)
        assert store.show("proxmox/lab/runbook-token") == f"runbook@pve!runbook\n{NEW_TOKEN_SECRET}\n"
    finally:
        store.stop()
    assert result.exit_code == 0, result.output
    token = [s for s in report(result)["steps"] if s["step"] == "token"][0]
    assert token["output"]["full-tokenid"] == "runbook@pve!runbook" and token["output"]["value"] == "*MASKED*"
    assert NEW_TOKEN_SECRET not in result.output
    assert NEW_TOKEN_SECRET not in recorded(pve.home) and TOKEN_SECRET not in recorded(pve.home)


def test_vm_clone_skips_its_own_clone_and_refuses_a_vmid_in_use(cli, pve) -> None:
    pve.do(
        pve.pve.add_vm,
        101,
        "talos-tpl",
        node="pve02",
        template=True,
        config={"scsi0": "local-lvm:base-101-disk-0,size=4G"},
    )
    pve.do(pve.pve.add_vm, 1031, "web01", node="pve01")
    args = ("--param", "template=101", "--param", "newid=1040", "--param", "name=app01", "--json")
    first = live(cli, pve, "vm-clone", *args)
    assert first.exit_code == 0, first.output
    clone = [s for s in report(first)["steps"] if s["step"] == "clone"][0]
    assert clone["display"] == "POST /nodes/pve02/qemu/101/clone  newid=1040 name=app01 full=1 storage=local-lvm"
    again = live(cli, pve, "vm-clone", *args)
    assert again.exit_code == 0 and statuses(again)["clone"] == "skipped"
    taken = live(cli, pve, "vm-clone", "--param", "template=101", "--param", "newid=1031", "--param", "name=app02")
    assert taken.exit_code == 10, "refused by a read before the first change: no run was made, exit 10"
    assert "VMID 1031 is already used by web01 on pve01; choose a free VMID" in taken.stderr


def test_vm_power_stop_waits_for_approval_and_a_second_run_changes_nothing(cli, pve) -> None:
    pve.do(pve.pve.add_vm, 1031, "web01", node="pve03")
    pve.do(lambda: setattr(pve.pve.vm(1031), "status", "running"))
    gated = live(cli, pve, "vm-power", "--param", "vmid=1031", "--param", "action=stop", "--json")
    assert gated.exit_code == 4 and "adding --approve stop" in report(gated)["message"]
    assert pve.do(lambda: pve.pve.vm(1031).status) == "running"
    done = live(cli, pve, "vm-power", "--param", "vmid=1031", "--param", "action=stop", "--approve", "stop", "--json")
    assert done.exit_code == 0, done.output
    assert statuses(done)["settled"] == "succeeded" and pve.do(lambda: pve.pve.vm(1031).status) == "stopped"
    again = live(cli, pve, "vm-power", "--param", "vmid=1031", "--param", "action=stop", "--json")
    assert again.exit_code == 0 and statuses(again)["stop"] == "skipped"


def test_vm_resize_refuses_to_shrink_a_disk(cli, pve) -> None:
    pve.do(
        pve.pve.add_vm,
        1031,
        "web01",
        node="pve01",
        config={"cores": 2, "memory": 2048, "scsi0": "local-lvm:vm-1031-disk-0,size=32G"},
    )
    result = live(cli, pve, "vm-resize", "--param", "vmid=1031", "--param", "disk_size=16G")
    assert result.exit_code == 10, "refused before the first change, with no run made"
    assert "refusing to shrink scsi0 of VM 1031 from 32G to 16G: disks only grow" in result.stderr
    assert not [r for r in pve.pve.requests if r[0] == "PUT"]
