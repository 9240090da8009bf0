"""The approver tests hand ``start_run`` when every gate is to be approved (the CLI's ``--yes``)."""

from __future__ import annotations

from typing import Any


class Yes:
    """Approves every gate, recorded as approved by ``test``."""

    who = "test"

    def approve(self, entry: Any) -> bool:
        return True
