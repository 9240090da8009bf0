"""The run as a Temporal workflow: it decides what runs when, the activities do every step.

Deterministic by construction: the only decisions taken here come from ``engine.run.schedule``
(pure: no clock, thread, I/O or randomness) and from the activities' results, which Temporal keeps
in the history, so a replay on any worker takes the same decisions. Nothing here renders a template,
reads a file or the cluster: an activity does (``engine.temporal.activities``).

A run sticks to one worker: the worker that opens it (any worker of the cluster's task queue) says
its own task queue, and every later activity of the run goes there, so its journal, its outputs in
memory and its local files (the Talos config folder) have one writer. An activity that waits there
longer than a heartbeat's time (``schedule_to_start_timeout``) means that worker is lost: once
nothing of the run still runs on it, any worker of the cluster's queue takes the run over from its
journal (``c.TAKE``) and the run goes on there.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutType
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from ..run.journal import new_run_id
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
        self._start: c.RunStart | None = None
        self._waiting: dict[tuple[str, str | None], c.Waiting] = {}
        self._decided: dict[tuple[str, str | None], c.Decision] = {}
        self._rejected: c.Decision | None = None
        self._stopping = False  # a task of the section failed (or was rejected): gates still waiting end too
        self._clones = Clones(CloneLimits())  # every worker's clones of this run (engine/temporal/slots.py)
        self._holding: dict[str, tuple[tuple[Slot, int], ...]] = {}
        self._worker = ""  # the task queue of the worker holding the run: its activities go there
        self._flying: dict[str, int] = {}  # activities of the run in flight, per worker
        self._taking = False  # a take-over is under way
        self._at = 0  # the section the run is in (a worker taking it over catches up to it)

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

    @workflow.query(name="approvals")
    def approvals(self) -> list[c.Waiting]:
        """The gates the run waits at: what ``runbook approvals`` lists."""
        return list(self._waiting.values())

    @workflow.update(name="decide")
    async def decide(self, decision: c.Decision) -> c.Decision:
        """``runbook approve`` / ``reject``: checked by a worker (who, four-eyes), then the waiting step
        goes on (its next activity carries the approval) or the run ends there."""
        assert self._start is not None
        stamped = dataclasses.replace(decision, at=workflow.now().strftime("%Y-%m-%dT%H:%M:%SZ"))
        try:
            checked: c.Decision = await workflow.execute_activity(
                c.CHECK_DECISION,
                c.DecisionCheck(stamped, self._start),
                result_type=c.Decision,
                **self._options(self._start, _SHORT),
            )
        except ActivityError as error:
            cause = error.cause if isinstance(error.cause, ApplicationError) else error
            raise ApplicationError(str(cause.message if isinstance(cause, ApplicationError) else cause)) from None
        key = (decision.step, decision.item)
        if key in self._waiting and key not in self._decided:  # the first decision counts
            self._decided[key] = checked
        counted = self._decided.get(key)
        if counted is not checked:  # another decision (or the run's end) came first, while this one was checked
            first = f"decided by {counted.by.name} at {counted.at}" if counted is not None else "not waiting any more"
            raise ApplicationError(f"not counted: the gate was {first}")
        return checked

    @decide.validator
    def _decidable(self, decision: c.Decision) -> None:
        """Refused before it enters history: a decision for a gate the run does not wait at."""
        key = (decision.step, decision.item)
        if self._start is None or decision.run_id != self._start.run_id or key not in self._waiting:
            waiting = ", ".join(w.label for w in self._waiting.values()) or "none"
            raise ValueError(f"run {decision.run_id} does not wait at {decision.step}; it waits at: {waiting}")
        if key in self._decided:
            raise ValueError(f"the gate of {self._waiting[key].label} was decided already")

    @workflow.run
    async def run(self, start: c.RunStart) -> c.Ending:
        if not start.run_id:  # started by a schedule: a run id of its own each time, drawn deterministically
            chance = f"{workflow.random().randrange(16**4):04x}"
            start = dataclasses.replace(start, run_id=new_run_id(start.runbook, workflow.now(), chance))
            workflow.upsert_memo(c.memo(start))  # the schedule gave no memo: visibility lists the run by this id
        self._start = start
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
        self._worker = opened.worker
        for number, section in enumerate(opened.sections):
            self._at = number
            ref = c.SectionRef(start.run_id, number, start)
            items: c.Items = await self._on_worker(c.ITEMS, ref, _SHORT, result_type=c.Items)
            self._events += items.events
            failure = await self._section(start, number, section, items.count)
            if failure is None:
                await self._on_worker(c.END_SECTION, ref, _SHORT)
                continue
            return self._warned(await self._close(start, failure), opened)
        self._at = len(opened.sections)
        return self._warned(await self._close(start, None), opened)

    async def _on_worker(
        self, name: str, arg: object, timeout: timedelta, *, result_type: type | None = None, activity_id: str = ""
    ) -> object:
        """Activity ``name`` of the run on the worker holding it; when that worker is lost (the activity
        waited there a heartbeat's time, no worker taking it), the run is taken over by another worker
        and the activity goes there."""
        start = self._start
        assert start is not None
        while True:
            worker = self._worker
            self._flying[worker] = self._flying.get(worker, 0) + 1
            try:
                return await workflow.execute_activity(
                    name,
                    arg,
                    result_type=result_type,
                    activity_id=activity_id or None,
                    task_queue=worker,
                    schedule_to_start_timeout=timedelta(seconds=start.heartbeat_seconds),
                    **self._options(start, timeout),
                )
            except ActivityError as error:
                if not (isinstance(error.cause, ActivityTimeout) and error.cause.type == TimeoutType.SCHEDULE_TO_START):
                    raise
            finally:
                self._flying[worker] -= 1
            await self._take_over(start, worker)

    async def _take_over(self, start: c.RunStart, lost: str) -> None:
        """Have any worker of the cluster's queue take the run over from ``lost``, once nothing of the run
        runs there any more (a worker that was slow rather than lost finishes what it had first)."""
        if self._taking:
            await workflow.wait_condition(lambda: not self._taking)
        if self._worker != lost:
            return  # another activity of the run had it taken over already
        self._taking = True
        try:
            await workflow.wait_condition(lambda: self._flying.get(lost, 0) == 0)
            self._say(
                f"the worker holding the run ({lost}) took none of its activities for {start.heartbeat_seconds:g}s: "
                "another worker of the queue takes the run over from its journal"
            )
            ref = c.SectionRef(start.run_id, self._at, start)
            taken: c.Taken = await workflow.execute_activity(
                c.TAKE, ref, result_type=c.Taken, **self._options(start, _SHORT)
            )
            self._events += taken.events
            self._worker = taken.worker
            self._say(f"the run is now held by worker {taken.worker}")
        finally:
            self._taking = False

    def _say(self, text: str) -> None:
        """A progress line of the run itself (not of one step) for the CLI following it."""
        entry = {"step_id": "run", "kind": "run", "title": None, "line": 0, "item_key": None}
        self._events.append(c.Event("progress", {**entry, "reason": text}))

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
                running[asyncio.ensure_future(self._task(ref, _activity_id(number, task)))] = task
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
                self._stopping = True
                cause = error.cause if isinstance(error, ActivityError) else error
                if not isinstance(cause, ApplicationError):
                    cause = ApplicationError(str(cause), type=c.STEP_FAILED)
                if cause.details:
                    self._events += [c.Event(**event) for event in cause.details[0]]
                first = first or cause
        return first

    async def _task(self, ref: c.TaskRef, activity_id: str) -> c.TaskDone:
        """One step item's activity (``activity_id``: it holds the item's clone slots); when it meets a gate
        nobody approved, wait for the decision, then run it again with the approval (the same id: the same
        item), or end it (rejected: nothing of the step ran)."""
        limit = timedelta(seconds=ref.start.step_timeout_seconds)
        while True:
            try:
                done: c.TaskDone = await self._on_worker(
                    c.TASK, ref, limit, result_type=c.TaskDone, activity_id=activity_id
                )
                return done
            except ActivityError as error:
                cause = error.cause
                if not (isinstance(cause, ApplicationError) and cause.type == c.GATE_WAITS):
                    raise
            self._events += [c.Event(**event) for event in cause.details[0]]
            waiting = c.Waiting(**cause.details[1])
            waiting.since = workflow.now().strftime("%Y-%m-%dT%H:%M:%SZ")
            waiting.workflow_id = workflow.info().workflow_id
            key = (waiting.step, waiting.item)
            self._waiting[key] = waiting
            workflow.upsert_memo({c.MEMO_STATUS: "waiting"})  # ``runbook runs --temporal`` shows it waits
            self._note(waiting, f"waits for approval: runbook approve {ref.run_id} {_named(waiting)} (or reject)")
            try:
                await workflow.wait_condition(
                    lambda key=key: key in self._decided or self._stopping,
                    timeout=timedelta(seconds=ref.start.approval_timeout_seconds),
                )
            except TimeoutError:
                self._decided[key] = self._timed_out(ref.start, waiting)
            del self._waiting[key]
            if not self._waiting:
                workflow.upsert_memo({c.MEMO_STATUS: None})  # running again: no status until the run's end
            if key not in self._decided:  # another task of the section failed or was rejected meanwhile
                self._note(waiting, "not run: the run stopped before anyone decided")
                raise ApplicationError(
                    f"gated step '{waiting.label}' not run: the run stopped before anyone decided", type=c.STEP_FAILED
                )
            decision = self._decided[key]
            said = f"{decision.by.name} ({decision.by.how}) at {decision.at}"
            if not decision.approve:
                self._rejected = self._rejected or decision
                self._note(waiting, f"rejected by {said}")
                why = f": {decision.reason}" if decision.reason else ""
                raise ApplicationError(
                    f"gated step '{waiting.label}' was rejected by {said}{why}; nothing of it ran",
                    type=c.GATE_REJECTED,
                )
            self._note(waiting, f"approved by {said}")
            ref = dataclasses.replace(ref, decision=decision)

    @staticmethod
    def _timed_out(start: c.RunStart, waiting: c.Waiting) -> c.Decision:
        """The rejection a gate gets when nobody decided within ``gates.approval_timeout``."""
        took = f"{start.approval_timeout_seconds:g}s"
        return c.Decision(
            start.run_id,
            waiting.step,
            waiting.item,
            False,
            c.Identity("nobody", how="gates.approval_timeout"),
            f"no decision within {took} (gates.approval_timeout)",
            workflow.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "unauthenticated",
        )

    def _note(self, waiting: c.Waiting, text: str) -> None:
        entry = {"step_id": waiting.step, "kind": "gate", "title": None, "line": 0, "item_key": waiting.item}
        self._events.append(c.Event("progress", {**entry, "reason": text}))

    async def _close(self, start: c.RunStart, failure: ApplicationError | None) -> c.Ending:
        status = "succeeded"
        if failure is not None:
            status = "stopped_at_gate" if failure.type == c.GATE_STOP else "failed"
        message = failure.message if failure is not None else ""
        close = c.Close(start.run_id, status, message, start, self._rejected)
        ending: c.Ending = await self._on_worker(c.CLOSE, close, _SHORT, result_type=c.Ending)
        return ending

    @staticmethod
    def _options(start: c.RunStart, timeout: timedelta) -> dict:
        return {
            "start_to_close_timeout": timeout,
            "heartbeat_timeout": timedelta(seconds=start.heartbeat_seconds),
            "retry_policy": RetryPolicy(
                initial_interval=timedelta(seconds=1),
                maximum_interval=timedelta(seconds=30),
                maximum_attempts=ATTEMPTS,
                non_retryable_error_types=[c.STEP_FAILED, c.GATE_STOP, c.PROBLEMS, c.REFUSED, c.GATE_WAITS],
            ),
        }


def _named(waiting: c.Waiting) -> str:
    """The STEP argument of ``runbook approve`` for this gate: ``step`` or ``step[item]``."""
    return waiting.step if waiting.item is None else f"'{waiting.step}[{waiting.item}]'"


def _activity_id(section: int, task: Task) -> str:
    """A step item's activity id, which holds its clone slots (``SlotAsk.holder``)."""
    return f"task-{section}-{task.item}-{task.stage}"
