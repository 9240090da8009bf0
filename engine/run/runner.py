"""Running a runbook: for each step, render -> check -> gate -> execute -> record.

The same loop makes a dry-run plan and a real run, so the two cannot disagree. In a dry-run no
mutating request or command leaves the machine: read-only steps (API GETs, steps marked
``readonly``) may run against a reachable cluster so the plan shows real values, and with
``offline`` nothing runs at all; values only a later step can produce stay visible unknowns.

Concurrency (real runs only; a plan is always made one item at a time, step by step):

- A ``foreach`` step with ``parallel: N`` runs up to N items at once. Its items are rendered,
  checked and gated one after the other, in order, before any of them runs, so gate questions
  never interleave and a declined gate leaves the items before it to run, as a sequential run
  would. Then the items run on worker threads.
- Consecutive ``foreach`` steps with the same ``pipeline: NAME`` (and the same ``foreach``) run
  as a pipeline: each item goes through the steps in order, items run at once up to the first
  step's ``parallel``. Each step of each item still renders just before it runs, with the
  outputs of the steps before it. Gated steps are refused in a pipeline, and every step of a
  pipeline that changes something needs a ``check`` (see ``engine.run.sections``).
- ``concurrency`` (``runbook run --concurrency``) bounds every one of these for the whole run.
- The first failure stops new work: no item starts and no item begins its next step; the steps
  already running finish and are journaled, then the run stops with that failure.
- Clones are limited per template and per storage (``limits`` in cluster-config.yaml), and a
  failure PVE gives because a lock is held is retried with jittered exponential backoff, up to
  ``limits.lock_retries`` times in concurrent steps (``retries`` on any step).

This module keeps the step loop; what it leans on lives next to it: how steps group into sections
and pipelines (``engine.run.sections``), what may run next (``engine.run.schedule``: widths,
pipelines, stop on the first failure, clone limits, as data without threads), the worker threads
and clone slots that carry those decisions out (``engine.run.concurrency``), and the one retry loop
with its backoff (``engine.run.retry``).
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

from .. import exitcodes
from ..errors import RunbookError
from ..executors.base import Change, Executes
from ..executors.preview import declared_changes
from ..executors.shell import parse_json_output
from ..load.problems import InputError, Problem
from ..runbook.actions import Action, ApiRequest, Result, StepFailed, action_as_dict
from ..runbook.calls import has_when
from ..runbook.context import with_facts
from ..runbook.extract import ExtractRefused, apply_extract, extract_scope
from ..runbook.model import SELF_CHECKING_KINDS, Runbook, Step
from ..runbook.render import Renderer, StepOutputs, reads_facts
from ..runbook.stepcheck import rendered_problems
from ..runbook.unknown import Unknown, UnknownValue, contains_unknown
from . import topass
from .concurrency import CloneSlots, run_schedule
from .gates import gate_reasons
from .livefacts import LiveFacts, PlannedFacts
from .retry import Backoff, Policy, retry
from .schedule import Schedule, Task, plan_order, width
from .sections import Section, reads_only, sections
from .topass import PassSink, PassWriteFailed

#: The run-level bound on items running at once when the operator gives no --concurrency.
DEFAULT_CONCURRENCY = 16
#: Lock failures retried in concurrent steps when cluster-config.yaml says nothing (limits.lock_retries).
DEFAULT_LOCK_RETRIES = 5
#: First pause before retrying a lock failure (seconds), doubled each time up to LOCK_BACKOFF_CAP, jittered.
LOCK_BACKOFF = 1.0
LOCK_BACKOFF_CAP = 30.0
#: First pause before a step's ``retries`` try again (seconds), doubled each time up to RETRY_BACKOFF_CAP, jittered.
RETRY_BACKOFF = 0.2
RETRY_BACKOFF_CAP = 5.0


class Recorder(Protocol):
    """Where a real run writes its journal (``engine.run.journal.RunRecord``); called from several threads
    when steps run concurrently, so it must append one whole record at a time."""

    def step_started(self, step: str, item: str | None, action: dict[str, Any]) -> None: ...
    def task_started(self, step: str, item: str | None, upid: str, node: str) -> None: ...
    def step_finished(self, step: str, item: str | None, outputs: Any, duration: float) -> None: ...
    def step_skipped(self, step: str, item: str | None, reason: str) -> None: ...
    def step_failed(self, step: str, item: str | None, error: str, duration: float) -> None: ...
    def gate_waiting(self, step: str, item: str | None) -> None: ...
    def gate_approved(self, step: str, item: str | None, by: str | None = None) -> None: ...


class _Unrecorded:
    """The journal of a plan (or of a runner given none): records nothing."""

    def step_started(self, step: str, item: str | None, action: dict[str, Any]) -> None:
        pass

    def step_finished(self, step: str, item: str | None, outputs: Any, duration: float) -> None:
        pass

    def step_skipped(self, step: str, item: str | None, reason: str) -> None:
        pass

    def step_failed(self, step: str, item: str | None, error: str, duration: float) -> None:
        pass

    def gate_waiting(self, step: str, item: str | None) -> None:
        pass

    def gate_approved(self, step: str, item: str | None, by: str | None = None) -> None:
        pass

    def task_started(self, step: str, item: str | None, upid: str, node: str) -> None:
        pass


class Approver(Protocol):
    who: str | None

    def approve(self, entry: PlanEntry) -> bool:
        """True to run the gated step; False stops the run before it."""


@dataclass
class PlanEntry:
    """One step (or one loop item of a step) as planned or as run."""

    step_id: str
    kind: str
    title: str | None
    line: int
    item_key: str | None = None
    status: str = "pending"  # run | skipped | unknown | succeeded | failed | stopped_at_gate | would_run
    reason: str = ""
    action: dict[str, Any] | None = None
    display: str = ""
    gated: bool = False
    gate_reasons: list[str] = field(default_factory=list)
    output: Any = None
    error: str | None = None
    duration: float | None = None
    show: bool = False  # the operator came for this step's output: print it with the progress
    item_label: str | None = None  # how the operator knows the loop item (its name), when item_key is not it
    waits_for: list[str] = field(default_factory=list)  # in a plan: the earlier steps whose doing this step needs

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}

    @property
    def label(self) -> str:
        """The step as the operator reads it: ``vm_status[stg-cp01]``, ``rolling_upgrade[stg-cp01 upgrade]``."""
        item = self.item_label or self.item_key
        return self.step_id + (f"[{item}]" if item else "")


class GateStop(Exception):
    """The run stopped before a gated step that was not approved."""

    def __init__(self, entry: PlanEntry):
        super().__init__(entry.step_id)
        self.entry = entry


class PlanDiverged(Exception):
    """Applying a saved plan, a changing step would do what the plan did not review; nothing of it was sent."""

    def __init__(self, entry: PlanEntry):
        super().__init__(entry.step_id)
        self.entry = entry


class StepError(RunbookError):
    """A step failed; the run stops here and can be resumed."""

    exit_code = exitcodes.FAILED

    def __init__(self, entry: PlanEntry, message: str):
        super().__init__(message)
        self.entry = entry
        self.message = message


def display(action: Action) -> str:
    """A human-readable form of what would be sent or run."""
    data = action_as_dict(action)
    kind = data.pop("type")
    if kind == "ApiRequest":
        params = " ".join(f"{k}={v}" for k, v in action.params.items())  # type: ignore[union-attr]
        return f"{data['method']} {data['path']}" + (f"  {params}" if params else "")
    if kind == "ShellCommand":
        where = f"on {data['node']}" if data["node"] else "locally"
        return f"({where})\n{data['script'].rstrip()}"
    if kind == "TalosctlCommand":
        return "talosctl " + " ".join(json.dumps(a) if (" " in a or not a) else a for a in data["argv"])
    if kind == "FileWrite":
        where = f"on {data['node']}" if data["node"] else "locally"
        head = (
            f"write {data['path']} ({where}, mode {data['mode']}, {data['size']} bytes, sha256 {data['sha256'][:16]})"
        )
        if data["content"] is None:
            return head + "\n(content not shown: secret)"
        return f"{head}\n{data['content'].rstrip()}"
    return f"{data['method']} {data['url']}" + (f"\n{data['body'].rstrip()}" if data["body"] else "")


def is_readonly(step: Step, action: Action) -> bool:
    if step.attrs.get("readonly"):
        return True
    return isinstance(action, ApiRequest) and action.method == "GET"


_STEP_READ = re.compile(r"\bsteps\s*(?:\.\s*(?P<dot>[A-Za-z_]\w*)|\[\s*['\"](?P<key>[A-Za-z_]\w*)['\"]\s*\])")
_VMID_IN_PATH = re.compile(r"/(?:qemu|lxc)/(?P<vmid>\d+)(?:/|$)")


def steps_read(step: Step) -> set[str]:
    """The ids of the steps whose output ``step`` reads (``steps.X`` or ``steps['X']`` in its attributes or body), found statically."""
    texts = [step.body, *(str(value) for value in step.attrs.values())]
    return {m["dot"] or m["key"] for text in texts for m in _STEP_READ.finditer(text)}


def _waits_text(waits_for: list[str], reason: str) -> str:
    if not waits_for:
        return reason
    names = ", ".join(waits_for)
    return f"waits for step{'s' if len(waits_for) > 1 else ''} {names}: {reason}"


class _NotYet(Exception):
    """An attempt of an ``until`` step that did not find its condition true (or failed); says what it saw."""


class _OtherItem(ValueError):
    """A template inside a pipeline read another item's output, which may not exist yet."""


class _OwnItemOutputs(list):  # type: ignore[type-arg]
    """``steps.<id>`` of an earlier step of the same pipeline, as one item sees it while it runs.

    Items run at the same time, so only this item's own entry (``steps.<id>[loop_index]``) is
    known; reading another entry, or iterating, is an error naming the way out, never a value
    that depends on timing. After the pipeline, ``steps.<id>`` is the usual list.
    """

    def __init__(self, step_id: str, pipeline: str, size: int, index: int, value: Any):
        super().__init__([None] * size)
        self._step_id, self._pipeline, self._index, self._value = step_id, pipeline, index, value

    def _refuse(self, what: str) -> NoReturn:
        raise _OtherItem(
            f"{what} reads other items of pipeline '{self._pipeline}', which run at the same time as "
            f"this one: inside the pipeline only this item's output is known, as "
            f"steps.{self._step_id}[loop_index]; read the whole list after the pipeline"
        )

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int) and key in (self._index, self._index - len(self)):
            return self._value
        self._refuse(f"steps.{self._step_id}[{key}]")

    def __iter__(self) -> Iterator[Any]:
        self._refuse(f"going through steps.{self._step_id}")

    def __contains__(self, item: object) -> bool:
        self._refuse(f"looking into steps.{self._step_id}")


_PENDING = object()  # a pipeline step that has not run for an item yet


class _ItemProgress:
    """The progress callback handed to an executor for one step item."""

    def __init__(self, runner: Runner, entry: PlanEntry):
        self._runner = runner
        self._entry = entry

    def __call__(self, text: str) -> None:
        self._runner.on_event("progress", _note(self._entry, text))


class Runner:
    """Runs (or plans) one runbook with one context.

    ``concurrency`` bounds how many items run at once anywhere in the run (default:
    ``DEFAULT_CONCURRENCY``);
    ``lock_backoff`` is the first pause before retrying a lock failure, in seconds.
    ``preview`` (dry-run) tells what a step that would run would change; its answers are
    gathered in ``changes`` and change nothing about the plan itself.
    ``facts`` is what templates see as ``cluster``, ``profile.members`` and ``plan.template``: a
    run's ``LiveFacts`` (read again before a step that reads them, once a changing step finished),
    a plan's ``PlannedFacts``; None: not read (offline, validate), so they are Unknown.
    """

    def __init__(
        self,
        runbook: Runbook,
        context: dict[str, Any],
        *,
        executor: Executes | None,
        dry_run: bool,
        approver: Approver,
        recorder: Recorder | None = None,
        done: dict[tuple[str, str | None], Any] | None = None,
        on_event: Callable[[str, PlanEntry], None] | None = None,
        check_unfinished: frozenset[tuple[str, str | None]] = frozenset(),
        collect: list[Problem] | None = None,
        concurrency: int | None = None,
        lock_backoff: float = LOCK_BACKOFF,
        preview: Callable[[Action, str], list[Change]] | None = None,
        expected: Mapping[tuple[str, str | None], dict[str, Any] | None] | None = None,
        revealed: Mapping[str, str] | None = None,
        facts: LiveFacts | PlannedFacts | None = None,
    ):
        self.runbook = runbook
        # Applying a saved plan: what each changing step of the plan sends (None: the plan skipped
        # it). A step that would send anything else stops the run before it is sent (PlanDiverged).
        self.expected = expected
        self.dry_run = dry_run
        self.executor = executor
        self.approver = approver
        self.recorder = recorder
        # Where records go: a plan writes none, whatever it is given.
        self.journal: Recorder = recorder if recorder is not None and not dry_run else _Unrecorded()
        self.done = dict(done or {})
        self.check_unfinished = check_unfinished
        # With ``collect`` (validation), a step that cannot render is noted there and treated as
        # unknown, so one broken step does not hide the problems of the steps after it.
        self.collect = collect
        self.on_event = on_event or (lambda event, entry: None)
        pending = frozenset(s.id for s in runbook.steps) if dry_run else frozenset()
        self.steps = StepOutputs({}, pending)
        self.facts = facts if facts is not None else PlannedFacts(lambda: None)
        base = with_facts(context, self.facts.current)
        self.renderer = Renderer(runbook.file, {**base, "steps": self.steps})
        # Secret parameters: every action is rendered with ``*MASKED*`` in their place (what plans,
        # journals and progress show); only the one handed to the executor sees their values.
        self.revealing = Renderer(runbook.file, {**base, **revealed, "steps": self.steps}) if revealed else None
        self.entries: list[PlanEntry] = []
        # In a dry-run, read-only steps query the cluster only until a step would change it: after
        # that, what they would read is not what the run would read.
        self.plan_changes = False
        self.concurrency = max(1, concurrency if concurrency is not None else DEFAULT_CONCURRENCY)
        config = context.get("config") if isinstance(context.get("config"), dict) else {}
        limits = config.get("limits") or {}
        self.limits = CloneSlots(limits.get("clones_per_template"), limits.get("clones_per_storage"))
        self.lock_retries = int(limits.get("lock_retries", DEFAULT_LOCK_RETRIES))
        self.lock_backoff = lock_backoff
        # A dry-run against the cluster asks each would-run, changing step what it would change.
        self.preview = preview
        self.changes: list[Change] = []
        self.changing: list[tuple[str, str | None]] = []  # in a plan: the changing steps (and items) so far
        self._lock = threading.Lock()  # the entries list
        self._gate_lock = threading.Lock()  # one gate question at a time
        self._random = random.Random()
        # ``to_pass`` paths rendered for each (step, item) about to run, read when its result arrives.
        self._pass_paths: dict[tuple[str, str | None], str] = {}

    def run(self) -> list[PlanEntry]:
        """Run every step in order; raises GateStop or StepError to stop, InputError for a bad template."""
        groups, problems = sections(self.runbook)
        if problems:
            if self.collect is None:
                raise InputError(problems)
            self.collect.extend(problems)
        for section in groups:
            if section.name is None:
                self._guarded(self._step_items, section.steps[0])
            else:
                self._guarded(self._pipeline, section)
        return self.entries

    def _guarded(self, run: Callable[[Any], None], what: Any) -> None:
        if self.collect is None:
            run(what)
            return
        try:
            run(what)
        except InputError as exc:
            self.collect.extend(exc.problems)

    # ------------------------------------------------------------------ one step

    def _step_items(self, step: Step) -> None:
        entry = PlanEntry(step.id, step.kind, step.title, step.line, show=bool(step.attrs.get("show")))
        if "foreach" not in step.attrs:
            output = self._item(step, None, {}, entry)
            self._publish(step, output)
            return
        try:
            self._fresh(step, entry)
            items = self.renderer.items(step)
        except UnknownValue as unknown:
            entry.status = "unknown"
            entry.reason = self._waiting(step, entry, f"loops over {unknown.source}, known only after run")
            self._add(entry)
            return
        wide = width(step, self.concurrency, self.dry_run)
        if wide > 1 and len(items) > 1:
            outputs = self._parallel_items(step, items, wide)
        else:
            outputs = []
            for index, (item, key) in enumerate(zip(items, _item_keys(items), strict=True)):
                item_entry = PlanEntry(
                    step.id, step.kind, step.title, step.line, item_key=key, show=bool(step.attrs.get("show"))
                )
                outputs.append(self._item(step, key, {step.loop_var: item, "loop_index": index}, item_entry))
        self._publish(step, _NOTHING if any(o is _NOTHING for o in outputs) else outputs)

    def _parallel_items(self, step: Step, items: list[Any], width: int) -> list[Any]:
        """Render, check and gate every item in order (one question at a time), then run the ready
        ones on up to ``width`` threads. A refusal (gate, template) stops the preparing; the items
        before it still run, as they would have in a sequential run."""
        outputs: list[Any] = [None] * len(items)
        ready: list[tuple[int, str, _Ready, PlanEntry]] = []
        stopped: BaseException | None = None
        mark = len(self.entries)
        for index, (item, key) in enumerate(zip(items, _item_keys(items), strict=True)):
            entry = PlanEntry(
                step.id, step.kind, step.title, step.line, item_key=key, show=bool(step.attrs.get("show"))
            )
            try:
                prepared = self._prepare(step, key, {step.loop_var: item, "loop_index": index}, entry)
            except (GateStop, InputError, StepError) as exc:
                stopped = exc
                break
            if isinstance(prepared, _Ready):
                ready.append((index, key, prepared, entry))
            else:
                outputs[index] = prepared

        def run(task: Task) -> None:
            index, key, prepared, entry = ready[task.item]
            outputs[index] = self._execute(step, key, prepared, entry)

        try:
            run_schedule(Schedule(len(ready), 1, width), run)
        finally:
            self._order_entries(mark, {step.id: 0}, items)
        if stopped is not None:
            raise stopped
        return outputs

    # ------------------------------------------------------------------ pipelines

    def _pipeline(self, section: Section) -> None:
        steps = section.steps
        first = steps[0]
        try:
            self._fresh(first, PlanEntry(first.id, first.kind, first.title, first.line))
            items = self.renderer.items(first)
        except UnknownValue as unknown:
            for step in steps:
                entry = PlanEntry(step.id, step.kind, step.title, step.line, show=bool(step.attrs.get("show")))
                entry.status = "unknown"
                entry.reason = self._waiting(step, entry, f"loops over {unknown.source}, known only after run")
                self._add(entry)
            return
        outputs: dict[str, list[Any]] = {step.id: [_PENDING] * len(items) for step in steps}
        keys = _item_keys(items)
        name = str(section.name)

        def one(step: Step, index: int) -> None:
            entry = PlanEntry(
                step.id, step.kind, step.title, step.line, item_key=keys[index], show=bool(step.attrs.get("show"))
            )
            local = {step.loop_var: items[index], "loop_index": index, "steps": self._item_view(outputs, name, index)}
            outputs[step.id][index] = self._item(step, keys[index], local, entry)

        mark = len(self.entries)
        try:
            if self.dry_run:
                # A plan lists the steps one after the other, as the run journals each (step, item).
                for task in plan_order(len(items), len(steps)):
                    one(steps[task.stage], task.item)
            else:
                schedule = Schedule(len(items), len(steps), width(first, self.concurrency, self.dry_run))
                run_schedule(schedule, lambda task: one(steps[task.stage], task.item))
        finally:
            self._order_entries(mark, {step.id: number for number, step in enumerate(steps)}, items)
        for step in steps:
            values = outputs[step.id]
            self._publish(step, _NOTHING if any(v is _NOTHING or v is _PENDING for v in values) else values)

    def _item_view(self, outputs: dict[str, list[Any]], pipeline: str, index: int) -> StepOutputs:
        """``steps`` for one item inside a pipeline: earlier steps of the pipeline show only this item's output."""
        view = StepOutputs(dict(self.steps), self.steps.pending_ids)
        for step_id, values in outputs.items():
            value = values[index]
            if value is _PENDING:
                continue  # not run for this item yet: the usual "has not run yet"
            if value is _NOTHING:
                view[step_id] = Unknown(f"steps.{step_id}")
            else:
                view[step_id] = _OwnItemOutputs(step_id, pipeline, len(values), index, value)
        return view

    def _order_entries(self, mark: int, step_order: dict[str, int], items: Sequence[Any]) -> None:
        """Entries of a concurrent section in plan order (step, then item), whatever order they ended in."""
        keys = {key: index for index, key in enumerate(_item_keys(items))}
        with self._lock:
            self.entries[mark:] = sorted(
                self.entries[mark:], key=lambda e: (step_order.get(e.step_id, 0), keys.get(e.item_key or "", 0))
            )

    # ------------------------------------------------------------------ driven one task at a time

    def sections(self) -> list[Section]:
        """The run's sections (``engine.run.sections``), for a driver that runs them itself."""
        groups, problems = sections(self.runbook)
        if problems:
            raise InputError(problems)
        return groups

    def section_items(self, section: Section) -> tuple[list[Any], list[str | None]]:
        """The items ``section`` goes through, rendered now with the outputs published so far, and
        their keys; a step without ``foreach`` has one item, None, with no key."""
        first = section.steps[0]
        if section.name is None and "foreach" not in first.attrs:
            return [None], [None]
        self._fresh(first, PlanEntry(first.id, first.kind, first.title, first.line))
        items = self.renderer.items(first)
        return items, list(_item_keys(items))

    def run_task(
        self, section: Section, items: list[Any], keys: list[str | None], outputs: dict[str, list[Any]], task: Task
    ) -> Any:
        """One step of one item, as the step loop runs it (done before? guards, render, checks, gate,
        execute with its retries, record); its output goes into ``outputs`` (``pending_outputs``).

        What a Temporal activity runs (engine/temporal): the driver decides which task runs when
        (``engine.run.schedule``), this runs it. Raises as the loop does (StepError, GateStop, InputError).
        """
        step = section.steps[task.stage]
        key = keys[task.item]
        entry = PlanEntry(step.id, step.kind, step.title, step.line, item_key=key, show=bool(step.attrs.get("show")))
        local: dict[str, Any] = {}
        if key is not None:
            local = {step.loop_var: items[task.item], "loop_index": task.item}
        if section.name is not None:
            local["steps"] = self._item_view(outputs, str(section.name), task.item)
        output = self._item(step, key, local, entry)
        outputs[step.id][task.item] = output
        return output

    def pending_outputs(self, section: Section, count: int) -> dict[str, list[Any]]:
        """The outputs of ``section``'s steps, by step, none produced yet."""
        return {step.id: [_PENDING] * count for step in section.steps}

    def has_output(self, outputs: dict[str, list[Any]], step_id: str, item: int) -> bool:
        return outputs[step_id][item] is not _PENDING

    def end_section(self, section: Section, keys: list[str | None], outputs: dict[str, list[Any]]) -> None:
        """Every task of ``section`` ran: its steps' outputs become ``steps.<id>`` for the steps after it."""
        single = keys == [None]
        for step in section.steps:
            values = outputs[step.id]
            self._publish(step, values[0] if single else values)

    def run_section(self, section: Section) -> None:
        """One section the usual way (how a driver that lost its state catches up, as a resume does)."""
        if section.name is None:
            self._step_items(section.steps[0])
        else:
            self._pipeline(section)

    # ------------------------------------------------------------------ one item

    def _waiting(self, step: Step, entry: PlanEntry, reason: str) -> str:
        """``reason``, led by the earlier steps of the plan whose output this step reads (``steps.X`` in its text)."""
        read = steps_read(step)
        entry.waits_for = [
            other.id
            for other in self.runbook.steps
            if other.id in read
            and other.id != step.id
            and (other.id not in self.steps or isinstance(dict.get(self.steps, other.id), Unknown))
        ]
        return _waits_text(entry.waits_for, reason)

    def _read_after_change(self, action: Action, entry: PlanEntry) -> str:
        """A read-only step after a changing one: it waits for the latest change to what it reads (else the latest)."""
        vmid = _VMID_IN_PATH.search(action.path) if isinstance(action, ApiRequest) else None
        touching = [
            (change.step, change.item) for change in self.changes if vmid is None or str(change.id) == vmid["vmid"]
        ]
        step_id = (touching or self.changing or [("", None)])[-1][0]
        entry.waits_for = [step_id] if step_id else []
        return _waits_text(
            entry.waits_for, "read-only; not run while planning, because that step changes what it reads"
        )

    def _publish(self, step: Step, output: Any) -> None:
        if output is _NOTHING:
            return
        self.steps[step.id] = output
        if step.attrs.get("register"):
            for renderer in filter(None, (self.renderer, self.revealing)):
                renderer.register(step, str(step.attrs["register"]), output)

    def _add(self, entry: PlanEntry) -> None:
        with self._lock:
            self.entries.append(entry)
        self.on_event("step", entry)

    def _item(self, step: Step, key: str | None, local: dict[str, Any], entry: PlanEntry) -> Any:
        ready = self._prepare(step, key, local, entry)
        if isinstance(ready, _Ready):
            return self._execute(step, key, ready, entry)
        return ready

    def _prepare(self, step: Step, key: str | None, local: dict[str, Any], entry: PlanEntry) -> Any:
        """Everything before executing: done before? conditions, render, checks, dry-run, gate.

        Returns ``_Ready(action)`` when the item is to run, else its output (None when skipped,
        ``_NOTHING`` when a plan cannot know it).
        """
        if key is not None:
            entry.item_label = self._item_label(step, local)
        # A read-only step runs again on resume, so the guards after it see the cluster as it is now,
        # not as it was before the interruption.
        if (step.id, key) in self.done and not reads_only(step):
            entry.status, entry.reason, entry.output = (
                "succeeded",
                "finished in an earlier attempt",
                self.done[(step.id, key)],
            )
            self._add(entry)
            return entry.output
        self._fresh(step, entry)
        if "until" in step.attrs and not reads_only(step):
            raise InputError(
                Problem(
                    self.renderer.file_of(step),
                    step.line,
                    "attributes.until",
                    "until repeats the step, so it is only for steps that change nothing: "
                    "an API GET, or a step marked readonly: true",
                )
            )
        pending_condition = ""
        try:
            if has_when(step) and not self.renderer.truth(step, "when", local):
                entry.status, entry.reason = "skipped", "when is false"
                self._add(entry)
                self.journal.step_skipped(step.id, key, "when_false")
                return None
            if "check" in step.attrs and self.renderer.truth(step, "check", local):
                entry.status, entry.reason = "skipped", "check is true: already in place"
                self._add(entry)
                self.journal.step_skipped(step.id, key, "check_true")
                return None
        except UnknownValue as unknown:
            if not self.dry_run:
                raise InputError(
                    Problem(
                        self.renderer.file_of(step),
                        step.line,
                        f"step {step.id}",
                        f"condition needs {unknown.source}, which no earlier step produced",
                    )
                ) from None
            pending_condition = f"runs only if its condition holds, which depends on {unknown.source}"
        if (
            (step.id, key) in self.check_unfinished
            and "check" not in step.attrs
            and step.kind not in SELF_CHECKING_KINDS
            and not reads_only(step)
        ):
            # A step that only reads is simply run again, like every read-only step on resume.
            entry.gate_reasons.append(
                "started in an earlier attempt but never finished, and has no check to tell whether it took effect"
            )
        try:
            action = self.renderer.action(step, local)
        except UnknownValue as unknown:
            if not self.dry_run:
                raise InputError(
                    Problem(
                        self.renderer.file_of(step),
                        step.line,
                        f"step {step.id}",
                        f"needs {unknown.source}, which no earlier step produced",
                    )
                ) from None
            entry.status = "unknown"
            entry.reason = self._waiting(
                step, entry, f"what it sends depends on {unknown.source}, known only after run"
            )
            self._possible(step, key, local, None, pending_condition)
            self._add(entry)
            return _NOTHING
        entry.action = action_as_dict(action)
        entry.display = display(action)
        if topass.declared(step):
            self._pass_path(step, key, local)
        if self.expected is not None and not self.dry_run and not is_readonly(step, action):
            self._as_planned(step, key, entry)
        entry.gate_reasons += gate_reasons(step, action)
        entry.gated = bool(entry.gate_reasons)
        unknown = contains_unknown(entry.action)
        problems = rendered_problems(entry.action, step, self.renderer.file_of(step))
        if problems:
            raise InputError(problems)
        if self.dry_run and (unknown or pending_condition):
            entry.status = "unknown"
            entry.reason = self._waiting(step, entry, pending_condition or "uses values known only after run")
            if not is_readonly(step, action):
                self._possible(step, key, local, action, pending_condition)
            self._add(entry)
            return _NOTHING
        if self.dry_run:
            # A step storing its result in pass writes on this machine: never run while planning.
            readonly = is_readonly(step, action) and not topass.declared(step)
            if readonly and self.executor is not None and not self.plan_changes:
                return _Ready(self._revealed(step, local, action), local)
            entry.status = "would_run"
            if entry.gated:
                entry.reason = "gated: needs approval"
            elif readonly:
                entry.reason = (
                    self._read_after_change(action, entry)
                    if self.plan_changes and self.executor is not None
                    else "read-only"
                )
            if not readonly:  # gated or not: a read after it would see a cluster the plan did not change
                self.plan_changes = True
                self.changing.append((step.id, key))
            if not readonly and self.preview is not None:
                found = [*self._previewed(action, step), *self._pass_changes(step, key)]
                changes = [dataclasses.replace(c, step=step.id, item=key) for c in found]
                with self._lock:
                    self.changes += changes
            self._add(entry)
            return _NOTHING
        if entry.gated:
            # One question at a time, even from the items of a pipeline (whose gates can only come
            # from a rendered value: gated steps are refused there).
            with self._gate_lock:
                self.journal.gate_waiting(step.id, key)
                if not self.approver.approve(entry):
                    entry.status = "stopped_at_gate"
                    self._add(entry)
                    raise GateStop(entry)
                self.journal.gate_approved(step.id, key, self.approver.who)
        return _Ready(self._revealed(step, local, action), local)

    def _revealed(self, step: Step, local: dict[str, Any], shown: Action) -> Action:
        """The action to execute: ``shown`` rendered again with the secret parameters' values, when any."""
        return self.revealing.action(step, local) if self.revealing is not None else shown

    def _item_label(self, step: Step, local: dict[str, Any]) -> str:
        """The step's ``label`` for this item when it has one (and it is known), else the item's name."""
        if "label" in step.attrs:
            try:
                value = self.renderer.expression(step, "label", local)
            except UnknownValue:
                value = None
            if value is not None and not isinstance(value, Unknown):
                return " ".join(str(value).split())
        return item_label(local.get(step.loop_var), int(local.get("loop_index", 0)))

    def _possible(self, step: Step, key: str | None, local: dict[str, Any], action: Action | None, when: str) -> None:
        """What a step whose values only the run knows would change: from its action when it rendered
        (values known after run shown as such), else from its ``changes`` attribute alone when that
        renders. ``when`` is the run-time condition it runs under ("": it runs, only values are
        unknown), kept on each change (``Change.when``) so the summary counts it apart."""
        if self.preview is None:
            return
        if reads_only(step):
            return
        if action is not None:
            found = [*self._previewed(action, step), *self._pass_changes(step, key)]
        elif step.kind != "api" and "changes" in step.attrs:
            try:
                found = declared_changes(self.renderer.changes(step, local), "")
            except UnknownValue:
                return
        else:
            return
        changes = [dataclasses.replace(c, step=step.id, item=key, when=when) for c in found or ()]
        with self._lock:
            self.changes += changes

    def _previewed(self, action: Action, step: Step) -> list[Change]:
        """The preview's changes of ``action``, telling it which step makes them (kept with what the
        changes leave, so a fact they make unknown names the step)."""
        assert self.preview is not None
        return self.preview(action, step.id)

    def _fresh(self, step: Step, entry: PlanEntry, *, again: bool = False) -> None:
        """Before a step that reads facts: read the cluster again when a changing step finished since
        the last read (``again``: in any case). A failed read fails the step, before it runs."""
        if not again and not reads_facts(step):
            return
        try:
            self.facts.fresh(again=again)
        except StepFailed as failure:
            self._fail_step(
                step, entry, f"cannot read the cluster's facts for this step: {failure.message}", time.monotonic()
            )

    def _as_planned(self, step: Step, key: str | None, entry: PlanEntry) -> None:
        """Refuse (PlanDiverged) a changing step that the applied plan did not review as it is now."""
        assert self.expected is not None
        if (step.id, key) not in self.expected:
            return  # the plan could not know it (its values came from earlier steps): shown as such in review
        planned = self.expected[(step.id, key)]
        if planned == entry.action:
            return
        entry.status = "failed"
        entry.error = (
            "the plan skipped this step, and now it would run"
            if planned is None
            else f"it would now send {entry.display!r}, not what the plan reviewed"
        )
        self._add(entry)
        raise PlanDiverged(entry)

    def _execute(self, step: Step, key: str | None, ready: _Ready, entry: PlanEntry) -> Any:
        assert self.executor is not None
        action = ready.action
        self.journal.step_started(step.id, key, entry.action)
        self.on_event("start", entry)
        started = time.monotonic()
        if "until" in step.attrs and not self.dry_run:
            output, summary, left_alone = self._until(step, ready, entry, started)
        else:
            output, summary, left_alone = self._attempts(step, ready, entry, started)
        # Left alone: the executor found its effect in place (a file holding that content), as a check would.
        entry.status = "skipped" if left_alone else "succeeded"
        entry.output, entry.duration = output, time.monotonic() - started
        entry.reason = "already in place" if left_alone else summary
        if not self.dry_run and not left_alone and not is_readonly(step, action):
            self.facts.changed()
        self.journal.step_finished(step.id, key, output, entry.duration)
        self._add(entry)
        return output

    def _once(self, step: Step, ready: _Ready, entry: PlanEntry) -> tuple[Any, str, bool]:
        """Execute once; the output after ``json`` parsing and ``extract`` (``ExtractRefused`` on refusal),
        the summary, and whether the executor left everything as it was (``Result.left_alone``)."""
        assert self.executor is not None
        progress = _ItemProgress(self, entry)
        # Lines printed before a to_pass step's secret is known cannot be masked: none is shown.
        shown: Callable[[str], None] = (lambda text: None) if topass.declared(step) else progress
        action = ready.action
        with self.limits.hold(action, progress):
            try:
                if isinstance(action, ApiRequest) and self.recorder is not None and not self.dry_run:
                    # The UPID is journaled before the task is first polled: a resume follows it to its end.
                    result = self.executor.execute(
                        action,
                        shown,
                        on_task=lambda upid, node: self.journal.task_started(step.id, entry.item_key, upid, node),
                    )
                else:
                    result = self.executor.execute(action, shown)
            except StepFailed as failure:
                result = _accepted(step, failure)
        data, summary = result.data, result.summary
        if step.attrs.get("json") and isinstance(data, dict) and "stdout" in data:
            # An accepted failure that printed nothing has no document: ``json`` is then null.
            silent = data.get("exit_code") != 0 and not str(data["stdout"]).strip()
            data = {**data, "json": None if silent else parse_json_output(str(data["stdout"]))}
        if topass.declared(step):
            data, summary = self._to_pass(step, entry, data, summary)
        return self._extract(step, data, ready.local), summary, result.left_alone

    def _pass_path(self, step: Step, key: str | None, local: dict[str, Any]) -> None:
        """Check the step's ``to_pass`` and render its path (kept for when its result arrives)."""
        problems = topass.spec_problems(step, self.runbook.file)
        if problems:
            raise InputError(problems)
        source = str(step.attrs[topass.ATTRIBUTE].get("path", ""))
        try:
            path = self.renderer.text(step, source, local, shell=False, line=step.line, field="attributes.to_pass.path")
        except UnknownValue:
            path = "(known only after run)"
        with self._lock:
            self._pass_paths[(step.id, key)] = path.strip()

    def _pass_changes(self, step: Step, key: str | None) -> list[Change]:
        """What a review shows of a step's ``to_pass``: the pass entry it writes (on this machine)."""
        if not topass.declared(step):
            return []
        path = self._pass_paths.get((step.id, key), "(known only after run)")
        return [
            Change(
                "write",
                "pass-entry",
                path,
                f"pass-entry {path}",
                detail="the step's result fields "
                + ", ".join(str(x) for x in step.attrs[topass.ATTRIBUTE].get("lines") or ())
                + " (secret ones shown nowhere)",
            )
        ]

    def _to_pass(self, step: Step, entry: PlanEntry, data: Any, summary: str) -> tuple[Any, str]:
        """Store the result's fields in pass, before anyone sees the result; the result and summary, masked."""
        sink = self.executor
        if not isinstance(sink, PassSink):
            raise PassWriteFailed("this run has no pass store to write to (to_pass): the result was not stored")
        path = self._pass_paths.get((step.id, entry.item_key), "")
        masked, said = topass.store(data, topass.target(step, path), sink)
        return masked, "; ".join(x for x in (sink.masker.mask(summary), said) if x)

    def _attempts(self, step: Step, ready: _Ready, entry: PlanEntry, started: float) -> tuple[Any, str, bool]:
        """Execute with ``retries``: a failure is retried when it is safe (read-only step, nothing sent,
        or a failure PVE marks as transient such as a held lock). A held lock is waited out with
        jittered exponential backoff, also without ``retries`` in a concurrent step, where the run's
        own items may be what holds it."""
        retries = int(step.attrs.get("retries", 0))
        concurrent = "parallel" in step.attrs or "pipeline" in step.attrs
        lock_retries = max(retries, self.lock_retries if concurrent else 0)

        def lock_held(error: Exception) -> bool:
            return isinstance(error, StepFailed) and error.retryable and error.lock

        def waiting(error: Exception, number: int, pause: float) -> None:
            assert isinstance(error, StepFailed)
            reason = error.message.strip().splitlines()[0][:160]
            self.on_event(
                "progress",
                _note(entry, f"a lock is held ({reason}); trying again in {pause:.1f} s ({number} of {lock_retries})"),
            )

        def safe(error: Exception) -> bool:
            return isinstance(error, StepFailed) and (error.retryable or reads_only(step) or not error.sent)

        try:
            return retry(
                lambda: self._once(step, ready, entry),
                Policy(lock_retries, Backoff(self.lock_backoff, LOCK_BACKOFF_CAP), lock_held, waiting),
                Policy(retries, Backoff(RETRY_BACKOFF, RETRY_BACKOFF_CAP), safe),
                rng=self._random,
            )
        except ExtractRefused as refusal:
            self._fail_step(step, entry, f"refused: {refusal}", started)
        except PassWriteFailed as failure:
            self._fail_step(step, entry, str(failure), started)
        except StepFailed as failure:
            self._fail_step(step, entry, failure.message, started)

    def _until(self, step: Step, ready: _Ready, entry: PlanEntry, started: float) -> tuple[Any, str, bool]:
        """Repeat a read-only step until its ``until`` expression holds over ``result``; a failed attempt
        (a node still booting, say) counts as not yet."""
        attempts = int(step.attrs.get("retries", 30))
        delay = float(step.attrs.get("delay", 2))
        waits_on_facts = reads_facts(step, ("until",))

        def attempt() -> tuple[Any, str, bool]:
            try:
                output, summary, left_alone = self._once(step, ready, entry)
            except StepFailed as failure:
                raise _NotYet(f"failed: {failure.message}") from None
            if waits_on_facts:
                self._fresh(step, entry, again=True)
            if self.renderer.truth(step, "until", {"result": output}):
                return output, summary, left_alone
            raise _NotYet(f"last result: {str(output)[:200]}")

        def waiting(error: Exception, number: int, pause: float) -> None:
            self.on_event("progress", _note(entry, f"waiting: {step.attrs['until']} (attempt {number})"))

        try:
            return retry(attempt, Policy(attempts, Backoff.fixed(delay), lambda e: isinstance(e, _NotYet), waiting))
        except ExtractRefused as refusal:
            self._fail_step(step, entry, f"refused: {refusal}", started)
        except _NotYet as last:
            self._fail_step(
                step,
                entry,
                f"gave up after {attempts + 1} attempts over {time.monotonic() - started:.0f} s: "
                f"{step.attrs['until']} is still false ({last})",
                started,
            )

    def _extract(self, step: Step, data: Any, local: dict[str, Any]) -> Any:
        if "extract" not in step.attrs:
            return data
        expression = str(step.attrs["extract"])
        context = self.renderer.scope(step, local)
        variables = {
            "config": context.get("config"),
            "profile": context.get("profile"),
            "plan": context.get("plan"),
            **context.get("params", {}),
            **extract_scope(expression, context, step.loop_var if "foreach" in step.attrs else None),
        }
        return apply_extract(expression, data, variables, self.renderer.file_of(step), step)

    def _fail_step(self, step: Step, entry: PlanEntry, message: str, started: float) -> NoReturn:
        entry.status, entry.error, entry.duration = "failed", message, time.monotonic() - started
        self.journal.step_failed(step.id, entry.item_key, message, entry.duration)
        self._add(entry)
        raise StepError(entry, message)


@dataclass(frozen=True)
class _Ready:
    """An item rendered, checked and approved: what to execute, and the loop variables it was rendered with."""

    action: Action
    local: dict[str, Any]


def _accepted(step: Step, failure: StepFailed) -> Result:
    """A failure the step declares an answer is its result: a command ending with one of its
    ``accept_exit`` codes (``exit_code`` in the output tells later steps which), or, with
    ``accept_task_error``, a PVE task that ended in error (``exitstatus`` tells how). A held lock
    (retryable) and a timeout are never answers; anything else is raised again."""
    data = failure.data if isinstance(failure.data, dict) else {}
    code = data.get("exit_code")
    if isinstance(code, int) and not isinstance(code, bool) and code in (step.attrs.get("accept_exit") or ()):
        return Result(data=data, summary=f"exited with {code}, an answer this step accepts (accept_exit)")
    if step.attrs.get("accept_task_error") and data.get("upid") and data.get("exitstatus") and not failure.retryable:
        return Result(
            data=data, summary=f"task ended: {data['exitstatus']}, an answer this step accepts (accept_task_error)"
        )
    raise failure


def _note(entry: PlanEntry, text: str) -> PlanEntry:
    entry.reason = text
    return entry


_KEY_FIELDS = ("name", "vmid", "node", "id")


def _item_key(item: Any, index: int) -> str:
    """A stable key for a loop item (checkpoints key on it): its name or vmid when it has one."""
    if isinstance(item, dict):
        for name in _KEY_FIELDS:
            if name in item:
                return f"{name}={item[name]}"
    if isinstance(item, (str, int)):
        return str(item)
    return f"#{index}"


def _item_keys(items: Sequence[Any]) -> list[str]:
    """The key of every loop item, each one different: checkpoints key on them, so items that share
    the first of their identifying fields (``cluster.storages``: a storage of each node, ``local`` on
    every node) are told apart by all of those fields (``name=local,node=pve02``), else by place. A
    list whose keys differ keeps the keys ``_item_key`` gives, so a resume finds its checkpoints."""
    keys = [_item_key(item, index) for index, item in enumerate(items)]
    counts = Counter(keys)
    for index, item in enumerate(items):
        if counts[keys[index]] > 1 and isinstance(item, dict):
            keys[index] = ",".join(f"{name}={item[name]}" for name in _KEY_FIELDS if name in item)
    counts = Counter(keys)
    return [f"{key}#{index}" if counts[key] > 1 else key for index, key in enumerate(keys)]


def item_label(item: Any, index: int) -> str:
    """How the operator knows a loop item: its name, hostname, node or vmid, else itself (a string or a
    number), else its place in the list. Only shown, never a checkpoint key (that is ``_item_key``)."""
    if isinstance(item, dict):
        for name in ("name", "hostname", "node", "vmid", "id"):
            if item.get(name) not in (None, ""):
                return " ".join(str(item[name]).split())
    if isinstance(item, (str, int)):
        return str(item)
    return f"#{index}"


class _Nothing:
    """Marker: the step produced no output in this (dry) run, so later templates see an Unknown."""


_NOTHING = _Nothing()
