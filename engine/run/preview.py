"""The live side of a review: read what a change's values before come from, then ask the executor.

For each step a dry-run would run, the table of PVE calls says what to read first (the guest's
config for a config change or a destroy's disks, its status, its snapshots); this reads it once,
read-only, through the dispatcher, and adds it to the ``Facts`` (new facts each time: they stay
immutable). The executor's ``preview(action, facts)`` then stays a pure function. The facts also
carry what earlier steps of the plan create or destroy, so a VM cloned earlier in the plan shows
as new, without values before. Offline (no dispatcher), nothing is read and every value before
is "unknown (offline)".
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from ..executors.base import Change
from ..executors.preview import preview_action
from ..load.facts import Facts, Planned
from ..load.pvetable import table
from ..runbook.actions import Action, ApiRequest, StepFailed, quiet
from ..runbook.unknown import contains_unknown
from .dispatch import Dispatcher


class Previewer:
    """``previewer(action)`` -> the changes that action would make, given everything planned before it."""

    def __init__(self, facts: Facts | None, dispatcher: Dispatcher | None):
        facts = facts if facts is not None else Facts()
        self.facts = facts if dispatcher is not None else dataclasses.replace(facts, offline=True)
        self.dispatcher = dispatcher
        self._lock = threading.Lock()

    def __call__(self, action: Action, step: str = "") -> list[Change]:
        """``step`` (its id) is kept with what the changes leave for later steps, so a fact they make
        unknown names the step that changes it."""
        with self._lock:
            if self.dispatcher is not None:
                self.facts = self.facts.with_reads(self._before(action))
                changes = self.dispatcher.preview(action, self.facts)
            else:
                changes = preview_action(action, self.facts)
            self.facts = self.facts.with_planned(_planned(c, step) for c in changes)
            return changes

    def _before(self, action: Action) -> dict[str, Any]:
        """What the table says to read before this call, not read yet: path -> its data (None when the
        read failed: the guest is gone, or the node does not answer)."""
        if not isinstance(action, ApiRequest) or action.method.upper() == "GET":
            return {}
        found = table().match(action.method, action.path)
        if found is None:
            return {}
        reads: dict[str, Any] = {}
        assert self.dispatcher is not None
        for path in table().read_paths(found).values():
            if self.facts.was_read(path) or path in reads or contains_unknown(path):
                continue  # read already, or names what only the run knows (a node found by an earlier step)
            try:
                reads[path] = self.dispatcher.execute(ApiRequest("GET", path), quiet).data
            except StepFailed:
                reads[path] = None
        return reads


def _planned(change: Change, step: str = "") -> Planned:
    """What a change leaves for the steps after it: a resource made or gone, or a guest's new status
    (and which fields it sets, by which step)."""
    status = next((str(f.after) for f in change.fields if f.name == "status" and isinstance(f.after, str)), "")
    fields = tuple(f.name for f in change.fields)
    if change.action in ("create", "replace"):
        return Planned(change.resource, change.id, "create", change.name, status or "stopped", step, fields)
    if change.action == "destroy":
        return Planned(change.resource, change.id, "destroy", change.name, "", step, fields)
    return Planned(change.resource, change.id, "act", change.name, status, step, fields)
