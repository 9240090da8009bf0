"""``runbook worker``: serves the task queue of one home's cluster until Ctrl-C or SIGTERM.

Activities are synchronous (the executors block: HTTP, ssh, subprocesses) and run on a thread pool,
one thread per step item in flight, as the local runner's worker threads do.
"""

from __future__ import annotations

import asyncio
import signal
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


async def _serve(home: Home, config: ClusterConfig, settings: TemporalSettings, ready: asyncio.Event) -> None:
    client = await connect(settings, "The worker did not start")
    activities = Activities(home, config, client)
    with ThreadPoolExecutor(max_workers=MAX_ITEMS, thread_name_prefix="runbook-activity") as pool:
        worker = Worker(
            client,
            task_queue=settings.task_queue,
            workflows=[RunWorkflow],
            activities=activities.all(),
            activity_executor=pool,
            max_concurrent_activities=MAX_ITEMS,
            graceful_shutdown_timeout=timedelta(seconds=5),
            max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
            default_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
            # A workflow task waiting for this (lost) worker goes to another after a heartbeat's time, as a step does.
            sticky_queue_schedule_to_start_timeout=timedelta(seconds=settings.heartbeat_seconds),
        )
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, stopping.set)
        async with worker:
            ready.set()
            await stopping.wait()


def serve(home: Home, config: ClusterConfig, settings: TemporalSettings, on_ready: object = None) -> None:
    """Serve until Ctrl-C or SIGTERM; ``on_ready`` (a callable) is called once the worker polls."""
    ready = asyncio.Event()

    async def main() -> None:
        async def told() -> None:
            await ready.wait()
            if callable(on_ready):
                on_ready()

        await asyncio.gather(_serve(home, config, settings, ready), told())

    asyncio.run(main())
