"""The facts a run's templates see, kept fresh at the edge.

A run reads the cluster once before planning (``execution.read_facts``). A step that reads facts
(``cluster``, ``profile.members``, ``plan.template``: found in its templates' syntax trees, see
``runbook.render.reads_facts``) must see what the steps before it did, so the runner calls
``fresh()`` before it and ``changed()`` after every changing step: the cluster is read again only
when a changing step finished since the last read, and items that need it at once (the items of a
parallel step, the threads of a pipeline) share that one read. Rendering never reads: it asks
``current()``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..load.facts import Facts


class LiveFacts:
    """A real run's facts: ``current()`` the last read, ``fresh()`` reads again when stale."""

    def __init__(self, facts: Facts | None, read: Callable[[], Facts] | None):
        self._facts = facts
        self._read = read
        self._stale = False
        self._lock = threading.Lock()
        self.reads = 0  # how many times the cluster was read again (for tests and the curious)

    def current(self) -> Facts | None:
        return self._facts

    def changed(self) -> None:
        """A changing step finished: the next step that reads facts reads the cluster again first."""
        with self._lock:
            self._stale = True

    def fresh(self, *, again: bool = False) -> None:
        """Read the cluster again when a changing step finished since the last read (``again``: in any
        case, e.g. each attempt of an ``until`` that waits on the facts). Thread-safe: callers that
        arrive together share one read."""
        with self._lock:
            if self._read is None or not (self._stale or again):
                return
            self._facts = self._read()
            self._stale = False
            self.reads += 1


class PlannedFacts:
    """A plan's facts: what the dry-run read (or nothing, offline) plus what earlier steps of the plan
    do, from ``current`` (the previewer's facts). Never read again: a plan changes nothing."""

    def __init__(self, current: Callable[[], Facts | None]):
        self.current = current

    def changed(self) -> None:
        pass

    def fresh(self, *, again: bool = False) -> None:
        pass
