"""The parsed runbook as plain data: what ``parser`` produces and every later stage reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STEP_KINDS = ("api", "ssh", "talosctl", "http", "local", "file")
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

    @property
    def loop_var(self) -> str:
        return str(self.attrs.get("as", "item"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "line": self.line,
            "body_line": self.body_line,
            "id_given": self.id_given,
            "attributes": dict(self.attrs),
            "body": self.body,
        }


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
        }
