"""The few lines a real run ends with: what it did, by step outcome, and what it changed as far as it
knows.

A run knows which steps ran and which of them could change something (every step but an API GET
or one marked ``readonly``); it names those. ``changes`` is the seam for precise resource changes
(``Change``, as a dry-run's preview gives them): when a run has them, their
counts are shown too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from ..run.runner import PlanEntry
from ..runbook.model import Runbook


class Change(Protocol):
    """What the summary reads of a change (``engine.executors.base.Change``): its action."""

    action: str


#: Items of one step named in the "changed" line before they are only counted.
MAX_NAMED_ITEMS = 5
_EARLIER = "finished in an earlier attempt"
_PAST = {"create": "created", "change": "changed", "destroy": "destroyed", "replace": "replaced"}


def summary_lines(runbook: Runbook, entries: Sequence[PlanEntry], changes: Iterable[Change] = ()) -> list[str]:
    """``summary: ran 9 (4 only read), skipped 6, ...`` and, when a step that changes things ran,
    ``changed: clone (stg-cp01, stg-cp02), start (...)``."""
    readonly = {step.id for step in runbook.steps if step.attrs.get("readonly")}
    ran = [e for e in entries if e.status == "succeeded" and e.reason != _EARLIER]
    changing = [e for e in ran if not _reads_only(e, readonly)]
    counts = [
        f"ran {len(ran)}" + (f" ({len(ran) - len(changing)} only read)" if len(changing) < len(ran) else ""),
        f"skipped {sum(1 for e in entries if e.status == 'skipped')}",
        f"failed {sum(1 for e in entries if e.status == 'failed')}",
    ]
    earlier = sum(1 for e in entries if e.status == "succeeded" and e.reason == _EARLIER)
    if earlier:
        counts.append(f"{earlier} finished in an earlier attempt")
    gated = [e.label for e in entries if e.status == "stopped_at_gate"]
    if gated:
        counts.append(f"stopped at the gate of {', '.join(gated)}")
    reached = {e.step_id for e in entries}
    unreached = [step.id for step in runbook.steps if step.id not in reached]
    if unreached:
        counts.append(f"{len(unreached)} not reached")
    lines = ["summary: " + ", ".join(counts)]
    lines.append("changed: " + (_by_step(changing) or "nothing (every step that ran only read)"))
    counted = _change_counts(changes)
    if counted:
        lines.append("changes: " + counted)
    return lines


def _reads_only(entry: PlanEntry, readonly: set[str]) -> bool:
    action = entry.action or {}
    return entry.step_id in readonly or (action.get("type") == "ApiRequest" and action.get("method") == "GET")


def _by_step(entries: Sequence[PlanEntry]) -> str:
    """``clone (stg-cp01, stg-cp02), bootstrap``: each step once, in the order it ran, with its items."""
    items: dict[str, list[str]] = {}
    for entry in entries:
        named = items.setdefault(entry.step_id, [])
        if entry.item_key is not None:
            named.append(entry.item_label or entry.item_key)
    parts = []
    for step_id, named in items.items():
        if not named:
            parts.append(step_id)
        elif len(named) <= MAX_NAMED_ITEMS:
            parts.append(f"{step_id} ({', '.join(named)})")
        else:
            parts.append(f"{step_id} ({len(named)} items)")
    return ", ".join(parts)


def _change_counts(changes: Iterable[Change]) -> str:
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.action] = counts.get(change.action, 0) + 1
    return ", ".join(f"{number} {_PAST.get(action, action)}" for action, number in counts.items())
