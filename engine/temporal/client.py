"""``runbook run ... --temporal``: start the run as a workflow and follow it, printing its progress.

The run goes on without this process: Ctrl-C here stops following, not the run (it says how to
look at it again). One run per profile at a time: a second start of the same workflow id while one
runs is refused, naming the run that holds it.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, TLSConfig

from .. import exitcodes
from ..errors import RunbookError
from . import contract as c
from .settings import TemporalSettings, Tls

#: How often the follower asks the workflow for new progress events (seconds).
POLL = 0.3


class TemporalUnreachable(RunbookError):
    exit_code = exitcodes.NOT_STARTED


class RunGoing(RunbookError):
    exit_code = exitcodes.LOCKED


async def connect(settings: TemporalSettings, consequence: str) -> Client:
    """A client of Temporal at ``settings.address``; an error saying so, and ``consequence``, when it cannot be reached."""
    tls = _tls(settings.tls, consequence) if settings.tls is not None else False
    try:
        return await Client.connect(settings.address, namespace=settings.namespace, tls=tls)
    except (RPCError, RuntimeError, OSError) as exc:
        reason = str(exc).split("ConnectError(")[-1].split(")")[0] if "ConnectError" in str(exc) else str(exc)
        raise TemporalUnreachable(
            f"cannot reach Temporal at {settings.address} (namespace {settings.namespace}): {reason}. {consequence}"
        ) from None


def _tls(given: Tls, consequence: str) -> TLSConfig:
    """The SDK's TLS settings, the files read now; an unreadable one is named with its setting."""

    def read(path: Path | None, field: str) -> bytes | None:
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError as exc:
            raise TemporalUnreachable(
                f"execution.temporal.tls.{field} in cluster-config.yaml: cannot read {path}: "
                f"{exc.strerror or exc}. {consequence}"
            ) from None

    return TLSConfig(
        server_root_ca_cert=read(given.ca_file, "ca_file"),
        client_cert=read(given.cert_file, "cert_file"),
        client_private_key=read(given.key_file, "key_file"),
        domain=given.server_name,
    )


def start_and_follow(
    settings: TemporalSettings,
    workflow_id: str,
    start: c.RunStart,
    on_event: Callable[[c.Event], None],
    on_started: Callable[[], None],
) -> c.Ending:
    """Start the run's workflow on the cluster's task queue (then ``on_started``) and follow it to its end."""
    return asyncio.run(_start_and_follow(settings, workflow_id, start, on_event, on_started))


async def _start_and_follow(
    settings: TemporalSettings,
    workflow_id: str,
    start: c.RunStart,
    on_event: Callable[[c.Event], None],
    on_started: Callable[[], None],
) -> c.Ending:
    stop = _stop_on_signals()
    try:
        return await _started_and_followed(settings, workflow_id, start, on_event, on_started, stop)
    finally:
        for number in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().remove_signal_handler(number)


def _stop_on_signals() -> asyncio.Event:
    """Ctrl-C and SIGTERM set the event the follower checks at each poll, rather than cancelling a task
    inside the SDK's calls, which may take the cancellation for its own and go on following."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    return stop


async def _started_and_followed(
    settings: TemporalSettings,
    workflow_id: str,
    start: c.RunStart,
    on_event: Callable[[c.Event], None],
    on_started: Callable[[], None],
    stop: asyncio.Event,
) -> c.Ending:
    client = await connect(settings, "Nothing ran and no run was made")
    if stop.is_set():
        raise KeyboardInterrupt  # before the workflow exists: nothing started
    try:
        handle: WorkflowHandle[Any, c.Ending] = await client.start_workflow(
            c.WORKFLOW,
            start,
            id=workflow_id,
            task_queue=settings.task_queue,
            result_type=c.Ending,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            execution_timeout=timedelta(days=7),
            memo=c.memo(start),
        )
    except WorkflowAlreadyStartedError:
        going = client.get_workflow_handle(workflow_id)
        described = await going.describe()
        raise RunGoing(
            f"a run of the same profile is going on Temporal (workflow {workflow_id}, run "
            f"{described.run_id}): one run per profile at a time. Wait for it, or look at it: "
            f"temporal workflow show --workflow-id {workflow_id} --address {settings.address}"
        ) from None
    on_started()
    return await _follow(client, handle, on_event, stop)


def follow(settings: TemporalSettings, workflow_id: str, on_event: Callable[[c.Event], None]) -> c.Ending:
    """Follow the running workflow ``workflow_id`` to its end, printing its progress from its start."""

    async def main() -> c.Ending:
        client = await connect(settings, "Nothing was changed")
        stop = _stop_on_signals()
        try:
            handle = client.get_workflow_handle(workflow_id, result_type=c.Ending)
            return await _follow(client, handle, on_event, stop)
        finally:
            for number in (signal.SIGINT, signal.SIGTERM):
                asyncio.get_running_loop().remove_signal_handler(number)

    return asyncio.run(main())


async def _follow(
    client: Client,
    handle: WorkflowHandle[Any, c.Ending],
    on_event: Callable[[c.Event], None],
    stop: asyncio.Event | None = None,
) -> c.Ending:
    """Print the run's progress events once each: those of the activities that ended (the workflow's
    ``events`` query), and those of the running ones as they happen (their heartbeats)."""
    seen = 0
    printed: set[str] = set()

    def show(events: list[c.Event]) -> None:
        for event in events:
            if event.seq and event.seq in printed:
                continue
            printed.add(event.seq)
            on_event(event)

    result = asyncio.ensure_future(handle.result())
    while True:
        finished = result.done()
        try:
            events = await handle.query("events", seen, result_type=list[c.Event])
        except (RPCError, WorkflowQueryFailedError):
            # No worker answers for now (the events are kept in the workflow: asked again next time),
            # or none will any more after the end: the lines left unprinted are in the journal.
            events = []
        show(events)
        seen += len(events)
        if finished:
            break
        if stop is not None and stop.is_set():
            raise KeyboardInterrupt  # stop following; the run goes on on the workers
        show(await live_events(client, handle))
        await asyncio.wait([result], timeout=POLL)
    try:
        return result.result()
    except WorkflowFailureError as exc:
        cause: BaseException = exc
        while cause.__cause__ is not None:  # "Activity task failed" says less than what failed it
            cause = cause.__cause__
        return c.Ending("failed", exitcodes.FAILED, f"the run's workflow failed: {cause}")


async def live_events(client: Client, handle: WorkflowHandle[Any, Any]) -> list[c.Event]:
    """The progress events of the workflow's running activities, from their last heartbeats."""
    try:
        described = await handle.describe()
    except RPCError:
        return []
    events: list[c.Event] = []
    for pending in described.raw_description.pending_activities:
        if not pending.HasField("heartbeat_details"):
            continue
        details = await client.data_converter.decode(pending.heartbeat_details.payloads)
        if len(details) > 1 and isinstance(details[1], list):
            events += [c.Event(**event) for event in details[1] if isinstance(event, dict)]
    return events


class DecisionRefused(RunbookError):
    exit_code = exitcodes.REFUSED


class NothingWaits(RunbookError):
    exit_code = exitcodes.PROBLEMS


def waiting(settings: TemporalSettings) -> list[c.Waiting]:
    """Every gate a run of this cluster waits at (the running workflows of its task queue, each asked)."""
    return asyncio.run(_waiting(settings))


async def _waiting(settings: TemporalSettings) -> list[c.Waiting]:
    client = await connect(settings, "Nothing was listed")
    return await _waiting_on(client, settings)


async def _waiting_on(client: Client, settings: TemporalSettings) -> list[c.Waiting]:
    query = f"WorkflowType = '{c.WORKFLOW}' AND ExecutionStatus = 'Running' AND TaskQueue = '{settings.task_queue}'"
    found: list[c.Waiting] = []
    async for execution in client.list_workflows(query):
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        try:
            found += await handle.query("approvals", result_type=list[c.Waiting], rpc_timeout=timedelta(seconds=10))
        except (RPCError, WorkflowQueryFailedError):
            continue  # no worker answers for it now: it is listed again once one does
    return sorted(found, key=lambda w: (w.since, w.run_id, w.label))


def decide(settings: TemporalSettings, run_id: str, step: str, make: Callable[[c.Waiting], c.Decision]) -> c.Decision:
    """Send the decision ``make`` returns for the gate of ``run_id`` named ``step`` (``step``, ``step[item]``,
    or its label); the decision as the worker checked it."""
    return asyncio.run(_decide(settings, run_id, step, make))


async def _decide(
    settings: TemporalSettings, run_id: str, step: str, make: Callable[[c.Waiting], c.Decision]
) -> c.Decision:
    client = await connect(settings, "Nothing was decided")
    gates = [gate for gate in await _waiting_on(client, settings) if gate.run_id == run_id]
    named = [gate for gate in gates if step in (gate.label, gate.step, f"{gate.step}[{gate.item}]")]
    if len(named) != 1:
        waits = ", ".join(gate.label for gate in gates) or "no gate"
        what = "names several of its gates: name one as STEP[ITEM]" if named else "is not a gate it waits at"
        raise NothingWaits(f"run {run_id} on Temporal at {settings.address}: {step} {what} (it waits at: {waits})")
    gate = named[0]
    handle = client.get_workflow_handle(gate.workflow_id)
    try:
        return await handle.execute_update("decide", make(gate), result_type=c.Decision)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        while cause is not None and not isinstance(cause, ApplicationError) and cause.__cause__ is not None:
            cause = cause.__cause__
        raise DecisionRefused(f"{gate.label} of run {run_id}: {getattr(cause, 'message', None) or exc}") from None
