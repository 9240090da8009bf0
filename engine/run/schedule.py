"""What runs next: the scheduling core of a run, as plain data and small pure state machines.

The runner's sections (``engine.run.sections``: one step, or the consecutive steps of a pipeline)
run one after the other. Inside a section the questions are always the same: which item may begin
now, which step may an item begin next, how many may be in flight, may this clone start with the
clones already running, and what happens after a failure. This module answers them and nothing
else: it does no I/O, starts no thread, reads no clock and draws no random number, so its answers
depend only on what it was told had finished. Tests drive it step by step; a thread pool drives it
today (``engine.run.concurrency``); a Temporal workflow, which must be deterministic, can drive it
unchanged.

- ``width``: how many items of a step (or of the pipeline it starts) may be in flight: the step's
  ``parallel``, bounded by the run's ``concurrency``; 1 in a dry-run, where a plan is made one item
  at a time.
- ``Schedule``: the items of one section going through its steps (``stages``; one for a single
  step). An item begins its first step when fewer than ``width`` items are in flight, in item
  order; it begins each further step as soon as its previous one finished, without waiting for
  the other items; the first failure stops new work: no item begins, and no item begins its next
  step, while the steps already running are let finish (and are reported finished or failed).
- ``plan_order``: the order a dry-run plans a section in: step by step, each step's items in order.
- ``Clones``: the clones in flight per template and per storage (``limits.clones_per_template``,
  ``limits.clones_per_storage`` in cluster-config.yaml), and whether a clone may start now. A clone
  takes a slot of its template and of its storage, both or neither, so two clones never each hold
  one slot while waiting for the other's.

Driving it from a Temporal workflow (one workflow per run; each step of each item one activity
that executes one rendered action), in outline::

    for section in sections(runbook):               # pure: the same on every replay
        items = the section's foreach, rendered     # sandboxed Jinja over outputs the workflow holds
        schedule = Schedule(len(items), len(section.steps), width(section.steps[0], concurrency, False))
        running = {}                                # asyncio task -> Task
        while not schedule.done:
            for task in schedule.start():           # what may begin now
                running[asyncio.create_task(one(section, items, task))] = task
            ended, _ = await workflow.wait(list(running), return_when=asyncio.FIRST_COMPLETED)
            for handle in ended:                    # workflow.wait: deterministic order
                task = running.pop(handle)
                schedule.failed(task) if handle.exception() else schedule.finished(task)

    async def one(section, items, task):            # render, wait for a clone slot, run the activity
        action = render section.steps[task.stage] for items[task.item]
        slots = clones.limits.slots(action)
        await workflow.wait_condition(lambda: clones.full(slots) is None)
        clones.take(slots)
        try:
            return await workflow.execute_activity(execute, action, ...)
        finally:
            clones.release(slots)

Every decision comes from this module and from the activities' results, which Temporal keeps in
the workflow's history, so a replay takes the same decisions. A held lock is retried by the
activity's retry policy, and a pause is ``workflow.sleep``, never a pause in this module.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from ..runbook.actions import Action, ApiRequest
from ..runbook.model import Step

_CLONE = re.compile(r"^/nodes/[^/]+/(?:qemu|lxc)/(\d+)/clone$")

Slot = tuple[str, str]
"""What a clone counts against: ``("template", "100")`` or ``("storage", "local-lvm")``."""


def width(step: Step, concurrency: int, dry_run: bool) -> int:
    """How many items of ``step`` (or of the pipeline it starts) may be in flight at once."""
    if dry_run:
        return 1
    return max(1, min(int(step.attrs.get("parallel", 1)), concurrency))


@dataclass(frozen=True, order=True)
class Task:
    """One step of one item: ``item`` indexes the section's items, ``stage`` its steps."""

    item: int
    stage: int = 0


def plan_order(items: int, stages: int) -> list[Task]:
    """A section as a plan lists it: step by step, each step's items in order."""
    return [Task(item, stage) for stage in range(stages) for item in range(items)]


class Schedule:
    """The items of one section going through its ``stages``, at most ``width`` items in flight.

    An item is in flight from the start of its first stage until its last stage finished (or it
    failed, or the schedule stopped). Ask ``take`` (or ``start``) what may begin now, and report
    each task's end with ``finished`` or ``failed``; ``done`` once nothing runs and nothing will
    begin any more.
    """

    def __init__(self, items: int, stages: int = 1, width: int = 1):
        if items < 0 or stages < 1 or width < 1:
            raise ValueError(f"a schedule needs items >= 0, stages >= 1, width >= 1, not {items}, {stages}, {width}")
        self.items = items
        self.stages = stages
        self.width = width
        self.stopped = False
        self._next = 0  # the next item to begin its first stage
        self._ready: list[Task] = []  # items whose previous stage finished, in the order they finished
        self._running: set[Task] = set()
        self._in_flight: set[int] = set()

    @property
    def running(self) -> frozenset[Task]:
        return frozenset(self._running)

    @property
    def in_flight(self) -> frozenset[int]:
        """The items begun and not yet through (their stage may be running, or about to begin)."""
        return frozenset(self._in_flight)

    @property
    def exhausted(self) -> bool:
        """No task will be handed out any more (some may still be running)."""
        last = self.stages - 1
        return self.stopped or (
            not self._ready and self._next >= self.items and all(task.stage == last for task in self._running)
        )

    @property
    def done(self) -> bool:
        """Nothing is running and nothing will begin: the section is over."""
        return self.exhausted and not self._running

    def take(self) -> Task | None:
        """The next task that may begin now, counted as running; None when none may (for now).

        An item's next stage comes before a new item, so an item in flight is never held back.
        """
        if self.stopped:
            return None
        if self._ready:
            task = self._ready.pop(0)
        elif self._next < self.items and len(self._in_flight) < self.width:
            task = Task(self._next, 0)
            self._next += 1
            self._in_flight.add(task.item)
        else:
            return None
        self._running.add(task)
        return task

    def start(self) -> list[Task]:
        """Every task that may begin now, in the order to begin them, each counted as running."""
        tasks = []
        while (task := self.take()) is not None:
            tasks.append(task)
        return tasks

    def finished(self, task: Task) -> None:
        """``task`` ended well: its item's next stage may begin (unless the schedule stopped)."""
        self._running.remove(task)
        if task.stage + 1 < self.stages and not self.stopped:
            self._ready.append(Task(task.item, task.stage + 1))
        else:
            self._in_flight.discard(task.item)

    def failed(self, task: Task) -> None:
        """``task`` failed: nothing new begins; the tasks still running may end."""
        self._running.remove(task)
        self._in_flight.discard(task.item)
        self.stop()

    def stop(self) -> None:
        """Begin nothing more (a failure, or the operator interrupting the run)."""
        self.stopped = True
        for task in self._ready:
            self._in_flight.discard(task.item)
        self._ready.clear()


@dataclass(frozen=True)
class CloneLimits:
    """How many clones may run at once per template and per storage; None is no limit."""

    per_template: int | None = None
    per_storage: int | None = None

    def slots(self, action: Action) -> tuple[tuple[Slot, int], ...]:
        """The slots ``action`` takes with their limits: none unless it is a limited clone.

        Nothing else is limited here: PVE itself serialises the rest.
        """
        if not isinstance(action, ApiRequest) or action.method != "POST":
            return ()
        match = _CLONE.match(action.path)
        if match is None:
            return ()
        slots: list[tuple[Slot, int]] = []
        if self.per_template:
            slots.append((("template", match[1]), int(self.per_template)))
        if self.per_storage:
            # Without ``storage`` PVE clones onto the template's own storage: count it as the template's.
            storage = str(action.params.get("storage") or f"storage of VM {match[1]}")
            slots.append((("storage", storage), int(self.per_storage)))
        return tuple(slots)


@dataclass
class Clones:
    """The clones in flight per slot; ``full`` says whether another may start now."""

    limits: CloneLimits
    held: Counter[Slot] = field(default_factory=Counter)

    def full(self, slots: tuple[tuple[Slot, int], ...]) -> Slot | None:
        """The first of ``slots`` that is full (the clone must wait), or None (it may start)."""
        return next((slot for slot, limit in slots if self.held[slot] >= limit), None)

    def take(self, slots: tuple[tuple[Slot, int], ...]) -> None:
        """Count a clone starting: every one of its slots at once."""
        if (slot := self.full(slots)) is not None:
            raise ValueError(f"no clone slot free: {slot[0]} {slot[1]} is full")
        for slot, _ in slots:
            self.held[slot] += 1

    def release(self, slots: tuple[tuple[Slot, int], ...]) -> None:
        """Count a clone's task ended (well or not)."""
        for slot, _ in slots:
            self.held[slot] -= 1
            if not self.held[slot]:
                del self.held[slot]
