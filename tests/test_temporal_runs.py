"""Runs on Temporal seen and resumed like local ones (docs/temporal.md, "Runs on Temporal from any
machine"): a real ``temporal server start-dev`` on loopback, a real ``runbook worker``, and the CLI
in processes of their own, one of them in a second home that holds no run (another machine).

- the follower prints a step's start while the step still runs (its lines come with the activity's
  heartbeats, not at its end): the step waits for a file the test writes only once it read that line;
- ``runbook runs`` and ``runs show`` from the other home list the run going, then ended, from
  Temporal alone; ``runbook resume`` of a run still going says so and follows it;
- a run whose step failed is resumed on Temporal from the other home: the finished step is not
  redone, the failed one runs again, the run succeeds; ``runs show`` says it was resumed; the secret
  parameter only the worker has is in no history of it, payloads decoded.
- clone slots are held in the workflow: with ``limits.clones_per_template: 1`` and two workers, the
  clones of ``cluster-create`` never overlap on the cluster (each starts after the one before ended).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.temporal_rig import (
    RUNBOOK,
    TIMEOUT,
    Workers,
    cli_env,
    decoded,
    on_temporal,
    run_cli,
    workflow_history,
)
from tests.support.temporal_rig import sim_home as sim_home  # noqa: F401 - fixtures, shared
from tests.support.temporal_rig import temporal as temporal  # noqa: F401
from tests.support.temporal_rig import workers as workers  # noqa: F401
from tests.test_temporal import (
    test_a_worker_killed_mid_run_is_replaced_and_the_cluster_is_a_clean_runs as replaced,
)

HOLD = """---
name: hold
description: A step that runs until the test lets it go, for the tests.
format: 2
---

# Hold

## Say hello

```local {id: hello, changes: []}
echo hello
```

## Wait to be let go

```local {id: hold, changes: []}
while [ ! -e GO ]; do sleep 0.1; done; echo let go
```
"""

PASSWORD = "resume-Hunter2-7c1d-0ddba11"
FLAKY = """---
name: flaky
description: A step that fails until a file exists, after one that must not run twice, for the tests.
format: 2
parameters:
  db_password:
    type: string
    secret: true
    description: The database password.
---

# Flaky

## Count, with the secret

```local {id: count, changes: {action: write, resource: file, id: "COUNT"}}
printf '%s' {{ db_password }} | sha256sum | cut -c1-8 >> COUNT
```

## Fail until fixed

```local {id: fixed, changes: []}
test -e FIXED
```
"""


def elsewhere(tmp_path: Path, sim_home: Path) -> dict[str, str]:
    """Another machine's home: the same cluster (so its task queue), no execution.temporal, no runs."""
    home = tmp_path / "elsewhere"
    home.mkdir()
    config = yaml.safe_load((sim_home / "cluster-config.yaml").read_text())
    config.pop("execution")
    (home / "cluster-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for folder in ("clusters", "runbooks"):
        shutil.copytree(sim_home / folder, home / folder)
    return cli_env(home)


def listed(env: dict[str, str], temporal: str) -> dict[str, dict]:
    runs = run_cli(env, "runs", "--json", "--temporal", temporal)
    assert runs.returncode == 0, runs.stderr
    return {run["run_id"]: run for run in json.loads(runs.stdout)["runs"]}


def shown(env: dict[str, str], temporal: str, run_id: str) -> dict:
    show = run_cli(env, "runs", "show", run_id, "--json", "--temporal", temporal)
    assert show.returncode == 0, show.stderr
    return json.loads(show.stdout)


def test_a_run_is_followed_as_it_happens_and_seen_from_another_machine(
    sim_home: Path, temporal: str, workers: Workers, tmp_path: Path
) -> None:
    go = tmp_path / "GO"
    (sim_home / "runbooks" / "hold.md").write_text(HOLD.replace("GO", str(go)))
    env = cli_env(sim_home)
    workers.start(env)
    other = elsewhere(tmp_path, sim_home)
    follower = subprocess.Popen(
        [str(RUNBOOK), "run", "hold"], env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert follower.stderr is not None
    lines = []
    while not any("-> hold" in line for line in lines):  # printed while the step runs: it waits for GO
        line = follower.stderr.readline()
        assert line, "".join(lines)
        lines.append(line)
    run_id = lines[0].split()[1]
    assert not go.exists() and follower.poll() is None

    # From the other machine: the run is going, its first step done and the second running.
    assert listed(other, temporal)[run_id]["status"] == "running"
    going = shown(other, temporal, run_id)
    assert going["status"] == "running" and going["meta"]["runbook"] == "hold"
    assert [(s["step"], s["status"]) for s in going["steps"]] == [("hello", "succeeded"), ("hold", "running")]
    # Resuming a run that still goes follows it.
    resumer = subprocess.Popen(
        [str(RUNBOOK), "resume", run_id, "--temporal", temporal],
        env=other,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert resumer.stderr is not None
    said = resumer.stderr.readline()
    assert f"run {run_id} is still going on Temporal" in said and "following it" in said, said

    go.touch()
    out, err = resumer.communicate(timeout=TIMEOUT)
    assert resumer.returncode == 0, err
    assert out.strip() == f"run {run_id} succeeded" and "[ok] hold" in err
    _, rest = follower.communicate(timeout=TIMEOUT)
    assert follower.returncode == 0, rest
    followed = "".join(lines) + rest
    assert followed.count("-> hold") == 1 and followed.count("[ok] hold") == 1  # each line once

    assert listed(other, temporal)[run_id]["status"] == "succeeded"
    ended = run_cli(other, "runs", "show", run_id, "--temporal", temporal)
    assert ended.returncode == 0, ended.stderr
    assert "status: succeeded" in ended.stdout and "succeeded hold" in ended.stdout
    unknown = run_cli(other, "runs", "show", "20990101-000000-hold-0000", "--temporal", temporal)
    assert unknown.returncode != 0 and "no run 20990101-000000-hold-0000 on Temporal at" in unknown.stderr


def test_a_failed_run_is_resumed_on_temporal_from_another_machine(
    sim_home: Path, temporal: str, workers: Workers, tmp_path: Path
) -> None:
    count, fixed = tmp_path / "COUNT", tmp_path / "FIXED"
    flaky = FLAKY.replace("COUNT", str(count)).replace("FIXED", str(fixed))
    (sim_home / "runbooks" / "flaky.md").write_text(flaky)
    env = cli_env(sim_home)
    workers.start({**env, "DB_PW": PASSWORD})  # only the worker has the value
    other = elsewhere(tmp_path, sim_home)
    (Path(other["RUNBOOK_HOME"]) / "runbooks" / "flaky.md").write_text(flaky)

    run = run_cli(env, "run", "flaky", "--simulate", "--secret", "db_password=env:DB_PW")
    assert run.returncode == 5, run.stderr[-4000:]
    run_id = run.stderr.split()[1]
    assert listed(other, temporal)[run_id]["status"] == "failed"
    assert [(s["step"], s["status"]) for s in shown(other, temporal, run_id)["steps"]] == [
        ("count", "succeeded"),
        ("fixed", "failed"),
    ]

    forced = run_cli(other, "resume", run_id, "--force", "--temporal", temporal)
    assert forced.returncode == 2 and "--force and --secret are for runs resumed here" in forced.stderr
    # The report is written from the history on a machine that holds none of the run's files.
    page = tmp_path / "run.html"
    made = run_cli(other, "runs", "show", run_id, "--html", str(page), "--temporal", temporal)
    assert made.returncode == 0, made.stderr
    html = page.read_text()
    assert f"Run {run_id}" in html and "read from Temporal&#39;s history" in html
    assert '<article class="step tone-ok" id="step-count"' in html and "test -e" in html
    assert '<article class="step tone-bad" id="step-fixed"' in html
    assert PASSWORD not in html

    fixed.touch()
    resumed = run_cli(other, "resume", run_id, "--temporal", temporal)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"run {run_id} resumed on Temporal at {temporal}" in resumed.stderr
    assert resumed.stdout.strip() == f"run {run_id} succeeded"
    assert len(count.read_text().splitlines()) == 1  # the finished step was not redone

    after = shown(other, temporal, run_id)
    assert after["status"] == "succeeded" and after["resumes"] == 1
    assert [(s["step"], s["status"]) for s in after["steps"]] == [("count", "succeeded"), ("fixed", "succeeded")]
    local = json.loads(run_cli(env, "runs", "show", run_id, "--json").stdout)  # the journal, on the worker's home
    assert local["status"] == "succeeded"
    assert run_cli(other, "runs", "show", run_id, "--html", str(page), "--temporal", temporal).returncode == 0
    after_page = page.read_text()
    assert '<article class="step tone-ok" id="step-fixed"' in after_page and ">Resumed<" in after_page
    again = run_cli(other, "resume", run_id, "--temporal", temporal)
    assert again.returncode == 0 and "already succeeded; nothing to do" in again.stderr + again.stdout

    history = decoded(workflow_history(temporal, "runbook/lab/runbook-flaky"))
    assert '"resume":true' in history and PASSWORD not in history


def test_a_resume_the_workers_cannot_begin_says_why_and_runs_nothing(
    sim_home: Path, temporal: str, workers: Workers, tmp_path: Path
) -> None:
    count, fixed = tmp_path / "COUNT", tmp_path / "FIXED"
    (sim_home / "runbooks" / "flaky.md").write_text(FLAKY.replace("COUNT", str(count)).replace("FIXED", str(fixed)))
    env = cli_env(sim_home)
    workers.start({**env, "DB_PW": PASSWORD})
    # Not simulated: its steps are local, but a resume first follows the run's tasks on the cluster,
    # which this home cannot reach (no CA file for its API).
    run = run_cli(env, "run", "flaky", "--secret", "db_password=env:DB_PW")
    assert run.returncode == 5, run.stderr[-4000:]
    run_id = run.stderr.split()[1]
    fixed.touch()
    resumed = run_cli(env, "resume", run_id)  # execution.temporal: on Temporal, as it was run
    assert resumed.returncode == 10, resumed.stderr[-4000:]
    assert f"cannot resume run {run_id}: tls.ca_file" in resumed.stderr and "Nothing ran" in resumed.stderr
    assert len(count.read_text().splitlines()) == 1
    assert listed(env, temporal)[run_id]["status"] == "failed"


#: More points where a worker is killed (test_temporal.KILLS has the clone wave, a pipeline's middle and
#: the Talos sequence): just after the run was made (its open), and at the end of the clone section.
MORE_KILLS = (("run_started", None, 1), ("step_finished", "clone", 3))


@pytest.mark.parametrize(("kind", "step", "nth"), MORE_KILLS)
def test_a_worker_killed_at_the_open_or_a_sections_end_is_replaced(
    kind: str,
    step: str | None,
    nth: int,
    temporal: str,
    workers: Workers,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> None:
    replaced(kind, step, nth, temporal, workers, tmp_path_factory, tmp_path)  # type: ignore[arg-type]


CLONE_SECS = 1.5  # each clone task runs this long (real seconds) on the cluster: the next may start only after it


def test_clone_slots_are_held_in_the_workflow_so_clones_never_overlap(
    temporal: str, workers: Workers, tmp_path: Path
) -> None:
    from datetime import datetime

    from tests.test_crash_resume import SAFE_IN_DOUBT, TASK_SECS, TIME_SCALE, make_rig

    rig = make_rig(tmp_path / "rig", "talos-staging")
    try:
        rig.fake.call("set_task_secs", {**TASK_SECS, "qmclone": CLONE_SECS / TIME_SCALE})
        on_temporal(rig.home, temporal)
        path = rig.home / "cluster-config.yaml"
        config = yaml.safe_load(path.read_text())
        config.setdefault("limits", {})["clones_per_template"] = 1
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        workers.start(rig.env)
        workers.start(rig.env)
        operator = {k: v for k, v in rig.env.items() if k != "PROXMOX_API_TOKEN"}
        approve = [arg for name in ("talos.flux", *sorted(SAFE_IN_DOUBT)) for arg in ("--approve", name)]
        run = run_cli(operator, "run", "cluster-create", "--profile", "talos-staging", *approve)
        assert run.returncode == 0, run.stderr[-4000:]
        waited = [line for line in run.stderr.splitlines() if "waiting for a clone slot of template 101" in line]
        assert len(waited) == 2, run.stderr  # two clones waited, each said so as it waited

        run_id = run.stderr.split()[1]
        journal = (rig.home / ".runbook" / "runs" / run_id / "journal.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in journal]
        starts = sorted(
            datetime.fromisoformat(r["ts"]) for r in records if r["type"] == "task_started" and r["step"] == "clone"
        )
        assert len(starts) == 3
        gaps = [(later - earlier).total_seconds() for earlier, later in zip(starts, starts[1:])]
        # A clone's task is journaled as it starts; the next starts only once that one ended.
        assert min(gaps) >= CLONE_SECS * 0.9, gaps
    finally:
        rig.stop()
