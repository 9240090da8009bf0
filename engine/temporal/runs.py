"""Runs on Temporal as ``runbook runs``, ``runs show`` and ``resume`` see them, from any machine.

What a run is, is read from Temporal, not from a home: visibility lists the cluster's workflows
(their memo: run id, runbook, profile, starter, status), and a run's history holds its step entries
(the progress events its activities returned) and its ``run.json`` (the open activity's answer), so
the machine asking needs neither the workers' home nor a worker answering. A run resumed on Temporal
is several workflow executions of one workflow id with the same run id in their memo: they are one
run here, the latest its status. ``recorded`` turns a run's history into the journal's own form (a
``LoadedRun``), so the HTML report of a run on Temporal is written on any machine as a local run's is.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle

from ..run.journal import FINAL_STATUSES, LoadedRun, Record, RunMeta, RunState
from . import contract as c
from .client import connect, live_events
from .settings import TemporalSettings

#: A closed workflow's status when its memo does not say the run's (it ended outside the run's own
#: ending: its attempts exhausted, terminated, timed out).
_CLOSED = {
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.CANCELED: "canceled",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out",
}
#: What the workflow's activities return, by activity: each holds progress events.
_RESULTS: dict[str, type] = {c.OPEN: c.Opened, c.TAKE: c.Taken, c.ITEMS: c.Items, c.TASK: c.TaskDone}


@dataclass
class TemporalRun:
    """One run on Temporal: its latest workflow execution, and how many there were (a resume adds one)."""

    run_id: str
    runbook: str
    profile: str | None
    started_by: str
    simulate: bool
    status: str  # running | waiting | succeeded | failed | stopped_at_gate | terminated | ...
    started: datetime | None
    finished: datetime | None
    workflow_id: str
    executions: list[str] = field(default_factory=list)  # the workflow's run ids, oldest first

    @property
    def going(self) -> bool:
        return self.status in ("running", "waiting")


def _query(settings: TemporalSettings) -> str:
    return f"TaskQueue = '{settings.task_queue}' AND WorkflowType = '{c.WORKFLOW}'"


async def _runs(client: Client, settings: TemporalSettings) -> list[TemporalRun]:
    runs: dict[str, TemporalRun] = {}
    async for execution in client.list_workflows(_query(settings)):  # newest first
        memo = await execution.memo()
        run_id = memo.get("run_id")
        if not isinstance(run_id, str):
            continue
        known = runs.get(run_id)
        if known is not None:  # an earlier execution of a resumed run
            known.executions.insert(0, execution.run_id)
            known.started = execution.start_time
            continue
        runs[run_id] = TemporalRun(
            run_id=run_id,
            runbook=str(memo.get("runbook")),
            profile=memo.get("profile"),
            started_by=str(memo.get("started_by")),
            simulate=bool(memo.get("simulate")),
            status=_status(execution.status, memo.get(c.MEMO_STATUS)),
            started=execution.start_time,
            finished=execution.close_time,
            workflow_id=execution.id,
            executions=[execution.run_id],
        )
    return sorted(runs.values(), key=lambda run: run.run_id, reverse=True)


def _status(status: WorkflowExecutionStatus | None, said: Any) -> str:
    if status == WorkflowExecutionStatus.RUNNING:
        return "waiting" if said == "waiting" else "running"
    if status == WorkflowExecutionStatus.COMPLETED:
        return str(said or "succeeded")
    return _CLOSED.get(status, str(said or "unknown")) if status is not None else "unknown"


def list_runs(settings: TemporalSettings) -> list[TemporalRun]:
    """The cluster's runs on Temporal (its task queue), newest first."""

    async def main() -> list[TemporalRun]:
        return await _runs(await connect(settings, "Nothing was listed"), settings)

    return asyncio.run(main())


def find_run(settings: TemporalSettings, run_id: str) -> TemporalRun | None:
    """The run ``run_id`` on Temporal, or None when the cluster's task queue never had it."""

    async def main() -> TemporalRun | None:
        return await _find(await connect(settings, "Nothing was changed"), settings, run_id)

    return asyncio.run(main())


async def _find(client: Client, settings: TemporalSettings, run_id: str) -> TemporalRun | None:
    return next((run for run in await _runs(client, settings) if run.run_id == run_id), None)


@dataclass
class Shown:
    """A run on Temporal as ``runs show`` prints it: the run, its step entries (one per step item, the
    latest), and the inputs it was started with (no secret: sources of secret parameters only)."""

    run: TemporalRun
    start: c.RunStart
    entries: list[dict[str, Any]]
    meta: dict[str, Any] | None = None  # the run's run.json, as the worker that opened it made it
    resumed_by: list[str] = field(default_factory=list)  # who started each later execution (a resume)


def show_run(settings: TemporalSettings, run_id: str) -> Shown | None:
    """The run's step entries from its histories (and its running steps from their heartbeats)."""

    async def main() -> Shown | None:
        client = await connect(settings, "Nothing was shown")
        run = await _find(client, settings, run_id)
        if run is None:
            return None
        entries: dict[tuple[str, str | None], dict[str, Any]] = {}
        start: c.RunStart | None = None
        meta: dict[str, Any] | None = None
        resumed_by: list[str] = []
        for execution in run.executions:
            handle = client.get_workflow_handle(run.workflow_id, run_id=execution)
            begun, events, opened = await _history(client, handle)
            if start is not None:
                resumed_by.append(begun.started_by)
            start, meta = start or begun, meta or opened
            for event in events:
                _merge(entries, event)
        if run.going:
            latest = client.get_workflow_handle(run.workflow_id, run_id=run.executions[-1])
            for event in await live_events(client, latest):
                if event.kind == "start":
                    _merge(entries, replace(event, kind="step", entry={**event.entry, "status": "running"}))
        assert start is not None  # every execution's history begins with its input
        return Shown(run, start, list(entries.values()), meta, resumed_by)

    return asyncio.run(main())


def _merge(entries: dict[tuple[str, str | None], dict[str, Any]], event: c.Event) -> None:
    """The latest entry of each step item; a resume's 'done before' does not hide what was done."""
    if event.kind != "step":
        return
    key = (event.entry["step_id"], event.entry.get("item_key"))
    known = entries.get(key)
    if known is not None and known.get("status") == "succeeded" and event.entry.get("status") == "skipped":
        return
    entries.pop(key, None)
    entries[key] = event.entry


def original_start(settings: TemporalSettings, run: TemporalRun) -> c.RunStart:
    """What the run was started with (its first execution's input), for its resume."""

    async def main() -> c.RunStart:
        client = await connect(settings, "Nothing was changed")
        start, _, _ = await _history(client, client.get_workflow_handle(run.workflow_id, run_id=run.executions[0]))
        return start

    return asyncio.run(main())


async def _history(
    client: Client, handle: WorkflowHandle[Any, Any]
) -> tuple[c.RunStart, list[c.Event], dict[str, Any] | None]:
    """One execution's input, the progress events its activities returned (or failed with), and the
    run's run.json when this execution opened the run."""
    convert = client.data_converter
    start: c.RunStart | None = None
    meta: dict[str, Any] | None = None
    scheduled: dict[int, str] = {}
    events: list[c.Event] = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            start = (await convert.decode(payloads, [c.RunStart]))[0]
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            done = event.activity_task_completed_event_attributes
            kind = _RESULTS.get(scheduled.get(done.scheduled_event_id, ""))
            if kind is not None and done.result.payloads:
                result = (await convert.decode(done.result.payloads, [kind]))[0]
                events += result.events
                meta = getattr(result, "meta", None) or meta
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
            details = event.activity_task_failed_event_attributes.failure.application_failure_info.details
            if details.payloads:
                given = (await convert.decode(details.payloads))[0]
                events += [c.Event(**item) for item in given if isinstance(item, dict)]
    assert start is not None, "a workflow history begins with its start"
    return start, events, meta


#: How a step item's latest entry is told in the journal's records.
_ENDED = {"succeeded": "step_finished", "skipped": "step_skipped", "failed": "step_failed"}


def recorded(shown: Shown) -> LoadedRun:
    """The run as its journal reads, built from its history: its ``run.json`` (from the open activity's
    answer) and, per step item, the records its latest entry stands for. Outputs are not in history
    (only their digests), so finished steps have none here; the report does not show outputs."""
    run = shown.run
    started = (run.started or run.finished or datetime.now(UTC)).isoformat()
    where = f"workflow {run.workflow_id}"
    meta = RunMeta.from_dict(shown.meta, where) if shown.meta else _meta(shown, started)
    process = {"pid": 0, "host": f"temporal ({where})"}
    records: list[Record] = [{"type": "run_started", "ts": started, "run_id": run.run_id, "process": process}]
    records += [
        {"type": "run_resumed", "ts": started, "who": who, "engine_version": meta.engine_version, "process": process}
        for who in shown.resumed_by
    ]
    for entry in shown.entries:
        key = {"ts": started, "step": entry["step_id"], "item": entry.get("item_key")}
        status = entry.get("status")
        if status == "stopped_at_gate":
            records.append({"type": "gate_waiting", **key})
            continue
        records.append({"type": "step_started", **key, "action": entry.get("action")})
        duration = entry.get("duration") or 0.0
        ended = _ENDED.get(str(status))
        if ended == "step_finished":
            records.append({"type": ended, **key, "outputs": None, "duration": duration})
        elif ended == "step_skipped":
            records.append({"type": ended, **key, "reason": entry.get("reason") or "skipped"})
        elif ended == "step_failed":
            records.append({"type": ended, **key, "error": entry.get("error") or "", "duration": duration})
    if run.status in FINAL_STATUSES:
        ended_at = (run.finished or run.started or datetime.now(UTC)).isoformat()
        records.append({"type": "run_finished", "ts": ended_at, "status": run.status})
    for number, record in enumerate(records, start=1):
        record["seq"] = number
    notes = [f"read from Temporal's history of {where}: step outputs stay in the workers' journal"]
    return LoadedRun(Path(run.run_id), meta, records, notes, RunState.from_records(records))


def _meta(shown: Shown, started: str) -> RunMeta:
    """A run.json for a run whose history does not hold one (it ended before the run was made)."""
    start = shown.start
    return RunMeta(
        run_id=shown.run.run_id,
        runbook=start.runbook,
        runbook_file=f"runbooks/{start.runbook}.md",
        runbook_sha256="",
        profile=start.profile,
        profile_file=f"clusters/{start.profile}.yaml" if start.profile else None,
        profile_sha256=None,
        cluster_config_sha256="",
        parameters=dict(start.params),
        mode="simulate" if start.simulate else "run",
        started_at=started,
        who=start.started_by,
        secret_parameters=dict(start.secret_sources) or None,
    )
