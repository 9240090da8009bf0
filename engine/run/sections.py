"""How a runbook's steps group for running: single steps, and pipelines of consecutive ``foreach`` steps.

Judged before anything renders or runs, so ``runbook validate`` reports a pipeline that cannot
work (a gated step, a changing step without a ``check``, items that differ between its steps)
and a run refuses to start with one, rather than stopping half-way through its items. Kept
apart from the runner, which only executes the sections this module hands it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..load.problems import InputError, Problem
from ..runbook.actions import Action, ApiRequest, ShellCommand, TalosctlCommand
from ..runbook.model import SELF_CHECKING_KINDS, Runbook, Step
from ..runbook.render import split_api_body
from .gates import gate_reasons


def reads_only(step: Step) -> bool:
    """Whether a step changes nothing, known before rendering: marked readonly, or an API GET."""
    return bool(step.attrs.get("readonly")) or (step.kind == "api" and split_api_body(step).method == "GET")


def static_gate_reasons(step: Step) -> list[str]:
    """Why ``step`` is gated, judged from its attributes and unrendered body (before any rendering).

    Templated parts stay as written, so a body that ends ``/status/stop`` or runs ``qm destroy``
    is recognised; a destructive action hidden entirely in a template value is only found when
    the step renders (``gate_reasons``), and is then still asked before it runs.
    """
    action: Action | None = None
    if step.kind == "api":
        body = split_api_body(step)
        action = ApiRequest(body.method, body.path)
    elif step.kind in ("ssh", "local"):
        action = ShellCommand(step.body)
    elif step.kind == "talosctl":
        action = TalosctlCommand(tuple(step.body.split()))
    return gate_reasons(step, action)


@dataclass(frozen=True)
class Section:
    """Steps that run together: one step, or the steps of one pipeline (``name`` set)."""

    steps: tuple[Step, ...]
    name: str | None = None


def sections(runbook: Runbook) -> tuple[list[Section], list[Problem]]:
    """The runbook's steps grouped into sections, and the problems of its pipelines.

    A pipeline with problems comes back as one section per step (so a validation goes on checking
    each step); a run refuses to start with any of them.
    """
    out: list[Section] = []
    problems: list[Problem] = []
    seen: dict[tuple[str, str], int] = {}  # (call prefix, name): a callee's pipeline is its own
    steps = runbook.steps
    index = 0
    while index < len(steps):
        name = steps[index].attrs.get("pipeline")
        if name is None:
            out.append(Section((steps[index],)))
            index += 1
            continue
        end = index
        owner = steps[index].call.prefix if steps[index].call is not None else ""
        while (
            end < len(steps)
            and steps[end].attrs.get("pipeline") == name
            and (steps[end].call.prefix if steps[end].call is not None else "") == owner
        ):
            end += 1
        members = tuple(steps[index:end])
        file = members[0].file or runbook.file
        found = pipeline_problems(members, str(name), file)
        if (owner, name) in seen:
            found.insert(
                0,
                Problem(
                    file,
                    members[0].line,
                    "attributes.pipeline",
                    f"pipeline '{name}' already ended at line {seen[owner, str(name)]}: the steps of a pipeline "
                    "are consecutive; give this group another name or move its steps together",
                ),
            )
        seen[owner, str(name)] = members[-1].line
        problems += found
        out += [Section((step,)) for step in members] if found else [Section(members, str(name))]
        index = end
    return out, problems


def pipeline_problems(members: Sequence[Step], name: str, file: str) -> list[Problem]:
    """What keeps these consecutive steps from running as pipeline ``name``."""
    problems: list[Problem] = []
    first = members[0]
    for step in members:
        where = f"step {step.id} (pipeline {name})"
        if "foreach" not in step.attrs:
            problems.append(
                Problem(
                    file,
                    step.line,
                    "attributes.pipeline",
                    f"{where} has no foreach: a pipeline runs each item of a list through its steps",
                )
            )
        elif step is not first and (step.attrs["foreach"], step.loop_var) != (first.attrs["foreach"], first.loop_var):
            problems.append(
                Problem(
                    file,
                    step.line,
                    "attributes.foreach",
                    f"{where} must loop over the same items, with the same 'as', as its first step "
                    f"{first.id} (line {first.line}): foreach: {first.attrs['foreach']}, "
                    f"as: {first.loop_var}",
                )
            )
        if step is not first and "parallel" in step.attrs:
            problems.append(
                Problem(
                    file,
                    step.line,
                    "attributes.parallel",
                    f"{where}: a pipeline has one width, given by parallel on its first step "
                    f"{first.id} (line {first.line}); remove it here",
                )
            )
        try:
            reasons, reading = static_gate_reasons(step), reads_only(step)
        except InputError as exc:  # an api body that is not a mapping: reported as it is
            problems += exc.problems
            continue
        if reasons:
            problems.append(
                Problem(
                    file,
                    step.line,
                    "attributes.pipeline",
                    f"{where} is gated ({'; '.join(reasons)}), but a pipeline never stops to ask in "
                    "the middle of its items: make it a step of its own after the pipeline "
                    "(with parallel, its gates are asked for every item before any runs)",
                )
            )
        elif not reading and "check" not in step.attrs and step.kind not in SELF_CHECKING_KINDS:
            problems.append(
                Problem(
                    file,
                    step.line,
                    "attributes.check",
                    f"{where} changes something but has no check: after an interruption several "
                    "items may be half-way through the pipeline, and resume redoes a step only "
                    "when its check says its effect is not in place. Add a check",
                )
            )
    return problems
