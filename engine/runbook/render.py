"""Rendering a step with its context: Jinja, sandboxed and strict, into an executable action.

- The sandbox keeps a runbook (which may come from a web page via ``runbook ingest``) from reaching
  Python internals; ``StrictUndefined`` turns a misspelt variable into an error naming the runbook
  line, never an empty string in a command.
- In ``ssh``, ``local`` and ``talosctl`` bodies every ``{{ value }}`` is shell-quoted (a Jinja
  ``finalize``), so a parameter such as ``x; rm -rf /`` stays one argument. ``| raw`` opts out.
- ``api`` bodies are parsed as YAML *before* rendering and each parameter value is rendered on its
  own, so a value can never add a parameter or break the request's structure.
- Steps render one at a time, just before they run, with the outputs of the steps before them.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import re
import shlex
import sys
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, Undefined, nodes
from jinja2.environment import TemplateExpression
from jinja2.sandbox import SandboxedEnvironment

from ..load.problems import InputError, Problem
from .actions import Action, ApiRequest, HttpRequest, ShellCommand, TalosctlCommand
from .calls import parameter_values
from .facts_view import tagged, to_bytes
from .headed import headed_body
from .model import Call, Step
from .unknown import Unknown, UnknownValue

SHELL_KINDS = ("ssh", "local", "talosctl")
#: What evaluating an untrusted template may raise; each becomes a located problem, never a traceback.
_TEMPLATE_FAILURES = (
    TemplateError,
    KeyError,
    TypeError,
    ValueError,
    AttributeError,
    ArithmeticError,
    IndexError,
    AssertionError,
    RecursionError,
    MemoryError,
)
EXPRESSION_ATTRS = ("when", "check", "foreach", "until")
_SCALARS = (str, int, float, bool)
#: The most items one ``foreach`` may give. ``runbook validate`` renders every item of every step
#: once per profile, and ``runbook run`` journals and plans each, so a runbook (which may come from
#: a web page) looping over ``range(100000)`` would keep either busy for a long time. What the
#: shipped runbooks loop over is far smaller: a profile's VMs (at most 2 roles x 100, the profile
#: schema's limit), twice that for talos-upgrade's rolling range (400, the largest), the tagged VMs
#: of one cluster, the guests on one node (node-evacuate); a VM's snapshots would be fewer still.
#: 2000 leaves five times the largest, and validating 2000 items of a step takes a fraction of a
#: second. A longer list is a located problem (``Renderer.items``), never built in full.
MAX_FOREACH_ITEMS = 2000


class ShellRaw(str):
    """Text the author explicitly asked to place into a shell command unquoted (``| raw``)."""


def _shell_value(value: Any) -> str:
    """How one ``{{ value }}`` appears in a shell command: always a single, quoted word."""
    if isinstance(value, ShellRaw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return " ".join(shlex.quote(_plain_value(v)) for v in value)
    return shlex.quote(_plain_value(value))


def _plain_value(value: Any) -> str:
    """How one ``{{ value }}`` appears in API values, URLs and attributes."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def exists(path: str) -> bool:
    """Template function: whether a file or folder exists on this machine (``~`` expanded).

    For guards on local artefacts: ``check: "exists(talos_config_dir ~ '/secrets.yaml')"``.
    """
    return os.path.exists(os.path.expanduser(str(path)))


def _unknown_as_text(value: Any) -> str:
    """How ``tojson`` writes what JSON has no form for: an Unknown as its text, anything else refused."""
    if isinstance(value, Unknown):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _environment(finalize: Any) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        undefined=StrictUndefined, finalize=finalize, keep_trailing_newline=True, autoescape=False
    )
    env.filters["raw"] = lambda value: ShellRaw(_plain_value(value))
    env.filters["quote"] = lambda value: shlex.quote(_plain_value(value))
    env.globals["exists"] = exists
    env.filters["bytes"] = env.globals["bytes"] = to_bytes
    env.filters["tagged"] = tagged
    # ``| tojson`` of a value a dry-run does not know yet writes it as known after run, not a traceback.
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "default": _unknown_as_text}
    # lipsum(10**8) would keep a validate busy for hours from one line of an ingested page.
    env.globals.pop("lipsum", None)
    return env


SHELL_ENV = _environment(_shell_value)
PLAIN_ENV = _environment(_plain_value)
#: Compiled templates kept. A runbook renders the same body and expressions for every item, every
#: profile and every run of a validate; compiling is most of what rendering costs.
COMPILED_KEPT = 2048


@functools.lru_cache(maxsize=COMPILED_KEPT)
def compiled_template(source: str, shell: bool) -> Template:
    """``source`` compiled for a shell body (values quoted) or for plain text; raises on bad syntax."""
    return (SHELL_ENV if shell else PLAIN_ENV).from_string(source)


@functools.lru_cache(maxsize=COMPILED_KEPT)
def compiled_expression(source: str) -> TemplateExpression:
    """A ``when``/``check``/``foreach``/``until`` expression compiled; raises on bad syntax."""
    return PLAIN_ENV.compile_expression(source, undefined_to_none=False)


class StepOutputs(dict):  # type: ignore[type-arg]
    """``steps.<id>`` for templates: outputs of finished steps.

    In a dry-run, a step of this runbook that has not produced output yet gives an ``Unknown``; a
    step id that is not in the runbook at all is still an error (a typo must not hide in a plan).
    """

    def __init__(self, outputs: dict[str, Any], pending_ids: frozenset[str] = frozenset()):
        super().__init__(outputs)
        self.pending_ids = pending_ids

    def __missing__(self, key: str) -> Any:
        if key in self.pending_ids:
            return Unknown(f"steps.{key}")
        prefix = f"{key}."
        if any(k.startswith(prefix) for k in (*self.keys(), *self.pending_ids)):
            return self.scoped(prefix)  # steps.CALLID: the steps a call ran, by their ids in the callee
        raise KeyError(key)

    def scoped(self, prefix: str) -> ScopedStepOutputs:
        """The outputs of the steps whose ids start with ``prefix`` (a call's), by the rest of their id."""
        return ScopedStepOutputs(self, prefix)


class ScopedStepOutputs(StepOutputs):
    """``steps`` as a callee's templates see it: its own step X is the run's ``CALLID.X``. A live view, so
    a step sees the outputs of the steps that finished before it."""

    def __init__(self, outputs: StepOutputs, prefix: str):
        super().__init__({}, frozenset())
        self._outputs, self._prefix = outputs, prefix

    def __missing__(self, key: str) -> Any:
        return self._outputs[self._prefix + key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (self._prefix + key) in self._outputs

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default


@dataclass(frozen=True)
class ApiBody:
    """An api body split before rendering: request line and parameter templates."""

    method: str
    path: str
    params: dict[str, Any]
    lines: dict[str, int]  # file line of each parameter, for messages about it


def split_api_body(step: Step, file: str = "runbook") -> ApiBody:
    """Request line and parameter mapping of an ``api`` step; each value stays a template."""
    body = headed_body(
        step,
        file,
        f"step {step.id}",
        "after the request line, an api body is a YAML mapping of parameters (name: value, one per line)",
    )
    method, _, path = body.head.partition(" ")
    for key, value in body.values.items():
        if not isinstance(value, _SCALARS) and value is not None:
            hint = ' (a templated value must be quoted: name: "{{ vm.name }}")' if isinstance(value, dict) else ""
            raise InputError(
                Problem(
                    file,
                    body.lines[key],
                    f"step {step.id}: {key}",
                    f"an API parameter value must be a single value{hint}",
                )
            )
    return ApiBody(method.upper(), path.strip(), body.values, body.lines)


class Renderer:
    """Renders the steps of one runbook; one instance per run."""

    def __init__(self, file: str, context: dict[str, Any]):
        self.file = file
        self.context = context
        # Names a step's ``register`` gave: the run's own go into ``context``; a callee's are seen by
        # that call's steps alone (by call prefix), as they would be were the callee run directly.
        self._registered: dict[str, dict[str, Any]] = {}
        self._registered_here: set[str] = set()

    def file_of(self, step: Step) -> str:
        """The file ``step`` is written in (a callee's, for a step that came through a call)."""
        return step.file or self.file

    def register(self, step: Step, name: str, value: Any) -> None:
        """Expose ``value`` as ``name`` to the templates of ``step``'s runbook (``register``)."""
        if step.call is None:
            self.context[name] = value
            self._registered_here.add(name)
        else:
            self._registered.setdefault(step.call.prefix, {})[name] = value

    def scope(self, step: Step, local: dict[str, Any]) -> dict[str, Any]:
        """What ``step``'s templates see: the run's context, or for a step that came through a call its
        callee's view of it (``_call_scope``), plus ``local`` (the loop variable)."""
        if step.call is None:
            return {**self.context, **local}
        steps = local.get("steps", self.context.get("steps"))
        return {**self._call_scope(step.call, steps), **{k: v for k, v in local.items() if k != "steps"}}

    def _call_scope(self, call: Call, steps: Any) -> dict[str, Any]:
        """The callee's scope, as if it were run directly: the engine's names, its own parameters (values
        given by the call, rendered in the caller's scope, else defaults), ``steps.X`` its own step X."""
        outer = self.scope(call.step, {"steps": steps})
        values = parameter_values(
            call,
            self.file_of(call.step),
            lambda name, value: self._given(call, name, value, outer),
        )
        hidden = set(self.context.get("params") or ()) | self._registered_here
        base = {k: v for k, v in self.context.items() if k not in hidden}
        scoped = steps.scoped(call.prefix) if isinstance(steps, StepOutputs) else steps
        return {**base, **values, "params": values, "steps": scoped, **self._registered.get(call.prefix, {})}

    def _given(self, call: Call, name: str, value: Any, scope: dict[str, Any]) -> Any:
        """A parameter value written in a call, rendered in the caller's ``scope``: a string that is one
        ``{{ expression }}`` keeps the expression's type (a list stays a list), other text renders as text."""
        if isinstance(value, list):
            return [self._given(call, name, item, scope) for item in value]
        if isinstance(value, dict):
            return {key: self._given(call, name, item, scope) for key, item in value.items()}
        if not isinstance(value, str) or ("{{" not in value and "{%" not in value):
            return value
        whole = re.fullmatch(r"\s*\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\s*", value, re.S)
        line = call.param_lines.get(name, call.step.line)
        try:
            if whole is not None:
                result = compiled_expression(whole["expr"].strip())(**scope)
                if isinstance(result, Undefined):
                    str(result)  # raises: StrictUndefined names what is missing
                return result
            return compiled_template(value, False).render(scope)
        except UnknownValue:
            raise
        except _TEMPLATE_FAILURES as exc:
            raise self._fail(call.step, exc, line, f"step {call.step.id}: {name}") from None

    def _fail(self, step: Step, exc: BaseException, line: int, field: str) -> InputError:
        message = exc.message if isinstance(exc, TemplateError) and exc.message else str(exc)
        missing = re.search(r"StepOutputs object' has no attribute '([^']+)'", message)
        if missing:
            message = f"no step '{missing[1]}' in this runbook (steps.{missing[1]}), or it has not run yet"
        return InputError(Problem(self.file_of(step), line, field, f"template error: {message}"))

    def expression(
        self, step: Step, attr: str, local: dict[str, Any], source: str | None = None, line: int | None = None
    ) -> Any:
        """Evaluate the ``when``/``check``/``foreach`` expression of ``step`` (or ``source``, written on ``line``)."""
        source = str(step.attrs[attr] if source is None else source).strip()
        line = step.line_of(attr) if line is None else line
        if source.startswith("{{") and source.endswith("}}"):
            source = source[2:-2].strip()
        try:
            return compiled_expression(source)(**self.scope(step, local))
        except UnknownValue:
            raise
        except _TEMPLATE_FAILURES as exc:
            raise self._fail(step, exc, line, f"attributes.{attr}") from None

    def truth(self, step: Step, attr: str, local: dict[str, Any]) -> bool:
        """``when``/``check`` as a decision; raises ``UnknownValue`` when it depends on a run-time value.

        A step that came through calls runs only when every call's ``when`` (each in its caller's
        scope) holds too. A ``when`` added up from headings is decided one condition at a time,
        outermost first, as ``and`` would: a false heading condition skips the step whatever the
        step's own says, and an error names the line of the condition that has it.
        """
        if attr == "when" and step.call is not None:
            for call in step.call.chain():
                if "when" in call.step.attrs and not self._truth(call.step, "when", {}):
                    return False
            if "when" not in step.attrs:
                return True
        return self._truth(step, attr, local)

    def _truth(self, step: Step, attr: str, local: dict[str, Any]) -> bool:
        parts = step.conditions if attr == "when" and len(step.conditions) > 1 else ()
        if not parts:
            return self._decide(step, attr, self.expression(step, attr, local), step.line_of(attr))
        for condition in parts:
            value = self.expression(step, attr, local, condition.expression, condition.line)
            if not self._decide(step, attr, value, condition.line):
                return False
        return True

    def _decide(self, step: Step, attr: str, value: Any, line: int) -> bool:
        try:
            return bool(value)
        except TemplateError as exc:  # StrictUndefined refuses to be true or false
            raise self._fail(step, exc, line, f"attributes.{attr}") from None

    def items(self, step: Step) -> list[Any]:
        """The loop items of a ``foreach`` step (raises ``UnknownValue`` when not known yet).

        At most ``MAX_FOREACH_ITEMS``; a longer list is a located problem, for ``runbook validate``
        and ``runbook run`` alike, and is never built in full.
        """
        value = self.expression(step, "foreach", {})
        if isinstance(value, Unknown):
            raise UnknownValue(value)
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise InputError(
                Problem(
                    self.file_of(step),
                    step.line_of("foreach"),
                    "attributes.foreach",
                    f"foreach must give a list (got {type(value).__name__})",
                )
            )
        items = list(itertools.islice(value.items() if isinstance(value, dict) else value, MAX_FOREACH_ITEMS + 1))
        if len(items) > MAX_FOREACH_ITEMS:
            try:
                count = f"{len(value)} items"
            except TypeError:  # an iterator: it was not run to its end
                count = f"more than {MAX_FOREACH_ITEMS} items"
            raise InputError(
                Problem(
                    self.file_of(step),
                    step.line_of("foreach"),
                    "attributes.foreach",
                    f"foreach gave {count}, more than the {MAX_FOREACH_ITEMS} one step may loop "
                    "over; loop over a shorter list (filter it, e.g. with selectattr, or take a "
                    "slice such as [:100]) or split the work into several steps or runs",
                )
            )
        return items

    def text(self, step: Step, source: str, local: dict[str, Any], *, shell: bool, line: int, field: str) -> str:
        try:
            return compiled_template(source, shell).render(self.scope(step, local))
        except UnknownValue:
            raise
        except _TEMPLATE_FAILURES as exc:
            raise self._fail(step, exc, line + _template_line(sys.exc_info()[2]) - 1, field) from None

    def action(self, step: Step, local: dict[str, Any]) -> Action:
        """The executable action of ``step`` for one loop item (``local`` holds the loop variable)."""
        timeout = step.attrs.get("timeout")
        node = (
            self.text(
                step, str(step.attrs["node"]), local, shell=False, line=step.line_of("node"), field="attributes.node"
            ).strip()
            if "node" in step.attrs
            else None
        )
        if step.kind == "file":
            from .filestep import file_action  # it builds on this module's environment

            return file_action(self, step, local, node)
        if step.kind == "api":
            body = split_api_body(step, self.file_of(step))
            path = self.text(step, body.path, local, shell=False, line=step.body_line, field="path").strip()
            params: dict[str, Any] = {}
            for key, value in body.params.items():
                if isinstance(value, str):
                    value = self.text(step, value, local, shell=False, line=step.body_line, field=key)
                    if value == "":
                        continue  # an empty value leaves the parameter out
                elif isinstance(value, bool):
                    value = 1 if value else 0
                elif value is None:
                    continue
                params[key] = value
            return ApiRequest(
                body.method, path, params, node=node or None, poll=bool(step.attrs.get("poll", True)), timeout=timeout
            )
        if step.kind in ("ssh", "local"):
            script = self.text(step, step.body, local, shell=True, line=step.body_line, field="body")
            return ShellCommand(
                script,
                node=(node or self._first_node()) if step.kind == "ssh" else None,
                timeout=timeout,
                token_env=step.attrs.get("api_token_env"),
                changes=self.changes(step, local),
            )
        if step.kind == "talosctl":
            text = self.text(step, step.body, local, shell=True, line=step.body_line, field="body")
            try:
                argv = tuple(shlex.split(text.replace("\\\n", " "), comments=True))
            except ValueError as exc:
                raise InputError(
                    Problem(
                        self.file_of(step), step.body_line, "body", f"talosctl arguments do not split into words: {exc}"
                    )
                ) from None
            if argv and argv[0] == "talosctl":
                argv = argv[1:]
            cwd = self.context.get("talos_config_dir")
            talosconfig = f"{cwd}/talosconfig" if cwd else None
            return TalosctlCommand(
                argv, talosconfig=talosconfig, cwd=cwd, timeout=timeout, changes=self.changes(step, local)
            )
        text = self.text(step, step.body, local, shell=False, line=step.body_line, field="body")
        return dataclasses.replace(
            _http_request(text, step, self.file_of(step), timeout), changes=self.changes(step, local)
        )

    def changes(self, step: Step, local: dict[str, Any]) -> tuple[dict[str, str], ...] | None:
        """The step's ``changes`` attribute rendered (one mapping or a list of them), None without one; an
        entry whose action renders empty is left out (the items of a loop that differ in what they do)."""
        if "changes" not in step.attrs:
            return None
        declared = step.attrs["changes"]
        entries = [
            {**entry, "id": one} if isinstance(entry.get("id"), list) else entry
            for entry in (declared if isinstance(declared, list) else [declared])
            for one in (entry["id"] if isinstance(entry.get("id"), list) else [None])
        ]  # an entry naming several ids is one change per id
        rendered = (
            {
                str(key): self.text(
                    step, str(value), local, shell=False, line=step.line, field=f"attributes.changes.{key}"
                ).strip()
                for key, value in entry.items()
            }
            for entry in entries
        )
        return tuple(entry for entry in rendered if entry.get("action"))  # an empty action: no change here

    def _first_node(self) -> str:
        nodes = self.context.get("nodes") or []
        return str(nodes[0]["name"]) if nodes else ""


def _http_request(text: str, step: Step, file: str, timeout: float | None) -> HttpRequest:
    head, _, body = text.partition("\n\n")
    lines = [line for line in head.splitlines() if line.strip()]
    method, _, url = lines[0].strip().partition(" ")
    headers = {}
    for offset, line in enumerate(lines[1:], 1):
        name, sep, value = line.partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z0-9-]+", name.strip()):
            raise InputError(
                Problem(
                    file,
                    step.body_line + offset,
                    "body",
                    f"expected a header line 'Name: value' (or a blank line before the body), got {line!r}",
                )
            )
        headers[name.strip()] = value.strip()
    expect = tuple(step.attrs.get("expect") or ())
    return HttpRequest(method.upper(), url.strip(), headers, body if body.strip() else None, expect, timeout)


def _template_line(tb: TracebackType | None) -> int:
    """Line, within the template source, where a rendering error happened (1 when unknown)."""
    line = 1
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


#: What reads the live facts: the name ``cluster``, and these attributes of these names.
_FACT_ATTRIBUTES = {("profile", "members"), ("plan", "template")}


def reads_facts(step: Step, names: tuple[str, ...] = ()) -> bool:
    """Whether any template of ``step`` (body, expressions, other attributes; not ``extract``, which is
    jq) reads the live facts: ``cluster``, ``profile.members`` or ``plan.template`` (or, for
    ``names``, the attributes listed there, e.g. ``("until",)``). Found in the templates' syntax
    trees, not by running them, so the runner knows before rendering whether to refresh the facts."""
    attrs = names or tuple(name for name in step.attrs if name != "extract")
    sources = [] if names else [step.body]
    for name in attrs:
        value = step.attrs.get(name)
        if name in EXPRESSION_ATTRS or name == "label":
            text = str(value).strip()
            sources.append(text if text.startswith("{{") else "{{ " + text + " }}")
        else:
            sources.extend(_strings(value))
    return any(_source_reads_facts(source) for source in sources)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


@functools.lru_cache(maxsize=COMPILED_KEPT)
def _source_reads_facts(source: str) -> bool:
    if "{" not in source:
        return False
    try:
        tree = PLAIN_ENV.parse(source)
    except _TEMPLATE_FAILURES:
        return False  # syntax_problems reports it
    for node in tree.find_all((nodes.Name, nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Name) and node.name == "cluster" and node.ctx == "load":
            return True
        if isinstance(node, (nodes.Getattr, nodes.Getitem)) and isinstance(node.node, nodes.Name):
            attr = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
            if (node.node.name, attr) in _FACT_ATTRIBUTES:
                return True
    return False


def syntax_problems(step: Step, file: str) -> list[Problem]:
    """Template syntax errors in a step's body and expressions, found without rendering anything."""
    problems = []
    expressions = [(attr, str(step.attrs[attr]), step.line_of(attr)) for attr in EXPRESSION_ATTRS if attr in step.attrs]
    if len(step.conditions) > 1:  # a when added up from headings: each condition on its own line
        expressions = [e for e in expressions if e[0] != "when"] + [
            ("when", c.expression, c.line) for c in step.conditions
        ]
    for attr, text, line in expressions:
        source = text.strip()
        if source.startswith("{{") and source.endswith("}}"):
            source = source[2:-2]
        try:
            compiled_expression(source.strip())
        except TemplateSyntaxError as exc:
            problems.append(Problem(file, line, f"attributes.{attr}", f"bad expression: {exc.message}"))
        except _TEMPLATE_FAILURES as exc:  # Jinja folds constants while compiling, under the sandbox
            problems.append(Problem(file, line, f"attributes.{attr}", f"bad expression: {exc}"))
    sources = [(step.body, step.body_line, "body")]
    shell = step.kind in SHELL_KINDS
    if step.kind == "api":
        try:
            body = split_api_body(step, file)
        except InputError as exc:
            return problems + exc.problems
        sources = [(body.path, step.body_line, "path")] + [
            (str(v), step.body_line, k) for k, v in body.params.items() if isinstance(v, str)
        ]
    for source, line, field in sources:
        try:
            compiled_template(source, shell)  # compiled now, as it will be rendered: kept for then
        except TemplateSyntaxError as exc:
            problems.append(Problem(file, line + (exc.lineno or 1) - 1, field, f"template syntax: {exc.message}"))
        except _TEMPLATE_FAILURES as exc:  # e.g. RecursionError: Jinja's parser recurses per nesting level
            problems.append(Problem(file, line, field, f"template cannot be read: {type(exc).__name__}"))
    return problems
