"""``runbook schedule add|list|remove|trigger``: recurring runs as Temporal Schedules.

A schedule starts the run's workflow on the cluster's task queue at each time its cron expression
names, with the run's inputs fixed when it was added (secret parameters as their sources, read by the
worker each time). Its overlap policy is SKIP: while a run it started still goes (waiting at a gate,
say), a time that comes is skipped, never queued nor run beside it. Each run gets a run id of its own,
drawn by the workflow. A gate met with nobody there waits like any other (``runbook approvals``) for
at most ``gates.approval_timeout``, then the run fails there.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)
from temporalio.service import RPCError, RPCStatusCode

from .. import exitcodes
from ..errors import RunbookError
from . import contract as c
from .client import connect
from .settings import TemporalSettings


class ScheduleExists(RunbookError):
    exit_code = exitcodes.LOCKED


class NoSuchSchedule(RunbookError):
    exit_code = exitcodes.PROBLEMS


class BadCron(RunbookError):
    exit_code = exitcodes.USAGE


@dataclass
class Listed:
    """One schedule as ``runbook schedule list`` shows it."""

    id: str
    runbook: str
    profile: str | None
    cron: str
    added_by: str
    next_runs: list[str]
    runs: int
    skipped: int  # times skipped because a run it started was still going (overlap: skip)
    running: list[str]  # workflow ids of its runs still going


def schedule_id(cluster: str, runbook: str, profile: str | None) -> str:
    """One schedule per runbook and profile of a cluster."""
    return f"runbook/{cluster}/schedule/{runbook}" + (f"/{profile}" if profile else "")


def add(settings: TemporalSettings, sid: str, workflow_id: str, cron: str, start: c.RunStart) -> None:
    asyncio.run(_add(settings, sid, workflow_id, cron, start))


async def _add(settings: TemporalSettings, sid: str, workflow_id: str, cron: str, start: c.RunStart) -> None:
    client = await connect(settings, "No schedule was added")
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            c.WORKFLOW, start, id=workflow_id, task_queue=settings.task_queue, execution_timeout=timedelta(days=7)
        ),
        spec=ScheduleSpec(cron_expressions=[cron]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    added_by = start.starter.name if start.starter is not None else ""
    memo = {"runbook": start.runbook, "profile": start.profile, "cron": cron, "added_by": added_by}
    try:
        await client.create_schedule(sid, schedule, memo=memo)
    except ScheduleAlreadyRunningError:
        raise ScheduleExists(
            f"schedule {sid} exists already: remove it first (runbook schedule remove {start.runbook}"
            + (f" --profile {start.profile})" if start.profile else ")")
        ) from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.INVALID_ARGUMENT:
            raise BadCron(f"--cron {cron!r}: Temporal refused it: {exc.message}") from None
        raise


def listed(settings: TemporalSettings, prefix: str) -> list[Listed]:
    return asyncio.run(_listed(settings, prefix))


async def _listed(settings: TemporalSettings, prefix: str) -> list[Listed]:
    client = await connect(settings, "Nothing was listed")
    found: list[Listed] = []
    async for entry in await client.list_schedules():
        if not entry.id.startswith(prefix):
            continue
        described = await client.get_schedule_handle(entry.id).describe()
        memo = await described.memo()
        info = described.info
        found.append(
            Listed(
                entry.id,
                str(memo.get("runbook", "")),
                memo.get("profile"),
                str(memo.get("cron", "")),
                str(memo.get("added_by", "")),
                [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in info.next_action_times[:1]],
                info.num_actions,
                info.num_actions_skipped_overlap,
                [action.workflow_id for action in info.running_actions],
            )
        )
    return sorted(found, key=lambda s: s.id)


def remove(settings: TemporalSettings, sid: str) -> None:
    asyncio.run(_act(settings, sid, "remove", "No schedule was removed"))


def trigger(settings: TemporalSettings, sid: str) -> None:
    asyncio.run(_act(settings, sid, "trigger", "Nothing was started"))


async def _act(settings: TemporalSettings, sid: str, what: str, consequence: str) -> None:
    client = await connect(settings, consequence)
    handle = client.get_schedule_handle(sid)
    try:
        if what == "remove":
            await handle.delete()
        else:
            await handle.trigger()  # with the schedule's own overlap policy: skipped while a run goes
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise NoSuchSchedule(
                f"no schedule {sid} on Temporal at {settings.address} (runbook schedule list)"
            ) from None
        raise
