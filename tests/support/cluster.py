"""A complete test cluster for end-to-end runs: fakepve over HTTPS, a real sshd, a real pass store,
a fake talosctl, and a runbook home wired to all of them; the CLI runs as a real subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.support.fake_talosctl import FakeTalosctl
from tests.support.fakepve_server import EXTRA_HOSTS, TOKEN_ID, FakePveServer
from tests.support.passstore import PassStore
from tests.support.sshd import SshServer

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = Path(sys.executable).parent / "runbook"
#: A distinctive token secret: every output of every end-to-end run is scanned for it.
SECRET = "sekret-9f4e2c71-runbook-e2e-5d83"
PASS_PATH = "proxmox/test/runbook-token"


@dataclass
class LiveCluster:
    """One home wired to live test services; ``run`` invokes the real CLI and keeps every output."""

    home: Path
    pve: FakePveServer
    sshd: SshServer
    store: PassStore
    talos: FakeTalosctl
    outputs: list[str] = field(default_factory=list)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = self.store.full_env({k: v for k, v in os.environ.items() if k != "PROXMOX_API_TOKEN"})
        env.update(self.talos.env())
        env["RUNBOOK_HOME"] = str(self.home)
        env.update(extra or {})
        return env

    def start(self, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(RUNBOOK), *args],
            env=self.env(extra_env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(
        self, *args: str, timeout: float = 120, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(RUNBOOK), *args],
            env=self.env(extra_env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        self.outputs += [result.stdout, result.stderr]
        return result

    def every_byte(self) -> str:
        """Every output kept so far plus every file under the home's state folder (journals, locks)."""
        texts = list(self.outputs)
        state = self.home / ".runbook"
        if state.exists():
            for path in state.rglob("*"):
                if path.is_file():
                    texts.append(path.read_bytes().decode("utf-8", "replace"))
        return "\n".join(texts)


def write_home(root: Path, pve: FakePveServer, sshd: SshServer, *, node_urls: list[str] | None = None) -> Path:
    """A home like the repository's, with its nodes, TLS, credentials and ssh pointed at the test services."""
    root.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((REPO / "cluster-config.yaml").read_text())
    urls = node_urls or node_endpoints(pve)
    config["cluster"]["nodes"] = [
        {"name": name, "host": url.split("//")[1].split(":")[0], "port": int(url.rsplit(":", 1)[1])}
        for name, url in zip(("pve01", "pve02", "pve03"), urls)
    ]
    config["tls"] = {"ca_file": str(pve.certfile)}
    config["credentials"] = {"pass_path": PASS_PATH, "ssh_user": sshd.user, "ssh_config": str(sshd.ssh_config)}
    (root / "cluster-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copytree(REPO / "clusters", root / "clusters", dirs_exist_ok=True)
    staging = root / "clusters" / "talos-staging.yaml"
    # Keep Talos files inside the test's folder, never in the real home directory.
    staging.write_text(staging.read_text().replace("~/.config/runbook/talos/staging", str(root / "talos" / "staging")))
    shutil.copytree(REPO / "tests" / "e2e" / "runbooks", root / "runbooks", dirs_exist_ok=True)
    return root


def node_endpoints(pve: FakePveServer) -> list[str]:
    """One URL per node, each on its own loopback address, all serving the one fake cluster."""
    if not hasattr(pve, "_node_urls"):
        pve._node_urls = [pve.url, *(pve.add_listener(host) for host in EXTRA_HOSTS)]  # type: ignore[attr-defined]
    return list(pve._node_urls)  # type: ignore[attr-defined]


def seed_cluster(pve: FakePveServer) -> None:
    """The template VMs the profiles clone from, tagged as cluster-config.yaml's tags.templates says."""

    def add() -> None:
        for vmid, name in ((101, "talos-v1.9.5"), (102, "debian-12")):
            if not any(vm.vmid == vmid for vm in pve.pve.vms):
                pve.pve.add_vm(
                    vmid,
                    name,
                    node="pve01",
                    template=True,
                    config={
                        "tags": "template;talos",
                        "cores": 2,
                        "memory": 2048,
                        "scsi0": f"local-lvm:base-{vmid}-disk-0,size=4G",
                    },
                )

    pve.do(add)


__all__ = ["node_endpoints", "PASS_PATH", "SECRET", "TOKEN_ID", "LiveCluster", "seed_cluster", "write_home"]
