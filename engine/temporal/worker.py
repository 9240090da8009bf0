"""``runbook worker``: serves the task queue of one home's cluster until Ctrl-C or SIGTERM.

Activities are synchronous (the executors block: HTTP, ssh, subprocesses) and run on a thread pool,
one thread per step item in flight, as the local runner's worker threads do.

A worker polls two task queues: the cluster's (workflows, the activity that opens a run and the one
that takes a run over from a lost worker, approvals' checks), and one of its own
(``worker_queue``), where the runs it holds send every other activity: a run sticks to one worker.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.worker import Worker

from ..load.config import ClusterConfig
from ..load.home import Home
from .activities import Activities
from .client import connect
from .settings import TemporalSettings
from .workflow import RunWorkflow

#: Step items in flight on one worker at once (the runner's own bound, ``--concurrency``'s maximum).
MAX_ITEMS = 64
#: At most one heartbeat a second per activity reaches the server: its progress events go with it, so the
#: CLI following a run prints a step's lines within about a second (the SDK's default: 80% of the timeout).
HEARTBEAT_THROTTLE = timedelta(seconds=1)


def worker_queue(task_queue: str) -> str:
    """This worker's own task queue: the cluster's, then who serves it (host, process, chance), unique
    among the queue's workers and readable in history and in ``holder.json``."""
    return f"{task_queue}/worker/{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


async def _serve(home: Home, config: ClusterConfig, settings: TemporalSettings, own: str, ready: asyncio.Event) -> None:
    client = await connect(settings, "The worker did not start")
    activities = Activities(home, config, client, own)
    with ThreadPoolExecutor(max_workers=2 * MAX_ITEMS, thread_name_prefix="runbook-activity") as pool:
        common = {
            "activities": activities.all(),
            "activity_executor": pool,
            "max_concurrent_activities": MAX_ITEMS,
            "graceful_shutdown_timeout": timedelta(seconds=5),
            "max_heartbeat_throttle_interval": HEARTBEAT_THROTTLE,
            "default_heartbeat_throttle_interval": HEARTBEAT_THROTTLE,
        }
        cluster = Worker(
            client,
            task_queue=settings.task_queue,
            workflows=[RunWorkflow],
            # A workflow task waiting for this (lost) worker goes to another after a heartbeat's time, as a step does.
            sticky_queue_schedule_to_start_timeout=timedelta(seconds=settings.heartbeat_seconds),
            **common,
        )
        mine = Worker(client, task_queue=own, **common)
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, stopping.set)
        async with cluster, mine:
            ready.set()
            await stopping.wait()


def serve(
    home: Home, config: ClusterConfig, settings: TemporalSettings, on_ready: Callable[[str], None] | None = None
) -> None:
    """Serve until Ctrl-C or SIGTERM; ``on_ready`` is called with the worker's own queue once it polls."""
    ready = asyncio.Event()
    own = worker_queue(settings.task_queue)

    async def main() -> None:
        async def told() -> None:
            await ready.wait()
            if on_ready is not None:
                on_ready(own)

        await asyncio.gather(_serve(home, config, settings, own, ready), told())

    asyncio.run(main())
