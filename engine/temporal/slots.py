"""Clone slots of a run on Temporal, held in its workflow rather than in one worker's memory.

``limits.clones_per_template`` and ``clones_per_storage`` say how many clones PVE may run at once.
Locally the runner counts them in its process (``engine.run.concurrency.CloneSlots``); on Temporal a
run's items run on the worker holding it, but a worker lost during a clone leaves its task running
on the cluster while another worker takes the run over, so the count is kept where every worker
reaches it: the run's workflow, which keeps a ``schedule.Clones`` (pure, deterministic) and grants a
slot through an update (``c.SLOT``) that returns once the slot is taken. A slot is given back by a
signal when the clone's task ended (``c.SLOT_FREED``), and in any case when its step's activity ends
in the workflow: a worker lost while its clone runs keeps the slot (the task still runs on the
cluster) until the retried activity, which follows that task, is through.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from temporalio import activity
from temporalio.client import Client

from ..run.concurrency import CloneSlots
from ..run.schedule import CloneLimits
from ..runbook.actions import Action
from . import contract as c

#: How long a clone waits for its slot before its progress line says it waits (seconds).
QUIET = 0.5


class WorkflowSlots:
    """The runner's clone slots (``Runner.limits``) for a run on Temporal: asked of the run's workflow."""

    def __init__(self, limits: CloneLimits, client: Client, loop: asyncio.AbstractEventLoop):
        self.limits = limits
        self._client = client
        self._loop = loop
        # A worker catching up with sections another worker ran (``Runner.run_section``, on threads of
        # the runner's own, outside any activity) counts its clones here, in its process, as locally.
        self._local = CloneSlots(limits.per_template, limits.per_storage)

    @contextmanager
    def hold(self, action: Action, waiting: Callable[[str], None]) -> Iterator[None]:
        """Hold ``action``'s slots (none unless it is a limited clone) while it runs."""
        slots = self.limits.slots(action)
        if not slots:
            yield
            return
        if not activity.in_activity():
            with self._local.hold(action, waiting):
                yield
            return
        info = activity.info()
        handle = self._client.get_workflow_handle(info.workflow_id, run_id=info.workflow_run_id)
        ask = c.SlotAsk(info.activity_id, [[kind, name, limit] for (kind, name), limit in slots])
        granted = self._call(handle.execute_update(c.SLOT, ask))
        try:
            granted.result(timeout=QUIET)
        except concurrent.futures.TimeoutError:
            held = ", ".join(f"{kind} {name} (limits.clones_per_{kind}: {limit})" for (kind, name), limit in slots)
            waiting(f"waiting for a clone slot of {held}: other clones of the run hold them, on any of its workers")
            granted.result()
        try:
            yield
        finally:
            self._call(handle.signal(c.SLOT_FREED, info.activity_id)).result()

    def _call(self, work: Any) -> concurrent.futures.Future[Any]:
        """Run a client call on the worker's event loop (activities run on threads of their own)."""
        return asyncio.run_coroutine_threadsafe(work, self._loop)
