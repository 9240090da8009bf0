"""Gates of a run on Temporal, in this increment: approved when the run is started (``--yes``,
``--approve STEP``), as a local run without a terminal approves them. Approving a waiting gate from
another machine (``runbook approve``) is the next increment (docs/temporal.md)."""

from __future__ import annotations

from typing import Any

from . import contract as c


class UpFront:
    """The approvals given with ``runbook run``, recorded as given by whoever started the run."""

    def __init__(self, start: c.RunStart):
        self.all = start.approve_all
        self.ids = set(start.approve)
        self.started_by = start.started_by
        self.who: str | None = None

    def approves(self, step: str, keys: set[str]) -> bool:
        return self.all or bool(({step} | keys) & self.ids)

    def ahead(self, gates: list[Any], heading: str) -> list[Any]:
        """The certain gates nobody approved: the run stops before its first change (exit 4)."""
        return [gate for gate in gates if gate.certain and not self.approves(gate.step, set())]

    def approve(self, entry: Any) -> bool:
        keys = {f"{entry.step_id}[{entry.item_key}]", entry.label}
        if not self.approves(entry.step_id, keys):
            return False
        self.who = f"{self.started_by} via {'--yes' if self.all else '--approve'} (run on Temporal)"
        return True
