"""A change set as a reader sees it, like ``terraform plan``: the text lines and the view data.

``+`` create, ``~`` change (with each field ``before -> after``), ``-`` destroy (with what is
lost), ``-/+`` replace, ``>`` an action done to a resource (start, snapshot, apply-config...),
``?`` a change of unknown effect. The terminal, ``--json`` and the HTML page show the same
``Change`` values (``engine.executors.changeset``), so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from ..executors.base import RESOURCE_ACTIONS, UNKNOWN, Change, Lost, is_unknown_value

SYMBOLS = {"create": "+", "change": "~", "destroy": "-", "replace": "-/+", UNKNOWN: "?"}
#: Where a change sits on the HTML page, by its action; action words are "act".
SECTIONS = {
    "create": "will be created",
    "change": "will be changed",
    "destroy": "will be destroyed",
    "replace": "will be replaced",
    "act": "will be acted on",
    UNKNOWN: "of unknown effect",
    "possible": "may happen, depending on values known only at run time",
}


def symbol(action: str) -> str:
    return SYMBOLS.get(action, ">")


def section(action: str) -> str:
    return action if action in SYMBOLS else "act"


def value_text(value: Any) -> str:
    """A field's value for a reader: ``(none)`` when unset, ``unknown (offline)`` when not known."""
    if value is None:
        return "(none)"
    if is_unknown_value(value):
        reason = str(value["unknown"])
        return "(known after run)" if reason == "until run" else f"unknown ({reason})"
    return str(value)


def lost_text(lost_items: Iterable[Lost]) -> str:
    """What a destroy loses: ``disks: scsi0 100G on local-lvm; snapshots: 2 (a, b)``, or ""."""
    items = list(lost_items)
    disks = [f"{lost.name} {lost.detail}".strip() for lost in items if lost.kind == "disk"]
    snaps = [lost.name for lost in items if lost.kind == "snapshot"]
    others = [f"{lost.kind} {lost.name}" for lost in items if lost.kind not in ("disk", "snapshot")]
    parts = []
    if disks:
        parts.append("disks: " + ", ".join(disks))
    if snaps:
        parts.append(f"snapshots: {len(snaps)} ({', '.join(snaps)})")
    parts += others
    return "; ".join(parts)


def headline(change: Change) -> str:
    """The first line of a change: its symbol, its action word when it is one, the resource's name."""
    word = "" if change.action in (*RESOURCE_ACTIONS, UNKNOWN) else f"{change.action} "
    return f"{symbol(change.action)} {word}{change.name or change.resource + ' ' + change.id}"


def shown_fields(change: Change) -> list[dict[str, Any]]:
    """The fields a reader is shown: an action word's ``status`` is said by the word itself."""
    return [
        f.as_dict()
        for f in change.fields
        if not (change.action not in RESOURCE_ACTIONS and change.action != UNKNOWN and f.name == "status")
    ]


def field_text(change: Change, field: dict[str, Any]) -> str:
    """``before -> after``; only the value for a create, or for a parameter of an action word."""
    if change.action == "create" or (change.action not in RESOURCE_ACTIONS and field["before"] is None):
        return value_text(field["after"])
    return f"{value_text(field['before'])} -> {value_text(field['after'])}"


def change_lines(changes: Iterable[Change], gated: Collection[tuple[str, str | None]] = ()) -> list[str]:
    """The change set as text lines, each change with its fields, what it loses and its step."""
    out: list[str] = []
    for change in changes:
        which = change.step + (f"[{change.item}]" if change.item else "")
        gate = "  [gated]" if (change.step, change.item) in gated else ""
        out.append(f"  {headline(change)}   (step {which}){gate}")
        fields = shown_fields(change)
        width = max((len(f["name"]) for f in fields), default=0)
        texts = [field_text(change, field) for field in fields]
        text_width = max((len(t) for t in texts), default=0)
        for field, text in zip(fields, texts):
            pending = "   pending until the VM restarts (no hotplug)" if field["pending"] else ""
            out.append(f"      {field['name']:<{width}}  {text:<{text_width}}{pending}".rstrip())
        lost = lost_text(change.lost)
        if lost:
            out.append(f"      loses {lost}")
        for line in change.detail.splitlines():  # a file's diff is several lines
            out.append(f"      {line}")
        if change.when:
            out.append(f"      {change.when}")
    return out
