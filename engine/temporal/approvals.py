"""Gates of a run on Temporal: approved up front (``--yes``, ``--approve STEP``), or waited for.

A gate nobody approved up front does not stop the run: the step's activity ends with ``GateWaits``
(nothing of the step ran; its gate is journaled as waiting) carrying what ``runbook approvals`` shows,
and the workflow waits for ``runbook approve`` / ``runbook reject``. An approval, checked by a worker
(``check``), comes back with the step's next activity (``TaskRef.decision``) and is journaled as
``gate_approved`` with who, how they were authenticated and when.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import contract as c
from .identity import decided, scheduled, started, verified


class GateWaits(Exception):
    """The step met a gate nobody approved yet; ``waiting`` says what for ``runbook approvals``."""

    def __init__(self, waiting: c.Waiting):
        super().__init__(waiting.label)
        self.waiting = waiting


class Approvals:
    """The approver of a run on a worker: up front from the start, else the decision its activity carries."""

    def __init__(self, start: c.RunStart, changes: Callable[[Any], list[str]], four_eyes: bool):
        # Under four-eyes the starter's own --yes/--approve approve nothing: their gates wait for someone else.
        self.all = start.approve_all and not four_eyes
        self.ids = set() if four_eyes else set(start.approve)
        self.start = start
        self.changes = changes  # an entry -> its change set's lines, as the dry-run shows them
        self.decisions: dict[tuple[str, str | None], c.Decision] = {}  # by (step, item): from the activities
        self.who: str | None = None
        self.record: dict[str, Any] = {}

    def upfront(self, step: str, keys: set[str]) -> bool:
        return self.all or bool(({step} | keys) & self.ids)

    def ahead(self, gates: list[Any], heading: str) -> list[Any]:
        """Nothing is refused before the run: a gate not approved up front waits in the workflow."""
        return []

    def approve(self, entry: Any) -> bool:
        keys = {f"{entry.step_id}[{entry.item_key}]", entry.label}
        if self.upfront(entry.step_id, keys):
            self.who = f"{self.start.started_by} via {'--yes' if self.all else '--approve'} (run on Temporal)"
            self.record = {}
            return True
        decision = self.decisions.get((entry.step_id, entry.item_key))
        if decision is not None:
            self.who = decision.by.name
            self.record = detail(decision)
            return decision.approve
        waiting = c.Waiting(
            self.start.run_id,
            entry.step_id,
            entry.item_key,
            entry.label,
            list(entry.gate_reasons),
            entry.display,
            self.changes(entry),
        )
        raise GateWaits(waiting)


def detail(decision: c.Decision) -> dict[str, Any]:
    """How the maker of a decision was authenticated, and when it was made: kept with it in the journal."""
    return {"authenticated": decision.checked == "verified", "how": decision.by.how, "at": decision.at}


def check(decision: c.Decision, start: c.RunStart, client_ca: Path | None, four_eyes: bool) -> c.Decision:
    """The decision with its maker as this worker checked them; ValueError (the refusal, said) when
    ``four_eyes`` forbids it: an unauthenticated maker or starter, or the starter approving their own run."""
    name, authenticated, how = verified(decision.by, decided(decision), client_ca)
    checked = c.Identity(name, authenticated, how)
    if four_eyes and decision.approve:
        signed = scheduled(start.schedule) if start.schedule else started(start.run_id)
        starter, starter_known, starter_how = verified(start.starter, signed, client_ca)
        if not authenticated:
            raise ValueError(
                f"gates.four_eyes is on: an approval must come from an authenticated operator (a client "
                f"certificate over mutual TLS); {name} is not ({how})"
            )
        if not starter_known:
            raise ValueError(
                f"gates.four_eyes is on, and who started run {start.run_id} is not known for certain "
                f"({starter}: {starter_how}), so no approval can be told apart from them"
            )
        if starter == name:
            raise ValueError(f"gates.four_eyes is on: {name} started run {start.run_id}, so someone else must approve")
    return c.Decision(
        decision.run_id,
        decision.step,
        decision.item,
        decision.approve,
        checked,
        decision.reason,
        decision.at,
        "verified" if authenticated else "unauthenticated",
    )
