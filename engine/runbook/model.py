"""The parsed runbook as plain data: what ``parser`` produces and every later stage reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .headings import Condition

#: The areas of ``runbook list``, in its order, with the heading each is listed under.
AREAS = {
    "inventory": "Connectivity and inventory",
    "vm": "VM lifecycle",
    "tags": "Many VMs by tag",
    "backup": "Snapshots and backups",
    "storage": "Storage",
    "cluster": "Clusters from profiles",
    "credentials": "Credentials",
    "talos": "Talos",
    "automation": "Hand-off to other tools",
    "other": "Other",
}

STEP_KINDS = ("api", "ssh", "talosctl", "http", "local", "file", "runbook")
#: The kind of a step that runs another runbook in place; ``engine.runbook.calls`` expands it away.
CALL_KIND = "runbook"
#: Kinds whose executor checks by itself whether the step's effect is in place (a file holding that
#: content and mode is left alone): they need no ``check``, in a pipeline or on resume.
SELF_CHECKING_KINDS = ("file",)

#: Names templates already see (engine.runbook.context, the runner, template globals); a parameter of the
#: same name would silently hide them, so it is refused.
RESERVED_NAMES = frozenset(
    {
        "config",
        "cluster",
        "nodes",
        "node_names",
        "defaults",
        "vmid_ranges",
        "credentials",
        "tags",
        "cloudinit",
        "ansible",
        "params",
        "profile",
        "talos",
        "talos_config_dir",
        "flux",
        "plan",
        "steps",
        "loop_index",
        "result",
        "exists",
        "item",
    }
)


@dataclass(frozen=True)
class Parameter:
    """A runbook parameter; the spec is a JSON Schema fragment used to check values given for it."""

    name: str
    type: str
    description: str
    spec: dict[str, Any]
    line: int | None

    @property
    def required(self) -> bool:
        return "default" not in self.spec

    @property
    def default(self) -> Any:
        return self.spec.get("default")

    @property
    def secret(self) -> bool:
        """Given at run time from the environment, pass or a hidden prompt; never recorded or shown."""
        return self.spec.get("secret") is True

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "description": self.description,
            "required": self.required,
        }
        if not self.required:
            out["default"] = self.default
        out.update({k: v for k, v in self.spec.items() if k not in ("type", "description", "default")})
        return out


@dataclass(frozen=True)
class Step:
    """One fenced step block: its kind, stable id, heading title, attributes and raw (unrendered) body."""

    kind: str
    id: str
    title: str | None
    attrs: dict[str, Any]
    body: str
    line: int
    body_line: int
    id_given: bool
    #: Set on a step that came from another runbook through a call (``engine.runbook.calls``): the
    #: innermost call it came through. None for the run's own steps.
    call: Call | None = None
    #: The line each attribute came from: the fence's, or the heading's that gave it (``engine.runbook.headings``).
    origins: dict[str, int] = field(default_factory=dict)
    #: The ``when`` conditions (headings' outermost first, then the step's own), each with its line.
    conditions: tuple[Condition, ...] = ()

    @property
    def loop_var(self) -> str:
        return str(self.attrs.get("as", "item"))

    @property
    def file(self) -> str | None:
        """The file the step is written in when it came through a call; None: the run's own runbook."""
        return self.call.runbook.file if self.call is not None else None

    def line_of(self, attr: str) -> int:
        """The line an attribute was written on: a heading's line when the step inherits it."""
        return self.origins.get(attr, self.line)

    def inherited(self) -> dict[str, int]:
        """Attributes that came from a heading, with that heading's line (a when joined from several: the fence's)."""
        return {name: line for name, line in self.origins.items() if line != self.line}

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "line": self.line,
            "body_line": self.body_line,
            "id_given": self.id_given,
            "attributes": dict(self.attrs),
            "inherited": self.inherited(),
            "conditions": [{"when": c.expression, "line": c.line} for c in self.conditions],
            "body": self.body,
        }


@dataclass(frozen=True)
class Call:
    """How a step of another runbook came into the run: through the call step ``step`` (as expanded:
    its full id, its own ``call`` the enclosing one), running ``runbook`` (or its ``section``) with
    the parameter values ``params`` (templates, rendered in the caller's scope; ``param_lines``
    says where each is written in the caller)."""

    step: Step
    runbook: Runbook
    section: str | None
    params: dict[str, Any]
    param_lines: dict[str, int]

    @property
    def prefix(self) -> str:
        """What the ids of the callee's steps start with in the run (``talos.``)."""
        return f"{self.step.id}."

    @property
    def target(self) -> str:
        """The call as written: ``NAME`` or ``NAME#section``."""
        return self.runbook.name + (f"#{self.section}" if self.section else "")

    def chain(self) -> tuple[Call, ...]:
        """This call and the calls enclosing it, outermost first."""
        outer = self.step.call.chain() if self.step.call is not None else ()
        return (*outer, self)


def step_file(step: Step, root: str) -> str:
    """The file ``step`` is written in, for messages: its callee's, or ``root`` (the run's runbook)."""
    return step.file or root


@dataclass(frozen=True)
class Runbook:
    """A parsed runbook: frontmatter, ordered steps and the markdown they sit in."""

    name: str
    description: str
    file: str
    parameters: tuple[Parameter, ...]
    requires: tuple[str, ...]
    steps: tuple[Step, ...]
    markdown: str
    body_first_line: int
    frontmatter: dict[str, Any] = field(default_factory=dict)
    #: The runbooks its calls run (by name, nested calls included), once expanded; empty before.
    called: tuple[Runbook, ...] = ()

    @property
    def area(self) -> str:
        """What it works on (``area`` in the frontmatter), for ``runbook list``; ``other`` when unsaid."""
        return str(self.frontmatter.get("area") or "other")

    @property
    def needs_profile(self) -> bool:
        return "profile" in self.requires

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "file": self.file,
            "requires": list(self.requires),
            "parameters": [p.as_dict() for p in self.parameters],
            "steps": [s.as_dict() for s in self.steps],
            "origin": self.frontmatter.get("origin"),
            "area": self.area,
        }
