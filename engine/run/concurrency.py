"""Driving the scheduling core on threads: a concurrent section's tasks, and the clone slots PVE can bear.

What may run, when, and how many at once is decided in ``engine.run.schedule``, which knows no
thread; this module only carries its decisions out on worker threads (``run_schedule``) and makes
a worker wait for a free clone slot (``CloneSlots``). Neither knows about steps, rendering or the
journal, so they are kept out of the step loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..runbook.actions import Action
from .schedule import CloneLimits, Clones, Schedule, Task


class CloneSlots:
    """``schedule.Clones`` shared by the worker threads: a clone waits here until its slots are free.

    Slots are released when the clone's task has ended.
    """

    def __init__(self, per_template: int | None, per_storage: int | None):
        self._clones = Clones(CloneLimits(per_template, per_storage))
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, action: Action, waiting: Callable[[str], None]) -> Iterator[None]:
        slots = self._clones.limits.slots(action)
        if not slots:
            yield
            return
        with self._changed:
            told = False
            while (full := self._clones.full(slots)) is not None:
                if not told:
                    waiting(
                        f"waiting for a clone slot: {self._clones.held[full]} clone(s) of {full[0]} {full[1]} are "
                        f"running (limits.clones_per_{full[0]})"
                    )
                    told = True
                self._changed.wait()
            self._clones.take(slots)
        try:
            yield
        finally:
            with self._changed:
                self._clones.release(slots)
                self._changed.notify_all()


def run_schedule(schedule: Schedule, run: Callable[[Task], None]) -> None:
    """Carry ``schedule`` out: ``run(task)`` for each task it hands out, on up to its ``width`` threads
    (on this one when the width is 1). The first failure stops new tasks and is raised once the
    running ones have ended (their records and entries are kept)."""
    if schedule.width == 1:
        while (task := schedule.take()) is not None:
            try:
                run(task)
            except BaseException:
                schedule.failed(task)
                raise
            schedule.finished(task)
        return
    changed = threading.Condition()
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            with changed:
                while (task := schedule.take()) is None:
                    if schedule.exhausted:
                        return
                    changed.wait()
            try:
                run(task)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread below
                with changed:
                    errors.append(exc)
                    schedule.failed(task)
                    changed.notify_all()
            else:
                with changed:
                    schedule.finished(task)
                    changed.notify_all()

    # Daemon threads: a Ctrl-C stops the run at once; steps in flight are left in doubt in the
    # journal, which is what resume is for.
    threads = [
        threading.Thread(target=worker, name=f"runbook-item-{n}", daemon=True)
        for n in range(min(schedule.width, schedule.items))
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except BaseException:
        with changed:
            schedule.stop()
            changed.notify_all()
        raise
    if errors:
        raise errors[0]
