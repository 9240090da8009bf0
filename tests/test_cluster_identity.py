"""A run belongs to one cluster: what it records of the cluster that answered, and a resume that
refuses another, with no --force to override it.

Found on a real cluster: a run resumed after the cluster at the same address was replaced by a
different one re-cloned everything without a word (the config's hash does not cover who answered).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import yaml
from fakepve.certs import make_cert

from engine import exitcodes
from engine.load.facts import ClusterIdentity
from engine.run.identity import trust_of
from tests.support.cluster import SECRET, LiveCluster, write_home
from tests.support.fakepve_server import FakePveServer


def test_the_name_comes_from_the_cluster_entry_or_a_standalone_nodes_own() -> None:
    clustered = [{"type": "cluster", "name": "lab"}, {"type": "node", "name": "pve01"}, {"type": "node", "name": "b"}]
    assert ClusterIdentity.from_cluster_status(clustered, "t").name == "lab"
    assert ClusterIdentity.from_cluster_status([{"type": "node", "name": "solo"}], "t").name == "solo"
    assert ClusterIdentity.from_cluster_status(None, "t").name == ""


def test_differences_name_what_moved_and_an_unknown_name_compares_by_trust_alone() -> None:
    lab = ClusterIdentity("lab", "CA sha256:aa")
    assert lab.differences(ClusterIdentity("lab", "CA sha256:aa")) == []
    assert lab.differences(ClusterIdentity("lab2", "CA sha256:bb")) == [
        "the cluster is named 'lab2', not 'lab'",
        "its certificates are checked with CA sha256:bb, not CA sha256:aa",
    ]
    assert lab.differences(ClusterIdentity("", "CA sha256:aa")) == []


def test_trust_is_the_cas_digest_whatever_the_files_layout_and_differs_between_cas(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, _, _ = make_cert(str(tmp_path / "a"), hosts=("127.0.0.1",))
    second, _, _ = make_cert(str(tmp_path / "b"), hosts=("127.0.0.1",))
    pem = Path(first).read_text()
    body = "".join(pem.splitlines()[1:-1])
    rewrapped = tmp_path / "rewrapped.pem"  # the same certificate, other line lengths and a comment before it
    rewrapped.write_text(
        "# the lab CA\n-----BEGIN CERTIFICATE-----\n"
        + "\n".join(textwrap.wrap(body, 76))
        + "\n-----END CERTIFICATE-----\n"
    )

    def trust(**tls: object) -> str:
        return trust_of({"tls": tls, "cluster": {"nodes": []}}, tmp_path)

    assert trust(ca_file=first) == trust(ca_file=str(rewrapped)) and trust(ca_file=first).startswith("CA sha256:")
    assert trust(ca_file=first) != trust(ca_file=second)
    assert trust(fingerprint="ab:cd") == "pinned fingerprint AB:CD"
    assert trust(insecure=True) == "no certificate check (tls.insecure)"
    assert "unreadable" in trust(ca_file=str(tmp_path / "missing.pem"))


def test_a_run_records_its_cluster_and_a_resume_against_another_is_refused_even_with_force(
    cluster: LiveCluster, tmp_path: Path
) -> None:
    cluster.pve.do(cluster.pve.pve.fail, "PUT", "/qemu/1032/config", error="config_lock_timeout", times=1)
    failed = cluster.run("run", "e2e-create", "--profile", "talos-staging", "--json")
    assert failed.returncode == exitcodes.FAILED, failed.stderr
    run_id = json.loads(failed.stdout.splitlines()[-1])["run_id"]
    recorded = json.loads(next((cluster.home / ".runbook" / "runs").glob(f"{run_id}/run.json")).read_text())
    assert recorded["cluster"]["name"] == cluster.pve.pve.cluster_name
    assert recorded["cluster"]["trust"].startswith("CA sha256:")
    assert set(recorded["placement"]) == {"stg-cp01", "stg-cp02", "stg-cp03"}

    # The same address now answers with another cluster: its own CA, which the operator put in the
    # config (so --force is needed for the config change, and is not enough for the cluster).
    (tmp_path / "other").mkdir()
    with FakePveServer(tmp_path / "other", SECRET) as other:
        write_home(cluster.home, other, cluster.sshd)
        refused = cluster.run("resume", run_id, "--force")
    assert refused.returncode == exitcodes.OTHER_CLUSTER, refused.stderr
    assert f"refusing to resume {run_id}: it started on cluster '{recorded['cluster']['name']}'" in refused.stderr
    assert "its certificates are checked with CA sha256:" in refused.stderr and "no --force" in refused.stderr

    # Back on its own cluster, renamed meanwhile: still another cluster as far as the run knows.
    write_home(cluster.home, cluster.pve, cluster.sshd)
    cluster.pve.do(setattr, cluster.pve.pve, "cluster_name", "rebuilt")
    renamed = cluster.run("resume", run_id)
    assert renamed.returncode == exitcodes.OTHER_CLUSTER
    assert f"the cluster is named 'rebuilt', not '{recorded['cluster']['name']}'" in renamed.stderr

    cluster.pve.do(setattr, cluster.pve.pve, "cluster_name", recorded["cluster"]["name"])
    resumed = cluster.run("resume", run_id)
    assert resumed.returncode == 0, resumed.stderr


def test_a_node_the_cluster_reports_offline_gets_no_new_vm_and_the_review_says_so(cluster: LiveCluster) -> None:
    profile = cluster.home / "clusters" / "dev-generic.yaml"
    data = yaml.safe_load(profile.read_text())
    data["nodes"]["controlplane"]["placement"] = data["nodes"]["workers"]["placement"] = "spread"
    profile.write_text(yaml.safe_dump(data, sort_keys=False))
    cluster.pve.do(cluster.pve.pve.set_node_offline, "pve02")
    review = cluster.run("run", "e2e-create", "--profile", "dev-generic", "--dry-run", "--json")
    assert review.returncode == 0, review.stderr
    note = "pve02 is offline as the cluster reports it: no new VM is placed there"
    assert f"warning: {note}" in review.stderr
    plan = json.loads(review.stdout)["plan"]
    assert plan["notes"] == [note]
    assert {vm["node"] for vm in plan["vms"]} == {"pve01", "pve03"}
