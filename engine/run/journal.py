"""Run records: what a run was started with, and a journal of everything it did, durable step by step.

A run that dies (SIGKILL, power loss) must be resumable, so every fact is on disk before the engine
acts on it: ``runs/<id>/run.json`` is written once, atomically (temp file, fsync, rename, fsync of
the folder), and ``runs/<id>/journal.jsonl`` gets one JSON object per line, each written with a
single ``os.write`` on an ``O_APPEND`` fd and fsynced before the call returns. A kill can therefore
leave at most one torn record, and only at the end; reading skips it with a warning, while a bad
line anywhere else is damage, not a crash artefact, and is an error.

Record schema (every record also has ``seq``, counting from 1, ``ts``, ISO 8601 UTC, and ``type``):

- ``run_started``: ``run_id``, ``process`` (pid, host, process_start, boot_id of the runner)
- ``run_resumed``: ``who``, ``engine_version``, ``process``; ``repaired`` when a torn tail was cut
- ``step_started``: ``step``, ``item``, ``action`` (``engine.runbook.actions.action_as_dict``)
- ``task_started``: ``step``, ``item``, ``upid``, ``node``: the step started a PVE task, journaled
  before the task is first polled, so a resume can follow it to its end
- ``step_finished``: ``step``, ``item``, ``outputs``, ``duration`` (seconds)
- ``step_skipped``: ``step``, ``item``, ``reason`` (``when_false`` or ``check_true``)
- ``step_failed``: ``step``, ``item``, ``error``, ``duration``
- ``gate_waiting``: ``step``, ``item``
- ``gate_approved``: ``step``, ``item``, ``by`` (user@host; on Temporal, who approved: a client
  certificate's subject, with ``authenticated``, ``how`` and ``at`` when approved while the run waited)
- ``gate_rejected``: ``step``, ``item``, ``by``, ``reason`` (on Temporal: ``runbook reject``), with
  ``authenticated``, ``how``, ``at``
- ``run_finished``: ``status`` (``succeeded``, ``failed``, ``stopped_at_gate``, or ``interrupted``: Ctrl-C
  or SIGTERM; steps in flight on worker threads finished first, so the last records may follow it)

``item`` is the loop item's key for ``foreach`` steps and null otherwise. Readers accept fields
they do not know, so later versions may add some.

No ``Secret`` is ever written: every record (and ``run.json``) is walked before it is serialised,
and a Secret anywhere in it is a TypeError naming where, before a byte reaches the disk.

A run driven by Temporal workers has a holder: ``runs/<id>/holder.json`` names the worker that
writes its journal now. A worker that takes the run over (the one before seemed lost) names itself
there, under an exclusive ``flock`` of the journal, before it reads the journal back; every record a
holder appends is written under that lock after checking the file still names it. So a worker that
was only slow, not lost, can write nothing more once another took the run: its next record is
refused (``RunTaken``), and the journal never gets two writers or two records with one ``seq``.
"""

from __future__ import annotations

import difflib
import fcntl
import getpass
import json
import math
import os
import re
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import MISSING, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from .. import __version__
from ..errors import RunbookError
from .runlock import ProcessIdentity
from .secrets import Secret

FORMAT = 1  # run.json layout version; bumped when a reader of the old layout would misread the new
MODES = ("run", "dry-run", "simulate")
SKIP_REASONS = ("when_false", "check_true")
FINAL_STATUSES = ("succeeded", "failed", "stopped_at_gate", "interrupted")
_STEP = ("step", "item")
RECORD_FIELDS: dict[str, tuple[str, ...]] = {
    "run_started": ("run_id", "process"),
    "run_resumed": ("who", "engine_version", "process"),
    "step_started": (*_STEP, "action"),
    "task_started": (*_STEP, "upid", "node"),
    "step_finished": (*_STEP, "outputs", "duration"),
    "step_skipped": (*_STEP, "reason"),
    "step_failed": (*_STEP, "error", "duration"),
    "gate_waiting": _STEP,
    "gate_approved": (*_STEP, "by"),
    "gate_rejected": (*_STEP, "by", "reason"),
    "run_finished": ("status",),
}
RUN_ID = re.compile(r"\d{8}-\d{6}-[a-z0-9]+(?:-[a-z0-9]+)*-[0-9a-f]{4}")
RUN_FILE = "run.json"
JOURNAL_FILE = "journal.jsonl"
HOLDER_FILE = "holder.json"
_SLUG_MAX = 40
_EXCERPT = 60
#: How many earlier runs' journals are read to learn how long tasks of each kind take.
HISTORY_RUNS = 20
HISTORY_SAMPLES = 32
_TASK_OUTPUT = {"upid", "node", "exitstatus", "data"}

Record = dict[str, Any]


class JournalError(RunbookError):
    """A run record cannot be read or written as it should; the message names the file (and line)."""


class RunTaken(JournalError):
    """Another holder took the run over (``holder.json`` names it): this one may write no more of it."""


class UnknownRun(JournalError):
    """No run with that id; ``suggestions`` holds the closest existing ids."""

    def __init__(self, message: str, suggestions: list[str]):
        super().__init__(message)
        self.suggestions = suggestions


def new_run_id(runbook_name: str, now: datetime, chance: str | None = None) -> str:
    """``20261128-142233-cluster-create-3f9a``: UTC time first so ids sort by start, then the runbook, then chance.

    UTC keeps the order right across DST changes and machines in different zones (``run.json`` has
    the full timestamp with its offset). The slug keeps only ``[a-z0-9-]``, so the id is a safe
    folder name whatever the runbook is called. Four random hex digits separate runs of the same
    runbook started in the same second; ``RunRecord.create`` refuses an existing folder, so a
    collision is an error to retry, never an overwrite. ``chance``: those digits, drawn by the caller
    (a Temporal workflow, which must draw them from its own deterministic random).
    """
    slug = re.sub(r"[^a-z0-9]+", "-", runbook_name.lower()).strip("-")[:_SLUG_MAX].strip("-") or "run"
    return f"{now.astimezone(UTC):%Y%m%d-%H%M%S}-{slug}-{chance or secrets.token_hex(2)}"


def current_who() -> str:
    """``user@host`` of this process, for the record of who ran or approved what."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (minimal containers)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


class StepKey(NamedTuple):
    """One execution unit: a step, or one item of a ``foreach`` step."""

    step: str
    item: str | None = None

    def __str__(self) -> str:
        return self.step if self.item is None else f"{self.step}[{self.item}]"


@dataclass(frozen=True)
class RunMeta:
    """What a run was started with (``run.json``): enough to tell, at resume, whether anything changed."""

    run_id: str
    runbook: str
    runbook_file: str
    runbook_sha256: str
    profile: str | None
    profile_file: str | None
    profile_sha256: str | None
    cluster_config_sha256: str
    parameters: dict[str, Any]
    mode: str
    started_at: str
    who: str = field(default_factory=current_who)
    engine_version: str = __version__
    #: Which cluster answered when the run started (``ClusterIdentity.as_dict``); None when the run
    #: talks to no cluster. A resume against another is refused.
    cluster: dict[str, str] | None = None
    #: Where the run placed each VM of its profile (name -> node): a resume never places them again.
    placement: dict[str, str] | None = None
    #: Where each secret parameter came from (name -> env:VAR, pass:PATH or prompt), never its value:
    #: a resume reads it again from there (and asks again for one that was typed).
    secret_parameters: dict[str, str] | None = None
    #: SHA-256 of each runbook the run's calls run (name -> hash): a resume refuses a changed callee as
    #: it refuses a changed runbook. None in runs recorded before calls existed (and with no calls).
    called_sha256: dict[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "run_id": self.run_id,
            "runbook": self.runbook,
            "runbook_file": self.runbook_file,
            "runbook_sha256": self.runbook_sha256,
            "profile": self.profile,
            "profile_file": self.profile_file,
            "profile_sha256": self.profile_sha256,
            "cluster_config_sha256": self.cluster_config_sha256,
            "parameters": self.parameters,
            "mode": self.mode,
            "started_at": self.started_at,
            "who": self.who,
            "engine_version": self.engine_version,
            "cluster": self.cluster,
            "placement": self.placement,
            "secret_parameters": self.secret_parameters,
            "called_sha256": self.called_sha256,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> RunMeta:
        if not isinstance(data, dict):
            raise JournalError(f"{where}: not a run record (expected a JSON object)")
        if isinstance(data.get("format"), int) and data["format"] > FORMAT:
            raise JournalError(f"{where}: written by a newer runbook (format {data['format']}); upgrade to read it")
        fields = cls.__dataclass_fields__
        # Fields with a default came later: a record written before them is read without them.
        names = [name for name, spec in fields.items() if name not in data and not _has_default(spec)]
        if names:
            raise JournalError(f"{where}: run record lacks {', '.join(names)}")
        return cls(**{name: data[name] for name in fields if name in data})


def _has_default(spec: Any) -> bool:
    return spec.default is not MISSING or spec.default_factory is not MISSING


@dataclass(frozen=True)
class StepState:
    """Where one step (or loop item) stands after the records so far.

    ``status`` is ``finished``, ``skipped``, ``failed`` or ``in_doubt``: started, with no outcome
    recorded, so the action may or may not have taken effect and resume must check before redoing it.
    ``tasks`` are the UPIDs of the PVE tasks its latest attempt started (``task_started``).
    """

    key: StepKey
    status: str
    attempts: int = 0
    action: dict[str, Any] | None = None
    outputs: Any = None
    reason: str | None = None
    error: str | None = None
    duration: float | None = None
    tasks: tuple[str, ...] = ()


@dataclass
class RunState:
    """A run as its journal tells it, derived from the records alone (no clock, no processes).

    ``status`` is a final status of the last ``run_finished`` or ``unfinished``: still running, or
    killed (``process`` is the last writer, to tell which). A resume after ``run_finished`` makes
    the run unfinished again.
    """

    run_id: str | None = None
    status: str = "unfinished"
    steps: dict[StepKey, StepState] = field(default_factory=dict)
    last_step: StepKey | None = None
    gate: StepKey | None = None  # waiting for approval
    approved: list[StepKey] = field(default_factory=list)  # gates approved, in any attempt (not carried over)
    started: str | None = None
    finished: str | None = None
    resumes: int = 0
    process: ProcessIdentity | None = None

    @classmethod
    def from_records(cls, records: list[Record]) -> RunState:
        state = cls()
        for record in records:
            state._apply(record)
        return state

    @property
    def in_doubt(self) -> list[StepKey]:
        return [key for key, step in self.steps.items() if step.status == "in_doubt"]

    @property
    def failed(self) -> list[StepKey]:
        return [key for key, step in self.steps.items() if step.status == "failed"]

    def _apply(self, record: Record) -> None:
        kind = record["type"]
        if kind in ("run_started", "run_resumed"):
            if kind == "run_started":
                self.run_id, self.started = record["run_id"], record["ts"]
            else:
                self.resumes += 1
            self.status, self.finished = "unfinished", None
            self.process = ProcessIdentity.from_dict(record["process"])
        elif kind == "run_finished":
            self.status, self.finished = record["status"], record["ts"]
        elif kind == "gate_waiting":
            self.gate = StepKey(record["step"], record["item"])
        elif kind == "gate_approved":
            self.gate = None
            self.approved.append(StepKey(record["step"], record["item"]))
        elif kind == "gate_rejected":
            self.gate = StepKey(record["step"], record["item"])  # where the run stopped
        else:
            key = StepKey(record["step"], record["item"])
            before = self.steps.get(key, StepState(key, "in_doubt"))
            if kind == "task_started":
                self.steps[key] = replace(before, tasks=(*before.tasks, str(record["upid"])))
                return
            if kind == "step_started":
                now = StepState(key, "in_doubt", before.attempts + 1, record["action"])
            elif kind == "step_finished":
                now = StepState(
                    key,
                    "finished",
                    before.attempts,
                    before.action,
                    outputs=record["outputs"],
                    duration=record["duration"],
                )
            elif kind == "step_skipped":
                now = StepState(key, "skipped", before.attempts, before.action, reason=record["reason"])
            else:
                now = StepState(
                    key, "failed", before.attempts, before.action, error=record["error"], duration=record["duration"]
                )
            self.steps[key] = now
            self.last_step = key


def read_journal(path: Path) -> tuple[list[Record], list[str]]:
    """The journal's records and warnings: a torn last record is skipped with a warning, damage elsewhere raises."""
    records, warnings, _ = _parse_journal(path.read_bytes(), path)
    return records, warnings


def _parse_journal(data: bytes, path: Path) -> tuple[list[Record], list[str], int]:
    """Records, warnings and the byte offset where the last good record ends (where a resume appends)."""
    records: list[Record] = []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the file ends with a newline, as every complete record does
    offset = good_end = 0
    for number, raw in enumerate(lines, start=1):
        last = number == len(lines)
        try:
            record = _parse_record(raw, len(records) + 1)
        except ValueError as exc:
            if last:
                excerpt = raw[:_EXCERPT].decode("utf-8", "replace")
                return (
                    records,
                    [
                        f"{path}:{number}: skipped a torn last record, left by a run killed while writing "
                        f"it ({exc}): {excerpt!r}"
                    ],
                    good_end,
                )
            raise JournalError(
                f"{path}:{number}: damaged record in the middle of the journal ({exc}). A kill can "
                f"only tear the last line, so the file was edited or corrupted; the run cannot be "
                f"read or resumed as it is"
            ) from None
        records.append(record)
        offset += len(raw) + 1
        good_end = min(offset, len(data))
    return records, [], good_end


def _parse_record(raw: bytes, seq: int) -> Record:
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    kind = record.get("type")
    if kind not in RECORD_FIELDS:
        raise ValueError(f"unknown record type {kind!r} (written by a newer runbook?)")
    if record.get("seq") != seq:
        raise ValueError(f"seq is {record.get('seq')!r}, expected {seq}: records are missing or out of order")
    missing = [name for name in ("ts", *RECORD_FIELDS[kind]) if name not in record]
    if missing:
        raise ValueError(f"{kind} record lacks {', '.join(missing)}")
    if "step" in record and not (isinstance(record["step"], str) and isinstance(record["item"], (str, type(None)))):
        raise ValueError("step must be a string and item a string or null")
    if "process" in record:
        ProcessIdentity.from_dict(record["process"])  # RunState and list_runs rely on it
    return record


class RunRecord:
    """An open run folder that journal records are appended to; one writer process at a time (the
    profile lock, or for a run on Temporal its ``holder``: see the module's docstring). Within it,
    threads may append at once (items of a parallel step): each record gets the next ``seq`` and is
    written whole, in ``seq`` order."""

    def __init__(self, folder: Path, meta: RunMeta, fd: int, next_seq: int, holder: str | None = None):
        self.folder = folder
        self.meta = meta
        self.holder = holder
        self._fd: int | None = fd
        self._seq = next_seq
        self._lock = threading.Lock()

    @property
    def run_id(self) -> str:
        return self.meta.run_id

    @classmethod
    def create(cls, state_dir: Path, meta: RunMeta, holder: str | None = None) -> RunRecord:
        """Make ``runs/<id>/`` with its ``run.json`` and a journal holding ``run_started``.

        Everything is checked before anything is created, so a bad meta (a Secret in the
        parameters) leaves no folder behind. An existing folder is an error, never overwritten.
        ``holder``: the Temporal worker that writes the journal (``holder.json``, written first).
        """
        if not RUN_ID.fullmatch(meta.run_id):
            raise ValueError(f"{meta.run_id!r} is not a run id (see new_run_id)")
        if meta.mode not in MODES:
            raise ValueError(f"mode {meta.mode!r} is not one of {', '.join(MODES)}")
        text = _serialise(meta.as_dict(), RUN_FILE, indent=2)
        runs = state_dir / "runs"
        _make_dirs(runs)
        folder = runs / meta.run_id
        folder.mkdir(mode=0o700)
        _fsync_dir(runs)
        _write_atomic(folder / RUN_FILE, text)
        if holder is not None:
            _write_atomic(folder / HOLDER_FILE, _serialise(_holding(holder), HOLDER_FILE))
        fd = os.open(folder / JOURNAL_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        _fsync_dir(folder)
        record = cls(folder, meta, fd, 1, holder)
        record._append("run_started", run_id=meta.run_id, process=ProcessIdentity.current().as_dict())
        return record

    @classmethod
    def resume(
        cls, state_dir: Path, run_id: str, who: str | None = None, holder: str | None = None
    ) -> tuple[RunRecord, LoadedRun]:
        """Reopen a run for appending, after the caller holds its profile lock; records ``run_resumed``.

        A torn last record is cut off first (and noted in ``run_resumed.repaired``): appending after
        it would glue the next record onto the fragment and turn it into damage in the middle. The
        LoadedRun is the run as it was before resuming, for deciding what to redo. ``holder``: a
        Temporal worker taking the run over names itself in ``holder.json`` first, under the
        journal's lock, and reads the journal after: the worker before it can add nothing since.
        """
        run = load_run(state_dir, run_id)
        path = run.folder / JOURNAL_FILE
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            with _locked(fd, holder is not None):
                if holder is not None:
                    _write_atomic(run.folder / HOLDER_FILE, _serialise(_holding(holder), HOLDER_FILE))
                    run = load_run(state_dir, run_id)  # with what the holder before wrote until now
                data = path.read_bytes()
                _, _, good_end = _parse_journal(data, path)
                repaired: dict[str, str] = {}
                if good_end < len(data):
                    os.ftruncate(fd, good_end)
                    repaired["repaired"] = f"cut a torn last record of {len(data) - good_end} bytes"
                if good_end and data[good_end - 1 : good_end] != b"\n":
                    _write_all_once(fd, b"\n", path)  # the last record was whole but its newline never landed
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        record = cls(run.folder, run.meta, fd, len(run.records) + 1, holder)
        record._append(
            "run_resumed",
            who=who or current_who(),
            engine_version=__version__,
            process=ProcessIdentity.current().as_dict(),
            **repaired,
        )
        return record, run

    def step_started(self, step: str, item: str | None, action: dict[str, Any]) -> None:
        self._append("step_started", step=step, item=item, action=action)

    def task_started(self, step: str, item: str | None, upid: str, node: str) -> None:
        self._append("task_started", step=step, item=item, upid=upid, node=node)

    def step_finished(self, step: str, item: str | None, outputs: Any, duration: float) -> None:
        self._append("step_finished", step=step, item=item, outputs=outputs, duration=duration)

    def step_skipped(self, step: str, item: str | None, reason: str) -> None:
        if reason not in SKIP_REASONS:
            raise ValueError(f"skip reason {reason!r} is not one of {', '.join(SKIP_REASONS)}")
        self._append("step_skipped", step=step, item=item, reason=reason)

    def step_failed(self, step: str, item: str | None, error: str, duration: float) -> None:
        self._append("step_failed", step=step, item=item, error=error, duration=duration)

    def gate_waiting(self, step: str, item: str | None) -> None:
        self._append("gate_waiting", step=step, item=item)

    def gate_approved(self, step: str, item: str | None, by: str | None = None, **detail: Any) -> None:
        """``detail``: how ``by`` was authenticated and when (an approval given while a run on Temporal waited)."""
        self._append("gate_approved", step=step, item=item, by=by or current_who(), **detail)

    def gate_rejected(self, step: str, item: str | None, by: str, reason: str, **detail: Any) -> None:
        self._append("gate_rejected", step=step, item=item, by=by, reason=reason, **detail)

    def run_finished(self, status: str) -> None:
        if status not in FINAL_STATUSES:
            raise ValueError(f"run status {status!r} is not one of {', '.join(FINAL_STATUSES)}")
        self._append("run_finished", status=status)

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunRecord:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _append(self, kind: str, **fields: Any) -> None:
        """Check, serialise, write in one ``os.write``, fsync: once this returns, the record survives power loss.

        ``seq`` is taken and the line written under a lock, so records from several threads are
        whole lines in ``seq`` order with no gap; the fsync is outside it, so threads share the
        disk flush instead of queueing for it (a writer's fsync also covers the lines before its own).
        """
        with self._lock, _locked(self._fd, self.holder is not None):
            if self._fd is None:
                raise JournalError(f"{self.folder / JOURNAL_FILE} is closed; no more records can be written")
            if self.holder is not None:
                self._check_holder()
            record = {
                "seq": self._seq,
                "ts": datetime.now(UTC).isoformat(timespec="microseconds"),
                "type": kind,
                **fields,
            }
            line = _serialise(record, kind).encode("utf-8") + b"\n"
            try:
                _write_all_once(self._fd, line, self.folder / JOURNAL_FILE)
            except BaseException:
                self._close()  # the file may now end in a torn record; only a resume can repair it
                raise
            self._seq += 1
            fd = self._fd
        os.fsync(fd)

    def _check_holder(self) -> None:
        """Refuse to write once ``holder.json`` names another holder (it took the run over)."""
        path = self.folder / HOLDER_FILE
        try:
            now = json.loads(path.read_text(encoding="utf-8")).get("holder")
        except (OSError, ValueError, AttributeError) as exc:
            raise JournalError(f"{path}: cannot read who holds the run ({exc}); no record written") from None
        if now != self.holder:
            raise RunTaken(
                f"run {self.run_id} was taken over by {now} (this worker, {self.holder}, seemed lost to "
                "Temporal); it writes no more of the run, and what its step was doing is checked by the new holder"
            )


def _holding(holder: str) -> dict[str, str]:
    return {"holder": holder, "since": datetime.now(UTC).isoformat(timespec="seconds")}


@contextmanager
def _locked(fd: int | None, wanted: bool) -> Iterator[None]:
    """An exclusive ``flock`` of the journal while a holder checks ``holder.json`` and writes (when ``wanted``)."""
    if not wanted or fd is None:
        yield
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        with suppress(OSError):  # a failed write closed the fd, which let go of the lock already
            fcntl.flock(fd, fcntl.LOCK_UN)


@dataclass(frozen=True)
class LoadedRun:
    """A run read back: its meta, records, the state they add up to, and warnings (a torn last record)."""

    folder: Path
    meta: RunMeta
    records: list[Record]
    warnings: list[str]
    state: RunState


def load_run(state_dir: Path, run_id: str) -> LoadedRun:
    """Read one run; UnknownRun (with the closest ids) when there is none, JournalError when it is damaged."""
    runs = state_dir / "runs"
    folder = runs / run_id
    if not RUN_ID.fullmatch(run_id) or not folder.is_dir():
        known = _run_folders(runs)
        close = [name for name in known if name.startswith(run_id)][:3] if run_id else []
        close = close or difflib.get_close_matches(run_id, known, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownRun(f"no run '{run_id}' in {runs}.{hint} List runs with `runbook runs`", close)
    meta = _read_meta(folder)
    try:
        records, warnings = read_journal(folder / JOURNAL_FILE)
    except FileNotFoundError:
        records, warnings = [], [f"{folder / JOURNAL_FILE} is missing: the run stopped before its first record"]
    return LoadedRun(folder, meta, records, warnings, RunState.from_records(records))


@dataclass(frozen=True)
class RunSummary:
    """One line of ``runbook runs``.

    ``status`` is a final status, ``running``, ``interrupted`` (unfinished and its process is
    gone: resume it), ``unknown`` (unfinished, run from another host), or ``damaged`` (``problem``
    says why; the other fields are None where they could not be read).
    """

    run_id: str
    runbook: str | None
    profile: str | None
    mode: str | None
    status: str
    started: str | None
    finished: str | None
    last_step: StepKey | None
    problem: str | None = None


def run_status(state: RunState) -> str:
    """A run's status for people and scripts: its final status, else ``running``, ``interrupted``
    (its process is gone: resume it) or ``unknown`` (run from another host)."""
    if state.status != "unfinished":
        return state.status
    alive = state.process.liveness().alive if state.process else False
    return {True: "running", False: "interrupted", None: "unknown"}[alive]


def list_runs(state_dir: Path) -> list[RunSummary]:
    """Every run folder, newest first; a damaged one is listed, never fatal.

    Ordered by ``run.json``'s full start time: ids start with the second only, so two runs started
    in the same second would otherwise be ordered by runbook name and chance. A folder without a
    readable start time goes by its id's second."""
    summaries = []
    for run_id in sorted(_run_folders(state_dir / "runs"), reverse=True):
        try:
            run = load_run(state_dir, run_id)
        except (JournalError, OSError) as exc:
            summaries.append(RunSummary(run_id, None, None, None, "damaged", None, None, None, str(exc)))
            continue
        state = run.state
        status = run_status(state)
        summaries.append(
            RunSummary(
                run_id,
                run.meta.runbook,
                run.meta.profile,
                run.meta.mode,
                status,
                run.meta.started_at,
                state.finished,
                state.last_step,
            )
        )
    return sorted(summaries, key=_started, reverse=True)


def _started(summary: RunSummary) -> tuple[datetime, str]:
    """When a listed run started: ``run.json``'s time, else its id's second (UTC); then its id."""
    for parse in (
        lambda: datetime.fromisoformat(summary.started or ""),
        lambda: datetime.strptime(summary.run_id[:15], "%Y%m%d-%H%M%S"),
    ):
        try:
            moment = parse()
        except ValueError:
            continue
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)), summary.run_id
    return datetime.min.replace(tzinfo=UTC), summary.run_id


def _run_folders(runs: Path) -> list[str]:
    if not runs.is_dir():
        return []
    return [entry.name for entry in runs.iterdir() if entry.is_dir() and not entry.name.startswith(".")]


def _read_meta(folder: Path) -> RunMeta:
    path = folder / RUN_FILE
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise JournalError(f"{path} is missing: the run was stopped before its record was written") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JournalError(f"{path} is unreadable ({exc})") from None
    return RunMeta.from_dict(data, str(path))


def _serialise(value: dict[str, Any], where: str, indent: int | None = None) -> str:
    """JSON text of ``value``, after checking every part is plain JSON data and none is a Secret."""
    _check_value(value, where)
    return json.dumps(
        value, ensure_ascii=False, allow_nan=False, indent=indent, separators=None if indent else (",", ":")
    )


def _check_value(value: Any, where: str) -> None:
    """Walk ``value``; raise naming the path (``step_finished.outputs.data[2].token``) of anything that is not JSON."""
    if isinstance(value, Secret):
        raise TypeError(f"{where} is a Secret; secrets are never written to run records")
    if isinstance(value, dict):
        for key, inner in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} has a key {key!r} of type {type(key).__name__}; JSON keys are strings")
            _check_value(inner, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, inner in enumerate(value):
            _check_value(inner, f"{where}[{index}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} is {value}, which JSON cannot hold")
    elif not isinstance(value, (str, int, float, bool, type(None))):
        raise TypeError(f"{where} is a {type(value).__name__}, which is not JSON data")


def _write_all_once(fd: int, data: bytes, path: Path) -> None:
    """One ``os.write`` of the whole record: a short write (a full disk) is an error, not a silent tear."""
    written = os.write(fd, data)
    if written != len(data):
        raise JournalError(
            f"{path}: wrote {written} of {len(data)} bytes (is the disk full?); "
            "the record is torn and the run must be resumed"
        )


def _write_atomic(path: Path, text: str) -> None:
    """Write ``path`` so it is either absent or whole, even across a power loss."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _make_dirs(path: Path) -> None:
    """``mkdir -p`` that fsyncs the parent of every folder it creates, so new folders survive a power loss."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
        _fsync_dir(folder.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def task_history(runs_dir: Path, runs: int = HISTORY_RUNS) -> dict[str, float]:
    """How long PVE tasks of each type took in the most recent runs in ``runs_dir``, from their journals.

    Every ``step_finished`` record whose output is a task the API executor waited for (``upid``,
    ``exitstatus`` OK) is a sample of its task type (``qmclone``, ``qmstart``...): the step's
    duration, which is the task's plus its requests (and any wait for a clone slot). The estimate
    is the shortest of the latest samples; the API executor polls a task of that type first when
    it is likely to have ended, and refines the figure from its own polls. Unreadable journals are
    skipped.
    """
    try:
        folders = sorted((p for p in runs_dir.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True)
    except OSError:
        return {}
    samples: dict[str, list[float]] = {}
    for folder in folders[:runs]:
        try:
            data = (folder / JOURNAL_FILE).read_bytes()
        except OSError:
            continue
        for line in data.splitlines():
            if b'"step_finished"' not in line or b'"upid":"UPID:' not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            outputs, duration = record.get("outputs"), record.get("duration")
            # Only what the API executor answers for a task it waited for, not a step that read a task's status.
            if not (
                isinstance(outputs, dict)
                and set(outputs) == _TASK_OUTPUT
                and isinstance(duration, (int, float))
                and duration > 0
            ):
                continue
            upid, status = str(outputs.get("upid", "")), str(outputs.get("exitstatus", ""))
            parts = upid.split(":")
            if len(parts) > 5 and (status == "OK" or status.startswith("WARNINGS")):
                kind = samples.setdefault(parts[5], [])
                if len(kind) < HISTORY_SAMPLES:
                    kind.append(float(duration))
    # The shortest: a step's duration also holds its requests and, in a busy run, waiting for a
    # clone slot or for the interpreter; a task cannot take less than its shortest step did, and an
    # expectation a little short costs one more poll, where one too long costs time on every task.
    return {kind: min(values) for kind, values in samples.items() if values}
