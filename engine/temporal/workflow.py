"""The run as a Temporal workflow: it decides what runs when, the activities do every step.

Deterministic by construction: the only decisions taken here come from ``engine.run.schedule``
(pure: no clock, thread, I/O or randomness) and from the activities' results, which Temporal keeps
in the history, so a replay on any worker takes the same decisions. Nothing here renders a template,
reads a file or the cluster: an activity does (``engine.temporal.activities``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from ..run.schedule import CloneLimits, Clones, Schedule, Slot, Task
    from . import contract as c

#: Activities that only prepare or end a run: short, retried a few times (a worker lost, the cluster unreachable).
_SHORT = timedelta(minutes=10)
#: A step whose activity failed this many times for a reason that is not the step's own (a worker
#: lost, an error in the engine) fails the run, to be looked at, rather than trying forever.
ATTEMPTS = 5


@workflow.defn(name=c.WORKFLOW)
class RunWorkflow:
    def __init__(self) -> None:
        self._events: list[c.Event] = []
        self._clones = Clones(CloneLimits())  # every worker's clones of this run (engine/temporal/slots.py)
        self._holding: dict[str, tuple[tuple[Slot, int], ...]] = {}

    @workflow.update(name=c.SLOT)
    async def clone_slot(self, ask: c.SlotAsk) -> None:
        """Return once ``ask``'s slots are taken for it (at once when its activity already holds them)."""
        slots = tuple(((str(kind), str(name)), int(limit)) for kind, name, limit in ask.slots)
        while ask.holder not in self._holding:
            # Several clones waiting wake together when a slot frees: each checks again, one takes it.
            await workflow.wait_condition(lambda: ask.holder in self._holding or self._clones.full(slots) is None)
            if ask.holder not in self._holding and self._clones.full(slots) is None:
                self._clones.take(slots)
                self._holding[ask.holder] = slots

    @workflow.signal(name=c.SLOT_FREED)
    def clone_slot_freed(self, holder: str) -> None:
        self._free(holder)

    def _free(self, holder: str) -> None:
        slots = self._holding.pop(holder, None)
        if slots is not None:
            self._clones.release(slots)

    @workflow.query(name="events")
    def events(self, since: int) -> list[c.Event]:
        """The progress events from number ``since`` on: what the CLI following the run prints."""
        return self._events[since:]

    @workflow.run
    async def run(self, start: c.RunStart) -> c.Ending:
        ending = await self._run(start)
        workflow.upsert_memo({c.MEMO_STATUS: ending.status})  # what ``runbook runs --temporal`` lists
        return ending

    async def _run(self, start: c.RunStart) -> c.Ending:
        opened: c.Opened = await workflow.execute_activity(
            c.OPEN, start, result_type=c.Opened, **self._options(start, _SHORT)
        )
        self._events += opened.events
        if opened.outcome is not None:
            return dataclasses.replace(opened.outcome, warnings=opened.warnings + opened.outcome.warnings)
        for number, section in enumerate(opened.sections):
            ref = c.SectionRef(start.run_id, number, start)
            items: c.Items = await workflow.execute_activity(
                c.ITEMS, ref, result_type=c.Items, **self._options(start, _SHORT)
            )
            self._events += items.events
            failure = await self._section(start, number, section, items.count)
            if failure is None:
                await workflow.execute_activity(c.END_SECTION, ref, **self._options(start, _SHORT))
                continue
            return self._warned(await self._close(start, failure), opened)
        return self._warned(await self._close(start, None), opened)

    @staticmethod
    def _warned(ending: c.Ending, opened: c.Opened) -> c.Ending:
        return dataclasses.replace(ending, warnings=opened.warnings + ending.warnings)

    async def _section(
        self, start: c.RunStart, number: int, section: c.SectionPlan, count: int
    ) -> ApplicationError | None:
        """Every task of one section, as ``Schedule`` hands them out; the first failure, if any."""
        schedule = Schedule(count, len(section.steps), max(1, min(section.width, start.concurrency)))
        running: dict[asyncio.Task[c.TaskDone], Task] = {}
        first: ApplicationError | None = None
        while not schedule.done:
            for task in schedule.start():
                ref = c.TaskRef(start.run_id, number, task.item, task.stage, start)
                call = workflow.execute_activity(
                    c.TASK,
                    ref,
                    result_type=c.TaskDone,
                    activity_id=_activity_id(number, task),
                    **self._options(start, start.step_timeout_seconds),
                )
                running[asyncio.ensure_future(call)] = task
            ended, _ = await workflow.wait(list(running), return_when=asyncio.FIRST_COMPLETED)
            for handle in sorted(ended, key=lambda h: running[h]):  # one order on every replay
                task = running.pop(handle)
                self._free(_activity_id(number, task))  # its clone's slot, if a lost worker kept it
                error = handle.exception()
                if error is None:
                    self._events += handle.result().events
                    schedule.finished(task)
                    continue
                schedule.failed(task)
                cause = error.cause if isinstance(error, ActivityError) else error
                if not isinstance(cause, ApplicationError):
                    cause = ApplicationError(str(cause), type=c.STEP_FAILED)
                if cause.details:
                    self._events += [c.Event(**event) for event in cause.details[0]]
                first = first or cause
        return first

    async def _close(self, start: c.RunStart, failure: ApplicationError | None) -> c.Ending:
        status = "succeeded"
        if failure is not None:
            status = "stopped_at_gate" if failure.type == c.GATE_STOP else "failed"
        close = c.Close(start.run_id, status, failure.message if failure is not None else "", start)
        return await workflow.execute_activity(c.CLOSE, close, result_type=c.Ending, **self._options(start, _SHORT))

    @staticmethod
    def _options(start: c.RunStart, timeout: timedelta | float) -> dict:
        limit = timeout if isinstance(timeout, timedelta) else timedelta(seconds=timeout)
        return {
            "start_to_close_timeout": limit,
            "heartbeat_timeout": timedelta(seconds=start.heartbeat_seconds),
            "retry_policy": RetryPolicy(
                initial_interval=timedelta(seconds=1),
                maximum_interval=timedelta(seconds=30),
                maximum_attempts=ATTEMPTS,
                non_retryable_error_types=[c.STEP_FAILED, c.GATE_STOP, c.PROBLEMS, c.REFUSED],
            ),
        }


def _activity_id(section: int, task: Task) -> str:
    """A step item's activity id, which holds its clone slots (``SlotAsk.holder``)."""
    return f"task-{section}-{task.item}-{task.stage}"
