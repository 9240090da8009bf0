"""What the cluster is still doing for a run, followed to its end before the run plans and goes on.

A run killed (or stopped by a failure, an outage) while PVE tasks ran leaves them running: a clone
holding its new VM's lock, a migration, a start. Planning while they run would see VMs half made:
a clone made with ``target`` still sits on the template's node, so it looks misplaced, and the
migration sent to "move it back" fails once the clone lands on its node. So:

- a resume first follows, to their end, the tasks its journal recorded (``task_started``) for the
  steps left in doubt, and the tasks the cluster lists as running on the run's VMs (one whose UPID
  never reached the journal: the process died between PVE's answer and the record). A step in
  doubt whose task ended well is recorded as finished with the task's result, as if the run had
  waited for it itself; one whose task failed is left to its ``check``, as before;
- every run, before it plans, waits for each VM of its plan that holds a lock (clone, migrate,
  backup...) for the task holding it. Such a VM is never taken as "already in place" or
  "misplaced". A lock no running task holds is stale: the run stops, saying how to clear it.

Everything goes through the dispatcher (``TaskFollow`` and GETs), so the API executor's polling,
failover and outage handling apply, and every message is masked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .. import exitcodes
from ..errors import RunbookError
from ..load.facts import Facts
from ..load.placement import Plan
from ..runbook.actions import ApiRequest, StepFailed, TaskFollow, quiet
from .dispatch import Dispatcher
from .journal import RunState, StepKey

#: Rounds of "wait for the locks, read the cluster again" before giving up: each round follows every
#: task holding a lock to its end, so more than a few means tasks keep being started by someone else.
LOCK_ROUNDS = 5
#: Task types whose UPID names another VM than the one whose lock they hold (PVE names a clone's task
#: after its source): the lock type they hold, by task type.
HOLDS_OTHER = {"qmclone": "clone", "vzclone": "clone"}
_VMID_IN_PATH = re.compile(r"/(?:qemu|lxc)/(\d+)(?:/|$)")

Note = Callable[[str], None]


class StaleLock(RunbookError):
    """A VM of the run holds a lock that no running task holds; says how to clear it."""

    exit_code = exitcodes.FAILED


def run_vmids(plan: Plan | None, template: Any, state: RunState | None) -> set[int]:
    """The VMIDs a run works on: its plan's, its template's, and those the actions of its steps name."""
    vmids = {vm.vmid for vm in plan.vms} if plan else set()
    if str(template).isdigit():
        vmids.add(int(template))
    for step in state.steps.values() if state else ():
        action = step.action or {}
        found = _VMID_IN_PATH.search(str(action.get("path", "")))
        if found:
            vmids.add(int(found[1]))
        newid = (action.get("params") or {}).get("newid")
        if str(newid).isdigit():
            vmids.add(int(str(newid)))
    return vmids


def follow_in_flight(
    dispatcher: Dispatcher, state: RunState, nodes: Iterable[str], vmids: set[int], note: Note
) -> tuple[dict[StepKey, Any], int]:
    """Follow every task the interrupted run left running to its end. Returns the outputs of the steps
    in doubt whose task ended well (what the step would have returned), by step, and how many tasks
    were followed."""
    finished: dict[StepKey, Any] = {}
    followed: set[str] = set()
    for key in state.in_doubt:
        for upid in state.steps[key].tasks[-1:]:
            followed.add(upid)
            note(f"following task {_describe(upid)} that {key} started before the run was interrupted")
            outcome = _follow(dispatcher, upid, note)
            if outcome is not None:
                finished[key] = outcome
    for upid in running_tasks(dispatcher, nodes, lambda task: _task_vmid(task) in vmids):
        if upid not in followed:
            followed.add(upid)
            note(f"following task {_describe(upid)} still running on a VM of this run (its start was not journaled)")
            _follow(dispatcher, upid, note)
    return finished, len(followed)


def wait_for_locks(dispatcher: Dispatcher, facts: Facts | None, names: set[str], vmids: set[int], note: Note) -> bool:
    """Wait until no VM of the run (by VMID or planned name) holds a lock, following the tasks that hold
    them; True when there was anything to wait for (the caller reads the cluster again and re-plans)."""
    waited = False
    for _ in range(LOCK_ROUNDS):
        locked = [vm for vm in (facts.vms if facts else ()) if vm.lock and (vm.vmid in vmids or vm.name in names)]
        if not locked:
            return waited
        waited = True
        for vm in locked:
            holders = running_tasks(
                dispatcher,
                [vm.node],
                lambda task, vm=vm: _task_vmid(task) == vm.vmid or HOLDS_OTHER.get(str(task.get("type"))) == vm.lock,
            )
            if not holders:
                raise StaleLock(
                    f"VM {vm.vmid} ({vm.name}) on {vm.node} holds lock '{vm.lock}', but no task runs on it, so "
                    f"the run cannot tell whether the VM is whole and does not plan around it. Look at the node's "
                    f"task list for how its last task ended; if nothing is running there, the lock is stale: clear "
                    f"it with `qm unlock {vm.vmid}` on {vm.node} (after checking the VM), then run again."
                )
            for upid in holders:
                note(f"VM {vm.vmid} ({vm.name}) is locked ({vm.lock}): waiting for task {_describe(upid)}")
                _follow(dispatcher, upid, note)
        facts = read_vms(dispatcher)
    raise StaleLock(
        f"VMs of this run were still locked after following the tasks holding them {LOCK_ROUNDS} times: "
        f"something keeps starting tasks on them. Check the cluster's task list, then run again."
    )


def read_vms(dispatcher: Dispatcher) -> Facts:
    """The cluster's VMs now (one GET)."""
    result = dispatcher.execute(ApiRequest("GET", "/cluster/resources", {"type": "vm"}), quiet)
    return Facts.from_cluster_resources(result.data)


def running_tasks(dispatcher: Dispatcher, nodes: Iterable[str], wanted: Callable[[dict[str, Any]], bool]) -> list[str]:
    """UPIDs of the tasks running on ``nodes`` that ``wanted`` picks (``GET /nodes/N/tasks?source=active``).

    PVE lists a running task without ``status`` (a finished one has its exit status there)."""
    upids: list[str] = []
    for node in nodes:
        try:
            answer = dispatcher.execute(
                ApiRequest("GET", f"/nodes/{node}/tasks", {"source": "active", "limit": 500}), quiet
            )
        except StepFailed as failure:
            if not failure.retryable:
                raise
            continue  # a node no other node reaches (595) runs no task the run can follow now
        for task in answer.data or ():
            if isinstance(task, dict) and str(task.get("status") or "running") == "running" and wanted(task):
                upids.append(str(task["upid"]))
    return upids


def _follow(dispatcher: Dispatcher, upid: str, note: Note) -> Any:
    """The task's result once it ended well; None when it failed (the step's check decides what to do)."""
    try:
        return dispatcher.execute(TaskFollow(upid), note).data
    except StepFailed as failure:
        if not (isinstance(failure.data, dict) and failure.data.get("exitstatus")):
            raise  # not the task's own failure: the cluster could not be asked (after an outage window)
        note(f"task {_describe(upid)} ended: {failure.data['exitstatus']}")
        return None


def _task_vmid(task: Mapping[str, Any]) -> int | None:
    vmid = str(task.get("id", ""))
    return int(vmid) if vmid.isdigit() else None


def _describe(upid: str) -> str:
    """``qmclone of 101 on pve01`` for a UPID (``UPID:node:pid:pstart:start:type:id:user:``)."""
    parts = upid.split(":")
    return f"{parts[5]} of {parts[6]} on {parts[1]}" if len(parts) > 6 else upid
