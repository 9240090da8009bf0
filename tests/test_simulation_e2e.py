"""The README's main job: cluster-create, status and teardown on the embedded simulated cluster,
checked on the simulated cluster's final state, not only on exit codes."""

from __future__ import annotations

import json
from typing import Any

import engine.sim.wiring as wiring
from engine.load.home import Home

STAGING = {"stg-cp01": (1031, "pve01"), "stg-cp02": (1032, "pve02"), "stg-cp03": (1033, "pve03")}
TAGS = "talos;kubernetes;staging;controlplane"


def report(result: Any) -> dict[str, Any]:
    return json.loads(result.stdout.splitlines()[-1])


def status(cli: Any, home: Home) -> dict[str, Any]:
    result = cli("--home", str(home.root), "sim", "status", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def cluster_state(cli: Any, home: Home) -> dict[str, Any]:
    """What a run leaves behind, in a form two runs can be compared by."""
    data = status(cli, home)
    vms = {
        vm["name"]: (vm["vmid"], vm["node"], vm["status"], str(vm["cores"]), str(vm["memory"]), vm["tags"])
        for vm in data["vms"]
        if not vm["template"]
    }
    talos = {row["ip"]: (row["hostname"], row["role"], row["state"]) for row in data["talos"]}
    return {"vms": vms, "talos": talos, "templates": [vm for vm in data["vms"] if vm["template"]]}


def create(cli: Any, home: Home, *extra: str) -> Any:
    return cli(
        "--home",
        str(home.root),
        "run",
        "cluster-create",
        "--profile",
        "talos-staging",
        "--simulate",
        "--yes",
        "--json",
        *extra,
    )


def test_create_status_teardown(cli, make_home) -> None:
    home = make_home()
    created = create(cli, home)
    assert created.exit_code == 0, created.output
    assert "SIMULATED cluster" in created.stderr
    state = cluster_state(cli, home)
    assert state["vms"] == {name: (vmid, node, "running", "4", "8192", TAGS) for name, (vmid, node) in STAGING.items()}
    assert state["talos"] == {f"10.20.0.3{i}": (f"stg-cp0{i}", "controlplane", "healthy") for i in (1, 2, 3)}
    templates = state["templates"]

    shown = cli("--home", str(home.root), "run", "cluster-status", "--profile", "talos-staging", "--simulate", "--json")
    assert shown.exit_code == 0, shown.output

    torn = cli(
        "--home",
        str(home.root),
        "run",
        "cluster-teardown",
        "--profile",
        "talos-staging",
        "--simulate",
        "--yes",
        "--json",
    )
    assert torn.exit_code == 0, torn.output
    after = cluster_state(cli, home)
    assert after["vms"] == {}, "every VM of the profile is gone"
    assert after["templates"] == templates, "the templates are untouched"


def test_teardown_without_approval_deletes_nothing(cli, make_home) -> None:
    home = make_home()
    assert create(cli, home).exit_code == 0
    stopped = cli(
        "--home", str(home.root), "run", "cluster-teardown", "--profile", "talos-staging", "--simulate", "--json"
    )
    assert stopped.exit_code == 4
    assert len(cluster_state(cli, home)["vms"]) == 3


def test_a_second_create_changes_nothing(cli, make_home) -> None:
    home = make_home()
    assert create(cli, home).exit_code == 0
    first = cluster_state(cli, home)
    again = create(cli, home)
    assert again.exit_code == 0, again.output
    changing = [
        (s["step_id"], s["item_key"], s["status"])
        for s in report(again)["steps"]
        if s["status"] == "succeeded" and _changes_cluster(s)
    ]
    assert changing == [], "a guard let a step that changes the cluster run again"
    assert cluster_state(cli, home) == first


def _changes_cluster(entry: dict[str, Any]) -> bool:
    action = entry["action"] or {}
    if action.get("type") == "ApiRequest":
        return action["method"] != "GET"
    if action.get("type") == "TalosctlCommand":
        return action["argv"][0] not in ("kubeconfig", "health", "version", "get") and list(action["argv"][:2]) != [
            "etcd",
            "members",
        ]
    if action.get("type") == "ShellCommand":
        return bool(action.get("node"))  # a command on a PVE node; local files are not the cluster
    return False


def test_a_failure_halfway_stops_and_resume_converges(cli, make_home, monkeypatch) -> None:
    clean_home = make_home()
    assert create(cli, clean_home).exit_code == 0
    clean = cluster_state(cli, clean_home)

    import shutil

    home = Home(clean_home.root.parent / "second")
    shutil.copytree(clean_home.root, home.root, ignore=shutil.ignore_patterns(".runbook"))
    real_start = wiring.SimCluster.start

    def failing_start(*args: Any, **kwargs: Any) -> Any:
        cluster = real_start(*args, **kwargs)
        cluster.do(
            cluster.fake.fail,
            "POST",
            "/qemu/1033/status/start",
            status=500,
            message="start failed: simulated host out of memory",
            times=1,
        )
        return cluster

    monkeypatch.setattr(wiring.SimCluster, "start", failing_start)
    failed = create(cli, home)
    assert failed.exit_code == 5, failed.output
    final = report(failed)
    assert "step 'start[stg-cp03]' failed" in final["message"]
    assert "simulated host out of memory" in final["message"]
    monkeypatch.setattr(wiring.SimCluster, "start", real_start)

    resumed = cli("--home", str(home.root), "resume", final["run_id"], "--yes", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert cluster_state(cli, home) == clean
