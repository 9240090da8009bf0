"""Run records: durable appends, crash-torn tails tolerated, real damage refused, state derived for resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from engine.run.journal import (
    HOLDER_FILE,
    JOURNAL_FILE,
    RUN_FILE,
    RUN_ID,
    JournalError,
    RunMeta,
    RunRecord,
    RunState,
    RunTaken,
    StepKey,
    UnknownRun,
    list_runs,
    load_run,
    new_run_id,
    read_journal,
    task_history,
)
from engine.run.runlock import ProcessIdentity
from engine.run.secrets import MASK, Secret
from engine.runbook.actions import ShellCommand, action_as_dict

NOW = datetime(2026, 11, 28, 14, 22, 33, tzinfo=UTC)


def meta(run_id: str, **changes: Any) -> RunMeta:
    fields: dict[str, Any] = {
        "run_id": run_id,
        "runbook": "cluster-create",
        "runbook_file": "runbooks/cluster-create.md",
        "runbook_sha256": "a" * 64,
        "profile": "talos-staging",
        "profile_file": "clusters/talos-staging.yaml",
        "profile_sha256": "b" * 64,
        "cluster_config_sha256": "c" * 64,
        "parameters": {"count": 3},
        "mode": "run",
        "started_at": NOW.isoformat(),
    }
    return RunMeta(**{**fields, **changes})


def start(state: Path, when: datetime = NOW, **changes: Any) -> RunRecord:
    changes.setdefault("started_at", when.isoformat())
    return RunRecord.create(state, meta(new_run_id(changes.pop("runbook", "cluster-create"), when), **changes))


def dead_process() -> dict[str, Any]:
    """The identity of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = ProcessIdentity.current()
    child.wait()
    return {**identity.as_dict(), "pid": child.pid}


def test_run_ids_are_readable_sortable_and_safe_folder_names() -> None:
    first = new_run_id("cluster-create", NOW)
    assert first.startswith("20261128-142233-cluster-create-") and RUN_ID.fullmatch(first)
    later = new_run_id("a-runbook", NOW + timedelta(seconds=1))
    assert sorted([later, first]) == [first, later]
    local = datetime(2026, 11, 28, 15, 22, 33, tzinfo=timezone(timedelta(hours=1)))
    assert new_run_id("x", local).startswith("20261128-142233-x-")
    for hostile in ("../../etc/passwd", "Cluster Create!", "", "_lib", "é" * 5, "x" * 200):
        run_id = new_run_id(hostile, NOW)
        assert RUN_ID.fullmatch(run_id) and "/" not in run_id and len(run_id) < 70, run_id
    assert len({new_run_id("same", NOW) for _ in range(20)}) > 1


def test_run_json_holds_the_start_and_is_written_once(tmp_path: Path) -> None:
    with start(tmp_path) as record:
        data = json.loads((record.folder / RUN_FILE).read_text())
        assert data["runbook"] == "cluster-create" and data["profile_sha256"] == "b" * 64
        assert data["parameters"] == {"count": 3} and data["mode"] == "run" and "@" in data["who"]
        assert sorted(p.name for p in record.folder.iterdir()) == [JOURNAL_FILE, RUN_FILE]  # no temp file left
        with pytest.raises(FileExistsError):
            RunRecord.create(tmp_path, record.meta)


def test_records_are_appended_fsynced_and_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = start(tmp_path)
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    action = action_as_dict(ShellCommand("qm list", node="pve01"))
    record.step_started("list", None, action)
    record.step_finished("list", None, {"stdout": "ok", "exit_code": 0}, 0.25)
    record.step_skipped("clone", "cp-1", "check_true")
    record.gate_waiting("destroy", None)
    record.gate_approved("destroy", None, by="ops@desk")
    record.run_finished("succeeded")
    assert synced == [synced[0]] * 6  # one fsync of the journal per record
    record.close()

    records, warnings = read_journal(record.folder / JOURNAL_FILE)
    assert warnings == []
    assert [r["type"] for r in records] == [
        "run_started",
        "step_started",
        "step_finished",
        "step_skipped",
        "gate_waiting",
        "gate_approved",
        "run_finished",
    ]
    assert [r["seq"] for r in records] == list(range(1, 8))
    assert records[1]["action"] == json.loads(json.dumps(action))
    assert records[2]["outputs"] == {"stdout": "ok", "exit_code": 0} and records[2]["duration"] == 0.25
    assert records[3]["item"] == "cp-1" and records[5]["by"] == "ops@desk"
    assert all(line.endswith("}") for line in (record.folder / JOURNAL_FILE).read_text().splitlines())


def test_a_torn_last_line_is_skipped_with_a_warning_and_cut_on_resume(tmp_path: Path) -> None:
    with start(tmp_path) as record:
        record.step_started("clone", "cp-1", {"type": "ApiRequest"})
    journal = record.folder / JOURNAL_FILE
    whole = json.dumps(
        {
            "seq": 3,
            "ts": NOW.isoformat(),
            "type": "step_finished",
            "step": "clone",
            "item": "cp-1",
            "outputs": {"upid": "UPID:pve01"},
            "duration": 1.5,
        }
    )
    with journal.open("ab") as handle:
        handle.write(whole[: len(whole) // 2].encode())  # a kill in the middle of the write

    records, warnings = read_journal(journal)
    assert [r["type"] for r in records] == ["run_started", "step_started"]
    assert len(warnings) == 1 and f"{journal}:3:" in warnings[0] and "torn" in warnings[0]

    resumed, before = RunRecord.resume(tmp_path, record.run_id, who="ops@desk")
    assert before.warnings == warnings and before.state.in_doubt == [StepKey("clone", "cp-1")]
    resumed.step_finished("clone", "cp-1", {"upid": "UPID:pve01"}, 1.5)
    resumed.close()
    records, warnings = read_journal(journal)
    assert warnings == []
    assert [r["type"] for r in records] == ["run_started", "step_started", "run_resumed", "step_finished"]
    assert "torn" in records[2]["repaired"] and records[2]["who"] == "ops@desk"


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path: Path) -> None:
    with start(tmp_path) as record:
        record.step_started("a", None, {})
    journal = record.folder / JOURNAL_FILE
    journal.write_bytes(journal.read_bytes()[:-1])
    assert len(read_journal(journal)[0]) == 2
    resumed, _ = RunRecord.resume(tmp_path, record.run_id)
    resumed.close()
    records, warnings = read_journal(journal)
    assert [r["type"] for r in records] == ["run_started", "step_started", "run_resumed"] and warnings == []
    assert "repaired" not in records[2]


@pytest.mark.parametrize(
    "bad",
    [
        b"{not json",
        b"",
        b'{"seq": 3, "ts": "x", "type": "step_started"}',
        b'{"seq": 9, "ts": "x", "type": "run_finished", "status": "failed"}',
        b'{"seq": 3, "ts": "x", "type": "gate_waiting", "step": ["a"], "item": null}',
        b'{"seq": 3, "ts": "x", "type": "run_resumed", "who": "a", "engine_version": "1", "process": 5}',
    ],
)
def test_damage_in_the_middle_is_an_error_naming_the_line(tmp_path: Path, bad: bytes) -> None:
    with start(tmp_path) as record:
        record.step_started("a", None, {})
        record.step_finished("a", None, None, 0.1)
    journal = record.folder / JOURNAL_FILE
    lines = journal.read_bytes().split(b"\n")
    journal.write_bytes(b"\n".join([*lines[:2], bad, *lines[2:]]))
    with pytest.raises(JournalError, match=rf"{journal}:3: damaged record in the middle"):
        read_journal(journal)
    with pytest.raises(JournalError, match=":3: "):
        RunRecord.resume(tmp_path, record.run_id)


def test_run_state_tracks_each_step_and_item_and_what_is_in_doubt(tmp_path: Path) -> None:
    with start(tmp_path) as record:
        record.step_started("image", None, {"type": "HttpRequest"})
        record.step_finished("image", None, {"id": "abc"}, 2.0)
        record.step_skipped("maybe", None, "when_false")
        for vm in ("cp-1", "cp-2"):
            record.step_started("clone", vm, {"type": "ApiRequest", "vm": vm})
        record.step_finished("clone", "cp-1", {"vmid": 1031}, 3.0)
        record.step_started("tag", None, {})
        record.step_failed("tag", None, "500 VM is locked (backup)", 0.5)
        record.step_started("tag", None, {})
    state = load_run(tmp_path, record.run_id).state
    assert state.run_id == record.run_id and state.status == "unfinished" and state.resumes == 0
    assert state.steps[StepKey("image")].outputs == {"id": "abc"}
    assert state.steps[StepKey("maybe")].status == "skipped" and state.steps[StepKey("maybe")].reason == "when_false"
    assert state.steps[StepKey("clone", "cp-1")].status == "finished"
    clone2 = state.steps[StepKey("clone", "cp-2")]
    assert clone2.status == "in_doubt" and clone2.action == {"type": "ApiRequest", "vm": "cp-2"}
    assert state.steps[StepKey("tag")].attempts == 2
    assert state.in_doubt == [StepKey("clone", "cp-2"), StepKey("tag")] and state.failed == []
    assert state.last_step == StepKey("tag") and state.finished is None
    assert state.process == ProcessIdentity.current()

    resumed, _ = RunRecord.resume(tmp_path, record.run_id)
    with resumed:
        resumed.step_failed("tag", None, "still locked", 0.5)
        resumed.gate_waiting("destroy", "cp-2")
        resumed.run_finished("stopped_at_gate")
    state = load_run(tmp_path, record.run_id).state
    assert state.status == "stopped_at_gate" and state.gate == StepKey("destroy", "cp-2") and state.resumes == 1
    assert state.failed == [StepKey("tag")] and state.steps[StepKey("tag")].error == "still locked"
    assert state.finished is not None
    assert RunState.from_records([]).status == "unfinished"


def test_a_task_started_by_a_step_is_kept_with_its_latest_attempt(tmp_path: Path) -> None:
    """The UPID is journaled before the task is polled: a resume follows the task of a step in doubt."""
    upid = "UPID:pve01:0000ABCD:00001234:6B116890:qmclone:102:root@pam!runbook:"
    with start(tmp_path) as record:
        record.step_started("clone", "cp-1", {"type": "ApiRequest"})
        record.task_started("clone", "cp-1", upid, "pve01")
        record.step_started("start", "cp-1", {"type": "ApiRequest"})
        record.task_started("start", "cp-1", upid.replace("qmclone", "qmstart"), "pve01")
        record.step_failed("start", "cp-1", "task qmstart on pve01 failed", 1.0)
        record.step_started("start", "cp-1", {"type": "ApiRequest"})  # a new attempt, no task yet
    records, _ = read_journal(record.folder / "journal.jsonl")
    assert records[2] == {**records[2], "type": "task_started", "step": "clone", "item": "cp-1", "upid": upid}
    assert records[2]["node"] == "pve01"
    state = load_run(tmp_path, record.run_id).state
    assert state.in_doubt == [StepKey("clone", "cp-1"), StepKey("start", "cp-1")]
    assert state.steps[StepKey("clone", "cp-1")].tasks == (upid,)
    assert state.steps[StepKey("start", "cp-1")].tasks == ()
    assert state.last_step == StepKey("start", "cp-1")


def test_list_runs_is_newest_first_and_shows_damaged_folders(tmp_path: Path) -> None:
    runs = []
    for minutes, runbook in ((0, "cluster-create"), (5, "cluster-destroy"), (2, "upgrade")):
        record = start(tmp_path, NOW + timedelta(minutes=minutes), runbook=runbook)
        record.step_started("one", None, {})
        runs.append(record)
    runs[0].run_finished("succeeded")
    runs[1].close()  # still "running": this process is alive
    runs[0].close()
    runs[2].close()
    journal = runs[2].folder / JOURNAL_FILE
    lines = journal.read_text().splitlines()
    started = json.loads(lines[0])
    journal.write_text("\n".join([json.dumps({**started, "process": dead_process()}), *lines[1:]]) + "\n")
    torn = tmp_path / "runs" / new_run_id("torn", NOW + timedelta(minutes=3))
    torn.mkdir()
    (torn / RUN_FILE).write_text('{"format": 1, "run_id": ')
    empty = tmp_path / "runs" / new_run_id("empty", NOW + timedelta(minutes=4))
    empty.mkdir()

    summaries = list_runs(tmp_path)
    assert [s.run_id for s in summaries] == [runs[1].run_id, empty.name, torn.name, runs[2].run_id, runs[0].run_id]
    assert [s.status for s in summaries] == ["running", "damaged", "damaged", "interrupted", "succeeded"]
    assert "missing" in (summaries[1].problem or "") and "unreadable" in (summaries[2].problem or "")
    assert summaries[4].finished is not None and summaries[4].runbook == "cluster-create"
    assert summaries[3].last_step == StepKey("one") and summaries[3].profile == "talos-staging"
    assert list_runs(tmp_path / "nowhere") == []


def test_an_unknown_run_id_suggests_the_closest(tmp_path: Path) -> None:
    with start(tmp_path) as record:
        pass
    with pytest.raises(UnknownRun, match=r"Did you mean .*runbook runs") as caught:
        load_run(tmp_path, record.run_id[:-1] + ("0" if record.run_id[-1] != "0" else "1"))
    assert caught.value.suggestions == [record.run_id]
    assert load_run(tmp_path, record.run_id).meta == record.meta
    with pytest.raises(UnknownRun, match="Did you mean") as caught:
        load_run(tmp_path, record.run_id[:15])
    assert caught.value.suggestions == [record.run_id]
    with pytest.raises(UnknownRun):
        load_run(tmp_path, "../../etc")


def test_a_secret_anywhere_in_a_record_is_refused_before_writing(tmp_path: Path) -> None:
    token = Secret("hunter2-token")
    with start(tmp_path) as record:
        journal = record.folder / JOURNAL_FILE
        before = journal.read_bytes()
        with pytest.raises(TypeError, match=r"outputs\.data\[1\]\.token is a Secret; secrets are never"):
            record.step_finished("login", None, {"data": [1, {"token": token}]}, 0.1)
        with pytest.raises(TypeError, match=r"step_started\.action\.env\.TOKEN is a Secret; secrets are never written"):
            record.step_started("x", None, {"env": {"TOKEN": token}})
        with pytest.raises(TypeError, match=r"outputs is a set"):
            record.step_finished("x", None, {1, 2}, 0.1)
        with pytest.raises(ValueError, match="duration is nan"):
            record.step_finished("x", None, None, float("nan"))
        assert journal.read_bytes() == before
        record.step_finished("x", None, {"token": MASK}, 0.1)  # the mask is fine; the value is not
    with pytest.raises(TypeError, match=r"run\.json\.parameters\.password is a Secret; secrets are never written"):
        RunRecord.create(tmp_path, meta(new_run_id("leak", NOW), parameters={"password": token}))
    assert not list((tmp_path / "runs").glob("*leak*"))
    assert b"hunter2" not in b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def test_bad_values_for_enumerated_fields_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        start(tmp_path, mode="yolo")
    with start(tmp_path) as record:
        with pytest.raises(ValueError, match="skip reason"):
            record.step_skipped("a", None, "felt like it")
        with pytest.raises(ValueError, match="run status"):
            record.run_finished("ok")
    with pytest.raises(JournalError, match="closed"):
        record.run_finished("failed")


def test_runs_started_in_the_same_second_are_listed_by_their_full_start_time(tmp_path: Path) -> None:
    """Ids carry the second only; a later run whose id sorts first must still be listed first."""
    later = NOW + timedelta(microseconds=900_000)
    first = start(tmp_path, NOW, runbook="zz-last-by-name")
    second = start(tmp_path, later, runbook="aa-first-by-name")
    first.close()
    second.close()
    assert first.run_id[:15] == second.run_id[:15] and first.run_id > second.run_id
    assert [s.run_id for s in list_runs(tmp_path)] == [second.run_id, first.run_id]


def test_task_history_is_the_shortest_recent_duration_of_each_task_type(tmp_path: Path) -> None:
    def task(kind: str, status: str = "OK") -> dict[str, Any]:
        upid = f"UPID:pve01:0000A1B2:00C0FFEE:6745A1B2:{kind}:101:root@pam!runbook:"
        return {"upid": upid, "node": "pve01", "exitstatus": status, "data": upid}

    with start(tmp_path, NOW) as older:
        older.step_finished("clone", "a", task("qmclone"), 9.5)
        older.step_finished("start", "a", task("qmstart"), 2.0)
    with start(tmp_path, NOW + timedelta(seconds=1)) as newer:
        newer.step_finished("clone", "a", task("qmclone"), 8.0)
        newer.step_finished("clone", "b", task("qmclone", "clone failed: no space"), 1.0)  # not a sample
        newer.step_finished("read", None, {"upid": task("qmstart")["upid"]}, 0.1)  # read a task, did not wait
    assert task_history(tmp_path / "runs") == {"qmclone": 8.0, "qmstart": 2.0}
    assert task_history(tmp_path / "runs", runs=1) == {"qmclone": 8.0}
    assert task_history(tmp_path / "nowhere") == {}


def test_a_worker_that_took_a_run_over_fences_out_the_one_before(tmp_path: Path) -> None:
    """Two Temporal workers on one run's journal: once B names itself the holder, A can write nothing
    more (it was only slow, not lost), and the journal stays one sequence with no gap or duplicate."""
    run_id = new_run_id("cluster-create", NOW)
    first = RunRecord.create(tmp_path, meta(run_id), holder="runbook/lab/worker/a")
    first.step_started("clone", "stg-cp01", {"kind": "api"})
    second, before = RunRecord.resume(tmp_path, run_id, holder="runbook/lab/worker/b")
    assert [r["type"] for r in before.records] == ["run_started", "step_started"]  # read after taking the hold

    with pytest.raises(RunTaken) as taken:
        first.step_finished("clone", "stg-cp01", {"vmid": 1031}, 1.0)
    assert str(taken.value).startswith(f"run {run_id} was taken over by runbook/lab/worker/b (this worker, ")
    second.step_finished("clone", "stg-cp01", {"vmid": 1031}, 1.0)
    first.close()
    second.close()

    run = load_run(tmp_path, run_id)
    assert [(r["seq"], r["type"]) for r in run.records] == [
        (1, "run_started"),
        (2, "step_started"),
        (3, "run_resumed"),
        (4, "step_finished"),
    ]
    assert json.loads((run.folder / HOLDER_FILE).read_text())["holder"] == "runbook/lab/worker/b"


def test_a_local_run_has_no_holder_file(tmp_path: Path) -> None:
    with start(tmp_path) as record:
        record.step_started("clone", None, {"kind": "api"})
    assert not (record.folder / HOLDER_FILE).exists()
