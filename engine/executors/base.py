"""The one interface every executor has, and the registry that builds them by step kind.

Like pyinfra's ``connectors/base.py``: one small interface, one class per transport, and nothing
reached through private attributes. The dispatcher, the simulation and (at team scale) a worker
that runs steps elsewhere all talk to an executor through these four members only:

- ``kind``: the step kind it serves (``api``, ``ssh``, ``local``, ``talosctl``, ``http``);
- ``execute(action, progress)``: do it, return a ``Result`` or raise ``StepFailed``;
- ``preview(action, facts)``: what doing it would change on the cluster, without doing it;
- ``close()``: release connections; the executor is not used afterwards.

Credentials are given to an executor when it is built (a token source it asks at the moment of
use), never through ``execute``: an action stays plain data that can be planned and journaled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..runbook.actions import Result

if TYPE_CHECKING:
    from ..load.facts import Facts
    from ..run.credentials import ApiToken

Progress = Callable[[str], None]
"""Called with each line of progress a step makes (command output, task status); never a secret."""

TaskStarted = Callable[[str, str], None]
"""Told ``(upid, node)`` when a PVE task the step started is known, before it is first polled: the
runner journals it, so a resume can follow the task to its end (``ApiExecutor.execute``'s ``on_task``)."""


@dataclass(frozen=True)
class Change:
    """One effect an action would have on the cluster, as a review lists it.

    ``action`` is what happens to the resource: ``create``, ``change``, ``destroy``, or ``unknown``
    when the executor cannot tell (a script may do anything). ``resource`` is its kind (``vm``,
    ``node``, ``storage``...), ``target`` what the action's path or command names (a VMID, a node,
    a URL), ``detail`` one line for the reader (never a secret).
    """

    action: str
    resource: str
    target: str
    detail: str = ""


class Executor(Protocol):
    """Turns one kind of rendered action into a ``Result``; see the module doc."""

    kind: str

    def execute(self, action: Any, progress: Progress | None = None) -> Result: ...

    def preview(self, action: Any, facts: Facts) -> list[Change]: ...

    def close(self) -> None: ...


class Executes(Protocol):
    """What the runner needs to run a step: ``execute`` alone (a ``Dispatcher``, or a test's fake).

    A real run passes ``on_task`` with API requests, to journal the UPID of a task they start."""

    def execute(self, action: Any, progress: Progress, on_task: TaskStarted | None = None) -> Result: ...


class TokenProvider(Protocol):
    """Gives the API token at each use (``engine.run.credentials.TokenSource``, or the simulation's)."""

    def get(self) -> ApiToken: ...


ExecutorFactory = Callable[[], Executor]


class Registry:
    """Executors by step kind, each built by its factory on first use and kept for the run.

    Building lazily keeps a runbook of only ``local`` steps from ever needing an API token or a
    CA file. ``register`` replaces a kind's factory (the simulation registers its own); an
    executor already built is kept, so register before the first step.
    """

    def __init__(self, factories: Iterable[tuple[str, ExecutorFactory]] = ()):
        self._factories: dict[str, ExecutorFactory] = dict(factories)
        self._made: dict[str, Executor] = {}
        self._lock = threading.Lock()

    def register(self, kind: str, factory: ExecutorFactory) -> None:
        self._factories[kind] = factory

    def get(self, kind: str) -> Executor:
        """The executor for ``kind``, built now if this is its first use."""
        with self._lock:
            if kind not in self._made:
                try:
                    factory = self._factories[kind]
                except KeyError:
                    raise TypeError(f"no executor for step kind {kind!r}") from None
                self._made[kind] = factory()
            return self._made[kind]

    def close(self) -> None:
        """Close every executor built so far; the next use builds afresh."""
        with self._lock:
            made, self._made = list(self._made.values()), {}
        for executor in made:
            executor.close()
