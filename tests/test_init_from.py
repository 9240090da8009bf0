"""``runbook init --from``: a home written from a live cluster (fakepve over verified HTTPS, three nodes,
shared and local storage, the token in a real pass store), and from the simulated cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result

from tests.support.cluster import PASS_PATH, SECRET, TOKEN_ID, seed_cluster
from tests.support.fakepve_server import FakePveServer
from tests.support.passstore import PassStore, pass_store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PassStore]:
    with pass_store(tmp_path_factory.mktemp("pass"), entries={PASS_PATH: [TOKEN_ID, SECRET]}) as made:
        yield made


@pytest.fixture
def pve(tmp_path: Path) -> Iterator[FakePveServer]:
    """Three nodes; VM disks on a shared storage and on each node's local-lvm; vmbr1 only on pve01."""
    (tmp_path / "pve").mkdir()
    with FakePveServer(tmp_path / "pve", SECRET) as server:
        seed_cluster(server)
        server.do(server.pve.add_ceph_storage, "ceph-vm")
        server.do(lambda: server.pve.add_vm(1005, "web01", node="pve02", config={"tags": "web"}))
        yield server


@pytest.fixture
def run(cli: Callable[..., Result], store: PassStore) -> Callable[..., Result]:
    """The CLI with the pass store selected and no token in the environment; every output is checked for the secret."""

    def invoke(*args: str, env: dict[str, Any] | None = None) -> Result:
        result = cli(*args, env={**store.env, "PROXMOX_API_TOKEN": None, **(env or {})})  # type: ignore[dict-item]
        assert SECRET not in result.stdout + result.stderr
        return result

    return invoke


def _add_bridge(pve: FakePveServer, node: str, iface: str) -> None:
    import ssl

    import httpx

    with httpx.Client(verify=ssl.create_default_context(cafile=str(pve.certfile))) as client:
        answer = client.post(
            f"{pve.url}/api2/json/nodes/{node}/network",
            data={"iface": iface, "type": "bridge"},
            headers={"Authorization": f"PVEAPIToken={TOKEN_ID}={SECRET}"},
        )
        assert answer.status_code == 200, answer.text


def test_from_a_cluster_with_its_ca(tmp_path: Path, pve: FakePveServer, run: Callable[..., Result]) -> None:
    _add_bridge(pve, "pve01", "vmbr1")
    target = tmp_path / "ops"
    result = run("init", str(target), "--from", pve.url, "--ca-file", str(pve.certfile), "--pass-path", PASS_PATH)
    assert result.exit_code == 0, result.stderr
    assert "cluster fakecluster: 3 node(s), 2 template(s), 3 VMIDs in use" in result.stdout
    text = (target / "cluster-config.yaml").read_text()
    config = yaml.safe_load(text)
    nodes = {node["name"]: node for node in config["cluster"]["nodes"]}
    assert nodes["pve01"]["host"] == "127.0.0.1" and nodes["pve01"]["port"] == pve.port
    assert nodes["pve02"]["host"] == "192.0.2.12"  # the cluster's record of it, marked as guessed:
    assert "GUESSED: host is the address the cluster records" in text.splitlines()[5 + 1]
    assert config["cluster"]["name"] == "fakecluster"
    assert config["tls"] == {"ca_file": str(Path(pve.certfile).resolve())}
    assert config["credentials"]["pass_path"] == PASS_PATH
    assert config["defaults"]["storage"] == "ceph-vm" and config["defaults"]["shared_storage"] is True
    assert "local-lvm (local: pve01, pve02, pve03)" in text
    assert config["defaults"]["network_bridge"] == "vmbr0"  # vmbr1 is on pve01 only
    assert config["tags"]["templates"] == ["talos", "template"]
    assert "#   101 talos-v1.9.5 on pve01 [template;talos]" in text
    assert "in use there now: 1005" in text
    assert SECRET not in text
    checked = run("--home", str(target), "validate")
    assert checked.exit_code == 0, checked.stdout + checked.stderr
    profile = yaml.safe_load((target / "clusters" / "dev-generic.yaml").read_text())
    assert profile["template"] == 101
    listed = run("--home", str(target), "run", "vm-list")  # the written config reaches the cluster
    assert listed.exit_code == 0, listed.stderr
    assert "web01" in listed.stdout + listed.stderr


def test_first_contact_shows_the_fingerprint(tmp_path: Path, pve: FakePveServer, run: Callable[..., Result]) -> None:
    target = tmp_path / "ops"
    asked = run("init", str(target), "--from", pve.url, "--pass-path", PASS_PATH)
    assert asked.exit_code == 4, asked.stderr
    assert pve.fingerprint in asked.stderr and f"--fingerprint {pve.fingerprint}" in asked.stderr
    assert "Nothing was sent" in asked.stderr and not target.exists()
    assert pve.pve.requests == []  # only the certificate was fetched: no request reached the API
    pinned = run(
        "init",
        str(target),
        "--from",
        pve.url,
        "--fingerprint",
        pve.fingerprint.replace(":", "").lower(),
        "--pass-path",
        PASS_PATH,
    )
    assert pinned.exit_code == 0, pinned.stderr
    config = yaml.safe_load((target / "cluster-config.yaml").read_text())
    assert config["tls"] == {"fingerprint": pve.fingerprint}
    assert run("--home", str(target), "validate").exit_code == 0


def test_a_wrong_fingerprint_sends_nothing(tmp_path: Path, pve: FakePveServer, run: Callable[..., Result]) -> None:
    target = tmp_path / "ops"
    wrong = "AB:" * 31 + "AB"
    result = run("init", str(target), "--from", pve.url, "--fingerprint", wrong, "--pass-path", PASS_PATH)
    assert result.exit_code == 10, result.stderr
    assert f"cannot read the cluster at {pve.url}" in result.stderr and "Nothing was sent" in result.stderr
    assert "Nothing was written" in result.stderr and not target.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "http://pve01:8006", "--pass-path", PASS_PATH], "is not a node's API address"),
        (["--from", "https://pve01:8006/api2/json", "--pass-path", PASS_PATH], "is not a node's API address"),
        (["--from", "https://pve01:8006"], "init --from needs the API token: give --pass-path ENTRY"),
        (["--from", "https://pve01:8006", "--pass-path", "x", "--fingerprint", "12:34"], "is not a SHA-256"),
        (["--from", "https://pve01:8006", "--pass-path", "x", "--ca-file", "/nonexistent/ca.pem"], "does not exist"),
        (["--fingerprint", "AB"], "go with --from"),
    ],
)
def test_refusals_name_the_option(tmp_path: Path, run: Callable[..., Result], args: list[str], message: str) -> None:
    result = run("init", str(tmp_path / "ops"), *args)
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "ops").exists()


def test_a_refused_token_writes_nothing(tmp_path: Path, pve: FakePveServer, run: Callable[..., Result]) -> None:
    target = tmp_path / "ops"
    env = {"PROXMOX_API_TOKEN": f"{TOKEN_ID}=not-the-secret"}
    result = run("init", str(target), "--from", pve.url, "--ca-file", str(pve.certfile), env=env)
    assert (
        result.exit_code == 10 and "cannot read the cluster" in result.stderr and "not-the-secret" not in result.stderr
    )
    assert not target.exists()


def test_from_the_simulated_cluster(tmp_path: Path, run: Callable[..., Result]) -> None:
    target = tmp_path / "ops"
    result = run("init", str(target), "--simulate", env={"XDG_STATE_HOME": str(tmp_path / "state")})
    assert result.exit_code == 0, result.stderr
    text = (target / "cluster-config.yaml").read_text()
    assert text.startswith("# Read from the SIMULATED cluster")
    assert [n["name"] for n in yaml.safe_load(text)["cluster"]["nodes"]] == ["pve01", "pve02", "pve03"]
    assert run("--home", str(target), "validate").exit_code == 0


@pytest.mark.parametrize("answer", ["y", "n"])
def test_fingerprint_confirmed_on_a_terminal(tmp_path: Path, pve: FakePveServer, store: PassStore, answer: str) -> None:
    """On a terminal the fingerprint is shown and asked about; only a yes lets the token go out."""
    import os
    import subprocess
    import sys

    target = tmp_path / "ops"
    env = store.full_env({k: v for k, v in os.environ.items() if k != "PROXMOX_API_TOKEN"})
    controller, terminal = os.openpty()
    try:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "runbook"), "init", str(target), "--from", pve.url,
             "--pass-path", PASS_PATH],
            stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        )  # fmt: skip
        os.write(controller, f"{answer}\n".encode())
        stdout, stderr = process.communicate(timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)
    assert pve.fingerprint in stderr and "Is it the same?" in stderr
    assert SECRET not in stdout + stderr
    if answer == "y":
        assert process.returncode == 0, stderr
        assert yaml.safe_load((target / "cluster-config.yaml").read_text())["tls"] == {"fingerprint": pve.fingerprint}
    else:
        assert process.returncode == 4 and "the fingerprint was not confirmed; nothing was sent" in stderr
        assert not target.exists() and pve.pve.requests == []
