"""Running a runbook: for each step, render -> check -> gate -> execute -> record.

The same loop makes a dry-run plan and a real run, so the two cannot disagree. In a dry-run no
mutating request or command leaves the machine: read-only steps (API GETs, steps marked
``readonly``) may run against a reachable cluster so the plan shows real values, and with
``offline`` nothing runs at all; values only a later step can produce stay visible unknowns.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

from .actions import Action, ApiRequest, Result, StepFailed, action_as_dict
from .executors.shell import parse_json_output
from .extract import ExtractRefused, apply_extract
from .gates import gate_reasons
from .model import Runbook, Step
from .problems import InputError, Problem
from .stepcheck import rendered_problems
from .render import Renderer, StepOutputs, split_api_body
from .unknown import UnknownValue, contains_unknown


class Executor(Protocol):
    def execute(self, action: Action, progress: Callable[[str], None]) -> Result: ...


class Recorder(Protocol):
    """Where a real run writes its journal (``engine.journal.RunRecord``)."""

    def step_started(self, step: str, item: str | None, action: dict[str, Any]) -> None: ...
    def step_finished(self, step: str, item: str | None, outputs: Any, duration: float) -> None: ...
    def step_skipped(self, step: str, item: str | None, reason: str) -> None: ...
    def step_failed(self, step: str, item: str | None, error: str, duration: float) -> None: ...
    def gate_waiting(self, step: str, item: str | None) -> None: ...
    def gate_approved(self, step: str, item: str | None, by: str | None = None) -> None: ...


class Approver(Protocol):
    who: str | None

    def approve(self, entry: "PlanEntry") -> bool:
        """True to run the gated step; False stops the run before it."""


@dataclass
class PlanEntry:
    """One step (or one loop item of a step) as planned or as run."""

    step_id: str
    kind: str
    title: str | None
    line: int
    item_key: str | None = None
    status: str = "pending"  # run | skipped | unknown | succeeded | failed | stopped_at_gate | would_run
    reason: str = ""
    action: dict[str, Any] | None = None
    display: str = ""
    gated: bool = False
    gate_reasons: list[str] = field(default_factory=list)
    output: Any = None
    error: str | None = None
    duration: float | None = None
    show: bool = False  # the operator came for this step's output: print it with the progress

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


class GateStop(Exception):
    """The run stopped before a gated step that was not approved."""

    def __init__(self, entry: PlanEntry):
        super().__init__(entry.step_id)
        self.entry = entry


class StepError(Exception):
    """A step failed; the run stops here and can be resumed."""

    def __init__(self, entry: PlanEntry, message: str):
        super().__init__(message)
        self.entry = entry
        self.message = message


def display(action: Action) -> str:
    """A human-readable form of what would be sent or run."""
    data = action_as_dict(action)
    kind = data.pop("type")
    if kind == "ApiRequest":
        params = " ".join(f"{k}={v}" for k, v in action.params.items())  # type: ignore[union-attr]
        return f"{data['method']} {data['path']}" + (f"  {params}" if params else "")
    if kind == "ShellCommand":
        where = f"on {data['node']}" if data["node"] else "locally"
        return f"({where})\n{data['script'].rstrip()}"
    if kind == "TalosctlCommand":
        return "talosctl " + " ".join(json.dumps(a) if (" " in a or not a) else a for a in data["argv"])
    return f"{data['method']} {data['url']}" + (f"\n{data['body'].rstrip()}" if data["body"] else "")


def reads_only(step: Step) -> bool:
    """Whether a step changes nothing, known before rendering: marked readonly, or an API GET."""
    return bool(step.attrs.get("readonly")) or (step.kind == "api" and split_api_body(step).method == "GET")


def is_readonly(step: Step, action: Action) -> bool:
    if step.attrs.get("readonly"):
        return True
    return isinstance(action, ApiRequest) and action.method == "GET"


class Runner:
    """Runs (or plans) one runbook with one context."""

    def __init__(self, runbook: Runbook, context: dict[str, Any], *, executor: Executor | None,
                 dry_run: bool, approver: Approver, recorder: Recorder | None = None,
                 done: dict[tuple[str, str | None], Any] | None = None,
                 on_event: Callable[[str, PlanEntry], None] | None = None,
                 check_unfinished: frozenset[tuple[str, str | None]] = frozenset(),
                 collect: list[Problem] | None = None):
        self.runbook = runbook
        self.dry_run = dry_run
        self.executor = executor
        self.approver = approver
        self.recorder = recorder
        self.done = dict(done or {})
        self.check_unfinished = check_unfinished
        # With ``collect`` (validation), a step that cannot render is noted there and treated as
        # unknown, so one broken step does not hide the problems of the steps after it.
        self.collect = collect
        self.on_event = on_event or (lambda event, entry: None)
        pending = frozenset(s.id for s in runbook.steps) if dry_run else frozenset()
        self.steps = StepOutputs({}, pending)
        self.renderer = Renderer(runbook.file, {**context, "steps": self.steps})
        self.entries: list[PlanEntry] = []
        # In a dry-run, read-only steps query the cluster only until a step would change it: after
        # that, what they would read is not what the run would read.
        self.plan_changes = False

    def _record(self, kind: str, *args: Any) -> None:
        if self.recorder is not None and not self.dry_run:
            getattr(self.recorder, kind)(*args)

    def run(self) -> list[PlanEntry]:
        """Run every step in order; raises GateStop or StepError to stop, InputError for a bad template."""
        for step in self.runbook.steps:
            self._step(step)
        return self.entries

    def _step(self, step: Step) -> None:
        if self.collect is None:
            self._step_items(step)
            return
        try:
            self._step_items(step)
        except InputError as exc:
            self.collect.extend(exc.problems)

    def _step_items(self, step: Step) -> None:
        entry = PlanEntry(step.id, step.kind, step.title, step.line, show=bool(step.attrs.get("show")))
        if "foreach" not in step.attrs:
            output = self._item(step, None, {}, entry)
            self._publish(step, output)
            return
        try:
            items = self.renderer.items(step)
        except UnknownValue as unknown:
            entry.status, entry.reason = "unknown", f"loops over {unknown.source}, known only after run"
            self._add(entry)
            return
        outputs = []
        for index, item in enumerate(items):
            key = _item_key(item, index)
            item_entry = PlanEntry(step.id, step.kind, step.title, step.line, item_key=key,
                                   show=bool(step.attrs.get("show")))
            outputs.append(self._item(step, key, {step.loop_var: item, "loop_index": index}, item_entry))
        self._publish(step, _NOTHING if any(o is _NOTHING for o in outputs) else outputs)

    def _publish(self, step: Step, output: Any) -> None:
        if output is _NOTHING:
            return
        self.steps[step.id] = output
        if step.attrs.get("register"):
            self.renderer.context[str(step.attrs["register"])] = output

    def _add(self, entry: PlanEntry) -> None:
        self.entries.append(entry)
        self.on_event("step", entry)

    def _item(self, step: Step, key: str | None, local: dict[str, Any], entry: PlanEntry) -> Any:
        # A read-only step runs again on resume, so the guards after it see the cluster as it is now,
        # not as it was before the interruption.
        if (step.id, key) in self.done and not reads_only(step):
            entry.status, entry.reason, entry.output = "succeeded", "finished in an earlier attempt", self.done[(step.id, key)]
            self._add(entry)
            return entry.output
        if "until" in step.attrs and not reads_only(step):
            raise InputError(Problem(self.runbook.file, step.line, "attributes.until",
                                     "until repeats the step, so it is only for steps that change nothing: "
                                     "an API GET, or a step marked readonly: true"))
        pending_condition = ""
        try:
            if "when" in step.attrs and not self.renderer.truth(step, "when", local):
                entry.status, entry.reason = "skipped", "when is false"
                self._add(entry)
                self._record("step_skipped", step.id, key, "when_false")
                return None
            if "check" in step.attrs and self.renderer.truth(step, "check", local):
                entry.status, entry.reason = "skipped", "check is true: already in place"
                self._add(entry)
                self._record("step_skipped", step.id, key, "check_true")
                return None
        except UnknownValue as unknown:
            if not self.dry_run:
                raise InputError(Problem(self.runbook.file, step.line, f"step {step.id}",
                                         f"condition needs {unknown.source}, which no earlier step produced")) from None
            pending_condition = f"runs only if its condition holds, which depends on {unknown.source}"
        if (step.id, key) in self.check_unfinished and "check" not in step.attrs:
            entry.gate_reasons.append("started in an earlier attempt but never finished, and has no check to "
                                      "tell whether it took effect")
        try:
            action = self.renderer.action(step, local)
        except UnknownValue as unknown:
            if not self.dry_run:
                raise InputError(Problem(self.runbook.file, step.line, f"step {step.id}",
                                         f"needs {unknown.source}, which no earlier step produced")) from None
            entry.status = "unknown"
            entry.reason = f"what it sends depends on {unknown.source}, known only after run"
            self._add(entry)
            return _NOTHING
        entry.action = action_as_dict(action)
        entry.display = display(action)
        entry.gate_reasons += gate_reasons(step, action)
        entry.gated = bool(entry.gate_reasons)
        unknown = contains_unknown(entry.action)
        problems = rendered_problems(entry.action, step, self.runbook.file)
        if problems:
            raise InputError(problems)
        if self.dry_run and (unknown or pending_condition):
            entry.status = "unknown"
            entry.reason = pending_condition or "uses values known only after run"
            self._add(entry)
            return _NOTHING
        if self.dry_run:
            readonly = is_readonly(step, action)
            if readonly and self.executor is not None and not self.plan_changes:
                return self._execute(step, key, action, entry)
            entry.status = "would_run"
            if entry.gated:
                entry.reason = "gated: needs approval"
            elif readonly:
                entry.reason = ("read-only; not run while planning, because an earlier step would change the cluster "
                                "first" if self.plan_changes and self.executor is not None else "read-only")
            else:
                self.plan_changes = True
            self._add(entry)
            return _NOTHING
        if entry.gated:
            self._record("gate_waiting", step.id, key)
            if not self.approver.approve(entry):
                entry.status = "stopped_at_gate"
                self._add(entry)
                raise GateStop(entry)
            self._record("gate_approved", step.id, key, self.approver.who)
        return self._execute(step, key, action, entry)

    def _execute(self, step: Step, key: str | None, action: Action, entry: PlanEntry) -> Any:
        assert self.executor is not None
        self._record("step_started", step.id, key, entry.action)
        self.on_event("start", entry)
        started = time.monotonic()
        if "until" in step.attrs and not self.dry_run:
            output, summary = self._until(step, action, entry, started)
        else:
            output, summary = self._attempts(step, action, entry, started)
        entry.status, entry.output, entry.duration = "succeeded", output, time.monotonic() - started
        entry.reason = summary
        self._record("step_finished", step.id, key, output, entry.duration)
        self._add(entry)
        return output

    def _once(self, step: Step, action: Action, entry: PlanEntry) -> tuple[Any, str]:
        """Execute once; the output after ``json`` parsing and ``extract`` (``ExtractRefused`` on refusal)."""
        assert self.executor is not None
        result = self.executor.execute(action, lambda text: self.on_event("progress", _note(entry, text)))
        data = result.data
        if step.attrs.get("json") and isinstance(data, dict) and "stdout" in data:
            data = {**data, "json": parse_json_output(str(data["stdout"]))}
        return self._extract(step, data), result.summary

    def _attempts(self, step: Step, action: Action, entry: PlanEntry, started: float) -> tuple[Any, str]:
        """Execute with ``retries``: a failure is retried when it is safe (read-only step, nothing sent,
        or a failure PVE marks as transient such as a held lock)."""
        retries = int(step.attrs.get("retries", 0))
        attempt = 0
        while True:
            try:
                return self._once(step, action, entry)
            except ExtractRefused as refusal:
                self._fail_step(step, entry, f"refused: {refusal}", started)
            except StepFailed as failure:
                if attempt < retries and (failure.retryable or reads_only(step) or not failure.sent):
                    attempt += 1
                    time.sleep(min(2 ** attempt * 0.1, 5))
                    continue
                self._fail_step(step, entry, failure.message, started)

    def _until(self, step: Step, action: Action, entry: PlanEntry, started: float) -> tuple[Any, str]:
        """Repeat a read-only step until its ``until`` expression holds over ``result``; a failed attempt
        (a node still booting, say) counts as not yet."""
        attempts = int(step.attrs.get("retries", 30))
        delay = float(step.attrs.get("delay", 2))
        last = "no answer yet"
        for attempt in range(attempts + 1):
            try:
                output, summary = self._once(step, action, entry)
            except ExtractRefused as refusal:
                self._fail_step(step, entry, f"refused: {refusal}", started)
            except StepFailed as failure:
                last = f"failed: {failure.message}"
            else:
                if self.renderer.truth(step, "until", {"result": output}):
                    return output, summary
                last = f"last result: {str(output)[:200]}"
            if attempt < attempts:
                self.on_event("progress", _note(entry, f"waiting: {step.attrs['until']} (attempt {attempt + 1})"))
                time.sleep(delay)
        self._fail_step(step, entry, f"gave up after {attempts + 1} attempts over {time.monotonic() - started:.0f} s: "
                                     f"{step.attrs['until']} is still false ({last})", started)

    def _extract(self, step: Step, data: Any) -> Any:
        if "extract" not in step.attrs:
            return data
        context = self.renderer.context
        variables = {"config": context.get("config"), "profile": context.get("profile"),
                     "plan": context.get("plan"), **context.get("params", {})}
        return apply_extract(str(step.attrs["extract"]), data, variables, self.runbook.file, step)

    def _fail_step(self, step: Step, entry: PlanEntry, message: str, started: float) -> NoReturn:
        entry.status, entry.error, entry.duration = "failed", message, time.monotonic() - started
        self._record("step_failed", step.id, entry.item_key, message, entry.duration)
        self._add(entry)
        raise StepError(entry, message)


def _note(entry: PlanEntry, text: str) -> PlanEntry:
    entry.reason = text
    return entry


def _item_key(item: Any, index: int) -> str:
    """A stable key for a loop item (checkpoints key on it): its name or vmid when it has one."""
    if isinstance(item, dict):
        for name in ("name", "vmid", "node", "id"):
            if name in item:
                return f"{name}={item[name]}"
    if isinstance(item, (str, int)):
        return str(item)
    return f"#{index}"


class _Nothing:
    """Marker: the step produced no output in this (dry) run, so later templates see an Unknown."""


_NOTHING = _Nothing()
