"""Rendered, checked steps ready to execute, and what executing them returns.

The renderer turns a ``Step`` (plus context) into one of these actions; an executor turns an action
into a ``Result`` or raises ``StepFailed``. Actions hold no secret: credentials are resolved by the
executor at the moment of use. Everything here is plain data, so plans and journals can record it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import exitcodes
from ..errors import RunbookError


@dataclass(frozen=True)
class ApiRequest:
    """A Proxmox VE REST call; ``path`` is relative to ``/api2/json``."""

    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    node: str | None = None  # cluster node whose endpoint to try first
    poll: bool = True  # wait for a returned task UPID to end
    timeout: float | None = None

    kind = "api"  # the step kind, and so the executor, that runs it (a class attribute, not data)

    @property
    def mutating(self) -> bool:
        return self.method != "GET"


@dataclass(frozen=True)
class TaskFollow:
    """Wait for a PVE task that is already running (``upid``), as if this run had just started it.

    Not a step of any runbook: a resume uses it for the tasks an interrupted run left behind (a
    UPID its journal holds, or one the cluster lists as running on the run's VMs), so they are
    followed to their end, through the API executor's polling and outage handling, before the
    run goes on. Its result is what the request that started the task would have returned.
    """

    upid: str
    timeout: float | None = None

    kind = "api"


@dataclass(frozen=True)
class ShellCommand:
    """A shell script, run under ``set -eu`` on a PVE node (``node`` set) or on this machine (``node`` None)."""

    script: str
    node: str | None = None
    timeout: float | None = None
    env: dict[str, str] = field(default_factory=dict)  # never secrets; see Secret handling in executors
    token_env: str | None = None  # hand the API token to the command in this variable, at the moment of use
    # What the script changes, as its step's ``changes`` attribute declares (None: not declared).
    changes: tuple[dict[str, str], ...] | None = None

    @property
    def kind(self) -> str:
        """One action type serves both shell kinds: a script for a node goes over ssh."""
        return "ssh" if self.node else "local"


@dataclass(frozen=True)
class TalosctlCommand:
    """``talosctl`` with these arguments (no shell); TALOSCONFIG is set from the profile's config dir."""

    argv: tuple[str, ...]
    talosconfig: str | None = None
    cwd: str | None = None
    timeout: float | None = None
    changes: tuple[dict[str, str], ...] | None = None  # as ShellCommand.changes

    kind = "talosctl"


@dataclass(frozen=True)
class HttpRequest:
    """A plain HTTP(S) request to another service, such as the Talos Image Factory."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    expect: tuple[int, ...] = ()  # empty: any 2xx
    timeout: float | None = None
    changes: tuple[dict[str, str], ...] | None = None  # as ShellCommand.changes

    kind = "http"


@dataclass(frozen=True)
class FileWrite:
    """Write ``content`` to ``path`` atomically with ``mode``, on ``node`` over SSH or on this machine (None).

    ``size`` and ``sha256`` describe the content; they are what a plan, the journal and ``--json``
    show of a ``secret`` file, whose content is never recorded (``record``). An action read back
    from such a record has ``content`` None and cannot be executed: it only says what was planned.
    """

    path: str
    content: str | None = field(default=None, repr=False)
    mode: str = "0600"
    format: str = "text"  # yaml | json | text: how the content was checked
    node: str | None = None
    secret: bool = False
    timeout: float | None = None
    size: int = 0
    sha256: str = ""

    kind = "file"

    def __post_init__(self) -> None:
        if self.content is not None:
            raw = self.content.encode()
            object.__setattr__(self, "size", len(raw))
            object.__setattr__(self, "sha256", hashlib.sha256(raw).hexdigest())

    def record(self) -> dict[str, Any]:
        """The action as plans and the journal keep it: a secret file's content left out. When that
        content holds a value known only after run, the digest says so, so a plan still sees it."""
        data = asdict(self)
        if self.secret:
            data["content"] = None
            if self.content is not None and "(known after run: " in self.content:
                data["sha256"] = "(known after run: the content)"
        return data


Action = ApiRequest | ShellCommand | TalosctlCommand | HttpRequest | FileWrite


def action_as_dict(action: Action) -> dict[str, Any]:
    """JSON-ready form of an action (tuples as lists), tagged with its type, for plans and the journal."""
    data = action.record() if isinstance(action, FileWrite) else asdict(action)
    return {"type": type(action).__name__, **_json_ready(data)}


def action_from_dict(data: Mapping[str, Any]) -> Action:
    """The action ``action_as_dict`` turned into ``data``: plans and journals keep actions as data,
    and what reads them back (a preflight, a saved plan) gets the very action that was planned."""
    fields = dict(data)
    kinds: dict[str, type[Action]] = {
        kind.__name__: kind for kind in (ApiRequest, ShellCommand, TalosctlCommand, HttpRequest, FileWrite)
    }
    kind = kinds[str(fields.pop("type"))]
    for name in ("argv", "expect"):
        if name in fields:
            fields[name] = tuple(fields[name])
    return kind(**fields)


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


@dataclass
class Result:
    """What a step produced.

    ``data`` is the step's output as later steps and ``extract`` see it:
    - api: the response's ``data``; for a task, ``{"upid", "node", "exitstatus", "data"}`` where
      ``data`` is the original UPID string;
    - shell, talosctl: ``{"stdout", "stderr", "exit_code"}`` plus ``"json"`` when stdout was parsed;
    - http: ``{"status", "headers", "body"}`` plus ``"json"`` when the body is JSON;
    - file: ``{"path", "changed", "bytes", "sha256"}``.
    ``summary`` is one line for progress output (never a secret). ``left_alone`` says the executor
    found what the step asks for already in place and changed nothing (a file holding that content
    and mode): the run shows the step as skipped, "already in place", as if a ``check`` had held.
    """

    data: Any
    summary: str = ""
    requests: int = 0  # API requests this step made (for performance reports)
    left_alone: bool = False


class StepFailed(RunbookError):
    """A step did not succeed. ``message`` says what happened and what to do, in an operator's words.

    ``retryable`` marks failures that may succeed if tried again (a lock held, a dropped
    connection on an idempotent request). ``sent`` is False when the request or command provably
    never reached the target, so trying another node cannot run it twice. ``lock`` is True when
    the executor recognised that a lock held by someone else was the cause (PVE's "VM is locked",
    "can't lock file"...): the runner waits such a failure out with backoff, since in a concurrent
    step the run's own items may be what holds the lock.
    """

    exit_code = exitcodes.FAILED

    def __init__(
        self, message: str, *, retryable: bool = False, sent: bool = True, data: Any = None, lock: bool = False
    ):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.sent = sent
        self.data = data
        self.lock = lock


def quiet(line: str) -> None:
    """The progress callback of a read the engine makes for itself (facts, identity, preflight,
    settling): its progress is not shown."""
