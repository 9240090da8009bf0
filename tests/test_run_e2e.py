"""Real runs end to end: fakepve over verified HTTPS, a real sshd, a real pass store, a fake talosctl,
and the runbook CLI as a real process. Every output and journal is scanned for the token."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from tests.support.cluster import PASS_PATH, SECRET, TOKEN_ID, LiveCluster, node_endpoints, write_home
from tests.support.fakepve_server import closed_port_url

STAGING = ("stg-cp01", "stg-cp02", "stg-cp03")


def staging_vms(cluster: LiveCluster) -> dict[str, tuple]:
    def read() -> dict[str, tuple]:
        return {
            vm.name: (
                vm.vmid,
                vm.node,
                str(vm.config.get("cores")),
                str(vm.config.get("memory")),
                vm.config.get("tags"),
            )
            for vm in cluster.pve.pve.vms
            if not vm.template
        }

    return cluster.pve.do(read)


def report(result) -> dict:
    """The final report: the last line of the JSON-lines stream of a --json run."""
    return json.loads(result.stdout.splitlines()[-1])


def run_id_of(result) -> str:
    return report(result)["run_id"]


def test_a_run_touches_every_kind_and_leaves_the_planned_vms(cluster: LiveCluster) -> None:
    result = cluster.run("run", "e2e-create", "--profile", "talos-staging")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("run ") and result.stdout.rstrip().endswith("succeeded")
    assert staging_vms(cluster) == {
        name: (1031 + i, "pve01", "4", "8192", "talos;kubernetes;staging;controlplane")
        for i, name in enumerate(STAGING)
    }
    calls = cluster.talos.calls()
    assert [c["argv"] for c in calls] == [["--nodes", "10.20.0.31", "health", "--wait-timeout", "1m"]]
    assert calls[0]["talosconfig"] == str(cluster.home / "talos" / "staging" / "talosconfig")
    assert "-> node_check (ssh)" in result.stderr and "[ok] done" in result.stderr


def test_a_second_run_skips_what_is_in_place(cluster: LiveCluster) -> None:
    assert cluster.run("run", "e2e-create", "--profile", "talos-staging").returncode == 0
    before = staging_vms(cluster)
    again = cluster.run("run", "e2e-create", "--profile", "talos-staging", "--json")
    assert again.returncode == 0, again.stderr
    steps = report(again)["steps"]
    assert [s["status"] for s in steps if s["step"] == "clone"] == ["skipped"] * 3
    assert staging_vms(cluster) == before


def test_runs_are_listed_and_shown(cluster: LiveCluster) -> None:
    run_id = run_id_of(cluster.run("run", "e2e-create", "--profile", "talos-staging", "--json"))
    listing = cluster.run("runs")
    assert run_id in listing.stdout and "succeeded" in listing.stdout
    shown = cluster.run("runs", "show", run_id)
    assert f"run {run_id}: e2e-create on profile talos-staging" in shown.stdout
    assert "finished  clone[name=stg-cp02]" in shown.stdout
    missing = cluster.run("runs", "show", run_id[:-1] + "x")
    assert missing.returncode == 1 and "List runs with `runbook runs`" in missing.stderr


def test_a_task_error_stops_the_run_and_resume_finishes_it(cluster: LiveCluster) -> None:
    cluster.pve.do(cluster.pve.pve.fail, "PUT", "/qemu/1032/config", error="config_lock_timeout", times=1)
    failed = cluster.run("run", "e2e-create", "--profile", "talos-staging", "--json")
    assert failed.returncode == 5
    final = report(failed)
    assert "step 'configure[stg-cp02]' failed" in final["message"]
    assert "can't lock file" in final["message"]
    assert f"runbook resume {final['run_id']}" in final["message"]
    resumed = cluster.run("resume", final["run_id"], "--json")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    steps = {(s["step"], s["item"]): s for s in report(resumed)["steps"]}
    assert steps[("clone", "name=stg-cp01")]["reason"] == "finished in an earlier attempt"
    assert steps[("configure", "name=stg-cp02")]["status"] == "succeeded"
    clones = [r for r in cluster.pve.pve.requests if r[0] == "POST" and r[1].endswith("/clone")]
    assert len(clones) == 3, "a clone done before the failure was sent again"
    assert len(staging_vms(cluster)) == 3


def test_a_wrong_token_is_a_401_message_without_the_secret(cluster: LiveCluster) -> None:
    cluster.store.insert(PASS_PATH, [TOKEN_ID, "not-the-secret-" + SECRET[::-1]])
    result = cluster.run("run", "e2e-create", "--profile", "talos-staging")
    assert result.returncode == 10, "refused on the first read: no run exists, so the code must not say resume"
    assert "no run was made" in result.stderr and "runbook resume" not in result.stderr
    assert "401" in result.stderr and TOKEN_ID in result.stderr
    assert "not-the-secret" not in result.stderr
    cluster.store.insert(PASS_PATH, [TOKEN_ID, SECRET])


def test_the_token_can_come_from_the_environment(cluster: LiveCluster) -> None:
    cluster.store.insert(PASS_PATH, [TOKEN_ID, "stale"])
    result = cluster.run(
        "run", "e2e-create", "--profile", "talos-staging", extra_env={"PROXMOX_API_TOKEN": f"{TOKEN_ID}={SECRET}"}
    )
    assert result.returncode == 0, result.stderr
    cluster.store.insert(PASS_PATH, [TOKEN_ID, SECRET])


def test_a_dead_first_node_fails_over(cluster: LiveCluster, tmp_path: Path) -> None:
    live = node_endpoints(cluster.pve)
    dead = closed_port_url()
    write_home(cluster.home, cluster.pve, cluster.sshd, node_urls=[dead, live[1], live[2]])
    result = cluster.run("run", "e2e-create", "--profile", "talos-staging")
    assert result.returncode == 0, result.stderr
    assert len(staging_vms(cluster)) == 3
    # Failover is not silent (found on a real cluster): the dead node is named, once.
    named = [
        line for line in result.stderr.splitlines() if line.startswith(f"warning: node pve01 ({dead}) does not answer")
    ]
    assert len(named) == 1, result.stderr
    review = cluster.run("run", "e2e-create", "--profile", "talos-staging", "--dry-run")
    assert review.stderr.count("warning: node pve01") == 1, review.stderr


def test_all_nodes_down_is_a_clear_error(cluster: LiveCluster) -> None:
    dead = [closed_port_url().replace("127.0.0.1", host) for host in ("127.0.0.1", "127.0.0.2", "127.0.0.3")]
    write_home(cluster.home, cluster.pve, cluster.sshd, node_urls=dead)
    result = cluster.run("run", "e2e-create", "--profile", "talos-staging")
    assert result.returncode == 10, "no node answered the first read: no run was made"
    assert "pve01" in result.stderr and "pve03" in result.stderr and "are reachable from here" in result.stderr


def test_gates_stop_without_a_tty_and_resume_with_approval(cluster: LiveCluster) -> None:
    assert cluster.run("run", "e2e-create", "--profile", "talos-staging").returncode == 0
    stopped = cluster.run("run", "e2e-teardown", "--profile", "talos-staging", "--json")
    assert stopped.returncode == 4
    final = report(stopped)
    assert final["run_id"] is None, "the run refused before it began, so no run was made"
    assert "nothing was changed" in final["message"] and "delete (3 items" in final["message"]
    assert "run it again, adding --approve delete" in final["message"]
    assert len(staging_vms(cluster)) == 3, "nothing was deleted"
    approved = cluster.run("run", "e2e-teardown", "--profile", "talos-staging", "--approve", "delete")
    assert approved.returncode == 0, approved.stderr
    assert staging_vms(cluster) == {}


def test_yes_approves_every_gate(cluster: LiveCluster) -> None:
    assert cluster.run("run", "e2e-create", "--profile", "talos-staging").returncode == 0
    assert cluster.run("run", "e2e-teardown", "--profile", "talos-staging", "--yes").returncode == 0
    assert staging_vms(cluster) == {}


def test_a_killed_run_resumes_to_the_same_cluster(cluster: LiveCluster) -> None:
    """SIGKILL in the middle of the clones, then resume: three VMs, none twice."""
    cluster.pve.pve.time_scale = 0.05  # clones take long enough to be interrupted
    process = cluster.start("run", "e2e-create", "--profile", "talos-staging")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(staging_vms(cluster)) < 1:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    cluster.pve.pve.time_scale = 0
    runs = json.loads(cluster.run("runs", "--json").stdout)["runs"]
    assert runs[0]["status"] == "interrupted"
    resumed = cluster.run("resume", runs[0]["run_id"])
    assert resumed.returncode == 0, resumed.stderr
    vms = staging_vms(cluster)
    assert sorted(vms) == list(STAGING)
    assert sorted(v[0] for v in vms.values()) == [1031, 1032, 1033]


def test_a_live_run_holds_the_profile_lock(cluster: LiveCluster) -> None:
    cluster.talos.respond(["--nodes"], hang=True)
    first = cluster.start("run", "e2e-create", "--profile", "talos-staging")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not cluster.talos.calls():
            time.sleep(0.05)
        second = cluster.run("run", "e2e-create", "--profile", "talos-staging")
        assert second.returncode == 6
        assert "pid" in second.stderr.lower() or "held" in second.stderr.lower()
    finally:
        first.kill()
        first.communicate()
        for call in cluster.talos.calls():  # the hung talosctl runs in its own process group
            try:
                os.killpg(call["pid"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def test_a_local_command_gets_the_token_in_its_environment_only(cluster: LiveCluster) -> None:
    import hashlib

    result = cluster.run("run", "e2e-token-env", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    digest = report(result)["steps"][0]["output"]["stdout"].strip()
    assert digest == hashlib.sha256(f"{TOKEN_ID}={SECRET}".encode()).hexdigest()
