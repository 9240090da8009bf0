"""The cluster and Talos runbooks: each validates, and each dry-run plans what an operator expects.

Offline dry-runs cover every runbook with the staging (Talos) profile, and with the generic dev
profile where a runbook applies to it; a dry-run against fakepve checks what teardown would destroy.
Talos config folders are redirected into the test's folder, so files in the real home folder never
change a plan.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.load.home import Home
from engine.runbook.parser import parse_runbook_file
from tests.conftest import REPO

CLUSTER_RUNBOOKS = ("cluster-create", "cluster-teardown", "cluster-status")
TALOS_RUNBOOKS = (
    "talos-image-factory",
    "talos-template-create",
    "talos-cluster-bootstrap",
    "talos-upgrade",
    "talos-etcd-backup",
    "talos-image-cache",
)
RUNBOOKS = CLUSTER_RUNBOOKS + TALOS_RUNBOOKS
STAGING = yaml.safe_load((REPO / "clusters" / "talos-staging.yaml").read_text())
SCHEMATIC = STAGING["talos"]["factory"]["schematic_id"]
TEMPLATE_PARAMS = (
    "--param",
    "vmid=150",
    "--param",
    "node=pve02",
    "--param",
    "version=v1.9.5",
    "--param",
    f"schematic={SCHEMATIC}",
)
CPS = ("10.20.0.31", "10.20.0.32", "10.20.0.33")


# ---------------------------------------------------------------- helpers


@pytest.fixture
def home(make_home: Callable[..., Home], tmp_path: Path) -> Home:
    """A copy of the repository's home whose Talos config folder is inside the test's folder."""
    text = (REPO / "clusters" / "talos-staging.yaml").read_text()
    talos_dir = tmp_path / "talos" / "staging"
    built = make_home({"clusters/talos-staging.yaml": text.replace("~/.config/runbook/talos/staging", str(talos_dir))})
    return built


def talos_dir(home: Home) -> str:
    return str(home.root.parent / "talos" / "staging")


def plan(
    cli: Callable[..., Any],
    home: Home,
    name: str,
    *args: str,
    profile: str | None = "talos-staging",
    env: dict[str, str] | None = None,
) -> dict:
    """The dry-run plan as JSON: offline, or against a cluster when ``env`` holds its token."""
    profile_args = ("--profile", profile) if profile else ()
    offline = () if env else ("--offline",)
    result = cli("--home", str(home.root), "run", name, *profile_args, *args, "--dry-run", *offline, "--json", env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def entries(planned: dict, step_id: str) -> list[dict]:
    found = [s for s in planned["steps"] if s["step"] == step_id]
    assert found, f"no step {step_id} in the plan"
    return found


def one(planned: dict, step_id: str, item: str | None = None) -> dict:
    found = [s for s in entries(planned, step_id) if item is None or s["item"] == item]
    assert len(found) == 1, (step_id, item, found)
    return found[0]


def gated(planned: dict) -> list[tuple[str, str | None]]:
    return [(s["step"], s["item"]) for s in planned["steps"] if s["gated"]]


def argv(entry: dict) -> list[str]:
    assert entry["action"]["type"] == "TalosctlCommand", entry
    return entry["action"]["argv"]


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("name", RUNBOOKS)
def test_runbook_validates(cli: Callable[..., Any], name: str) -> None:
    result = cli("--home", str(REPO), "validate", str(REPO / "runbooks" / f"{name}.md"))
    assert result.exit_code == 0, result.output
    assert "no problems" in result.stdout


@pytest.mark.parametrize("name", RUNBOOKS)
def test_every_step_has_an_explicit_id_and_a_description(name: str) -> None:
    runbook = parse_runbook_file(REPO / "runbooks" / f"{name}.md", f"runbooks/{name}.md")
    assert runbook.name == name and runbook.description
    assert runbook.steps
    assert [s.id for s in runbook.steps if not s.id_given] == []
    for param in runbook.parameters:
        assert param.description, (name, param.name)


def test_create_runs_the_talos_sequence_of_bootstrap_instead_of_a_copy() -> None:
    """talos-cluster-bootstrap holds the one Talos sequence; cluster-create calls it (and its address
    guard), so no Talos step is written twice and what one runbook did the other recognises."""
    create = parse_runbook_file(REPO / "runbooks" / "cluster-create.md", "c").steps
    calls = {s.id: s.body.splitlines()[0] for s in create if s.kind == "runbook"}
    assert calls == {
        "talos_inputs": "talos-cluster-bootstrap#refuse-to-bootstrap-without-addresses",
        "talos": "talos-cluster-bootstrap#talos-sequence",
    }
    assert not [s.id for s in create if s.kind in ("talosctl", "file")]


# ---------------------------------------------------------------- cluster-create


def test_create_plans_clones_from_the_template_node_and_moves_them(cli, home) -> None:
    planned = plan(cli, home, "cluster-create")
    assert planned["counts"]["gated"] == 1 and gated(planned) == [("talos.flux", None)]
    clone = one(planned, "clone", "name=stg-cp02")
    assert clone["status"] == "unknown" and clone["reason"] == "uses values known only after run"
    assert clone["display"] == (
        "POST /nodes/(known after run: plan.template.node)/qemu/101/clone  "
        "newid=1032 name=stg-cp02 full=1 storage=local-lvm"
    )
    assert "target" not in clone["action"]["params"]  # no shared storage: clone on the template's node
    migrate = one(planned, "migrate", "name=stg-cp02")
    assert migrate["action"]["path"] == "/nodes/(known after run: plan.template.node)/qemu/1032/migrate"
    assert migrate["action"]["params"] == {"target": "pve02", "online": "0"}
    assert [s["item"] for s in entries(planned, "clone")] == ["name=stg-cp01", "name=stg-cp02", "name=stg-cp03"]


def test_create_configures_sizes_and_starts_each_vm_on_its_node(cli, home) -> None:
    planned = plan(cli, home, "cluster-create")
    configure = one(planned, "configure", "name=stg-cp03")
    assert configure["action"]["path"] == "/nodes/pve03/qemu/1033/config"
    assert configure["action"]["params"] == {
        "cores": "4",
        "memory": "8192",
        "cpu": "host",
        "net0": "virtio=02:70:76:00:04:09,bridge=vmbr0",
        "agent": "1",
        "onboot": 1,
        "tags": "talos;kubernetes;staging;controlplane",
    }
    assert (
        one(planned, "resize", "name=stg-cp01")["display"] == "PUT /nodes/pve01/qemu/1031/resize  disk=scsi0 size=100G"
    )
    assert one(planned, "start", "name=stg-cp02")["display"] == "POST /nodes/pve02/qemu/1032/status/start"
    wait = one(planned, "wait_running", "name=stg-cp02")
    assert wait["status"] == "unknown" and wait["display"] == "GET /nodes/pve02/qemu/1032/status/current"
    for step_id in ("clone", "migrate", "configure", "resize", "start"):
        assert all(not s["gated"] for s in entries(planned, step_id)), step_id


def test_create_bootstraps_talos_once_on_the_first_control_plane(cli, home) -> None:
    planned = plan(cli, home, "cluster-create")
    folder = talos_dir(home)
    assert argv(one(planned, "talos.secrets")) == ["gen", "secrets", "--output-file", f"{folder}/secrets.yaml"]
    gen = argv(one(planned, "talos.gen_config"))
    assert gen[:3] == ["gen", "config", "talos-staging"] and gen[3] == "https://10.20.0.30:6443"
    assert gen[gen.index("--install-image") + 1] == f"factory.talos.dev/installer/{SCHEMATIC}:v1.9.5"
    assert gen[gen.index("--kubernetes-version") + 1] == "1.32.3"
    assert gen[gen.index("--with-secrets") + 1] == f"{folder}/secrets.yaml"
    applies = entries(planned, "talos.apply")
    assert [argv(a)[argv(a).index("--nodes") + 1] for a in applies] == list(CPS)
    assert argv(applies[1]) == [
        "apply-config",
        "--insecure",
        "--nodes",
        "10.20.0.32",
        "--file",
        f"{folder}/controlplane.yaml",
        "--config-patch",
        f"@{folder}/patches/stg-cp02.yaml",
    ]
    bootstrap = entries(planned, "talos.bootstrap")
    assert len(bootstrap) == 1
    assert argv(bootstrap[0]) == ["bootstrap", "--nodes", "10.20.0.31", "--endpoints", "10.20.0.31"]
    assert "steps.talos.etcd_running[0]" in bootstrap[0]["reason"]  # asks the node before
    assert argv(one(planned, "talos.kubeconfig"))[:3] == ["kubeconfig", f"{folder}/kubeconfig", "--force"]
    health = argv(one(planned, "talos.health"))
    assert health[health.index("--control-plane-nodes") + 1] == ",".join(CPS) and "--worker-nodes" not in health
    flux = one(planned, "talos.flux")
    assert flux["gated"] and flux["gate_reasons"] == ["marked confirm"]
    script = flux["action"]["script"]
    assert "flux bootstrap git --silent" in script
    assert f"--url={STAGING['flux']['repo']}" in script and "--path=clusters/staging" in script
    assert "--branch=main" in script and "--private-key-file" not in script


def test_create_writes_each_node_patch_as_the_yaml_talos_expects(cli, home) -> None:
    planned = plan(cli, home, "cluster-create")
    action = one(planned, "talos.patches", "name=stg-cp01")["action"]
    assert action["path"] == f"{talos_dir(home)}/patches/stg-cp01.yaml" and action["mode"] == "0600"
    patch = yaml.safe_load(action["content"])
    assert patch == {
        "machine": {
            "network": {
                "hostname": "stg-cp01",
                "nameservers": ["10.20.0.1"],
                "interfaces": [
                    {
                        "interface": "eth0",
                        "dhcp": False,
                        "addresses": ["10.20.0.31/24"],
                        "routes": [{"network": "0.0.0.0/0", "gateway": "10.20.0.1"}],
                        "vip": {"ip": "10.20.0.30"},
                    }
                ],
            }
        },
        "cluster": {
            "allowSchedulingOnControlPlanes": True,
            "network": {"podSubnets": ["10.244.0.0/16"], "serviceSubnets": ["10.96.0.0/12"]},
        },
    }


def test_create_for_a_generic_profile_skips_talos_and_flux(cli, home) -> None:
    planned = plan(cli, home, "cluster-create", profile="dev-generic")
    assert gated(planned) == []
    talos_steps = [s for s in planned["steps"] if s["step"].startswith(("talos.", "talos_inputs."))]
    assert talos_steps and all(s["status"] == "skipped" and s["reason"] == "when is false" for s in talos_steps)
    clone = one(planned, "clone", "name=dev-w02")
    assert clone["display"].startswith("POST /nodes/(known after run: plan.template.node)/qemu/102/clone")
    assert clone["action"]["params"]["newid"] == "1212"
    # Offline the SSH keys file is not read (a live dry-run reads it): what configure sends waits for it.
    assert one(planned, "ssh_keys")["status"] == "would_run"
    assert one(planned, "configure", "name=dev-w01")["waits_for"] == ["ssh_keys"]


# ---------------------------------------------------------------- teardown and status


def test_teardown_gates_every_change_and_plans_offline_without_guessing(cli, home) -> None:
    planned = plan(cli, home, "cluster-teardown")
    for step_id in ("members", "shutdown", "force_stop", "delete"):
        entry = one(planned, step_id)
        assert entry["status"] == "unknown" and "known only after run" in entry["reason"], step_id
    runbook = parse_runbook_file(REPO / "runbooks" / "cluster-teardown.md", "t")
    steps = {s.id: s for s in runbook.steps}
    for step_id in ("shutdown", "force_stop", "delete"):
        assert steps[step_id].attrs.get("destructive") is True, step_id
    assert "DELETE" in steps["delete"].body and "purge: 1" in steps["delete"].body
    assert "destroy-unreferenced-disks: 1" in steps["delete"].body
    assert steps["force_stop"].attrs["check"] == "vm.status != 'running'"
    # One membership rule (profile.members), read again after the shutdowns: offline it is unknown.
    assert one(planned, "force_stop")["reason"] == "loops over profile.members, known only after run"
    assert one(planned, "verify_gone")["status"] == "would_run"


def test_teardown_for_the_generic_profile_plans_too(cli, home) -> None:
    planned = plan(cli, home, "cluster-teardown", "--param", "shutdown_timeout=60", profile="dev-generic")
    assert planned["parameters"] == {"shutdown_timeout": 60}
    assert "loops over profile.members" in one(planned, "members")["reason"]


def test_status_reads_only(cli, home) -> None:
    for profile in ("talos-staging", "dev-generic"):
        planned = plan(cli, home, "cluster-status", profile=profile)
        assert gated(planned) == []
        for entry in planned["steps"]:
            if entry["status"] == "would_run":
                assert entry["reason"] == "read-only", entry
    planned = plan(cli, home, "cluster-status")
    health = one(planned, "talos_health")
    assert health["status"] == "unknown" and argv(health)[:3] == ["health", "--wait-timeout", "1m"]
    assert one(planned, "missing", "name=stg-cp01")["action"]["script"].startswith("printf 'missing: %s")


# ---------------------------------------------------------------- Talos runbooks


def test_bootstrap_plans_the_talos_part_only(cli, home) -> None:
    planned = plan(cli, home, "talos-cluster-bootstrap")
    ids = {s["step"] for s in planned["steps"]}
    assert not ids & {"clone", "migrate", "configure", "resize", "start"}
    assert [argv(s) for s in entries(planned, "bootstrap")] == [
        ["bootstrap", "--nodes", "10.20.0.31", "--endpoints", "10.20.0.31"]
    ]
    assert gated(planned) == [("flux", None)]
    generic = plan(cli, home, "talos-cluster-bootstrap", profile="dev-generic")
    assert one(generic, "not_talos")["status"] == "would_run"  # it refuses
    assert all(s["status"] == "skipped" for s in generic["steps"] if s["step"] not in ("api_version", "not_talos"))


def test_upgrade_gates_kubernetes_then_each_node_with_health_between(cli, home) -> None:
    planned = plan(cli, home, "talos-upgrade", "--param", "talos_version=v1.9.6")
    assert gated(planned) == [
        ("upgrade_kubernetes", None),
        ("rolling_upgrade", "0"),
        ("rolling_upgrade", "2"),
        ("rolling_upgrade", "4"),
    ]
    order = [s["step"] for s in planned["steps"]]
    assert order.index("etcd_snapshot") < order.index("upgrade_kubernetes") < order.index("rolling_upgrade")
    snapshot = argv(one(planned, "etcd_snapshot"))
    assert snapshot[:2] == ["etcd", "snapshot"] and snapshot[-4:] == [
        "--nodes",
        "10.20.0.31",
        "--endpoints",
        "10.20.0.31",
    ]
    assert argv(one(planned, "upgrade_kubernetes"))[:2] == ["upgrade-k8s", "--to"]
    assert argv(one(planned, "upgrade_kubernetes"))[2] == "1.32.3"
    rolling = entries(planned, "rolling_upgrade")
    assert [argv(s)[0] for s in rolling] == ["upgrade", "health"] * 3
    for index, ip in enumerate(CPS):
        upgrade = argv(rolling[2 * index])
        assert upgrade == [
            "upgrade",
            "--nodes",
            ip,
            "--endpoints",
            ip,
            "--preserve",
            "--wait",
            "--image",
            f"factory.talos.dev/installer/{SCHEMATIC}:v1.9.6",
        ]
        assert f"steps.talos_versions[{index}]" in rolling[2 * index]["reason"]
        assert rolling[2 * index + 1]["status"] == "would_run" and not rolling[2 * index + 1]["gated"]
    generic = plan(cli, home, "talos-upgrade", profile="dev-generic")
    assert gated(generic) == [] and one(generic, "not_talos")["status"] == "would_run"


def test_etcd_backup_snapshots_one_control_plane_into_the_backup_dir(cli, home) -> None:
    planned = plan(cli, home, "talos-etcd-backup", "--param", "backup_dir=/srv/backups")
    assert gated(planned) == []
    assert "dir=/srv/backups" in one(planned, "snapshot_path")["action"]["script"]
    assert argv(one(planned, "etcd_snapshot")) == [
        "etcd",
        "snapshot",
        "(known after run: steps.snapshot_path.stdout)",
        "--nodes",
        "10.20.0.31",
        "--endpoints",
        "10.20.0.31",
    ]
    other = plan(cli, home, "talos-etcd-backup", "--param", "node=stg-cp03")
    assert argv(one(other, "etcd_snapshot"))[-4:] == ["--nodes", "10.20.0.33", "--endpoints", "10.20.0.33"]
    assert one(other, "unknown_node")["status"] == "skipped"
    wrong = plan(cli, home, "talos-etcd-backup", "--param", "node=stg-w07")
    assert one(wrong, "unknown_node")["status"] == "would_run"  # refuses before any snapshot


def test_image_factory_posts_the_profile_extensions(cli, home) -> None:
    planned = plan(cli, home, "talos-image-factory")
    post = one(planned, "schematic")["action"]
    assert (post["method"], post["url"]) == ("POST", "https://factory.talos.dev/schematics")
    assert post["headers"] == {"Content-Type": "application/yaml"}
    assert yaml.safe_load(post["body"]) == {
        "customization": {"systemExtensions": {"officialExtensions": STAGING["talos"]["factory"]["extensions"]}}
    }
    assert one(planned, "factory_versions")["action"]["url"] == "https://factory.talos.dev/versions"
    assert one(planned, "schematic_differs")["status"] == "unknown"
    assert "exit 1" in one(planned, "schematic_differs")["action"]["script"]


def test_image_cache_builds_from_the_default_images(cli, home) -> None:
    planned = plan(cli, home, "talos-image-cache", "--param", "extra_images=docker.io/library/nginx:1.27")
    create = argv(one(planned, "cache_create"))
    assert create[:4] == ["images", "cache-create", "--image-cache-path", f"{talos_dir(home)}/image-cache.oci"]
    assert "--images=(known after run: steps.default_images)" in create
    assert f"--images=factory.talos.dev/installer/{SCHEMATIC}:v1.9.5" in create
    assert "--images=docker.io/library/nginx:1.27" in create
    patch = one(planned, "cache_patch")["action"]
    assert patch["path"] == f"{talos_dir(home)}/patches/image-cache.yaml" and patch["mode"] == "0600"
    assert yaml.safe_load(patch["content"]) == {"machine": {"features": {"imageCache": {"localEnabled": True}}}}


def test_template_create_builds_an_uefi_vm_without_cloud_init(cli, home) -> None:
    planned = plan(cli, home, "talos-template-create", *TEMPLATE_PARAMS, profile=None)
    assert gated(planned) == []
    create = one(planned, "create_vm")["action"]
    assert create["path"] == "/nodes/pve02/qemu" and create["node"] == "pve02"
    params = create["params"]
    assert {k: params[k] for k in ("vmid", "name", "bios", "machine", "scsihw", "efidisk0", "net0", "serial0")} == {
        "vmid": "150",
        "name": "talos-v1.9.5",
        "bios": "ovmf",
        "machine": "q35",
        "scsihw": "virtio-scsi-single",
        "efidisk0": "local-lvm:1,efitype=4m,pre-enrolled-keys=0",
        "net0": "virtio,bridge=vmbr0",
        "serial0": "socket",
    }
    assert not any(k.startswith(("ide", "sata", "ipconfig", "ci")) for k in params)
    image = f"/var/lib/vz/template/iso/talos-v1.9.5-{SCHEMATIC[:12]}-nocloud-amd64.raw"
    fetch = one(planned, "fetch_image")["action"]
    assert fetch["node"] == "pve02"
    assert (
        f"test -f {image} || test -f {image}.xz || wget -nv -O {image}.xz "
        f"https://factory.talos.dev/image/{SCHEMATIC}/v1.9.5/nocloud-amd64.raw.xz"
    ) in fetch["script"]
    assert f"test -f {image} || xz -d -f {image}.xz" in fetch["script"]
    assert one(planned, "import_disk")["action"]["script"].strip() == (
        f"qm set 150 --scsi0 local-lvm:0,import-from={image}"
    )
    assert one(planned, "make_template")["action"]["script"].strip() == "qm template 150"
    assert one(planned, "tag_template")["action"]["params"] == {"tags": "template;talos"}
    assert one(planned, "remove_image_files")["status"] == "skipped"
    removing = plan(cli, home, "talos-template-create", *TEMPLATE_PARAMS, "--param", "remove_image=true", profile=None)
    assert gated(removing) == [("remove_image_files", None)]


def test_template_create_refuses_a_vmid_outside_the_template_range(cli, home) -> None:
    params = [p if p != "vmid=150" else "vmid=1500" for p in TEMPLATE_PARAMS]
    planned = plan(cli, home, "talos-template-create", *params, profile=None)
    assert one(planned, "bad_inputs")["status"] == "would_run"


def test_template_ssh_steps_run_in_the_simulated_node_shell(cli, home) -> None:
    """Every ssh command of talos-template-create is one the simulated PVE nodes understand, and a second
    pass over the download and decompression changes nothing."""
    shell = pytest.importorskip("engine.sim.shell")
    from engine.runbook.actions import ShellCommand
    from engine.sim.state import SimVm

    class Vms:
        def __init__(self) -> None:
            self.vm = SimVm(150, "talos-v1.9.5", "pve02", config={"name": "talos-v1.9.5", "bios": "ovmf"})

        def get_vm(self, vmid: int) -> Any:
            return self.vm if vmid == 150 else None

        def list_vms(self) -> list[Any]:
            return [self.vm]

        def set_config(self, vmid: int, changes: dict[str, Any]) -> None:
            for key, value in changes.items():
                if value is None:
                    self.vm.config.pop(key, None)
                else:
                    self.vm.config[key] = value

        def make_template(self, vmid: int) -> None:
            self.vm.template = True

        def node_status(self, node: str) -> str | None:
            return "online" if node in ("pve01", "pve02", "pve03") else None

        def storage_exists(self, node: str, storage: str) -> bool:
            return storage in ("local", "local-lvm")

    planned = plan(cli, home, "talos-template-create", *TEMPLATE_PARAMS, "--param", "remove_image=true", profile=None)
    scripts = {s["step"]: s["action"]["script"] for s in planned["steps"] if s["kind"] == "ssh" and s["action"]}
    vms, files = Vms(), shell.NodeFiles()
    node = shell.SimShellExecutor(vms, files)
    for step_id in (
        "fetch_image",
        "fetch_image",
        "import_disk",
        "make_template",
        "remove_image_files",
    ):
        node.execute(ShellCommand(script=scripts[step_id], node="pve02"))
    assert vms.vm.template and vms.vm.config["scsi0"].startswith("local-lvm:base-150-disk-0")
    assert files.paths("pve02") == []  # the image files were removed


# ---------------------------------------------------------------- against fakepve


@pytest.fixture
def fake_cluster(make_home: Callable[..., Home], tmp_path: Path) -> Iterator[tuple[Home, Any, dict[str, str]]]:
    """fakepve with the templates, the staging cluster, a dev VM, a decoy and a home pointed at it."""
    fakepve_server = pytest.importorskip("tests.support.fakepve_server")
    secret = "s3cret-runbooks-cluster"
    (tmp_path / "pve").mkdir()
    with fakepve_server.FakePveServer(tmp_path / "pve", secret) as pve:

        def seed() -> None:
            for vmid, name in ((101, "talos-v1.9.5"), (102, "debian-12")):
                pve.pve.add_vm(vmid, name, node="pve01", template=True, config={"tags": "template;talos"})
            for vmid, name, node in (
                (1031, "stg-cp01", "pve01"),
                (1032, "stg-cp02", "pve02"),
                (1033, "stg-cp03", "pve03"),
            ):
                pve.pve.add_vm(
                    vmid,
                    name,
                    node=node,
                    status="running",
                    config={"tags": "kubernetes;staging;talos;controlplane;backup"},
                )
            pve.pve.add_vm(1211, "dev-w01", node="pve01", status="running", config={"tags": "kubernetes;dev;worker"})
            pve.pve.add_vm(1099, "decoy", node="pve02", status="running", config={"tags": "talos;kubernetes"})

        pve.do(seed)
        config = yaml.safe_load((REPO / "cluster-config.yaml").read_text())
        urls = [pve.url, *(pve.add_listener(host) for host in fakepve_server.EXTRA_HOSTS)]  # one address per node
        config["cluster"]["nodes"] = [
            {"name": name, "host": url.split("//")[1].rsplit(":", 1)[0], "port": int(url.rsplit(":", 1)[1])}
            for name, url in zip(("pve01", "pve02", "pve03"), urls)
        ]
        config["tls"] = {"ca_file": str(pve.certfile)}
        staging = (
            (REPO / "clusters" / "talos-staging.yaml")
            .read_text()
            .replace("~/.config/runbook/talos/staging", str(tmp_path / "talos" / "staging"))
        )
        built = make_home(
            {"cluster-config.yaml": yaml.safe_dump(config, sort_keys=False), "clusters/talos-staging.yaml": staging}
        )
        env = {"PROXMOX_API_TOKEN": f"{fakepve_server.TOKEN_ID}={secret}"}
        yield built, pve, env


def test_teardown_dry_run_shows_each_member_and_gates_each_destruction(cli, fake_cluster) -> None:
    home, _pve, env = fake_cluster
    planned = plan(cli, home, "cluster-teardown", env=env)
    members = entries(planned, "members")
    assert [m["item"] for m in members] == ["name=stg-cp01", "name=stg-cp02", "name=stg-cp03"]
    assert all(m["status"] == "succeeded" for m in members)  # read for real: the operator sees the disks
    shutdowns = entries(planned, "shutdown")
    assert [s["display"] for s in shutdowns] == [
        f"POST /nodes/{node}/qemu/{vmid}/status/shutdown  timeout=120 forceStop=0"
        for vmid, node in ((1031, "pve01"), (1032, "pve02"), (1033, "pve03"))
    ]
    deletes = entries(planned, "delete")
    assert [d["display"] for d in deletes] == [
        f"DELETE /nodes/{node}/qemu/{vmid}  purge=1 destroy-unreferenced-disks=1"
        for vmid, node in ((1031, "pve01"), (1032, "pve02"), (1033, "pve03"))
    ]
    assert all(s["gated"] and "marked destructive" in s["gate_reasons"] for s in shutdowns + deletes)
    assert one(planned, "outside_vm_range")["status"] == "skipped"
    # neither the templates, the dev VM nor the decoy (it lacks the staging tag) are touched
    shown = json.dumps(planned["steps"])
    for vmid in ("101", "102", "1211", "1099"):
        assert f"/qemu/{vmid}" not in shown


def test_create_dry_run_on_an_existing_cluster_changes_nothing(cli, fake_cluster) -> None:
    home, _pve, env = fake_cluster
    planned = plan(cli, home, "cluster-create", env=env)
    assert all(vm["existing"] for vm in planned["plan"]["vms"])
    for step_id in ("template_missing", "vmid_taken", "clone", "migrate", "configure", "start"):
        assert all(s["status"] == "skipped" for s in entries(planned, step_id)), step_id
