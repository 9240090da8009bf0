"""Running items at once: the worker threads of a concurrent section, and the clone slots PVE can bear.

The runner decides what may run together (a ``parallel`` step's items, a pipeline's chains) and
how many at once; this module only runs such jobs on threads, stopping new work at the first
failure, and keeps clones from piling onto one template or one storage
(``limits.clones_per_template``, ``limits.clones_per_storage`` in cluster-config.yaml). Neither
knows about steps, rendering or the journal, so they are kept out of the step loop.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..runbook.actions import Action, ApiRequest

_CLONE = re.compile(r"^/nodes/[^/]+/(?:qemu|lxc)/(\d+)/clone$")


class CloneSlots:
    """How many clones may run at once per template and per storage (cluster-config.yaml ``limits``).

    A clone takes a slot of its template and of its target storage, both at once or neither (so two
    clones never hold one slot each while waiting for the other's); slots are released when the
    clone's task has ended. Nothing else is limited here: PVE itself serialises the rest.
    """

    def __init__(self, per_template: int | None, per_storage: int | None):
        self.per_template = per_template
        self.per_storage = per_storage
        self._held: Counter[tuple[str, str]] = Counter()
        self._changed = threading.Condition()

    def _slots(self, action: Action) -> list[tuple[tuple[str, str], int]]:
        if not isinstance(action, ApiRequest) or action.method != "POST":
            return []
        match = _CLONE.match(action.path)
        if match is None:
            return []
        slots = []
        if self.per_template:
            slots.append((("template", match[1]), int(self.per_template)))
        if self.per_storage:
            # Without ``storage`` PVE clones onto the template's own storage: count it as the template's.
            storage = str(action.params.get("storage") or f"storage of VM {match[1]}")
            slots.append((("storage", storage), int(self.per_storage)))
        return slots

    @contextmanager
    def hold(self, action: Action, waiting: Callable[[str], None]) -> Iterator[None]:
        slots = self._slots(action)
        if not slots:
            yield
            return
        with self._changed:
            told = False
            while any(self._held[key] >= limit for key, limit in slots):
                if not told:
                    full = next(key for key, limit in slots if self._held[key] >= limit)
                    waiting(
                        f"waiting for a clone slot: {self._held[full]} clone(s) of {full[0]} {full[1]} are "
                        f"running (limits.clones_per_{full[0]})"
                    )
                    told = True
                self._changed.wait()
            for key, _ in slots:
                self._held[key] += 1
        try:
            yield
        finally:
            with self._changed:
                for key, _ in slots:
                    self._held[key] -= 1
                self._changed.notify_all()


def run_jobs(jobs: list[Callable[[threading.Event], None]], width: int) -> None:
    """Run ``jobs`` in order on up to ``width`` threads; the first failure stops new jobs and is raised
    once the running ones have ended (their records and entries are kept). Each job is handed the
    stop event, set once anything failed."""
    if not jobs:
        return
    stop = threading.Event()
    errors: list[BaseException] = []
    queue = list(reversed(jobs))
    take = threading.Lock()
    count = min(width, len(jobs))
    ended = [False] * count  # set by each worker as it returns (see _wait_ended)

    def worker(number: int) -> None:
        try:
            while True:
                with take:
                    if stop.is_set() or not queue:
                        return
                    job = queue.pop()
                try:
                    job(stop)
                except BaseException as exc:  # noqa: BLE001 - handed to the main thread below
                    with take:
                        errors.append(exc)
                    stop.set()
        finally:
            ended[number] = True

    # Daemon threads, so that a second Ctrl-C ends the process at once. On the first, no new job
    # starts and the jobs running finish their step (a PVE task cannot be called back, and its end
    # belongs in the journal) while the caller still holds the profile lock; then the interruption
    # goes on. A second Ctrl-C stops waiting: those steps are left in doubt for resume to check.
    threads = [threading.Thread(target=worker, args=(n,), name=f"runbook-item-{n}", daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    try:
        _join(threads)
    except KeyboardInterrupt:
        stop.set()
        _wait_ended(ended)
        raise
    except BaseException:
        stop.set()
        raise
    if errors:
        raise errors[0]


def _join(threads: list[threading.Thread]) -> None:
    """Wait for every thread, waking often so a signal (Ctrl-C) reaches the main thread at once."""
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)


def _wait_ended(ended: list[bool]) -> None:
    """Wait for every worker after an interruption by polling their flags: a ``Thread.join`` that a
    signal interrupted may already report a running thread as stopped (CPython), and a lock's wait
    could be left half-done; reading a flag and sleeping cannot be."""
    while not all(ended):
        time.sleep(0.05)
