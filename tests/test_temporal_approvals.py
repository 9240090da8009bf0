"""Gates of runs on Temporal as approvals (docs/temporal.md, "Gates as approvals"), end to end: a real
dev server, a real worker, the run followed by one ``runbook`` process while others, each with a home
of its own (another operator's machine), list what waits, approve it or reject it.

- a gated step waits in the workflow (no terminal, no ``--yes``); ``runbook approvals`` shows it
  with its change set; under ``gates.four_eyes`` the starter's own approval and an unauthenticated
  one are refused, another operator's (their mTLS client certificate, checked by the worker) lets the
  run go on; the journal keeps who approved, how they were authenticated and when;
- a rejected gate ends the run, failed, with nothing of that step or after it run, the rejection in
  the journal (``runbook runs``: ``waiting``, then ``failed``); a decision for a gate the run does not
  wait at is refused, naming the ones it does;
  items of one step wait each for their own decision, and one rejected ends the others' wait;
- schedules: added (a second add and a bad cron refused), triggered; the scheduled run's gate, met with
  nobody there, waits (listed) and fails the run at ``gates.approval_timeout``; a trigger while it
  waits is skipped (overlap: skip); listed with its counts, removed; ``runbook runs`` lists the
  scheduled run by the run id its workflow drew, ``waiting`` while its gate waits, then ``failed``;
- a saved plan applied on Temporal: refused by the worker when the cluster moved since the review;
  else its gate waits and is approved the same way.

The waits are triggered by the journal's ``gate_waiting`` record, not by sleeping.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.temporal_rig import (
    REPO,
    TIMEOUT,
    Workers,
    cli_env,
    decoded,
    on_temporal,
    run_cli,
    start_cli,
    workflow_history,
)
from tests.support.temporal_rig import sim_home as sim_home  # noqa: F401 - fixtures, shared
from tests.support.temporal_rig import temporal as temporal  # noqa: F401
from tests.support.temporal_rig import workers as workers  # noqa: F401
from tests.support.tls_front import TlsFront, make_certificates
from tests.support.waiting import wait_for

GATED = """---
name: gated
description: A gated change between two steps, for the approval tests.
format: 2
---

# Gated

```local {id: before, changes: []}
echo before
```

## Describe the template

```api {id: describe, confirm: true}
PUT /nodes/pve01/qemu/101/config
description: approved change
```

## After it

```local {id: after, changes: []}
echo after
```
"""
WORKFLOW = "runbook/lab/runbook-gated"


def _start(env: dict[str, str], *more: str) -> subprocess.Popen[str]:
    return start_cli(env, "run", "gated", "--simulate", *more)


def _records(home: Path) -> list[dict[str, Any]]:
    journals = list((home / ".runbook" / "runs").glob("*/journal.jsonl"))
    if not journals:
        return []
    return [json.loads(line) for line in journals[0].read_bytes().split(b"\n")[:-1]]


def _waits(home: Path, run: subprocess.Popen[str]) -> str:
    """The run id, once its journal says the gate waits (the run must still be going)."""
    wait_for(
        lambda: run.poll() is not None or any(r["type"] == "gate_waiting" for r in _records(home)),
        TIMEOUT,
        "the gate to wait",
    )
    assert run.poll() is None, run.communicate()
    return str(_records(home)[0]["run_id"])


def _listed(env: dict[str, str], run_id: str, status: str) -> dict[str, Any] | None:
    """The run as ``runbook runs`` lists it from Temporal's visibility (its memo), once it has ``status``."""
    listed = run_cli(env, "runs", "--json")
    assert listed.returncode == 0, listed.stderr
    run = next((r for r in json.loads(listed.stdout)["runs"] if r["run_id"] == run_id), None)
    return run if run is not None and run["on"] == "temporal" and run["status"] == status else None


def _machine(tmp_path: Path, home: Path, name: str, address: str, tls: dict[str, str] | None) -> dict[str, str]:
    """Another operator's machine: a home of its own (the same cluster), pointed at ``address``."""
    other = tmp_path / name
    other.mkdir()
    shutil.copy(home / "cluster-config.yaml", other / "cluster-config.yaml")
    if tls is not None:
        shutil.copytree(home / "certs", other / "certs")
    on_temporal(other, address, tls)
    return cli_env(other)


def test_a_gate_waits_for_another_operators_authenticated_approval(
    sim_home: Path, temporal: str, workers: Workers, tmp_path: Path
) -> None:
    certs = sim_home / "certs"
    certs.mkdir()
    make_certificates(certs)
    host, port = temporal.rsplit(":", 1)
    front = TlsFront(certs, (host, int(port))).start()
    try:
        address = f"127.0.0.1:{front.port}"
        mutual = {"ca_file": "certs/ca.crt", "cert_file": "certs/client.crt", "key_file": "certs/client.key"}
        on_temporal(sim_home, address, mutual)
        config = yaml.safe_load((sim_home / "cluster-config.yaml").read_text())
        config["gates"] = {"four_eyes": True}
        (sim_home / "cluster-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        (sim_home / "runbooks" / "gated.md").write_text(GATED)
        env = cli_env(sim_home)  # the operator who starts the run (certificate CN=operator); the worker's home
        workers.start(env)
        run = _start(env, "--yes")  # under four-eyes, the starter's own --yes approves nothing
        run_id = _waits(sim_home, run)

        reviewer = _machine(
            tmp_path,
            sim_home,
            "reviewer",
            address,
            {**mutual, "cert_file": "certs/reviewer.crt", "key_file": "certs/reviewer.key"},
        )
        listed = run_cli(reviewer, "approvals")
        assert listed.returncode == 0, listed.stderr
        assert f"{run_id}  describe  waiting since " in listed.stdout and "marked confirm" in listed.stdout
        assert "PUT /nodes/pve01/qemu/101/config" in listed.stdout
        assert "~ vm 101" in listed.stdout and "description" in listed.stdout  # the change set, as reviewed

        own = run_cli(env, "approve", run_id, "describe")
        assert own.returncode == 7, own.stderr
        assert "gates.four_eyes is on: CN=operator started run" in own.stderr
        anonymous = run_cli(_machine(tmp_path, sim_home, "laptop", temporal, None), "approve", run_id, "describe")
        assert anonymous.returncode == 7, anonymous.stderr
        assert "must come from an authenticated operator" in anonymous.stderr and "unauthenticated" in anonymous.stderr
        assert run.poll() is None  # still waiting: neither counted

        approved = run_cli(reviewer, "approve", run_id, "describe")
        assert approved.returncode == 0, approved.stderr
        assert (
            f"approved describe of run {run_id} as CN=reviewer (mTLS client certificate, verified)" in approved.stdout
        )
        out, err = run.communicate(timeout=TIMEOUT)
        assert run.returncode == 0, err[-4000:]
        assert "waits for approval: runbook approve " + run_id + " describe" in err
        assert "approved by CN=reviewer (mTLS client certificate, verified)" in err and "[ok] after" in err
        assert run_cli(reviewer, "approvals").stdout.startswith("no gate waits")

        records = _records(sim_home)
        approval = next(r for r in records if r["type"] == "gate_approved")
        assert approval["by"] == "CN=reviewer" and approval["authenticated"] is True
        assert approval["how"] == "mTLS client certificate, verified" and approval["at"].endswith("Z")
        assert [r["step"] for r in records if r["type"] == "step_finished"] == ["before", "describe", "after"]
        history = decoded(workflow_history(temporal, WORKFLOW))
        for key in ("client.key", "reviewer.key"):  # signed with, never sent
            assert (certs / key).read_text().split("\n")[1] not in history
    finally:
        workers.stop()
        front.stop()


def test_a_rejected_gate_ends_the_run_with_nothing_after_it_run(
    sim_home: Path, temporal: str, workers: Workers
) -> None:
    (sim_home / "runbooks" / "gated.md").write_text(GATED)
    env = cli_env(sim_home)
    workers.start(env)
    run = _start(env)
    run_id = _waits(sim_home, run)
    wait_for(lambda: _listed(env, run_id, "waiting"), TIMEOUT, "runs to list the run as waiting")

    wrong = run_cli(env, "approve", run_id, "after")
    assert wrong.returncode == 1, wrong.stderr
    assert "after is not a gate it waits at (it waits at: describe)" in wrong.stderr

    rejected = run_cli(env, "reject", run_id, "describe", "--reason", "not during the freeze")
    assert rejected.returncode == 0, rejected.stderr
    assert "(OS user, unauthenticated)" in rejected.stdout  # no mTLS: recorded as such, nobody's word checked
    _, err = run.communicate(timeout=TIMEOUT)
    assert run.returncode == 5, err[-4000:]
    assert "gated step 'describe' was rejected by " in err and "not during the freeze; nothing of it ran" in err

    records = _records(sim_home)
    rejection = next(r for r in records if r["type"] == "gate_rejected")
    assert rejection["step"] == "describe" and rejection["reason"] == "not during the freeze"
    assert rejection["authenticated"] is False and rejection["how"] == "OS user, unauthenticated"
    assert [r["step"] for r in records if r["type"] == "step_started"] == ["before"]
    assert records[-1]["type"] == "run_finished" and records[-1]["status"] == "failed"
    shown = json.loads(run_cli(env, "runs", "show", run_id, "--json").stdout)
    assert shown["status"] == "failed"
    wait_for(lambda: _listed(env, run_id, "failed"), TIMEOUT, "runs to list the run as failed")


def test_a_scheduled_runs_gate_met_with_nobody_there_waits_then_fails_the_run_at_its_timeout(
    sim_home: Path, temporal: str, workers: Workers
) -> None:
    (sim_home / "runbooks" / "gated.md").write_text(GATED)
    path = sim_home / "cluster-config.yaml"
    config = yaml.safe_load(path.read_text())
    config["gates"] = {"approval_timeout": "10s"}  # time for the commands run while it waits
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = cli_env(sim_home)
    workers.start(env)
    added = run_cli(env, "schedule", "add", "gated", "--cron", "0 3 * * *", "--simulate")
    assert added.returncode == 0, added.stderr
    assert "schedule runbook/lab/schedule/gated: gated at '0 3 * * *'" in added.stdout
    again = run_cli(env, "schedule", "add", "gated", "--cron", "0 4 * * *", "--simulate")
    assert again.returncode == 6 and "exists already: remove it first" in again.stderr, again.stderr
    bad = run_cli(env, "schedule", "add", "gated", "--cron", "at three", "--profile", "talos-staging")
    assert bad.returncode == 2 and "--cron 'at three': Temporal refused it" in bad.stderr, bad.stderr

    assert run_cli(env, "schedule", "trigger", "gated").returncode == 0
    wait_for(lambda: any(r["type"] == "gate_waiting" for r in _records(sim_home)), TIMEOUT, "the scheduled gate")
    listed = run_cli(env, "approvals")
    assert "describe  waiting since" in listed.stdout and "~ vm 101" in listed.stdout, listed.stdout + listed.stderr
    run_id = str(_records(sim_home)[0]["run_id"])  # drawn by the workflow: its memo names the run by it
    scheduled = wait_for(lambda: _listed(env, run_id, "waiting"), TIMEOUT, "runs to list the scheduled run")
    assert scheduled["runbook"] == "gated" and scheduled["started_by"].startswith("schedule "), scheduled
    assert run_cli(env, "schedule", "trigger", "gated").returncode == 0  # while its run waits: skipped

    def ended() -> dict[str, Any] | None:
        records = _records(sim_home)
        return records[-1] if records and records[-1]["type"] == "run_finished" else None

    assert wait_for(ended, TIMEOUT, "the run to end at its approval timeout")["status"] == "failed"
    records = _records(sim_home)
    timeout = next(r for r in records if r["type"] == "gate_rejected")
    assert timeout["reason"] == "no decision within 10s (gates.approval_timeout)" and timeout["by"] == "nobody"
    assert [r["step"] for r in records if r["type"] == "step_started"] == ["before"]
    assert len(list((sim_home / ".runbook" / "runs").iterdir())) == 1  # the second time was skipped, not queued
    wait_for(lambda: _listed(env, run_id, "failed"), TIMEOUT, "runs to list the scheduled run as failed")

    shown = run_cli(env, "schedule", "list")
    assert "runbook/lab/schedule/gated  '0 3 * * *'  gated  next " in shown.stdout, shown.stderr
    assert "1 started, 1 skipped (a run still going)" in shown.stdout
    assert run_cli(env, "schedule", "remove", "gated").returncode == 0
    assert run_cli(env, "schedule", "list").stdout.startswith("no schedule on Temporal")
    gone = run_cli(env, "schedule", "remove", "gated")
    assert gone.returncode == 1 and "no schedule runbook/lab/schedule/gated" in gone.stderr, gone.stderr


def test_approvals_and_schedules_without_temporal_say_where_to_set_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "cluster-config.yaml", home / "cluster-config.yaml")
    for args in (("approvals",), ("approve", "20261203-120000-gated-abcd", "describe"), ("schedule", "list")):
        said = run_cli(cli_env(home), *args)
        assert said.returncode == 2, said.stderr
        assert "needs Temporal's address: --temporal HOST:PORT, or execution.temporal in" in said.stderr


def test_a_saved_plan_applied_on_temporal_is_checked_by_the_worker_and_its_gate_approved_the_same_way(
    sim_home: Path, temporal: str, workers: Workers, tmp_path: Path
) -> None:
    (sim_home / "runbooks" / "gated.md").write_text(GATED)
    (sim_home / "runbooks" / "other.md").write_text(
        GATED.replace("approved change", "someone else's change").replace("name: gated", "name: other")
    )
    env = cli_env(sim_home)
    workers.start(env)
    moved, plan = tmp_path / "moved.json", tmp_path / "plan.json"
    saved = run_cli(env, "run", "gated", "--simulate", "--dry-run", "--out", str(moved))
    assert saved.returncode == 0, saved.stderr
    changed = run_cli(env, "run", "other", "--simulate", "--yes")  # vm 101 changes after the review
    assert changed.returncode == 0, changed.stderr
    refused = run_cli(env, "apply", str(moved))
    assert refused.returncode == 7, refused.stderr[-4000:]
    assert "started on Temporal" in refused.stderr and "the cluster moved since the plan was made" in refused.stderr

    assert run_cli(env, "run", "gated", "--simulate", "--dry-run", "--out", str(plan)).returncode == 0
    before = {path.name for path in (sim_home / ".runbook" / "runs").iterdir()}
    applying = start_cli(env, "apply", str(plan))

    def waiting() -> list[dict[str, Any]]:
        listed = run_cli(env, "approvals", "--json")
        return [gate for gate in json.loads(listed.stdout or "[]") if gate["run_id"] not in before]

    gate = wait_for(lambda: applying.poll() is not None or waiting(), TIMEOUT, "the plan's gate to wait")
    assert applying.poll() is None, applying.communicate()
    assert gate[0]["step"] == "describe" and "description" in "\n".join(gate[0]["changes"])
    approved = run_cli(env, "approve", gate[0]["run_id"], "describe")
    assert approved.returncode == 0, approved.stderr
    _, err = applying.communicate(timeout=TIMEOUT)
    assert applying.returncode == 0, err[-4000:]
    assert "[ok] describe" in err and "[ok] after" in err


def test_a_wrong_gates_setting_is_located(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    config = (REPO / "cluster-config.yaml").read_text()
    (home / "cluster-config.yaml").write_text(config + "gates:\n  approval_timeout: tomorrow\n  four_eye: true\n")
    said = run_cli(cli_env(home), "approvals")
    assert said.returncode == 3, said.stderr
    assert "gates.approval_timeout: an approval timeout is a number and a unit: 90s, 30m, 24h, 7d" in said.stderr
    assert "gates.four_eye: unknown field 'four_eye': did you mean 'four_eyes'?" in said.stderr


PAIR = """---
name: pair
description: Two gated items at once, for the approval tests.
format: 2
---

# Pair

```local {id: each, changes: [], confirm: true, foreach: "['a', 'b']", as: n, parallel: 2}
echo {{ n }}
```

```local {id: after, changes: []}
echo after
```
"""


def test_items_wait_each_for_their_own_decision_and_a_rejection_ends_the_others_wait(
    sim_home: Path, temporal: str, workers: Workers
) -> None:
    (sim_home / "runbooks" / "pair.md").write_text(PAIR)
    env = cli_env(sim_home)
    workers.start(env)
    run = start_cli(env, "run", "pair")
    wait_for(
        lambda: run.poll() is not None or sum(r["type"] == "gate_waiting" for r in _records(sim_home)) == 2,
        TIMEOUT,
        "both items' gates to wait",
    )
    run_id = str(_records(sim_home)[0]["run_id"])
    listed = run_cli(env, "approvals").stdout
    assert f"{run_id}  each[a]  waiting" in listed and f"{run_id}  each[b]  waiting" in listed
    assert "  would run: (locally)\n    echo a" in listed
    both = run_cli(env, "approve", run_id, "each")
    assert both.returncode == 1 and "each names several of its gates: name one as STEP[ITEM]" in both.stderr

    assert run_cli(env, "reject", run_id, "each[a]").returncode == 0
    _, err = run.communicate(timeout=TIMEOUT)
    assert run.returncode == 5, err[-4000:]
    assert "each[b]: not run: the run stopped before anyone decided" in err
    assert [r["type"] for r in _records(sim_home)][-2:] == ["gate_rejected", "run_finished"]
    assert not [r for r in _records(sim_home) if r["type"] == "step_started"]
    assert run_cli(env, "approvals").stdout.startswith("no gate waits")
