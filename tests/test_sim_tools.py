"""The simulated far ends of ssh, talosctl, http and local steps (engine/sim/shell, talos, http, shims).

Each is tested through its executor contract (``run``/``request`` -> ``Result`` or ``StepFailed``)
against small in-memory fakes of the interfaces it is wired through (``VmOps``, ``vm_lookup``),
with real temporary folders for the files talosctl and the shims write.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from engine.runbook.actions import HttpRequest, ShellCommand, StepFailed, TalosctlCommand
from engine.sim.http import Factory, SimHttpExecutor, schematic_id
from engine.sim.nodefiles import NodeFiles
from engine.sim.shell import SimShellExecutor
from engine.sim.shims import calls, write_shims
from engine.sim.state import SimVm
from engine.sim.talos import SimTalosctlExecutor, TalosWorld

SCHEMATIC = "ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515"
IMAGE_URL = f"https://factory.talos.dev/image/{SCHEMATIC}/v1.9.5/nocloud-amd64.raw.xz"
CP1, CP2, CP3, W1 = "10.20.0.31", "10.20.0.32", "10.20.0.33", "10.20.0.41"


class FakeVms:
    """VmOps over a dict of SimVm; nodes pve01..03 online, storages local and local-lvm."""

    def __init__(self, *vms: SimVm):
        self.vms = {vm.vmid: vm for vm in vms}
        self.nodes = {"pve01": "online", "pve02": "online", "pve03": "offline"}

    def get_vm(self, vmid: int) -> SimVm | None:
        return self.vms.get(vmid)

    def list_vms(self) -> list[SimVm]:
        return list(self.vms.values())

    def set_config(self, vmid: int, changes: Mapping[str, str | None]) -> None:
        for key, value in changes.items():
            if value is None:
                self.vms[vmid].config.pop(key, None)
            else:
                self.vms[vmid].config[key] = value

    def make_template(self, vmid: int) -> None:
        self.vms[vmid].template = True

    def node_status(self, node: str) -> str | None:
        return self.nodes.get(node)

    def storage_exists(self, node: str, storage: str) -> bool:
        return storage in ("local", "local-lvm")


# ---------------------------------------------------------------- shell


@pytest.fixture
def node() -> tuple[SimShellExecutor, FakeVms, NodeFiles]:
    vms = FakeVms(
        SimVm(101, "talos-v1.9.5", "pve01", config={"name": "talos-v1.9.5", "bios": "ovmf", "memory": 2048}),
        SimVm(1031, "stg-cp01", "pve01", status="running", config={"name": "stg-cp01"}),
    )
    files = NodeFiles()
    return SimShellExecutor(vms, files), vms, files


def ssh(executor: SimShellExecutor, script: str, node: str = "pve01") -> dict:
    return executor.execute(ShellCommand(script=script, node=node)).data


def test_template_creation_sequence(node) -> None:
    executor, vms, files = node
    iso = "/var/lib/vz/template/iso"
    lines: list[str] = []
    result = executor.execute(
        ShellCommand(
            node="pve01",
            script=f"""
        # fetch the factory image once, decompress, import as the template's disk
        IMG={iso}/talos-v1.9.5-nocloud-amd64.raw
        test -f "$IMG" || wget -q -O "$IMG.xz" '{IMAGE_URL}'
        [ -f "$IMG" ] || xz -d -f "$IMG.xz"
        qm set 101 --scsi0 local-lvm:0,import-from=$IMG,discard=on,ssd=1 \\
            --boot order=scsi0 --serial0 socket --vga serial0
        qm set 101 --efidisk0 local-lvm:0,efitype=4m,pre-enrolled-keys=0
        qm template 101
        qm config 101 | grep -E '^(scsi0|efidisk0):'
    """,
        ),
        progress=lines.append,
    )
    vm = vms.vms[101]
    assert vm.template is True
    assert vm.config["scsi0"] == "local-lvm:base-101-disk-0,discard=on,ssd=1,size=1246M"
    assert vm.config["efidisk0"] == "local-lvm:base-101-disk-1,efitype=4m,pre-enrolled-keys=0,size=4M"
    assert vm.config["boot"] == "order=scsi0" and vm.config["vga"] == "serial0"
    raw = files.get("pve01", f"{iso}/talos-v1.9.5-nocloud-amd64.raw")
    assert raw is not None and raw["size"] == 1246 * 1024 * 1024 and raw["source"] == IMAGE_URL
    assert files.get("pve01", f"{iso}/talos-v1.9.5-nocloud-amd64.raw.xz") is None  # xz -d removes it
    assert result.data["exit_code"] == 0
    assert (
        "scsi0: successfully created disk 'local-lvm:vm-101-disk-0,discard=on,ssd=1,size=1246M'"
        in result.data["stdout"]
    )
    assert result.data["stdout"].endswith(
        "efidisk0: local-lvm:base-101-disk-1,efitype=4m,pre-enrolled-keys=0,size=4M\n"
        "scsi0: local-lvm:base-101-disk-0,discard=on,ssd=1,size=1246M\n"
    )
    assert 'Renamed "vm-101-disk-0" to "base-101-disk-0"' in result.data["stderr"]
    assert any(line.startswith("update VM 101: -scsi0") for line in lines)
    # a second run finds the image and skips the download (the guards work)
    vms.vms[102] = SimVm(102, "t2", "pve01")
    ssh(executor, f"test -f {iso}/talos-v1.9.5-nocloud-amd64.raw || wget -q -O /nonexistent/x '{IMAGE_URL}'")


def test_unsupported_command_fails_before_anything_runs(node) -> None:
    executor, _vms, files = node
    with pytest.raises(StepFailed) as failed:
        ssh(executor, "mkdir -p /root/work\npvesm alloc local-lvm 101 vm-101-disk-9 4G\n")
    assert failed.value.message == (
        "simulation: 'pvesm' is not simulated on PVE nodes (simulated: qm set/template/config/list/status, wget, "
        "curl, xz -d, sha256sum, sha512sum, test -f, rm -f, mv, mkdir -p, echo) (script line 2)"
    )
    assert failed.value.sent is False
    assert not files.is_dir("pve01", "/root/work")
    for script, what in (
        ("qm start 101", "'qm start' is not simulated"),
        ("echo $(date)", "command substitution"),
        ("if true; then echo; fi", "'if' is not simulated"),
        ("cat <<EOF\nx\nEOF", "here-documents"),
    ):
        with pytest.raises(StepFailed, match="simulation: ") as failed:
            ssh(executor, script)
        assert what in failed.value.message and failed.value.sent is False


def test_set_e_stops_at_the_first_failure_and_or_lists_do_not(node) -> None:
    executor, _vms, files = node
    data = ssh(executor, "test -f /nope && echo unreachable\nrm -f /nope || echo never\necho ok")
    assert data["stdout"] == "ok\n"
    with pytest.raises(StepFailed) as failed:
        ssh(executor, "mkdir /tmp/a\nxz -d /tmp/a/missing.raw.xz\nmkdir /tmp/b")
    assert failed.value.message.startswith("script on node pve01 (simulated) exited with 1; stderr:\n")
    assert "xz: /tmp/a/missing.raw.xz: No such file or directory" in failed.value.message
    assert files.is_dir("pve01", "/tmp/a") and not files.is_dir("pve01", "/tmp/b")
    assert failed.value.data["exit_code"] == 1
    with pytest.raises(StepFailed, match="UNSET: unbound variable"):
        ssh(executor, 'echo "$UNSET"')
    assert ssh(executor, 'echo "${UNSET:-fallback}" $HOME')["stdout"] == "fallback /root\n"


def test_downloads_check_urls_folders_and_the_factory(node) -> None:
    executor, _vms, files = node
    with pytest.raises(StepFailed, match="Unsupported scheme 'ftp'"):
        ssh(executor, "wget -q -O /tmp/x ftp://example.org/x")
    with pytest.raises(StepFailed, match="ERROR 404: Not Found"):
        ssh(executor, f"wget -O /tmp/x {IMAGE_URL.replace('v1.9.5', 'v9.9.9')}")
    with pytest.raises(StepFailed, match="No such file or directory"):
        ssh(executor, f"wget -q -O /no/such/dir/x.raw.xz {IMAGE_URL}")
    ssh(executor, f"mkdir -p /srv/img && curl -fsSLo /srv/img/t.raw.xz {IMAGE_URL}")
    assert files.get("pve01", "/srv/img/t.raw.xz")["uncompressed_size"] == 1246 * 1024 * 1024
    versions = ssh(executor, "curl -fsSL https://factory.talos.dev/versions")["stdout"]
    assert "v1.9.5" in json.loads(versions)


def test_qm_checks_the_vm_node_storage_and_image(node) -> None:
    executor, _vms, files = node
    with pytest.raises(StepFailed, match=r"Configuration file 'nodes/pve01/qemu-server/999.conf' does not exist"):
        ssh(executor, "qm config 999")
    with pytest.raises(StepFailed, match="Configuration file 'nodes/pve02/qemu-server/101.conf' does not exist"):
        ssh(executor, "qm config 101", node="pve02")
    with pytest.raises(StepFailed, match="No such file or directory"):
        ssh(executor, "qm set 101 --scsi0 local-lvm:0,import-from=/var/lib/vz/template/iso/missing.raw")
    files.put("pve01", "/tmp/t.raw.xz", 90_000_000)
    with pytest.raises(StepFailed, match=r"compressed.*xz -d"):
        ssh(executor, "qm set 101 --scsi0 local-lvm:0,import-from=/tmp/t.raw.xz")
    with pytest.raises(StepFailed, match="storage 'ceph' does not exist"):
        ssh(executor, "qm set 101 --scsi1 ceph:10")
    with pytest.raises(StepFailed, match="you can't convert a VM to template if VM is running"):
        ssh(executor, "qm template 1031")
    with pytest.raises(StepFailed, match="node pve03 is offline"):
        ssh(executor, "echo hi", node="pve03")


# ---------------------------------------------------------------- talosctl


class Cluster:
    """Three control plane VMs (the third stopped) and a worker, a world, and a config folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.vms = {
            CP1: SimVm(1031, "stg-cp01", "pve01", "running", config={"vmgenid": "a"}),
            CP2: SimVm(1032, "stg-cp02", "pve02", "running", config={"vmgenid": "b"}),
            CP3: SimVm(1033, "stg-cp03", "pve03", "stopped", config={"vmgenid": "c"}),
            W1: SimVm(1041, "stg-w01", "pve01", "running", config={"vmgenid": "d"}),
        }
        self.world = TalosWorld()
        self.executor = SimTalosctlExecutor(
            self.world,
            self.vms.get,
            planned=lambda name: {"controlplane": [CP1, CP2, CP3]} if name == "stg" else {},
            environ={"HOME": str(folder / "home")},
        )

    def run(self, *argv: str) -> dict:
        command = TalosctlCommand(argv=argv, talosconfig=str(self.folder / "talosconfig"), cwd=str(self.folder))
        return self.executor.execute(command).data

    def fails(self, *argv: str) -> StepFailed:
        with pytest.raises(StepFailed) as failed:
            self.run(*argv)
        return failed.value

    def generate(self) -> None:
        self.run("gen", "secrets", "-o", "secrets.yaml")
        self.run(
            "gen",
            "config",
            "stg",
            "https://10.20.0.30:6443",
            "--with-secrets",
            "secrets.yaml",
            "--install-image",
            f"factory.talos.dev/installer/{SCHEMATIC}:v1.9.5",
            "--kubernetes-version",
            "v1.32.3",
            "--config-patch-control-plane",
            '{"machine": {"network": {"interfaces": [{"interface": "eth0", "vip": {"ip": "10.20.0.30"}}]}}}',
        )
        self.run("config", "endpoint", CP1, CP2, CP3)


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    return Cluster(tmp_path)


def test_talos_lifecycle_with_real_config_files(cluster: Cluster, tmp_path: Path) -> None:
    cluster.generate()
    secrets = yaml.safe_load((tmp_path / "secrets.yaml").read_text())
    assert set(secrets) == {"cluster", "secrets", "trustdinfo", "certs"} and set(secrets["certs"]) >= {
        "os",
        "etcd",
        "k8s",
    }
    assert (tmp_path / "secrets.yaml").stat().st_mode & 0o777 == 0o600
    failed = cluster.fails("gen", "secrets", "-o", "secrets.yaml")
    assert 'file "secrets.yaml" already exists, use --force to overwrite' in failed.message
    cluster.run("gen", "secrets", "-o", "secrets.yaml", "--force")  # forced: allowed (the configs keep the old ones)
    cp = yaml.safe_load((tmp_path / "controlplane.yaml").read_text())
    worker = yaml.safe_load((tmp_path / "worker.yaml").read_text())
    talosconfig = yaml.safe_load((tmp_path / "talosconfig").read_text())
    assert cp["machine"]["type"] == "controlplane" and worker["machine"]["type"] == "worker"
    assert (
        cp["cluster"]["clusterName"] == "stg" and cp["cluster"]["controlPlane"]["endpoint"] == "https://10.20.0.30:6443"
    )
    assert cp["machine"]["install"]["image"] == f"factory.talos.dev/installer/{SCHEMATIC}:v1.9.5"
    assert cp["cluster"]["apiServer"]["image"] == "registry.k8s.io/kube-apiserver:v1.32.3"
    assert cp["machine"]["network"]["interfaces"][0]["vip"]["ip"] == "10.20.0.30"
    assert "interfaces" not in worker["machine"]["network"]  # the control-plane patch only
    assert cp["cluster"]["id"] == secrets["cluster"]["id"]  # from --with-secrets (read before the --force)
    assert talosconfig["context"] == "stg" and talosconfig["contexts"]["stg"]["endpoints"] == [CP1, CP2, CP3]

    # maintenance: only --insecure calls; then installed
    assert f"NODE:        {CP1}" in cluster.run("version", "--insecure", "--nodes", CP1)["stdout"]
    assert "maintenance mode" in cluster.fails("bootstrap", "--nodes", CP1).message
    cluster.run("apply-config", "--insecure", "--nodes", CP1, "--file", "controlplane.yaml")
    cluster.run("apply-config", "--insecure", "--nodes", CP2, "--file", "controlplane.yaml")
    cluster.run("apply-config", "-i", "-n", W1, "-f", "worker.yaml")
    assert (
        "tls: certificate required" in cluster.fails("apply-config", "-i", "-n", CP1, "-f", "controlplane.yaml").message
    )
    assert cluster.world.node(CP1)["role"] == "controlplane" and cluster.world.node(W1)["role"] == "worker"

    # bootstrapped on one control plane, then healthy once every control plane is installed and running
    assert "bootstrap is not available on worker nodes" in cluster.fails("bootstrap", "--nodes", W1).message
    cluster.run("bootstrap", "--nodes", CP1)
    cluster.vms[CP3].status = "running"
    cluster.run("apply-config", "--insecure", "--nodes", CP3, "--file", "controlplane.yaml")
    health = cluster.run("--nodes", CP1, "health", "--wait-timeout", "1m")
    assert f'discovered nodes: ["{CP1}" "{CP2}" "{CP3}" "{W1}"]' in health["stderr"]
    assert "waiting for all k8s nodes to report ready: OK" in health["stderr"]
    assert [row["state"] for row in cluster.world.rows(cluster.vms.get)] == ["healthy"] * 4

    # the VIP answers now; kubeconfig, etcd snapshot and upgrade write and record
    cluster.run("kubeconfig", "kubeconfig", "--nodes", CP1, "--endpoints", "10.20.0.30")
    kubeconfig = yaml.safe_load((tmp_path / "kubeconfig").read_text())
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://10.20.0.30:6443"
    cluster.run("etcd", "snapshot", "backup/etcd.snapshot", "--nodes", CP1)
    assert (tmp_path / "backup" / "etcd.snapshot").stat().st_size > 0
    cluster.run("upgrade", "--nodes", CP2, "--image", f"factory.talos.dev/installer/{SCHEMATIC}:v1.9.6", "--preserve")
    assert cluster.world.node(CP2)["talos_version"] == "v1.9.6"
    assert "Tag:         v1.9.6" in cluster.run("version", "--nodes", CP2)["stdout"]
    members = cluster.run("get", "members", "--nodes", CP1, "-o", "json")["stdout"]
    assert members.count('"machineType": "controlplane"') == 3


def test_health_before_bootstrap_says_what_is_not_ready(cluster: Cluster) -> None:
    cluster.generate()
    cluster.run("apply-config", "--insecure", "--nodes", CP1, "--file", "controlplane.yaml")
    failed = cluster.fails("--nodes", CP1, "health", "--wait-timeout", "1m")
    assert "healthcheck error: rpc error: code = DeadlineExceeded" in failed.message
    assert f"{CP2}: in maintenance mode (no machine config applied)" in failed.message
    assert f"{CP3}: not reachable (VM 1033 (stg-cp03) on pve03 with address {CP3} is stopped)" in failed.message
    assert "etcd is not bootstrapped" in failed.message
    assert failed.data["exit_code"] == 1


def test_double_bootstrap_is_refused(cluster: Cluster) -> None:
    cluster.generate()
    for ip in (CP1, CP2):
        cluster.run("apply-config", "--insecure", "--nodes", ip, "--file", "controlplane.yaml")
    cluster.run("bootstrap", "--nodes", CP1)
    for ip in (CP1, CP2):
        failed = cluster.fails("bootstrap", "--nodes", ip)
        assert (
            "error executing bootstrap: rpc error: code = AlreadyExists desc = etcd data directory is not empty"
            in failed.message
        )
        assert f"already bootstrapped on {CP1}" in failed.message


def test_unreachable_nodes_and_foreign_configs(cluster: Cluster, tmp_path: Path) -> None:
    cluster.generate()
    failed = cluster.fails("apply-config", "--insecure", "--nodes", "10.20.0.99", "--file", "controlplane.yaml")
    assert "dial tcp 10.20.0.99:50000: connect: connection refused" in failed.message
    assert "no running VM has the address 10.20.0.99" in failed.message
    (tmp_path / "other.yaml").write_text("machine:\n  type: router\ncluster: {}\n")
    failed = cluster.fails("apply-config", "--insecure", "--nodes", CP1, "--file", "other.yaml")
    assert "configuration validation failed" in failed.message and "unknown machine type 'router'" in failed.message
    assert "no such file or directory" in cluster.fails("apply-config", "-i", "-n", CP1, "-f", "nope.yaml").message
    cluster.run("apply-config", "--insecure", "--nodes", CP1, "--file", "controlplane.yaml")
    # the VIP is down until etcd is bootstrapped, as on a real cluster
    failed = cluster.fails("bootstrap", "--nodes", CP1, "--endpoints", "10.20.0.30")
    assert "dial tcp 10.20.0.30:50000: connect: connection refused" in failed.message
    assert "virtual IP of cluster stg" in failed.message
    # a talosconfig from other secrets is not trusted
    other = tmp_path / "other"
    other.mkdir()
    cluster.executor.execute(TalosctlCommand(argv=("gen", "config", "stg", "https://10.20.0.30:6443"), cwd=str(other)))
    failed = cluster.fails("bootstrap", "--nodes", CP1, "-e", CP1, "--talosconfig", "other/talosconfig")
    assert "x509: certificate signed by unknown authority" in failed.message
    # a VM made again under the same address boots from a fresh disk: maintenance again
    cluster.vms[CP1] = SimVm(1031, "stg-cp01", "pve01", "running", config={"vmgenid": "a2"})
    assert "maintenance mode" in cluster.fails("bootstrap", "--nodes", CP1).message
    assert cluster.world.node(CP1) is None and cluster.world.clusters == {}


def test_upgrade_needs_a_healthy_cluster_and_unknown_commands_fail_clearly(cluster: Cluster) -> None:
    cluster.generate()
    cluster.run("apply-config", "--insecure", "--nodes", CP1, "--file", "controlplane.yaml")
    cluster.run("bootstrap", "--nodes", CP1)
    failed = cluster.fails("upgrade", "--nodes", CP1, "--image", "ghcr.io/siderolabs/installer:v1.9.6")
    assert "cluster is not healthy" in failed.message and f"{CP2}: in maintenance mode" in failed.message
    failed = cluster.fails("dashboard", "--nodes", CP1)
    assert failed.message.startswith(
        "`talosctl dashboard --nodes 10.20.0.31`: simulation: talosctl dashboard is not simulated (simulated: "
    )
    assert failed.sent is False
    assert "talosctl etcd defrag is not simulated" in cluster.fails("etcd", "defrag").message
    assert "unknown flag: --frobnicate" in cluster.fails("bootstrap", "--frobnicate").message


def test_files_talosctl_writes_and_reset(cluster: Cluster, tmp_path: Path) -> None:
    failed = cluster.fails("gen", "config", "stg", "10.20.0.30")
    assert (
        'no scheme and port specified for the cluster endpoint URL\n  try: "https://10.20.0.30:6443"' in failed.message
    )
    cluster.generate()
    (tmp_path / "cp1.yaml").write_text("machine:\n  network:\n    hostname: stg-cp01\n")
    cluster.run(
        "machineconfig",
        "patch",
        "controlplane.yaml",
        "--patch",
        "@cp1.yaml",
        "--patch",
        '[{"op": "add", "path": "/machine/certSANs/-", "value": "10.20.0.30"}]',
        "-o",
        "cp1-full.yaml",
    )
    patched = yaml.safe_load((tmp_path / "cp1-full.yaml").read_text())
    assert patched["machine"]["network"]["hostname"] == "stg-cp01" and patched["machine"]["certSANs"] == ["10.20.0.30"]
    cluster.run("images", "cache-create", "--image-cache-path", "cache", "--images", "ghcr.io/a/b:1,ghcr.io/c/d:2")
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == [
        "ghcr.io/a/b:1",
        "ghcr.io/c/d:2",
    ]
    cluster.run("apply-config", "--insecure", "--nodes", CP1, "--file", "cp1-full.yaml")
    assert cluster.world.node(CP1)["hostname"] == "stg-cp01"
    cluster.run("reset", "--nodes", CP1, "--graceful=false", "--reboot")
    assert cluster.world.node(CP1) is None and cluster.world.clusters == {}
    assert f"NODE:        {CP1}" in cluster.run("version", "-i", "-n", CP1)["stdout"]  # maintenance again


# ---------------------------------------------------------------- http


def test_factory_schematic_id_is_deterministic_and_matches_the_real_factory() -> None:
    executor = SimHttpExecutor()
    as_yaml = "customization:\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/qemu-guest-agent\n"
    as_json = json.dumps(
        {"customization": {"systemExtensions": {"officialExtensions": ["siderolabs/qemu-guest-agent"]}}}
    )
    first = executor.execute(HttpRequest("POST", "https://factory.talos.dev/schematics", body=as_yaml))
    second = executor.execute(HttpRequest("POST", "https://factory.talos.dev/schematics", body=as_json))
    assert first.data["json"] == second.data["json"] == {"id": SCHEMATIC}  # the id factory.talos.dev gives
    assert first.data["status"] == 201 and set(first.data) == {"status", "headers", "body", "json"}
    assert schematic_id("")[0] == "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"
    two = {
        "customization": {
            "systemExtensions": {"officialExtensions": ["siderolabs/qemu-guest-agent", "siderolabs/iscsi-tools"]}
        }
    }
    assert schematic_id(json.dumps(two)) == schematic_id(yaml.safe_dump(two))
    assert schematic_id(json.dumps(two))[0] != SCHEMATIC
    with pytest.raises(StepFailed, match=r"returned 400 Bad Request.*field systemExtension not found"):
        executor.execute(
            HttpRequest("POST", "https://factory.talos.dev/schematics", body="customization:\n  systemExtension: {}\n")
        )


def test_factory_versions_images_and_other_hosts() -> None:
    executor = SimHttpExecutor(Factory())
    versions = executor.execute(HttpRequest("GET", "https://factory.talos.dev/versions")).data["json"]
    assert "v1.9.5" in versions
    head = executor.execute(HttpRequest("HEAD", IMAGE_URL)).data
    assert head["status"] == 200 and int(head["headers"]["content-length"]) > 50_000_000
    assert (
        executor.execute(HttpRequest("GET", IMAGE_URL.replace("v1.9.5", "v0.1.0"), expect=(404,))).data["status"] == 404
    )
    with pytest.raises(StepFailed) as failed:
        executor.execute(HttpRequest("GET", "https://example.org/versions"))
    assert "simulation: only the Talos Image Factory is simulated for http steps" in failed.value.message
    assert failed.value.sent is False


# ---------------------------------------------------------------- shims


@pytest.fixture
def shims(tmp_path: Path) -> tuple[Path, Path]:
    state = tmp_path / "sim" / "state.json"
    write_shims(tmp_path / "bin", state)
    return tmp_path / "bin", state


def tool(
    bin_dir: Path, *argv: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    environ = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(bin_dir.parent / "home")}
    environ.update(env or {})
    return subprocess.run(list(argv), capture_output=True, text=True, env=environ, cwd=cwd, timeout=30)


def test_shims_use_this_interpreter(shims) -> None:
    bin_dir, _state = shims
    for name in ("ansible-playbook", "flux", "kubectl"):
        first = (bin_dir / name).read_text().splitlines()[0]
        assert first == f"#!{sys.executable}" and os.access(bin_dir / name, os.X_OK)


def test_ansible_shim_refuses_the_token_in_argv(shims) -> None:
    bin_dir, state = shims
    token = "runbook@pve!sim=0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"
    env = {"PROXMOX_API_TOKEN": token}
    for leak in (f"proxmox_token={token}", "secret=0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"):
        refused = tool(bin_dir, "ansible-playbook", "-i", "inv.yaml", "play.yaml", "-e", leak, env=env)
        assert refused.returncode == 5
        assert "an argument contains the Proxmox API token" in refused.stderr
        assert token not in refused.stdout + refused.stderr
    ran = tool(
        bin_dir,
        "ansible-playbook",
        "-i",
        "inv/hosts.yaml",
        "playbooks/talos-provision-vms.yaml",
        "--tags",
        "controlplane",
        env=env,
    )
    assert ran.returncode == 0, ran.stderr
    assert "PLAY RECAP" in ran.stdout and "failed=0" in ran.stdout
    missing = tool(bin_dir, "ansible-playbook", "playbooks/talos-provision-vms.yaml")
    assert missing.returncode == 2 and "PROXMOX_API_TOKEN is not set" in missing.stdout
    recorded = calls(state)
    assert [c.get("refused") for c in recorded] == ["token in arguments", "token in arguments", None, None]
    assert recorded[2]["argv"][-2:] == ["--tags", "controlplane"] and token not in json.dumps(recorded)


def test_kubectl_and_flux_shims_read_the_simulated_cluster(shims, cluster: Cluster, tmp_path: Path) -> None:
    bin_dir, state = shims
    cluster.generate()
    for ip in (CP1, CP2):
        cluster.run(
            "apply-config",
            "--insecure",
            "--nodes",
            ip,
            "--file",
            "controlplane.yaml",
            "--config-patch",
            json.dumps({"machine": {"network": {"hostname": f"cp-{ip[-2:]}"}}}),
        )
    cluster.run("kubeconfig", "kubeconfig", "--nodes", CP1)
    env = {"KUBECONFIG": str(tmp_path / "kubeconfig")}
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"format": "runbook-sim-state", "talos": cluster.world.data}))
    refused = tool(bin_dir, "kubectl", "get", "nodes", env=env)
    assert refused.returncode == 1 and "The connection to the server 10.20.0.30:6443 was refused" in refused.stderr
    cluster.run("bootstrap", "--nodes", CP1)
    state.write_text(json.dumps({"format": "runbook-sim-state", "talos": cluster.world.data}))
    nodes = tool(bin_dir, "kubectl", "get", "nodes", env=env)
    assert nodes.returncode == 0, nodes.stderr
    lines = nodes.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["cp-31", "Ready", "control-plane"],
        ["cp-32", "Ready", "control-plane"],
    ]
    assert tool(bin_dir, "kubectl", "apply", "-f", "x.yaml", env=env).stderr.startswith(
        "error: simulation: kubectl apply"
    )
    assert tool(bin_dir, "flux", "check", env=env).returncode == 1
    boot = tool(
        bin_dir,
        "flux",
        "bootstrap",
        "git",
        "--url=ssh://git@git.example/fleet.git",
        "--branch=main",
        "--path=clusters/staging",
        env=env,
    )
    assert boot.returncode == 0 and "all components are healthy" in boot.stdout
    assert tool(bin_dir, "flux", "check", env=env).returncode == 0
    assert calls(state)[0]["path"] == "clusters/staging"
