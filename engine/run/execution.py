"""One invocation of ``runbook run`` or ``runbook resume``, from inputs to the journal's last record.

Wires the pieces in the order data flows: prepare the session (planning against the live cluster
unless offline) -> take the profile lock -> open the run record -> run the steps -> record the end.
The CLI only prints what this returns.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .. import exitcodes
from ..errors import RunbookError
from ..executors.api import ApiSetupError
from ..executors.base import Change
from ..executors.changeset import fold
from ..load.facts import ClusterIdentity, Facts
from ..load.home import Home
from ..load.problems import InputError
from ..runbook.actions import ApiRequest, StepFailed, TalosctlCommand, quiet
from ..runbook.model import Runbook
from ..runbook.render import reads_facts
from .credentials import CredentialError
from .dispatch import Dispatcher
from .identity import read_identity, talks_to_cluster
from .journal import JournalError, RunMeta, RunRecord, RunState, load_run, new_run_id, task_history
from .livefacts import LiveFacts, PlannedFacts
from .preflight import NotReady, missing_programs, planned_actions, talosctl_version, version_problem
from .preview import Previewer
from .runlock import LockHeld, ProfileLock
from .runner import Approver, GateStop, PlanDiverged, PlanEntry, Runner, StepError
from .savedplan import inputs_moved, moved, planned_against
from .secretparams import NO_SECRETS, SecretInput, SecretParams, resolve
from .session import Session, called_changed, prepare, runbook_path
from .settle import StaleLock, follow_in_flight, read_vms, run_vmids, wait_for_locks
from .upfront import Gate, gates_ahead

#: Shown the gates a run will meet (and a heading saying whose), before its first change; returns
#: the certain gates it leaves unapproved (empty: the run goes on). ``cli._Approver.ahead`` asks on a terminal.
AskAhead = Callable[[list[Gate], str], list[Gate]]


@dataclass
class Outcome:
    """How an invocation ended; ``message`` is the last thing the operator reads."""

    status: str  # planned | succeeded | failed | stopped_at_gate | interrupted | locked | refused
    exit_code: int
    message: str
    session: Session | None = None
    run_id: str | None = None
    entries: list[PlanEntry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)  # a dry-run's change set (values before read live)
    facts: Facts | None = None  # what a live dry-run read: the facts a saved plan is checked against
    cluster: ClusterIdentity | None = None  # which cluster a live dry-run was made against


def read_facts(dispatcher: Dispatcher, *, named: bool = False) -> Facts:
    """The cluster's VMs, nodes and storages (one GET), read at the edge: planning, previews and the
    templates' facts use this snapshot. ``named``: also the cluster's name (``cluster.name``), from
    ``/cluster/status`` (left "" when the token may not read it)."""
    result = dispatcher.execute(ApiRequest("GET", "/cluster/resources"), quiet)
    facts = Facts.from_cluster_resources(result.data)
    if named:
        try:
            status = dispatcher.execute(ApiRequest("GET", "/cluster/status"), quiet).data
        except StepFailed:
            return facts
        facts = dataclasses.replace(facts, name=ClusterIdentity.from_cluster_status(status, "").name)
    return facts


def _reads_facts(runbook: Runbook) -> bool:
    """Whether a step of ``runbook`` reads the live facts (``cluster``, ``profile.members``...)."""
    return any(reads_facts(step) for step in runbook.steps)


def _live_facts(session: Session, dispatcher: Dispatcher) -> LiveFacts:
    """A real run's facts: the snapshot it planned with, read again before a step that reads facts
    once a changing step finished."""
    named = any(reads_facts(step) for step in session.runbook.steps)
    return LiveFacts(session.facts, lambda: read_facts(dispatcher, named=named))


#: What the first read of the cluster can fail with: no node answered, TLS, the token (missing, refused).
_UNREADABLE = (StepFailed, CredentialError, ApiSetupError)


def _not_started(exc: RunbookError) -> Outcome:
    """The first read of the cluster failed: nothing ran and no run was made, so nothing is to resume."""
    return Outcome(
        "failed",
        exitcodes.NOT_STARTED,
        f"cannot read the cluster to plan: {exc}\nNothing ran and no run was made: fix the cause, then run again",
    )


def _prepare(
    home: Home,
    name: str,
    profile: str | None,
    given: Mapping[str, str],
    dispatcher: Dispatcher | None,
    *,
    live: bool = True,
    placed: Mapping[str, str] | None = None,
    secrets: SecretInput | SecretParams = NO_SECRETS,
) -> Session:
    """The session for ``dispatcher``'s cluster, planned against it when ``live`` and a profile is used;
    ``placed`` keeps a resumed run's VMs where it put them. ``secrets``: where the secret parameters
    come from (read here, once), or the ones an earlier preparation of the same command read."""
    session = prepare(home, name, profile, given, placed=placed)
    reads = _reads_facts(session.runbook)
    if dispatcher is not None and live and (session.profile is not None or reads):
        session = prepare(home, name, profile, given, read_facts(dispatcher, named=reads), placed=placed)
    if isinstance(secrets, SecretInput):
        secrets = resolve(session.runbook, secrets.sources, os.environ, secrets.ask)
    session = session.with_secrets(secrets)
    if dispatcher is not None:
        for value in secrets.values.values():
            dispatcher.masker.add(value)  # before any step, or any error, could print it
        dispatcher.adjust_context(session.context)
    return session


def plan_run(
    home: Home,
    name: str,
    profile: str | None,
    given: Mapping[str, str],
    *,
    offline: bool,
    dispatcher: Dispatcher | None,
    on_event: Callable[[str, PlanEntry], None] | None = None,
    secrets: SecretInput = NO_SECRETS,
) -> Outcome:
    """A dry-run: the plan of every step; read-only steps may query the cluster unless ``offline``."""
    live = None if offline else dispatcher
    try:
        session = _prepare(home, name, profile, given, dispatcher, live=not offline, secrets=secrets)
        cluster = _identity(session, live) if live is not None else None
    except _UNREADABLE as exc:
        return _not_started(exc)
    previewer = Previewer(session.facts, live)
    runner = Runner(
        session.runbook,
        session.context,
        executor=live,
        dry_run=True,
        approver=_Never(),
        on_event=on_event,
        preview=previewer,
        revealed=session.secrets.revealed(),
        facts=PlannedFacts(lambda: previewer.facts),
    )
    try:
        entries = runner.run()
    except StepError as exc:
        return Outcome(
            "failed",
            exitcodes.NOT_STARTED,
            f"a read-only step failed while planning: {exc.message}",
            session,
            entries=runner.entries,
        )
    return Outcome(
        "planned",
        exitcodes.OK,
        "dry-run: nothing was changed",
        session,
        entries=entries,
        warnings=_notes(session) + (list(dispatcher.warnings) if live else []),
        changes=fold(runner.changes),
        facts=previewer.facts,
        cluster=cluster,
    )


class _Never:
    who = None

    def approve(self, entry: PlanEntry) -> bool:
        return False


def _notes(session: Session) -> list[str]:
    """What the plan says the operator must know (a node left out of placement)."""
    return list(session.plan.notes) if session.plan is not None else []


def _identity(session: Session, dispatcher: Dispatcher) -> ClusterIdentity | None:
    """Which cluster answers, for a run that talks to one (a profile, or API steps)."""
    if not talks_to_cluster(session.runbook, session.profile is not None):
        return None
    return read_identity(dispatcher.execute, dispatcher.trust)


def _meta(session: Session, run_id: str, mode: str, cluster: ClusterIdentity | None = None) -> RunMeta:
    hashes = session.hashes()
    profile = session.profile
    return RunMeta(
        run_id=run_id,
        runbook=session.runbook.name,
        runbook_file=session.runbook.file,
        runbook_sha256=hashes["runbook"],
        profile=profile.name if profile else None,
        profile_file=profile.file if profile else None,
        profile_sha256=hashes.get("profile"),
        cluster_config_sha256=hashes["config"],
        parameters=session.params,
        secret_parameters=dict(session.secrets.sources) or None,
        mode=mode,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        cluster=cluster.as_dict() if cluster is not None else None,
        placement={vm.name: vm.node for vm in session.plan.vms} if session.plan is not None else None,
        called_sha256=session.called_hashes() or None,
    )


def preflight(session: Session, dispatcher: Dispatcher) -> list[str]:
    """Raise ``NotReady`` when this machine lacks what the run will need; else the warnings to show.

    The run's plan (offline: nothing is sent) says which steps may run; a plan that stops early
    (a template that needs a step's output, a gate) is checked as far as it got.
    """
    planner = Runner(session.runbook, session.context, executor=None, dry_run=True, approver=_Never())
    try:
        planner.run()
    except (InputError, StepError, GateStop):
        pass  # the run stops there too, and says why; what comes before it is checked
    actions = planned_actions(session.runbook, planner.entries)
    missing = missing_programs(actions, dispatcher.missing)
    talos = (session.profile.data.get("talos") if session.profile is not None else None) or {}
    problem = warning = None
    uses_talosctl = any(action.kind == "talosctl" for _, action in actions)
    if talos.get("version") and uses_talosctl and not any(m.program == "talosctl" for m in missing):
        assert session.profile is not None
        try:
            answer = dispatcher.execute(TalosctlCommand(("version", "--client", "--short"), timeout=30), quiet)
            output = str(answer.data.get("stdout", "")) if isinstance(answer.data, dict) else ""
        except StepFailed:
            output = ""
        problem, warning = version_problem(
            talosctl_version(output), str(talos["version"]), f"talos.version in {session.profile.file}"
        )
    if missing or problem:
        raise NotReady(missing, problem)
    return [warning] if warning else []


def _ready(session: Session, dispatcher: Dispatcher, run_id: str | None = None) -> Outcome | list[str]:
    """The preflight's warnings, or the Outcome that stops the run before its first change."""
    try:
        return preflight(session, dispatcher)
    except NotReady as exc:
        return Outcome("refused", exc.exit_code, str(exc), session, run_id)
    except _UNREADABLE as exc:
        if run_id is None:  # no run exists yet: nothing to resume
            return Outcome("failed", exitcodes.NOT_STARTED, f"cannot get ready to run: {exc}", session)
        return Outcome("failed", exitcodes.FAILED, f"cannot get ready to run: {exc}", session, run_id)


def _lock_name(session: Session) -> str:
    return session.profile.name if session.profile else f"runbook-{session.runbook.name.lstrip('_')}"


def _opened(
    home: Home,
    name: str,
    profile: str | None,
    given: Mapping[str, str],
    dispatcher: Dispatcher,
    secrets: SecretInput | SecretParams,
    prepared: tuple[Session, ClusterIdentity | None] | None,
) -> Outcome | tuple[Session, ClusterIdentity | None, list[str]]:
    """What every real run does before it takes its lock: prepare (or take the ``prepared`` session),
    read the cluster's identity, refuse an untrusted runbook, run the preflight; the session, the
    cluster and the preflight's warnings, or the Outcome that stops the run with nothing made."""
    if prepared is not None:
        session, cluster = prepared
    else:
        try:
            session = _prepare(home, name, profile, given, dispatcher, secrets=secrets)
            cluster = _identity(session, dispatcher)
        except _UNREADABLE as exc:
            return _not_started(exc)
    refused = _untrusted(home, session)
    if refused is not None:
        return refused
    ready = _ready(session, dispatcher)
    if isinstance(ready, Outcome):
        return ready
    return session, cluster, ready


def _settled_to_start(
    home: Home,
    session: Session,
    dispatcher: Dispatcher,
    on_event: Callable[[str, PlanEntry], None] | None,
    name: str,
    profile: str | None,
    given: Mapping[str, str],
) -> Outcome | Session:
    """``_settled`` for a new run (tasks in flight, stale locks); an Outcome when that stops it before it is made."""
    try:
        return _settled(home, session, dispatcher, _cluster_notes(on_event), name=name, profile=profile, given=given)
    except (StepFailed, StaleLock) as exc:
        return Outcome(
            "failed",
            exitcodes.NOT_STARTED,
            f"cannot start: {_message(exc)}\nNothing ran and no run was made: once that is resolved, run again",
            session,
        )


def start_run(
    home: Home,
    name: str,
    profile: str | None,
    given: Mapping[str, str],
    *,
    dispatcher: Dispatcher,
    approver: Approver,
    mode: str = "run",
    on_event: Callable[[str, PlanEntry], None] | None = None,
    concurrency: int | None = None,
    ahead: AskAhead | None = None,
    expected: Mapping[tuple[str, str | None], dict[str, Any] | None] | None = None,
    secrets: SecretInput | SecretParams = NO_SECRETS,
    prepared: tuple[Session, ClusterIdentity | None] | None = None,
) -> Outcome:
    """Run a runbook for real, journaled, under its profile's lock; ``concurrency`` as ``Runner`` takes it.
    ``expected``: applying a saved plan, what each changing step must send (see ``apply_plan``), whose
    session and cluster identity, read already, are ``prepared`` (not read twice).

    With ``ahead``, the run is planned first and the gates it will meet are handed to ``ahead``
    before anything changes; a gate it leaves unapproved ends the run there (exit 4), with no run
    made. Without it, each gate is asked when it is met (library callers that approve everything).
    """
    opened = _opened(home, name, profile, given, dispatcher, secrets, prepared)
    if isinstance(opened, Outcome):
        return opened
    session, cluster, ready = opened
    run_id = new_run_id(session.runbook.name, datetime.now(UTC))
    lock = ProfileLock(home.state_dir, _lock_name(session), run_id)
    try:
        note = lock.acquire()
    except LockHeld as exc:
        return Outcome("locked", exitcodes.LOCKED, str(exc), session)
    try:
        settled = _settled_to_start(home, session, dispatcher, on_event, name, profile, given)
        if isinstance(settled, Outcome):
            return settled
        session = settled
        refused = _ask_ahead(ahead, session, dispatcher, "This run will meet these gates")
        if refused is not None:
            refused.warnings[:0] = [note] if note else []  # a reclaimed lock is said, whatever follows
            return refused
        with RunRecord.create(home.state_dir, _meta(session, run_id, mode, cluster)) as record:
            runner = _real_runner(session, record, dispatcher, approver, on_event, concurrency, expected=expected)
            outcome = _drive(runner, record, session, run_id, home)
    finally:
        lock.release()
    outcome.warnings[:0] = ([note] if note else []) + ready + _notes(session)
    outcome.warnings += dispatcher.warnings
    return outcome


@dataclass
class Begun:
    """A run made and ready for its first step, for a driver that runs its steps itself (a Temporal
    workflow: engine/temporal); the driver ends it with ``RunRecord.run_finished``."""

    session: Session
    record: RunRecord
    runner: Runner
    warnings: list[str]


def begin_run(
    home: Home,
    name: str,
    profile: str | None,
    given: Mapping[str, str],
    *,
    run_id: str,
    dispatcher: Dispatcher,
    approver: Approver,
    ahead: AskAhead,
    mode: str,
    on_event: Callable[[str, PlanEntry], None] | None = None,
    concurrency: int | None = None,
    secrets: SecretInput | SecretParams = NO_SECRETS,
    expected: Mapping[tuple[str, str | None], dict[str, Any] | None] | None = None,
    prepared: tuple[Session, ClusterIdentity | None] | None = None,
    holder: str | None = None,
) -> Outcome | Begun:
    """``start_run`` up to its first step, with the same checks in the same order (read the cluster,
    trust, preflight, tasks in flight and locks, gates ahead), under the id ``run_id`` its driver
    chose; an Outcome when the run stops before it is made. No profile lock: the driver keeps one
    run per profile at a time (a Temporal workflow id). ``expected`` and ``prepared`` as for ``start_run``
    (a saved plan applied); ``holder``: the worker that writes the journal (``RunRecord``)."""
    opened = _opened(home, name, profile, given, dispatcher, secrets, prepared)
    if isinstance(opened, Outcome):
        return opened
    session, cluster, ready = opened
    settled = _settled_to_start(home, session, dispatcher, on_event, name, profile, given)
    if isinstance(settled, Outcome):
        return settled
    session = settled
    refused = _ask_ahead(ahead, session, dispatcher, "This run will meet these gates")
    if refused is not None:
        return refused
    record = RunRecord.create(home.state_dir, _meta(session, run_id, mode, cluster), holder)
    runner = _real_runner(session, record, dispatcher, approver, on_event, concurrency, expected=expected)
    return Begun(session, record, runner, ready + _notes(session))


def reopen_run(
    home: Home,
    run_id: str,
    *,
    dispatcher: Dispatcher,
    approver: Approver,
    on_event: Callable[[str, PlanEntry], None] | None = None,
    concurrency: int | None = None,
    secrets: SecretInput = NO_SECRETS,
    expected: Mapping[tuple[str, str | None], dict[str, Any] | None] | None = None,
    holder: str | None = None,
) -> Begun:
    """A run ``begin_run`` made, taken over by another process of its driver (a Temporal worker that
    replaces one that died): read back from its journal as a resume reads it (finished steps are not
    redone, steps in doubt are checked, their tasks followed to their end); ``expected``: the saved
    plan it applies, as ``begin_run`` had it; ``holder``: the worker taking it (``RunRecord.resume``)."""
    loaded = load_run(home.state_dir, run_id)
    meta = loaded.meta
    path = runbook_path(home, meta.runbook)
    given = {k: _as_param(v) for k, v in (meta.parameters or {}).items()}
    session = _prepare(
        home,
        str(path),
        meta.profile,
        given,
        dispatcher,
        placed=meta.placement,
        secrets=secrets.over(meta.secret_parameters),
    )
    record, before = RunRecord.resume(home.state_dir, run_id, holder=holder)
    done = {(k.step, k.item): s.outputs for k, s in before.state.steps.items() if s.status == "finished"}
    session = _settled(
        home,
        session,
        dispatcher,
        _cluster_notes(on_event),
        name=str(path),
        profile=meta.profile,
        given=given,
        resumed=(before.state, record, done),
        placed=meta.placement,
    )
    doubt = frozenset((k.step, k.item) for k in before.state.in_doubt if (k.step, k.item) not in done)
    runner = _real_runner(
        session,
        record,
        dispatcher,
        approver,
        on_event,
        concurrency,
        done=done,
        check_unfinished=doubt,
        expected=expected,
    )
    return Begun(session, record, runner, list(loaded.warnings))


def _real_runner(
    session: Session,
    record: RunRecord,
    dispatcher: Dispatcher,
    approver: Any,
    on_event: Any,
    concurrency: int | None,
    **resumed: Any,
) -> Runner:
    """A runner that changes the cluster and journals into ``record``; ``resumed`` carries what a
    resume knows (finished steps' outputs, steps in doubt). The dispatcher learns first how long
    tasks took in the home's earlier runs, so the API executor polls them when they likely ended."""
    dispatcher.expect_tasks(task_history(record.folder.parent))
    return Runner(
        session.runbook,
        session.context,
        executor=dispatcher,
        dry_run=False,
        approver=approver,
        recorder=record,
        on_event=on_event,
        concurrency=concurrency,
        revealed=session.secrets.revealed(),
        facts=_live_facts(session, dispatcher),
        **resumed,
    )


def resume_run(
    home: Home,
    run_id: str,
    *,
    dispatcher: Dispatcher,
    approver: Approver,
    force: bool,
    on_event: Callable[[str, PlanEntry], None] | None = None,
    concurrency: int | None = None,
    ahead: AskAhead | None = None,
    secrets: SecretInput = NO_SECRETS,
) -> Outcome:
    """Continue a run from its journal: finished steps are not redone; steps in doubt are re-checked.

    ``ahead`` as for ``start_run``: the gates left to meet are approved before the resume changes anything.
    """
    loaded = load_run(home.state_dir, run_id)
    meta = loaded.meta
    if loaded.state.status == "succeeded":
        # Not a refusal: what the operator wants (the run done) already holds.
        return Outcome("succeeded", exitcodes.OK, f"run {run_id} already succeeded; nothing to do", run_id=run_id)
    path = runbook_path(home, meta.runbook)
    given = {k: _as_param(v) for k, v in (meta.parameters or {}).items()}
    try:
        session = _prepare(
            home,
            str(path),
            meta.profile,
            given,
            dispatcher,
            placed=meta.placement,
            secrets=secrets.over(meta.secret_parameters),
        )
        cluster = _identity(session, dispatcher) if meta.cluster is not None else None
    except _UNREADABLE as exc:
        return Outcome(
            "failed",
            exitcodes.FAILED,
            f"cannot read the cluster to plan: {exc}\nNothing ran: fix the cause, then resume again: "
            f"runbook resume {run_id}",
            run_id=run_id,
        )
    if meta.cluster is not None and cluster is not None:
        started_on = ClusterIdentity.from_dict(meta.cluster)
        differences = started_on.differences(cluster)
        if differences:
            return Outcome(
                "refused",
                exitcodes.OTHER_CLUSTER,
                f"refusing to resume {run_id}: it started on {started_on}, and another cluster answers now: "
                f"{'; '.join(differences)}. A run belongs to the cluster it started on, and no --force changes "
                "that. Point cluster-config.yaml back at that cluster to resume, or start a new run here.",
                session,
                run_id,
            )
    refused = _untrusted(home, session, run_id)
    if refused is not None:
        return refused
    changed = [
        name
        for name, (then, now) in {
            "runbook": (meta.runbook_sha256, session.hashes()["runbook"]),
            "profile": (meta.profile_sha256, session.hashes().get("profile")),
            "cluster-config.yaml": (meta.cluster_config_sha256, session.hashes()["config"]),
        }.items()
        if then != now
    ] + called_changed(meta.called_sha256 or {}, session.called_hashes())
    if changed and not force:
        return Outcome(
            "refused",
            exitcodes.REFUSED,
            f"refusing to resume {run_id}: {', '.join(changed)} changed since the run started, so the "
            "remaining steps would not be the ones that were reviewed. Review the change, then resume "
            "with --force, or start a new run",
            session,
            run_id,
        )
    ready = _ready(session, dispatcher, run_id)
    if isinstance(ready, Outcome):
        return ready
    lock = ProfileLock(home.state_dir, _lock_name(session), run_id)
    try:
        note = lock.acquire()
    except LockHeld as exc:
        return Outcome("locked", exitcodes.LOCKED, str(exc), session, run_id)
    try:
        now = load_run(home.state_dir, run_id).state  # as the last writer left it, now that it is ours
        done = {(k.step, k.item): s.outputs for k, s in now.steps.items() if s.status == "finished"}
        doubt = frozenset((k.step, k.item) for k in now.in_doubt)
        heading = (
            f"Resuming {run_id} will meet these gates (approvals given to the run before, with --yes, --approve "
            "or at a terminal, are not carried over: each gate is approved again)"
        )
        refused = _ask_ahead(ahead, session, dispatcher, heading, done, doubt, run_id)
        if refused is not None:
            refused.warnings[:0] = [note] if note else []  # a reclaimed lock is said, whatever follows
            return refused
        record, before = RunRecord.resume(home.state_dir, run_id)
        with record:
            steps = before.state.steps
            done = {(k.step, k.item): s.outputs for k, s in steps.items() if s.status == "finished"}
            try:
                session = _settled(
                    home,
                    session,
                    dispatcher,
                    _cluster_notes(on_event),
                    name=str(path),
                    profile=meta.profile,
                    given=given,
                    resumed=(before.state, record, done),
                    placed=meta.placement,
                )
            except (StepFailed, StaleLock) as exc:
                record.run_finished("failed")
                return Outcome(
                    "failed",
                    exitcodes.FAILED,
                    f"cannot resume {run_id}: {_message(exc)}\nOnce that is resolved: runbook resume {run_id}",
                    session,
                    run_id,
                )
            doubt = frozenset((k.step, k.item) for k in before.state.in_doubt if (k.step, k.item) not in done)
            runner = _real_runner(
                session, record, dispatcher, approver, on_event, concurrency, done=done, check_unfinished=doubt
            )
            outcome = _drive(runner, record, session, run_id, home)
    finally:
        lock.release()
    outcome.warnings = ([note] if note else []) + ready + list(loaded.warnings) + outcome.warnings + dispatcher.warnings
    if changed:
        outcome.warnings.insert(0, f"resumed with --force although {', '.join(changed)} changed")
    return outcome


def _ask_ahead(
    ahead: AskAhead | None,
    session: Session,
    dispatcher: Dispatcher,
    heading: str,
    done: dict[tuple[str, str | None], Any] | None = None,
    doubt: frozenset[tuple[str, str | None]] = frozenset(),
    run_id: str | None = None,
) -> Outcome | None:
    """Plan the run (a dry-run reading the cluster) and hand its gates to ``ahead`` before any change;
    an Outcome (exit 4) when a gate was left unapproved, else None: the run may go on."""
    if ahead is None:
        return None
    runner = Runner(
        session.runbook,
        session.context,
        executor=dispatcher,
        dry_run=True,
        approver=_Never(),
        done=done,
        check_unfinished=doubt,
        revealed=session.secrets.revealed(),
        facts=PlannedFacts(lambda: session.facts),
    )
    try:
        entries = runner.run()
    except InputError:
        return None  # the run reports the runbook's problem itself, at the step that has it
    except StepError as exc:
        # Read-only steps run while planning only before the first change, as in the run: this
        # read fails there too, before anything changed. Unless the run would wait for it.
        step = next((s for s in session.runbook.steps if s.id == exc.entry.step_id), None)
        if step is None or "until" in step.attrs or step.attrs.get("retries"):
            return None
        which = exc.entry.label
        if run_id is None:
            return Outcome(
                "failed",
                exitcodes.NOT_STARTED,
                f"read-only step '{which}' failed before the first change: {exc.message}\n"
                "Nothing ran and no run was made: fix the cause, then run again",
                session,
            )
        return Outcome(
            "failed",
            exitcodes.FAILED,
            f"read-only step '{which}' failed before the resume changed anything: {exc.message}\n"
            f"Fix the cause, then resume again: runbook resume {run_id}",
            session,
            run_id,
        )
    gates = gates_ahead(entries, session.runbook)
    if not gates:
        return None
    refused = ahead(gates, heading)
    if not refused:
        return None
    maybe = [gate for gate in gates if not gate.certain]
    again = f"runbook resume {run_id}" if run_id else "run it again, adding"
    approvals = " ".join(f"--approve {gate.step}" for gate in refused)
    return Outcome(
        "stopped_at_gate",
        exitcodes.GATE,
        "nothing was changed: "
        + ("the resume" if run_id else "the run")
        + " would meet gated steps that are not approved: "
        + "; ".join(gate.describe() for gate in refused)
        + (
            ". May also need approval, known only at run time: " + "; ".join(gate.describe() for gate in maybe)
            if maybe
            else ""
        )
        + f". Review them (--dry-run), then approve: {again} {approvals}   (or --yes to approve every gate)",
        session,
        run_id,
    )


def _settled(
    home: Home,
    session: Session,
    dispatcher: Dispatcher,
    note: Callable[[str], None],
    *,
    name: str,
    profile: str | None,
    given: Mapping[str, str],
    resumed: tuple[RunState, RunRecord, dict[tuple[str, str | None], Any]] | None = None,
    placed: Mapping[str, str] | None = None,
) -> Session:
    """The session to run with once the cluster has finished what this run (or anyone) is doing to its
    VMs (``engine.run.settle``): on resume, the tasks the interrupted run left running are followed to
    their end (a step in doubt whose task ended well is journaled as finished, into ``done``); then the
    VMs of the plan that hold a lock are waited for. When anything was waited for, the cluster is read
    again and the run re-planned (a resumed run's VMs kept where it ``placed`` them), so no VM is planned
    half made."""
    if session.profile is None and resumed is None:
        return session
    state = resumed[0] if resumed else None
    vmids = run_vmids(session.plan, session.profile.data.get("template") if session.profile else None, state)
    followed = 0
    facts = session.facts
    if resumed is not None:
        state, record, done = resumed
        nodes = [str(node["name"]) for node in session.config.data["cluster"]["nodes"]]
        finished, followed = follow_in_flight(dispatcher, state, nodes, vmids, note)
        steps = {step.id: step for step in session.runbook.steps}
        for key, output in finished.items():
            step = steps.get(key.step)
            if step is not None and not ({"extract", "json"} & set(step.attrs)):
                # What the step would have returned had the run waited; 0 s, so it is no sample of the task's length.
                record.step_finished(key.step, key.item, output, 0.0)
                done[(key.step, key.item)] = output
        if followed:
            facts = read_vms(dispatcher)
    names = {vm.name for vm in session.plan.vms} if session.plan else set()
    waited = wait_for_locks(dispatcher, facts, names, vmids, note)
    if followed or waited:
        return _prepare(home, name, profile, given, dispatcher, placed=placed, secrets=session.secrets)
    return session


def _cluster_notes(on_event: Callable[[str, PlanEntry], None] | None) -> Callable[[str], None]:
    """Progress lines about the cluster itself (tasks followed, locks waited for) outside any step."""
    entry = PlanEntry("cluster", "api", "tasks in flight", 0)

    def note(text: str) -> None:
        if on_event is not None:
            entry.reason = text
            on_event("progress", entry)

    return note


def _message(exc: Exception) -> str:
    return exc.message if isinstance(exc, StepFailed) else str(exc)


def _untrusted(home: Home, session: Session, run_id: str | None = None) -> Outcome | None:
    """An ingested runbook (one with an ``origin``) runs for real only as reviewed: ``runbook trust``."""
    from ..ingest.trust import untrusted_reason

    reason = untrusted_reason(home, session.runbook, session.runbook_path)
    for callee in session.runbook.called:  # a called runbook's trust holds as if it were run directly
        reason = reason or untrusted_reason(home, callee, session.called_paths[callee.name])
    return None if reason is None else Outcome("refused", exitcodes.REFUSED, reason, session, run_id)


def _as_param(value: Any) -> str:
    """A recorded (typed) parameter back to the --param text it is parsed from."""
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def _drive(runner: Runner, record: RunRecord, session: Session, run_id: str, home: Home) -> Outcome:
    try:
        entries = runner.run()
    except KeyboardInterrupt:
        # Ctrl-C (or SIGTERM, which the CLI turns into the same): worker threads have finished the
        # step each was running (``run_jobs``); the step the main thread ran is left in doubt.
        _finish_record(record, "interrupted")
        return Outcome(
            "interrupted",
            exitcodes.INTERRUPTED,
            _interrupted_message(home, run_id),
            session,
            run_id,
            runner.entries,
        )
    except PlanDiverged as diverged:
        _finish_record(record, "failed")
        entry = diverged.entry
        return Outcome(
            "refused",
            exitcodes.REFUSED,
            f"step '{entry.label}' is not what the plan reviewed: {entry.error}; nothing of it was sent. "
            "The cluster or a step's output moved between the review and now: review again (runbook run ... "
            "--dry-run --out FILE), then apply the new plan",
            session,
            run_id,
            runner.entries,
        )
    except GateStop as stop:
        _finish_record(record, "stopped_at_gate")
        entry = stop.entry
        which = entry.label
        return Outcome(
            "stopped_at_gate",
            exitcodes.GATE,
            f"stopped before gated step '{which}' ({'; '.join(entry.gate_reasons)}); nothing of it ran. "
            f"Review it (runbook runs show {run_id}), then approve and continue: "
            f"runbook resume {run_id} --approve {entry.step_id}   (or --yes to approve every gate)",
            session,
            run_id,
            runner.entries,
        )
    except StepError as exc:
        _finish_record(record, "failed")
        which = exc.entry.label
        return Outcome(
            "failed",
            exitcodes.FAILED,
            f"step '{which}' failed: {exc.message}\nFix the cause, then continue where it stopped: "
            f"runbook resume {run_id}",
            session,
            run_id,
            runner.entries,
        )
    except InputError as exc:
        _finish_record(record, "failed")
        return Outcome(
            "failed",
            exitcodes.PROBLEMS,
            "\n".join(str(p) for p in exc.problems) + f"\nFix the runbook, then: runbook resume {run_id} "
            "--force (the runbook changed, so resume needs --force)",
            session,
            run_id,
            runner.entries,
        )
    _finish_record(record, "succeeded")
    return Outcome("succeeded", exitcodes.OK, f"run {run_id} succeeded", session, run_id, entries)


def _finish_record(record: RunRecord, status: str) -> None:
    """Record how the run ended; a journal an interruption closed mid-record is left for resume to repair."""
    try:
        record.run_finished(status)
    except JournalError:
        pass


def resume_command(home: Home, run_id: str) -> str:
    """The exact command that resumes ``run_id``, from any folder (the example home needs no --home)."""
    import shlex

    where = "" if home.example else f" --home {shlex.quote(str(home.root))}"
    return f"runbook resume {run_id}{where}"


def _interrupted_message(home: Home, run_id: str) -> str:
    """What an interrupted run tells: its id, the resume command, and which gates it will ask again."""
    state = load_run(home.state_dir, run_id).state
    unfinished = [key.step for key in state.approved if getattr(state.steps.get(key), "status", None) != "finished"]
    approved = list(dict.fromkeys(unfinished))
    again = (
        f" Gates approved in this run and not finished ({', '.join(approved)}) are asked again: approvals are "
        "not carried over to a resume (add --approve STEP or --yes)."
        if approved
        else ""
    )
    return (
        f"run {run_id} interrupted. Steps running on worker threads were let finish; a step stopped "
        f"half-way is checked when the run resumes.{again}\nResume it: {resume_command(home, run_id)}"
    )


def apply_plan(
    home: Home,
    document: Mapping[str, Any],
    where: str,
    *,
    dispatcher: Dispatcher,
    approver: Approver,
    mode: str = "run",
    on_event: Callable[[str, PlanEntry], None] | None = None,
    concurrency: int | None = None,
    secrets: SecretInput = NO_SECRETS,
) -> Outcome:
    """Run exactly the saved plan ``document`` (unsealed from file ``where``): refused (exit 7) when
    an input changed or anything it was planned against moved on the cluster, exit 8 when another
    cluster answers. Its gates are approved by whoever applies it (``approver``); each changing
    step must send what the plan reviewed, or the run stops before sending it."""
    checked = check_plan(home, document, where, dispatcher, secrets)
    if isinstance(checked, Outcome):
        return checked
    session, cluster, given = checked
    return start_run(
        home,
        session.runbook.name,
        document.get("profile"),
        given,
        dispatcher=dispatcher,
        approver=approver,
        mode=mode,
        on_event=on_event,
        concurrency=concurrency,
        expected=plan_expected(document),
        prepared=(session, cluster),
    )


def check_plan(
    home: Home, document: Mapping[str, Any], where: str, dispatcher: Dispatcher, secrets: SecretInput = NO_SECRETS
) -> Outcome | tuple[Session, ClusterIdentity | None, dict[str, str]]:
    """What must still hold to apply the saved plan ``document``: its inputs, the cluster that answers,
    what it was planned against; the session, cluster identity and parameters to run it with, or the
    Outcome refusing it (nothing changed)."""
    given = {key: _as_param(value) for key, value in (document.get("parameters") or {}).items()}
    try:
        session = _prepare(
            home,
            str(document["runbook"]),
            document.get("profile"),
            given,
            dispatcher,
            secrets=secrets.over(document.get("secret_parameters")),
        )
        cluster = _identity(session, dispatcher)
    except _UNREADABLE as exc:
        return _not_started(exc)
    changed = inputs_moved(document.get("hashes") or {}, session.hashes())
    if changed:
        return Outcome(
            "refused",
            exitcodes.REFUSED,
            f"refusing to apply {where}: {', '.join(changed)} changed since the plan was made, so the plan is "
            "not what would run. Review again and save a new plan",
            session,
        )
    planned_on = ClusterIdentity.from_dict(document["identity"]) if document.get("identity") else None
    if planned_on is not None and cluster is not None and planned_on.differences(cluster):
        return Outcome(
            "refused",
            exitcodes.OTHER_CLUSTER,
            f"refusing to apply {where}: it was made against {planned_on}, and another cluster answers now: "
            f"{'; '.join(planned_on.differences(cluster))}. No --force changes that",
            session,
        )
    saved = document.get("planned_against") or {}
    try:
        now = planned_against((path, _read_or_none(dispatcher, path)) for path in saved)
    except _UNREADABLE as exc:
        return _not_started(exc)
    drift = moved(saved, now)
    if drift:
        return Outcome(
            "refused",
            exitcodes.REFUSED,
            f"refusing to apply {where}: the cluster moved since the plan was made:\n  "
            + "\n  ".join(drift)
            + "\nReview again and save a new plan",
            session,
        )
    return session, cluster, given


def plan_expected(document: Mapping[str, Any]) -> dict[tuple[str, str | None], dict[str, Any] | None]:
    """What each step of the saved plan must send (None: it was skipped), checked as it runs."""
    return {
        (str(step["step"]), step.get("item")): (step.get("action") if step["status"] == "would_run" else None)
        for step in document.get("steps") or ()
        if step["status"] in ("would_run", "skipped")
    }


def _read_or_none(dispatcher: Dispatcher, path: str) -> Any:
    """A GET of ``path``'s data, None when the object is gone (PVE answers 404 or 500 "does not exist")."""
    try:
        return dispatcher.execute(ApiRequest("GET", path), quiet).data
    except StepFailed as failure:
        if not failure.sent or failure.retryable:
            raise
        return None
