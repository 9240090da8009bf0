"""A plan's change set: the changes of its steps, folded so each resource reads as Terraform shows it.

A resource that an earlier step of the plan creates and later steps configure (clone, then set
its config, then grow its disk) is one ``create`` with all its fields, not a create and changes;
actions done to it (``start``) stay apart. Pure functions over ``Change`` values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from .base import RESOURCE_ACTIONS, UNKNOWN, Change, FieldChange


def fold(changes: Iterable[Change]) -> list[Change]:
    """The changes in plan order, each ``change`` of a resource created earlier in the plan merged
    into its ``create`` (a later value of a field wins)."""
    out: list[Change] = []
    created: dict[tuple[str, str], int] = {}
    for change in changes:
        key = (change.resource, change.id)
        if change.action == "change" and key in created:
            index = created[key]
            made = out[index]
            fields = {f.name: f for f in made.fields}
            for field in change.fields:
                fields[field.name] = FieldChange(field.name, None, field.after, False)
            out[index] = dataclasses.replace(made, fields=tuple(fields.values()))
            continue
        # A disk of a guest made earlier in the plan is part of that guest's create.
        vmid = change.id.split("/", 1)[0]
        owner = next((k for k in (("vm", vmid), ("container", vmid)) if k in created), None)
        if change.action == "change" and change.resource == "disk" and owner is not None:
            index = created[owner]
            made = out[index]
            disk = change.id.split("/", 1)[1] if "/" in change.id else change.id
            fields = {f.name: f for f in made.fields}
            for field in change.fields:
                name = f"{disk} {field.name}"
                fields[name] = FieldChange(name, None, field.after, False)
            out[index] = dataclasses.replace(made, fields=tuple(fields.values()))
            continue
        if change.action in ("create", "replace"):
            created[key] = len(out)
        elif change.action == "destroy":
            created.pop(key, None)
        out.append(change)
    return out


def counts(changes: Iterable[Change]) -> dict[str, int]:
    """How many changes of each action: the resource actions always (0 included), then action words."""
    out = {action: 0 for action in RESOURCE_ACTIONS}
    for change in changes:
        out[change.action] = out.get(change.action, 0) + 1
    return out


def summary_line(changes: Iterable[Change]) -> str:
    """``Plan: 3 to create, 1 to change, 3 to destroy; 3 to start`` (replace and action words only when
    some are planned; unknown effects last)."""
    counted = counts(changes)
    head = ", ".join(f"{counted[a]} to {a}" for a in ("create", "change", "destroy"))
    if counted["replace"]:
        head += f", {counted['replace']} to replace"
    words = [
        f"{n} to {action}" for action, n in counted.items() if action not in RESOURCE_ACTIONS and action != UNKNOWN
    ]
    line = "Plan: " + head + ("; " + ", ".join(words) if words else "")
    if counted.get(UNKNOWN):
        line += f"; {counted[UNKNOWN]} of unknown effect"
    return line + "."
