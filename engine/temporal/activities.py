"""The worker's side of a run on Temporal: every activity, and what the worker keeps of each run.

A step item is one activity (``run_task``), never the whole runner. The activity renders the step
itself, on the worker, from the run's inputs and the outputs of the steps before it, exactly as the
local step loop does (``Runner.run_task``); those outputs stay on the worker, in memory and in the
run's journal in the worker's home (``.runbook/runs/RUN_ID/``, the local format, so ``runs show``
and the HTML report read it as they read a local run). The history gets progress events without
outputs (a ``show`` step's output, masked, excepted) and a digest of each output.

A run sticks to the worker that opened it (the workflow sends its activities to that worker's own
task queue, ``worker``). A worker that takes over a run another worker began (that one was lost:
``take_run``) reads the run back from the journal as ``runbook resume`` does
(``execution.reopen_run``), naming itself the journal's holder first so the worker before it can
write no more of it; so the workers of one queue share one home (one machine, or a shared folder):
see docs/temporal.md. The task a step started is in the activity's heartbeat (its UPID): the retry
follows that task to its end instead of sending the step again.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from .. import exitcodes
from ..errors import RunbookError
from ..load.config import ClusterConfig
from ..load.home import Home
from ..load.problems import InputError
from ..report.changes import change_lines
from ..run.dispatch import Dispatcher
from ..run.execution import Begun, Outcome, begin_run, check_plan, plan_expected, reopen_run
from ..run.journal import RUN_FILE, UnknownRun
from ..run.preview import Previewer
from ..run.runner import GateStop, PlanDiverged, PlanEntry, StepError
from ..run.schedule import CloneLimits, Task, width
from ..run.secretparams import SecretInput
from ..run.sections import Section
from ..runbook.actions import StepFailed, TaskFollow, action_from_dict
from . import contract as c
from .approvals import Approvals, GateWaits, check, detail
from .settings import four_eyes, settings
from .slots import WorkflowSlots

_EXIT = {"succeeded": exitcodes.OK, "failed": exitcodes.FAILED, "stopped_at_gate": exitcodes.GATE}


@dataclass
class _Section:
    """The section the run is in: its items (rendered on this worker) and its steps' outputs so far."""

    number: int
    items: list[Any]
    keys: list[str | None]
    outputs: dict[str, list[Any]]


@dataclass
class _Run:
    """One run as this worker holds it."""

    start: c.RunStart
    begun: Begun
    sections: list[Section]
    dispatcher: Dispatcher
    resources: ExitStack
    approvals: Approvals
    lock: threading.Lock = field(default_factory=threading.Lock)
    current: _Section | None = None


#: The last progress events an activity's heartbeat carries (the follower prints them as they happen).
BEAT_EVENTS = 50


class _Beat(threading.local):
    """What the activity running on this thread reports: its events (masked with ``masker``, numbered
    from ``prefix``), and the task its step started (``task[0]``); ``wake`` makes its heartbeat thread
    send both now."""

    events: list[c.Event] | None = None
    masker: Any = None
    task: list[dict[str, Any] | None] | None = None
    prefix: str = ""
    wake: threading.Event | None = None


class Activities:
    """The activities of one worker, serving one home (its cluster-config.yaml: one cluster)."""

    def __init__(self, home: Home, config: ClusterConfig, client: Client, worker: str):
        self.home = home
        self.config = config
        self.worker = worker  # this worker's own task queue, where the runs it holds send their activities
        limits = config.data.get("limits") or {}
        # Clone limits hold across the run's workers: its slots are held in its workflow.
        self._slots = WorkflowSlots(
            CloneLimits(limits.get("clones_per_template"), limits.get("clones_per_storage")),
            client,
            asyncio.get_running_loop(),
        )
        self._runs: dict[str, _Run] = {}
        self._runs_lock = threading.Lock()
        self._beat = _Beat()

    def all(self) -> list[Any]:
        return [
            self.open_run,
            self.take_run,
            self.section_items,
            self.run_task,
            self.end_section,
            self.close_run,
            self.check_decision,
        ]

    # ------------------------------------------------------------------ the activities

    @activity.defn(name=c.OPEN)
    def open_run(self, start: c.RunStart) -> c.Opened:
        """Make the run (the same checks as a local run, before its first change) and say its sections."""
        with self._beating(start):
            made = (self.home.state_dir / "runs" / start.run_id / RUN_FILE).exists()
            if start.resume:
                resumed = self._resumed(start, made)
                if isinstance(resumed, c.Opened):
                    return resumed
                run = resumed
            elif made:
                run = self._run(start, 0)  # this activity was retried after the run was made
            else:
                resources = ExitStack()
                approver = self._approvals(start)
                try:
                    dispatcher = self._dispatcher(start, resources)
                    begun = self._begin(start, dispatcher, approver)
                except RunbookError as exc:  # the home, the runbook, its inputs: nothing to retry
                    resources.close()
                    said = "\n".join(line.removeprefix("error: ") for line in exc.lines())
                    ending = c.Ending("failed", exc.exit_code, said)
                    return c.Opened(events=self._taken(), outcome=ending)
                except BaseException:
                    resources.close()
                    raise
                if isinstance(begun, Outcome):
                    resources.close()
                    ending = c.Ending(
                        begun.status, begun.exit_code, begun.message, begun.warnings + dispatcher.warnings
                    )
                    return c.Opened(events=self._taken(), outcome=ending)
                run = self._keep(start, begun, dispatcher, resources, approver)
            plans = [
                c.SectionPlan([step.id for step in section.steps], width(section.steps[0], start.concurrency, False))
                for section in run.sections
            ]
            meta = run.begun.record.meta.as_dict()
            return c.Opened(plans, self._taken(), run.begun.warnings, worker=self.worker, meta=meta)

    @activity.defn(name=c.TAKE)
    def take_run(self, ref: c.SectionRef) -> c.Taken:
        """Take the run over from a worker that was lost: read it back from its journal (this worker named
        its holder first), caught up to the section it is in; its later activities come here."""
        with self._beating(ref.start):
            self._let_go(ref.run_id)  # what this worker held of it before is stale: read anew
            self._run(ref.start, ref.section)
            return c.Taken(self.worker, self._taken())

    def _begin(self, start: c.RunStart, dispatcher: Dispatcher, approver: Approvals) -> Begun | Outcome:
        """``begin_run``; for a saved plan (``runbook apply``), after the checks ``apply_plan`` makes
        (inputs, cluster, what it was planned against), each changing step held to what the plan reviewed."""
        secrets = SecretInput(start.secret_sources)
        prepared, expected, given = None, None, start.params
        if start.plan is not None:
            checked = check_plan(self.home, start.plan, start.plan_file, dispatcher, secrets)
            if isinstance(checked, Outcome):
                return checked
            session, cluster, given = checked
            prepared, expected = (session, cluster), plan_expected(start.plan)
        return begin_run(
            self.home,
            start.runbook,
            start.profile,
            given,
            run_id=start.run_id,
            dispatcher=dispatcher,
            approver=approver,
            ahead=approver.ahead,
            mode="simulate" if start.simulate else "run",
            on_event=self._on_event,
            concurrency=start.concurrency,
            secrets=secrets,
            expected=expected,
            prepared=prepared,
            holder=self.worker,
        )

    @activity.defn(name=c.ITEMS)
    def section_items(self, ref: c.SectionRef) -> c.Items:
        """Render the section's ``foreach`` (with the facts and outputs so far): how many items it has."""
        with self._beating(ref.start):
            run = self._run(ref.start, ref.section)
            with run.lock:
                current = self._section(run, ref.section)
            return c.Items(len(current.items), self._taken())

    @activity.defn(name=c.TASK)
    def run_task(self, ref: c.TaskRef) -> c.TaskDone:
        """One step of one item: render, guards, gate, execute, journal; what the step loop does for it."""
        with self._beating(ref.start):
            run = self._run(ref.start, ref.section)
            if ref.decision is not None:
                run.approvals.decisions[(ref.decision.step, ref.decision.item)] = ref.decision
            with run.lock:
                current = self._section(run, ref.section)
                section = run.sections[ref.section]
                for stage in range(ref.stage):  # a pipeline item's earlier steps, when another worker ran them
                    if not run.begun.runner.has_output(current.outputs, section.steps[stage].id, ref.item):
                        self._task(run, current, Task(ref.item, stage))
            self._followed(run, section, current, ref)
            self._task(run, current, Task(ref.item, ref.stage))
            return c.TaskDone(self._taken())

    @activity.defn(name=c.END_SECTION)
    def end_section(self, ref: c.SectionRef) -> None:
        """The section is through: its outputs become ``steps.<id>`` for the sections after it."""
        with self._beating(ref.start):
            run = self._run(ref.start, ref.section)
            with run.lock:
                current = self._section(run, ref.section)
                section = run.sections[ref.section]
                for item in range(len(current.items)):  # items another worker ran: their outputs, from the journal
                    for stage, step in enumerate(section.steps):
                        if not run.begun.runner.has_output(current.outputs, step.id, item):
                            self._task(run, current, Task(item, stage))
                run.begun.runner.end_section(section, current.keys, current.outputs)
                run.current = None

    @activity.defn(name=c.CLOSE)
    def close_run(self, close: c.Close) -> c.Ending:
        """Record how the run ended in its journal and let go of what the worker held for it."""
        with self._beating(close.start):
            run = self._run(close.start, None)
            try:
                rejected = close.rejected
                if rejected is not None:
                    run.begun.record.gate_rejected(
                        rejected.step, rejected.item, rejected.by.name, rejected.reason, **detail(rejected)
                    )
                run.begun.record.run_finished(close.status)
            finally:
                self._let_go(close.run_id)
            message = close.message or f"run {close.run_id} succeeded"
            return c.Ending(close.status, _EXIT[close.status], message, list(run.dispatcher.warnings))

    @activity.defn(name=c.CHECK_DECISION)
    def check_decision(self, asked: c.DecisionCheck) -> c.Decision:
        """Who approves or rejects, as this worker checks it (their certificate against its CA for clients),
        and whether ``gates.four_eyes`` lets them; a refusal, said, is never retried."""
        found = settings(self.config.data, None, self.home.root)
        client_ca = found.tls.client_ca_file if found is not None and found.tls is not None else None
        try:
            return check(asked.decision, asked.start, client_ca, four_eyes(self.config.data))
        except ValueError as refused:
            raise ApplicationError(str(refused), type=c.REFUSED, non_retryable=True) from None

    # ------------------------------------------------------------------ the run as this worker holds it

    def _approvals(self, start: c.RunStart) -> Approvals:
        return Approvals(start, lambda entry: self._changes(start.run_id, entry), four_eyes(self.config.data))

    def _changes(self, run_id: str, entry: PlanEntry) -> list[str]:
        """The change set of a gated item, as the dry-run's review shows it (read live, read-only)."""
        run = self._runs.get(run_id)
        if run is None or entry.action is None:
            return []
        try:
            found = Previewer(run.begun.session.facts, run.dispatcher)(action_from_dict(entry.action), entry.step_id)
        except StepFailed as failure:
            return [f"  (its change set could not be read: {failure.message})"]
        lines = change_lines([dataclasses.replace(change, step=entry.step_id, item=entry.item_key) for change in found])
        return list(run.dispatcher.masker.mask_data(lines))

    def _dispatcher(self, start: c.RunStart, resources: ExitStack) -> Dispatcher:
        """The run's executors: the real cluster's, with this worker's credentials, or the simulated one."""
        if not start.simulate:
            dispatcher = Dispatcher(self.config.data, self.home.root)
            resources.callback(dispatcher.close)
            self._beat.masker = dispatcher.masker
            return dispatcher
        from ..sim.wiring import Simulation

        simulation = resources.enter_context(Simulation(self.home, self.config, start.run_id))
        dispatcher = simulation.dispatcher()
        resources.callback(dispatcher.close)
        self._beat.masker = dispatcher.masker
        return dispatcher

    def _resumed(self, start: c.RunStart, made: bool) -> c.Opened | _Run:
        """``runbook resume`` of a run on Temporal: read back from its journal as a local resume reads it
        (finished steps are not redone); a run this home does not hold, or one that cannot be read back
        (the cluster unreachable), ends the resume with nothing run and says why."""
        if made:
            self._let_go(start.run_id)  # what an earlier workflow of the run left held here: read anew
            try:
                return self._run(start, 0)
            except RunbookError as exc:
                said = f"cannot resume run {start.run_id}: {exc}\nNothing ran: once that is resolved, resume again"
        else:
            said = (
                f"the workers' home does not hold run {start.run_id}: a run on Temporal is resumed by the workers "
                "of its task queue, which share the home holding its journal (docs/temporal.md). Nothing ran"
            )
        return c.Opened(events=self._taken(), outcome=c.Ending("failed", exitcodes.NOT_STARTED, said))

    def _let_go(self, run_id: str) -> None:
        """Close what this worker holds of the run (its journal, executors), if anything."""
        with self._runs_lock:
            run = self._runs.pop(run_id, None)
        if run is not None:
            try:
                run.begun.record.close()
            finally:
                run.resources.close()

    def _keep(
        self, start: c.RunStart, begun: Begun, dispatcher: Dispatcher, resources: ExitStack, approvals: Approvals
    ) -> _Run:
        runner = begun.runner
        runner.journal = _Heartbeating(runner.journal, self._beat, approvals)
        runner.limits = self._slots  # type: ignore[assignment]
        run = _Run(start, begun, runner.sections(), dispatcher, resources, approvals)
        self._runs[start.run_id] = run
        return run

    def _run(self, start: c.RunStart, section: int | None) -> _Run:
        """The run as this worker holds it; read back from its journal when another worker began it, and
        caught up to ``section`` (None: only to be closed)."""
        with self._runs_lock:
            run = self._runs.get(start.run_id)
            if run is not None:
                self._beat.masker = run.dispatcher.masker
                return run
            resources = ExitStack()
            approvals = self._approvals(start)
            try:
                dispatcher = self._dispatcher(start, resources)
                begun = reopen_run(
                    self.home,
                    start.run_id,
                    dispatcher=dispatcher,
                    approver=approvals,
                    on_event=self._on_event,
                    concurrency=start.concurrency,
                    secrets=SecretInput(start.secret_sources),
                    expected=plan_expected(start.plan) if start.plan is not None else None,
                    holder=self.worker,
                )
            except UnknownRun:
                resources.close()
                # Retried: another worker of the queue may hold it. Never rebuilt from nothing here.
                raise ApplicationError(
                    f"this worker's home ({self.home.root}) does not hold run {start.run_id}: the workers of one "
                    "task queue must share one home (docs/temporal.md)",
                    type="RunNotHere",
                ) from None
            except BaseException:
                resources.close()
                raise
            run = self._keep(start, begun, dispatcher, resources, approvals)
            for earlier in run.sections[: section or 0]:
                # The sections the workflow went through, the usual way (steps finished are not
                # redone, read-only steps read again), so the steps after them see their outputs.
                self._guarded(lambda earlier=earlier: run.begun.runner.run_section(earlier))
            return run

    def _section(self, run: _Run, number: int) -> _Section:
        """The section ``number`` of the run, its items rendered once (on the first ask)."""
        if run.current is None or run.current.number != number:
            section = run.sections[number]
            items, keys = self._guarded(lambda: run.begun.runner.section_items(section))
            run.current = _Section(number, items, keys, run.begun.runner.pending_outputs(section, len(items)))
        return run.current

    def _task(self, run: _Run, current: _Section, task: Task) -> None:
        section = run.sections[current.number]
        self._guarded(lambda: run.begun.runner.run_task(section, current.items, current.keys, current.outputs, task))

    def _followed(self, run: _Run, section: Section, current: _Section, ref: c.TaskRef) -> None:
        """A retried step whose earlier attempt started a PVE task (its UPID in the last heartbeat): follow
        that task to its end and take its result as the step's, instead of sending the step again. A task
        that failed, or a step that post-processes its result (``extract``, ``json``), is left to the
        step's ``check``, as a resume does (``engine.run.settle``)."""
        details = activity.info().heartbeat_details
        task = details[0] if details and isinstance(details[0], dict) else None
        step = section.steps[ref.stage]
        key = current.keys[ref.item]
        runner = run.begun.runner
        if task is None or task.get("step") != step.id or task.get("item") != key or (step.id, key) in runner.done:
            return
        if {"extract", "json"} & set(step.attrs):
            return
        note = self._note(step.id, key)
        note(f"following task {task['upid']} that the step started before its worker was lost")
        try:
            output = runner.executor.execute(TaskFollow(task["upid"]), note).data  # type: ignore[union-attr]
        except StepFailed as failure:
            if not (isinstance(failure.data, dict) and failure.data.get("exitstatus")):
                raise
            return
        run.begun.record.step_finished(step.id, key, output, 0.0)
        runner.done[(step.id, key)] = output

    # ------------------------------------------------------------------ what the activity reports

    def _on_event(self, kind: str, entry: PlanEntry) -> None:
        """The runner's progress, into the events of the activity running on this thread."""
        events = self._beat.events
        if events is not None:
            event = _event(kind, entry, self._beat.masker)
            event.seq = f"{self._beat.prefix}.{len(events)}"
            events.append(event)
            if self._beat.wake is not None:
                self._beat.wake.set()  # the line is in the next heartbeat, where the follower reads it

    def _note(self, step: str, key: str | None) -> Any:
        entry = PlanEntry(step, "api", None, 0, item_key=key)

        def note(text: str) -> None:
            entry.reason = text
            self._on_event("progress", entry)

        return note

    def _taken(self) -> list[c.Event]:
        events = self._beat.events or []
        self._beat.events = []
        return events

    @contextmanager
    def _beating(self, start: c.RunStart) -> Iterator[None]:
        """Heartbeat while the activity runs (a third of the timeout apart, and at each progress event),
        with the task its step started and its last events: a lost worker is noticed quickly, the next
        attempt can follow that task, and the CLI following the run prints each line as it happens
        (the SDK sends at most one heartbeat a second: ``worker.HEARTBEAT_THROTTLE``)."""
        task: list[dict[str, Any] | None] = [None]
        events: list[c.Event] = []
        stop, wake = threading.Event(), threading.Event()
        info = activity.info()
        self._beat.events, self._beat.task, self._beat.masker, self._beat.wake = events, task, None, wake
        # An item's activity runs again under its id once its gate is decided: the scheduling tells them apart.
        self._beat.prefix = f"{info.activity_id}.{info.attempt}.{info.scheduled_time:%H%M%S%f}"
        context = contextvars.copy_context()  # the activity's context: heartbeat() works from the thread

        def loop() -> None:
            while True:
                wake.wait(max(0.2, start.heartbeat_seconds / 3))
                wake.clear()
                if stop.is_set():
                    return
                context.run(activity.heartbeat, task[0], [_as_dict(event) for event in events[-BEAT_EVENTS:]])

        thread = threading.Thread(target=loop, name="runbook-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            wake.set()
            thread.join()
            self._beat.wake = None

    def _guarded(self, work: Any) -> Any:
        """Run ``work``; what the run decided (a step failed, a gate, a problem) ends the activity for
        good (never retried), with the events so far; anything else is retried by Temporal."""
        try:
            return work()
        except StepError as exc:
            raise self._final(c.STEP_FAILED, f"step '{exc.entry.label}' failed: {exc.message}") from None
        except GateStop as stop:
            entry = stop.entry
            raise self._final(
                c.GATE_STOP,
                f"stopped before gated step '{entry.label}' ({'; '.join(entry.gate_reasons)}); nothing of it "
                f"ran. Approve it when starting the run: --approve {entry.step_id} (or --yes)",
            ) from None
        except InputError as exc:
            raise self._final(c.PROBLEMS, "\n".join(str(p) for p in exc.problems)) from None
        except PlanDiverged as diverged:
            entry = diverged.entry
            raise self._final(
                c.REFUSED,
                f"step '{entry.label}' is not what the plan reviewed: {entry.error}; nothing of it was sent. "
                "The cluster or a step's output moved between the review and now: review again, then apply "
                "the new plan",
            ) from None
        except GateWaits as waits:
            raise self._final(
                c.GATE_WAITS, f"gated step '{waits.waiting.label}' waits for approval", waits.waiting
            ) from None

    def _final(self, kind: str, message: str, *more: Any) -> ApplicationError:
        events = [_as_dict(event) for event in self._taken()]
        return ApplicationError(message, events, *more, type=kind, non_retryable=True)


class _Heartbeating:
    """The run's journal, telling the heartbeat of the activity on this thread which task its step started."""

    def __init__(self, journal: Any, beat: _Beat, approvals: Approvals):
        self._journal = journal
        self._beat = beat
        self._approvals = approvals

    def gate_approved(self, step: str, item: str | None, by: str | None = None) -> None:
        """With how the approver was authenticated, and when, for an approval given while the run waited."""
        self._journal.gate_approved(step, item, by, **self._approvals.record)

    def task_started(self, step: str, item: str | None, upid: str, node: str) -> None:
        self._journal.task_started(step, item, upid, node)
        holder = self._beat.task
        if holder is not None:
            holder[0] = {"step": step, "item": item, "upid": upid, "node": node}
            if self._beat.wake is not None:
                self._beat.wake.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._journal, name)


def _event(kind: str, entry: PlanEntry, masker: Any) -> c.Event:
    """A progress event as it enters history: the entry without its output (a ``show`` step's, masked,
    excepted), and the output's digest."""
    data = entry.as_dict()
    output = data.pop("output", None)
    digest = None
    if kind == "step" and output is not None:
        text = json.dumps(output, sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()
        if entry.show:
            data["output"] = masker.mask_data(output) if masker is not None else None
    return c.Event(kind, json.loads(json.dumps(data, default=str)), digest)


def _as_dict(event: c.Event) -> dict[str, Any]:
    return {"kind": event.kind, "entry": event.entry, "output_sha256": event.output_sha256, "seq": event.seq}
