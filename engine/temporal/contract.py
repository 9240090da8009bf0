"""What the client, the workflow and the activities hand each other: plain dataclasses, JSON in history.

Everything here enters the workflow's history, which outlives the run and is readable by anyone
who may read the namespace, so none of it holds a secret: parameters are the non-secret ones,
secret parameters travel as their sources (``env:VAR``, ``pass:PATH``: where the worker reads
them, never the value), and step outputs are left on the worker (its journal) except a ``show``
step's, masked, with a digest of each (``Event.output_sha256``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

WORKFLOW = "runbook-run"
OPEN = "runbook-open-run"
ITEMS = "runbook-section-items"
TASK = "runbook-step-item"
END_SECTION = "runbook-end-section"
CLOSE = "runbook-close-run"
CHECK_DECISION = "runbook-check-decision"
#: A run sticks to the worker that opened it (its own task queue, ``worker.worker_queue``); when that
#: worker is lost, any worker of the cluster's queue takes the run over from its journal.
TAKE = "runbook-take-run"

#: The run's clone slots, held in its workflow (engine/temporal/slots.py): an update that returns once
#: the slot is taken, and a signal that gives it back.
SLOT = "clone-slot"
SLOT_FREED = "clone-slot-freed"

#: ApplicationError types an activity raises for what the run decided, never retried.
STEP_FAILED = "StepFailed"
GATE_STOP = "GateStop"
PROBLEMS = "RunbookProblems"
REFUSED = "RunRefused"
GATE_WAITS = "GateWaits"  # the step met a gate nobody approved yet: the workflow waits for a decision
GATE_REJECTED = "GateRejected"


@dataclass
class Identity:
    """Who started a run or decided a gate, as the worker can check it.

    With mutual TLS, ``name`` is the subject of the client certificate the command connected with,
    ``certificate`` that certificate (PEM) and ``signature`` its key's signature of what was done
    (``engine.temporal.identity``): the worker checks both against the CA it trusts for clients. Without
    it, ``name`` is the OS user (``user@host``), a claim nobody checked: ``authenticated`` stays False.
    """

    name: str
    authenticated: bool = False
    how: str = "OS user, unauthenticated"
    certificate: str | None = None
    signature: str | None = None


#: The workflow's memo (in visibility: ``runbook runs --temporal`` lists runs from it, no worker needed):
#: the run's id, runbook, profile and starter, set at start, and ``status``, upserted by the workflow
#: as the run goes (``running`` while none is set; ``waiting`` while a gate waits; the ending's status).
MEMO_KEYS = ("run_id", "runbook", "profile", "started_by", "simulate")
MEMO_STATUS = "status"


@dataclass
class RunStart:
    """The workflow's input: what ``runbook run`` was asked, and who asked."""

    run_id: str
    runbook: str
    profile: str | None
    params: dict[str, str]
    secret_sources: dict[str, str]
    approve_all: bool
    approve: list[str]
    started_by: str
    simulate: bool = False
    concurrency: int = 16
    heartbeat_seconds: float = 30.0
    step_timeout_seconds: float = 6 * 3600.0
    starter: Identity | None = None  # who started it, signed when over mutual TLS (four-eyes compares with it)
    approval_timeout_seconds: float = 24 * 3600.0  # a gate waits this long for a decision, then the run fails
    schedule: str = ""  # the schedule that starts it (its run_id then chosen by the workflow, per run)
    plan: dict[str, Any] | None = None  # a saved plan applied (``runbook apply``): sealed, secret-free
    plan_file: str = ""  # where the operator had it, for messages
    resume: bool = False  # ``runbook resume``: the run is in the workers' home; never made anew


def memo(start: RunStart) -> dict[str, Any]:
    """What visibility shows of a run (``MEMO_KEYS``): nothing secret, nothing a worker must answer."""
    return {key: getattr(start, key) for key in MEMO_KEYS}


@dataclass
class Event:
    """A progress event of the run, as the CLI following it prints it (``engine.report.progress``)."""

    kind: str  # start | step | progress
    entry: dict[str, Any]
    output_sha256: str | None = None
    seq: str = ""  # unique in the run (activity, attempt, number): the follower prints each event once


@dataclass
class SectionPlan:
    """One section of the run (``engine.run.sections``): its steps and how many items may be in flight."""

    steps: list[str]
    width: int


@dataclass
class Ending:
    """How the run ended, as the CLI prints it."""

    status: str
    exit_code: int
    message: str
    warnings: list[str] = field(default_factory=list)  # what the worker found the operator must know


@dataclass
class Opened:
    """``open_run``'s answer: the sections to drive, or the outcome that ended the run before it was made."""

    sections: list[SectionPlan] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    outcome: Ending | None = None
    worker: str = ""  # the task queue of the worker that opened the run: every later activity of it goes there
    meta: dict[str, Any] | None = None  # the run's run.json (secret-free): its record, read from history anywhere


@dataclass
class Taken:
    """``take_run``'s answer: the task queue of the worker that took the run over."""

    worker: str
    events: list[Event] = field(default_factory=list)


@dataclass
class SectionRef:
    run_id: str
    section: int
    start: RunStart


@dataclass
class Items:
    count: int
    events: list[Event] = field(default_factory=list)


@dataclass
class Waiting:
    """A gate the run waits at: what ``runbook approvals`` lists, and the key a decision names."""

    run_id: str
    step: str
    item: str | None
    label: str
    reasons: list[str]
    display: str  # what the step would send or run, rendered (secret parameters masked)
    changes: list[str]  # its change set, as the dry-run's review shows it
    since: str = ""  # ISO 8601 UTC, the workflow's time when it began to wait
    workflow_id: str = ""


@dataclass
class Decision:
    """``runbook approve`` / ``runbook reject`` of one waiting gate; ``at`` and ``checked`` set by the workflow."""

    run_id: str
    step: str
    item: str | None
    approve: bool
    by: Identity
    reason: str = ""
    at: str = ""
    checked: str = ""  # how the worker checked ``by``: "mTLS client certificate, verified" / "unauthenticated"


@dataclass
class DecisionCheck:
    """What the worker checks a decision against: the run's starter (four-eyes)."""

    decision: Decision
    start: RunStart


@dataclass
class TaskRef:
    run_id: str
    section: int
    item: int
    stage: int
    start: RunStart
    decision: Decision | None = None  # the approval of this item's gate, once given


@dataclass
class TaskDone:
    events: list[Event] = field(default_factory=list)


@dataclass
class SlotAsk:
    """A clone asking its slots: ``[kind, name, limit]`` each (``schedule.CloneLimits.slots``), for
    ``holder``, its step's activity (a retried attempt holds what the earlier one took)."""

    holder: str
    slots: list[list[Any]]


@dataclass
class Close:
    run_id: str
    status: str  # succeeded | failed | stopped_at_gate
    message: str
    start: RunStart
    rejected: Decision | None = None  # the rejection that ended the run, journaled as gate_rejected
