"""The one interface every executor has, and the registry that builds them by step kind.

Like pyinfra's ``connectors/base.py``: one small interface, one class per transport, and nothing
reached through private attributes. The dispatcher, the simulation and (at team scale) a worker
that runs steps elsewhere all talk to an executor through these four members only:

- ``kind``: the step kind it serves (``api``, ``ssh``, ``local``, ``talosctl``, ``http``);
- ``execute(action, progress)``: do it, return a ``Result`` or raise ``StepFailed``;
- ``preview(action, facts)``: what doing it would change on the cluster, without doing it;
- ``missing(action)``: the programs doing it needs on this machine that are not installed, so a
  run stops before its first change rather than in the middle;
- ``close()``: release connections; the executor is not used afterwards.

Credentials are given to an executor when it is built (a token source it asks at the moment of
use), never through ``execute``: an action stays plain data that can be planned and journaled.
"""

from __future__ import annotations

import shutil
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


#: The action words of a ``Change`` that make, alter or remove a resource; every other word is an
#: action done to it (``start``, ``snapshot``, ``apply-config``...), counted after the ``;`` of a summary.
RESOURCE_ACTIONS = ("create", "change", "destroy", "replace")
UNKNOWN = "unknown"


def unknown_value(reason: str) -> dict[str, str]:
    """A value the review cannot give (``{"unknown": reason}``): known only at run time, or not read
    (``offline``). Plain data, so a change set stays JSON and a reader tells it from any real value."""
    return {"unknown": reason}


def is_unknown_value(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"unknown"}


@dataclass(frozen=True)
class FieldChange:
    """One field of a resource, ``before -> after``.

    ``before`` is None when the field is not set now (or the resource is new), ``after`` None when
    the change removes it; either may be ``unknown_value(...)``. ``pending`` says PVE keeps the new
    value pending until the VM restarts (it runs, and the field cannot be hot-plugged).
    """

    name: str
    before: Any = None
    after: Any = None
    pending: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "before": self.before, "after": self.after, "pending": self.pending}


@dataclass(frozen=True)
class Lost:
    """What a ``destroy`` takes with it: a disk (``detail``: its size and storage) or a snapshot."""

    kind: str  # disk | snapshot | backup | file
    name: str
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "detail": self.detail}


@dataclass(frozen=True)
class Change:
    """One effect an action would have on the cluster, as a review lists it, like ``terraform plan``.

    ``action`` is ``create``, ``change``, ``destroy``, ``replace`` (see ``RESOURCE_ACTIONS``), an
    action word done to the resource (``start``, ``stop``, ``migrate``, ``snapshot``, ``backup``,
    ``apply-config``...), or ``unknown`` when the executor cannot tell what a call or a script does.
    ``resource`` is its kind (``vm``, ``container``, ``disk``, ``snapshot``, ``backup``, ``user``,
    ``token``, ``acl``, ``file``, ``talos-node``...), ``id`` what names it (``1031``,
    ``1031/scsi0``, ``root@pam!ci``), ``name`` the line a reader recognises it by
    (``vm 1031 stg-cp01 (pve01, running)``). ``fields`` are the fields it sets (with their values
    before, read live in a dry-run), ``lost`` what a destroy takes with it, ``step``/``item`` the
    step (and loop item) that makes the change, ``detail`` one more line for the reader, ``when``
    the run-time condition it depends on (a step whose inputs only the run produces). Never a
    secret: values come from the rendered action, which holds none.
    """

    action: str
    resource: str
    id: str
    name: str = ""
    fields: tuple[FieldChange, ...] = ()
    lost: tuple[Lost, ...] = ()
    step: str = ""
    item: str | None = None
    detail: str = ""
    when: str = ""  # not "": the change happens only if this holds, known at run time (not counted as certain)

    def as_dict(self) -> dict[str, Any]:
        """The change as JSON (the keys are stable: plans, saved plans and the HTML page read them)."""
        return {
            "action": self.action,
            "resource": self.resource,
            "id": self.id,
            "name": self.name,
            "fields": [f.as_dict() for f in self.fields],
            "lost": [lost.as_dict() for lost in self.lost],
            "step": self.step,
            "item": self.item,
            "detail": self.detail,
            "when": self.when,
        }


class Executor(Protocol):
    """Turns one kind of rendered action into a ``Result``; see the module doc."""

    kind: str

    def execute(self, action: Any, progress: Progress | None = None) -> Result: ...

    def preview(self, action: Any, facts: Facts) -> list[Change]: ...

    def missing(self, action: Any) -> list[str]: ...

    def close(self) -> None: ...


def not_installed(names: Iterable[str], path: str | None) -> list[str]:
    """Those of ``names`` that are not programs on ``path`` (a PATH value; None: this process's)."""
    return [name for name in dict.fromkeys(names) if shutil.which(name, path=path) is None]


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
