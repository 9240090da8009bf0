"""Every JSON output of `run`, `resume` and `runs show` is valid against its schema in schemas/, and
the three use one vocabulary: a step is the same object, with the same status words, everywhere."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine import exitcodes
from engine.load.home import Home
from engine.load.schemas import validator
from engine.report.jsonformat import STEP_STATUSES

SIM = ("--simulate",)


def valid(schema: str, document: Any) -> Any:
    errors = sorted(validator(schema).iter_errors(document), key=lambda e: list(e.path))
    assert not errors, f"{schema}: " + "; ".join(f"{list(e.path)}: {e.message[:200]}" for e in errors[:5])
    return document


def plan(cli: Any, home: Home, *args: str, code: int = 0) -> dict[str, Any]:
    result = cli("--home", str(home.root), "run", *args, "--dry-run", "--json")
    assert result.exit_code == code, result.output
    return valid("plan.schema.json", json.loads(result.stdout))


def events(cli: Any, home: Home, *args: str, code: int = 0) -> list[dict[str, Any]]:
    result = cli("--home", str(home.root), *args, "--json")
    assert result.exit_code == code, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    for line in lines:
        valid("events.schema.json", line)
    assert lines and lines[-1]["event"] == "finished" and lines[-1]["exit_code"] == code
    assert all(line["format"] == 1 for line in lines)
    return lines


def shown(cli: Any, home: Home, run_id: str) -> dict[str, Any]:
    result = cli("--home", str(home.root), "runs", "show", run_id, "--json")
    assert result.exit_code == 0, result.output
    return valid("run.schema.json", json.loads(result.stdout))


@pytest.fixture
def home(cli: Any, make_home: Any) -> Home:
    made = make_home()
    created = events(cli, made, "run", "cluster-create", "--profile", "talos-staging", *SIM, "--yes")
    assert created[-1]["status"] == "succeeded"
    return made


def test_plans_are_valid_whether_made_or_not(cli: Any, home: Home) -> None:
    resize = ("vm-resize", *SIM, "--param", "vmid=1031", "--param", "cores=8", "--param", "disk_size=120G")
    made = plan(cli, home, *resize)
    assert made["status"] == "planned" and made["error"] is None and made["exit_code"] == 0
    assert set(made["counts"]) == {"steps", "gated", *STEP_STATUSES}
    assert made["counts"]["failed"] == 0, "a zero count is present"
    offline = plan(cli, home, "cluster-teardown", "--profile", "talos-staging", "--offline")
    assert offline["offline"] is True and offline["counts"]["steps"] == len(offline["steps"])
    # A read-only step fails while planning: still a plan document, saying why.
    missing = plan(cli, home, "vm-resize", *SIM, "--param", "vmid=1099", code=exitcodes.NOT_STARTED)
    assert missing["status"] == "failed" and "no VM with VMID 1099" in missing["error"]
    assert missing["steps"][-1]["status"] == "failed"
    # Inputs that are wrong before anything is planned: a plan document with the error, no steps.
    wrong = plan(cli, home, "vm-resize", *SIM, "--param", "vmid=12", code=exitcodes.PROBLEMS)
    assert wrong["status"] == "failed" and wrong["steps"] == [] and "vmid" in wrong["error"]
    assert wrong["counts"]["steps"] == 0 and wrong["runbook"] == "vm-resize"


def test_event_streams_and_recorded_runs_are_valid_and_agree(cli: Any, home: Home) -> None:
    status = events(cli, home, "run", "cluster-status", "--profile", "talos-staging", *SIM)
    final = status[-1]
    assert final["status"] == "succeeded" and final["counts"]["succeeded"] >= 1
    ended = [line for line in status if line["event"] == "step"]
    assert [(s["step"], s["item"], s["status"]) for s in ended] == [
        (s["step"], s["item"], s["status"]) for s in final["steps"]
    ]
    recorded = shown(cli, home, final["run_id"])
    assert recorded["status"] == "succeeded"
    ran = {(s["step"], s["item"]): s for s in final["steps"] if s["status"] != "skipped"}
    for step in recorded["steps"]:
        live = ran.get((step["step"], step["item"]))
        if live is not None:
            assert (step["status"], step["output"], step["kind"]) == (live["status"], live["output"], live["kind"])


def test_a_skipped_step_reads_the_same_in_a_plan_a_run_and_its_record(cli: Any, home: Home) -> None:
    args = ("cluster-create", "--profile", "talos-staging", *SIM)
    planned = {(s["step"], s["item"]): s for s in plan(cli, home, *args)["steps"]}
    final = events(cli, home, "run", *args, "--yes")[-1]
    recorded = {(s["step"], s["item"]): s for s in shown(cli, home, final["run_id"])["steps"]}
    key = ("clone", "name=stg-cp01")
    assert (
        planned[key]["status"] == final["steps"][[(s["step"], s["item"]) for s in final["steps"]].index(key)]["status"]
    )
    assert planned[key]["reason"] == recorded[key]["reason"] == "check is true: already in place"
    assert recorded[key]["status"] == "skipped"


def test_stops_and_failures_before_a_run_are_valid_events(cli: Any, home: Home) -> None:
    gate = events(
        cli, home, "run", "vm-resize", *SIM, "--param", "vmid=1031", "--param", "disk_size=120G", code=exitcodes.GATE
    )
    assert gate[-1]["status"] == "stopped_at_gate" and gate[-1]["run_id"] is None
    wrong = events(cli, home, "run", "vm-resize", *SIM, "--param", "vmid=12", code=exitcodes.PROBLEMS)
    assert len(wrong) == 1 and wrong[0]["status"] == "failed" and "vmid" in wrong[0]["message"]
    refused = events(cli, home, "run", "vm-resize", *SIM, "--param", "vmid=1099", code=exitcodes.NOT_STARTED)
    assert refused[-1]["run_id"] is None and "no run was made" in refused[-1]["message"]
    # With --yes nothing is planned first: the run is made, and its first read fails (resumable).
    failed = events(cli, home, "run", "vm-resize", *SIM, "--param", "vmid=1099", "--yes", code=exitcodes.FAILED)
    run_id = failed[-1]["run_id"]
    assert failed[-1]["counts"]["failed"] == 1
    record = shown(cli, home, run_id)
    assert record["status"] == "failed" and record["counts"]["failed"] == 1
    again = events(cli, home, "resume", run_id, code=exitcodes.FAILED)
    assert again[-1]["run_id"] == run_id


def test_a_teardown_stopped_then_done_then_resumed_for_nothing(cli: Any, home: Home) -> None:
    args = ("run", "cluster-teardown", "--profile", "talos-staging", *SIM)
    stopped = events(cli, home, *args, "--approve", "nothing", code=exitcodes.GATE)
    assert stopped[-1]["status"] == "stopped_at_gate"
    done = events(cli, home, *args, "--yes")
    finished = done[-1]
    assert finished["status"] == "succeeded"
    nothing = events(cli, home, "resume", finished["run_id"])
    assert nothing[-1]["status"] == "succeeded" and "nothing to do" in nothing[-1]["message"]
