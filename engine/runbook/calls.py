"""Calls: a ``runbook`` step runs another runbook, or one section of it, in place.

```runbook {id: talos, when: "profile.type == 'talos'"}
talos-cluster-bootstrap#talos-sequence
flux_private_key_file: "{{ flux_private_key_file }}"
```

``expand`` replaces each call by the callee's steps, as a pure function of the parsed runbooks: a
callee step keeps its own attributes, file and lines, and runs as ``CALLID.STEPID``, so the one
journal of the run keys it apart from the caller's steps and a resume finds it. Nested calls expand
the same way (``outer.inner.step``); a cycle is refused, naming the chain. The call's ``when`` and
the callee's parameters are not folded into the steps' text: each expanded step points at its
``Call`` (``Step.call``), and rendering evaluates them in the caller's scope (``render.Renderer``).

Reading the callee files is the caller's business (``gather``, with a function that parses one by
name), so this module stays free of I/O.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

from markdown_it import MarkdownIt

from ..load import patterns
from ..load.problems import InputError, Problem, no_such
from .context import typed_value
from .headed import headed_body
from .model import CALL_KIND, Call, Parameter, Runbook, Step
from .parser import parameter_value_errors
from .unknown import contains_unknown

_TARGET = re.compile(r"^(?P<name>[A-Za-z0-9_][A-Za-z0-9_-]*)(?:#(?P<section>[^\s#]*))?$")
_HEADINGS = MarkdownIt("commonmark")
#: Attributes at the end of a heading line (``## Title {when: ...}``): not part of its anchor.
_HEADING_ATTRS = re.compile(r"\s+\{.*\}\s*$")

#: What ``gather`` hands ``expand`` for each name called: the parsed runbook, or why it could not be.
Library = Mapping[str, "Runbook | InputError | None"]


@dataclasses.dataclass(frozen=True)
class _Target:
    """A call's body: what it runs and with which parameter values (still templates)."""

    name: str
    section: str | None
    params: dict[str, Any]
    lines: dict[str, int]


def is_call(step: Step) -> bool:
    return step.kind == CALL_KIND


def has_when(step: Step) -> bool:
    """Whether the step runs under a condition: its own ``when`` or that of a call it came through."""
    return "when" in step.attrs or (step.call is not None and any("when" in c.step.attrs for c in step.call.chain()))


def called_names(runbook: Runbook) -> list[str]:
    """The runbooks ``runbook``'s calls name (a call whose body cannot be read names none)."""
    names = []
    for step in runbook.steps:
        if is_call(step):
            try:
                names.append(_target(step, runbook.file).name)
            except InputError:
                continue
    return names


def gather(root: Runbook, parse: Callable[[str], Runbook | None]) -> dict[str, Runbook | InputError | None]:
    """Every runbook the calls of ``root`` reach, nested calls included, each parsed once by ``parse``
    (None: no runbook of that name; an ``InputError``: it does not parse)."""
    found: dict[str, Runbook | InputError | None] = {}
    waiting = called_names(root)
    while waiting:
        name = waiting.pop(0)
        if name in found or name == root.name:
            continue
        try:
            callee = parse(name)
        except InputError as exc:
            found[name] = exc
            continue
        found[name] = callee
        if callee is not None:
            waiting += called_names(callee)
    return found


def expand(root: Runbook, library: Library, known: list[str] | None = None) -> Runbook:
    """``root`` with every call replaced by the steps it runs; raises ``InputError`` with every problem
    (located on the caller's line). ``known``: the runbook names there are, for "did you mean"."""
    if not any(is_call(step) for step in root.steps):
        return root
    problems: list[Problem] = []
    called: dict[str, Runbook] = {}
    steps = _expand(root, root.steps, None, (root.name,), {root.name: root, **library}, known, called, problems)
    ids: dict[str, Step] = {}
    for step in steps:
        first = ids.setdefault(step.id, step)
        if first is not step:
            problems.append(
                Problem(
                    _file(step, root),
                    step.line,
                    "attributes.id",
                    f"step id '{step.id}' is used twice in the run (also {_file(first, root)} line {first.line}): "
                    "a call's steps run as CALLID.STEPID, so rename the call or the step",
                )
            )
    if problems:
        raise InputError(sorted(set(problems), key=lambda p: (p.file, p.line or 0, p.field or "", p.message)))
    requires = list(root.requires)
    for callee in called.values():
        requires += [need for need in callee.requires if need != "profile" and need not in requires]
    return dataclasses.replace(root, steps=tuple(steps), requires=tuple(requires), called=tuple(called.values()))


def _file(step: Step, root: Runbook) -> str:
    return step.file or root.file


def _expand(
    runbook: Runbook,
    steps: tuple[Step, ...],
    call: Call | None,
    chain: tuple[str, ...],
    library: Mapping[str, Runbook | InputError | None],
    known: list[str] | None,
    called: dict[str, Runbook],
    problems: list[Problem],
) -> list[Step]:
    prefix = call.prefix if call is not None else ""
    out: list[Step] = []
    for step in steps:
        if not is_call(step):
            title = step.title if call is None else f"{step.title or step.id} (from {call.target}, {runbook.file})"
            out.append(dataclasses.replace(step, id=prefix + step.id, call=call, title=title))
            continue
        try:
            target = _target(step, runbook.file)
        except InputError as exc:
            problems.extend(exc.problems)
            continue
        where = (runbook.file, step.line)
        if target.name in chain:
            loop = " -> ".join((*chain[chain.index(target.name) :], target.name))
            problems.append(Problem(*where, "body", f"calls form a cycle: {loop}; a runbook cannot run itself"))
            continue
        callee = library.get(target.name)
        if callee is None:
            names = known if known is not None else [name for name, rb in library.items() if isinstance(rb, Runbook)]
            problems.append(Problem(*where, "body", no_such("runbook", target.name, names, "runbook list")))
            continue
        if isinstance(callee, InputError):
            problems.append(
                Problem(
                    *where,
                    "body",
                    f"the called runbook {target.name} has {len(callee.problems)} problem(s): "
                    f"run 'runbook validate' on it",
                )
            )
            problems.extend(callee.problems)
            continue
        found = _callee_problems(runbook, step, target, callee)
        if found:
            problems.extend(found)
            continue
        chosen = section_steps(callee, target.section) if target.section else callee.steps
        if not chosen:
            problems.append(Problem(*where, "body", f"{target.name}#{target.section} has no steps to run"))
            continue
        called.setdefault(callee.name, callee)
        expanded_call = dataclasses.replace(step, id=prefix + step.id, call=call)
        inner = Call(expanded_call, callee, target.section, target.params, target.lines)
        out += _expand(callee, chosen, inner, (*chain, callee.name), library, known, called, problems)
    return out


def parameter_values(call: Call, file: str, rendered: Callable[[str, Any], Any]) -> dict[str, Any]:
    """The callee's parameters for ``call``: each value the call gives, ``rendered`` in the caller's scope
    and typed and checked against the callee's spec like a ``--param`` value, else the default.
    A problem is located on the call's line for that parameter in ``file``; a value known only after
    run (in a dry-run) is passed on unchecked."""
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    for param in call.runbook.parameters:
        if param.name not in call.params:
            values[param.name] = param.default
            continue
        value = rendered(param.name, call.params[param.name])
        where = (file, call.param_lines.get(param.name, call.step.line), f"step {call.step.id}: {param.name}")
        values[param.name], found = _checked(call.runbook, param, value, where)
        problems += found
    if problems:
        raise InputError(problems)
    return values


def _checked(callee: Runbook, param: Parameter, value: Any, where: tuple[str, int, str]) -> tuple[Any, list[Problem]]:
    """``value`` typed for ``param`` like a ``--param`` text, and what is wrong with it."""
    if contains_unknown(value):
        return value, []
    if isinstance(value, str) and param.type != "string":
        try:
            value = typed_value(param.type, value, (param.spec.get("items") or {}).get("type"))
        except ValueError as exc:
            return value, [Problem(*where, f"{callee.name}'s parameter {param.name} {exc} (got {value!r})")]
    try:
        errors = parameter_value_errors(param.spec, value)
    except patterns.PatternTooSlow as slow:
        return value, [slow.problem(callee.file, param.line, param.name, param.spec, "the value given")]
    return value, [Problem(*where, f"{callee.name}'s parameter {param.name} {error}") for error in errors]


def _is_template(value: Any) -> bool:
    if isinstance(value, list):
        return any(_is_template(item) for item in value)
    if isinstance(value, dict):
        return any(_is_template(item) for item in value.values())
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _target(step: Step, file: str) -> _Target:
    """Read a call's body: the first line ``NAME`` or ``NAME#section``, then a YAML mapping of parameters."""
    body = headed_body(
        step,
        file,
        "body",
        "after the runbook's name, a runbook step gives its parameters as a YAML mapping (name: value)",
        within="the call's parameters",
    )
    match = _TARGET.match(body.head)
    if match is None:
        raise InputError(
            Problem(
                file,
                body.line,
                "body",
                f"the first line of a runbook step names the runbook to run, as NAME or NAME#section "
                f"(a heading's anchor, like talos-cluster-bootstrap#talos-sequence); got {body.head!r}",
            )
        )
    return _Target(match["name"], match["section"] or None, body.values, body.lines)


def _callee_problems(caller: Runbook, step: Step, target: _Target, callee: Runbook) -> list[Problem]:
    """What is wrong with calling ``callee`` like this: its section, its parameters, its profile."""
    problems = []
    file = caller.file
    if target.section is not None and target.section not in section_anchors(callee):
        problems.append(
            Problem(
                file,
                step.body_line,
                "body",
                f"in {callee.name}: "
                + no_such("section", target.section, section_anchors(callee), f"runbook show {callee.name}"),
            )
        )
    specs = {p.name: p for p in callee.parameters}
    for name, line in target.lines.items():
        if name not in specs:
            problems.append(
                Problem(
                    file,
                    line,
                    f"step {step.id}: {name}",
                    f"in {callee.name}: " + no_such("parameter", name, specs, f"runbook show {callee.name}"),
                )
            )
    for name, value in target.params.items():
        if name in specs and not _is_template(value):  # a value written out is checked now, not at run time
            where = (file, target.lines[name], f"step {step.id}: {name}")
            problems += _checked(callee, specs[name], value, where)[1]
    for param in callee.parameters:
        if param.required and param.name not in target.params:
            problems.append(
                Problem(
                    file,
                    step.line,
                    f"step {step.id}",
                    f"{callee.name} requires the parameter '{param.name}' ({param.description}): "
                    f"add a line '{param.name}: VALUE' after '{target.name}'",
                )
            )
    if callee.needs_profile and not caller.needs_profile:
        problems.append(
            Problem(
                file,
                step.line,
                f"step {step.id}",
                f"{callee.name} acts on a cluster profile (requires: [profile]) and {caller.name} does not: "
                f"add 'requires: [profile]' to {caller.name}'s frontmatter, or call a runbook without a profile",
            )
        )
    return problems


def headings(runbook: Runbook) -> list[tuple[str, int, int]]:
    """The runbook's headings as (anchor, level, file line), in order; anchors as GitHub makes them
    (lower case, punctuation dropped, spaces as '-', a repeated one suffixed -1, -2...)."""
    tokens = _HEADINGS.parse(runbook.markdown)
    out: list[tuple[str, int, int]] = []
    seen: dict[str, int] = {}
    for index, token in enumerate(tokens):
        if token.type != "heading_open" or token.map is None:
            continue
        children = tokens[index + 1].children or []
        text = "".join(child.content for child in children if child.type in ("text", "code_inline"))
        anchor = slug(_HEADING_ATTRS.sub("", text))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        out.append(
            (anchor if count == 0 else f"{anchor}-{count}", int(token.tag[1:]), runbook.body_first_line + token.map[0])
        )
    return out


def slug(title: str) -> str:
    """A heading's anchor, as GitHub writes it: ``## Talos sequence (v1.7)`` -> ``talos-sequence-v17``."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def section_anchors(runbook: Runbook) -> list[str]:
    return [anchor for anchor, _, _ in headings(runbook)]


def section_steps(runbook: Runbook, anchor: str) -> tuple[Step, ...]:
    """The steps under the heading ``anchor`` and its sub-headings, up to the next heading of the same
    or a higher level."""
    found = headings(runbook)
    for index, (name, level, line) in enumerate(found):
        if name == anchor:
            end = next((other for _, lvl, other in found[index + 1 :] if lvl <= level), None)
            return tuple(s for s in runbook.steps if s.line > line and (end is None or s.line < end))
    return ()
