"""``runbook profiles new``: a profile from flags or questions, written only when validate's rules pass."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import Result


@pytest.fixture
def home(tmp_path: Path, cli: Callable[..., Result]) -> Path:
    """A home made by runbook init (the example config and profile, the shipped library)."""
    target = tmp_path / "ops"
    assert cli("init", str(target)).exit_code == 0
    return target


def test_from_flags(home: Path, cli: Callable[..., Result]) -> None:
    result = cli(
        "--home", str(home), "profiles", "new", "web", "--workers", "3", "--cores", "4", "--memory", "8192",
        "--ip", "10.30.0.11", "--gateway", "10.30.0.1", "--prefix-length", "24", "--tag", "web", "--tag", "prod",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "wrote clusters/web.yaml: 1 control plane(s), 3 worker(s) from template 102, tags web, prod" in result.stdout
    data = yaml.safe_load((home / "clusters" / "web.yaml").read_text())
    workers = data["nodes"]["workers"]
    assert (workers["count"], workers["cores"], workers["memory"]) == (3, 4, 8192)
    assert [a["ip"] for a in workers["assignments"]] == ["10.30.0.12", "10.30.0.13", "10.30.0.14"]
    assert data["nodes"]["controlplane"]["assignments"] == [{"name": "web-cp01", "ip": "10.30.0.11"}]
    # The first VMIDs follow the example profile's (1201 and 1211 up to 1213), the template is the one it uses.
    assert data["nodes"]["controlplane"]["start_vmid"] == 1221 and data["template"] == 102
    checked = cli("--home", str(home), "validate")
    assert checked.exit_code == 0, checked.stdout + checked.stderr
    listed = cli("--home", str(home), "profiles")
    assert "web " in listed.stdout


def test_questions(home: Path, cli: Callable[..., Result]) -> None:
    answers = "\n".join(["generic", "2", "1", "2", "2048", "20G", "pack", "102", "1301", "edge", "", ""])
    result = cli("--home", str(home), "profiles", "new", "edge", "-i", input=answers)
    assert result.exit_code == 0, result.stderr
    data = yaml.safe_load((home / "clusters" / "edge.yaml").read_text())
    assert data["nodes"]["controlplane"]["count"] == 2 and data["nodes"]["workers"]["count"] == 1
    assert data["nodes"]["workers"]["placement"] == "pack" and data["nodes"]["workers"]["disk"] == "20G"
    assert data["nodes"]["controlplane"]["start_vmid"] == 1301 and data["tags"] == ["edge"]
    assert "network" not in data  # no address given: DHCP


def test_talos_needs_its_addresses(home: Path, cli: Callable[..., Result]) -> None:
    refused = cli("--home", str(home), "profiles", "new", "kube", "--type", "talos", "--vip", "10.40.0.50")
    assert refused.exit_code == 2
    assert "profiles new kube needs --ip ADDRESS and --gateway ADDRESS (or -i to be asked)" in refused.stderr
    result = cli(
        "--home", str(home), "profiles", "new", "kube", "--type", "talos", "--vip", "10.40.0.50",
        "--ip", "10.40.0.51", "--gateway", "10.40.0.1",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = yaml.safe_load((home / "clusters" / "kube.yaml").read_text())
    assert data["talos"]["vip"] == {"interface": "eth0", "ip": "10.40.0.50"}
    assert data["network"]["nameservers"] == ["10.40.0.1"] and data["nodes"]["controlplane"]["count"] == 3
    assert cli("--home", str(home), "validate").exit_code == 0


def test_validate_rules_refuse_and_nothing_is_written(home: Path, cli: Callable[..., Result]) -> None:
    first = cli("--home", str(home), "profiles", "new", "web", "--ip", "10.30.0.11")
    assert first.exit_code == 0, first.stderr
    clash = cli("--home", str(home), "profiles", "new", "api", "--ip", "10.30.0.12", "--start-vmid", "1221")
    assert clash.exit_code == 1
    assert "IP 10.30.0.12 is also used by profile 'web'" in clash.stderr
    assert "error: clusters/api.yaml: not written" in clash.stderr
    assert not (home / "clusters" / "api.yaml").exists()
    outside = cli("--home", str(home), "profiles", "new", "api", "--template", "5000")
    assert outside.exit_code == 1 and "template VMID 5000 is outside vmid_ranges.templates" in outside.stderr
    bad = cli("--home", str(home), "profiles", "new", "Bad_Name")
    assert bad.exit_code == 1 and "a profile name is lower-case letters" in bad.stderr
    again = cli("--home", str(home), "profiles", "new", "web")
    assert again.exit_code == 1 and "clusters/web.yaml: exists already" in again.stderr
    assert sorted(p.name for p in (home / "clusters").iterdir()) == ["dev-generic.yaml", "web.yaml"]


def test_dry_run_of_a_new_profile_on_the_simulated_cluster(
    home: Path, cli: Callable[..., Result], tmp_path: Path
) -> None:
    assert cli("--home", str(home), "profiles", "new", "web", "--workers", "1").exit_code == 0
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    result = cli("--home", str(home), "run", "cluster-create", "--profile", "web", "--simulate", "--dry-run", env=env)
    assert result.exit_code == 0, result.stderr
    assert "web-cp01" in result.stdout and "web-w01" in result.stdout
