"""Progress of a run for people (one line per step; a live status line on a terminal) or for
machines (``--json``: one JSON event per line)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from .runner import PlanEntry

_MARK = {"succeeded": "ok", "skipped": "skip", "failed": "FAIL", "stopped_at_gate": "GATE", "would_run": "plan",
         "unknown": "plan"}


class Progress:
    """Receives the runner's events and prints them."""

    def __init__(self, stream: TextIO | None = None, *, as_json: bool = False, quiet_plan: bool = False):
        self.stream = stream or sys.stderr
        self.as_json = as_json
        self.quiet_plan = quiet_plan
        self.tty = self.stream.isatty()
        self._last_note = ("", 0.0)

    def __call__(self, event: str, entry: PlanEntry) -> None:
        if self.as_json:
            self._json(event, entry)
            return
        label = entry.step_id + (f"[{entry.item_key}]" if entry.item_key else "")
        if event == "start":
            title = f"  {entry.title}" if entry.title else ""
            self._line(f"-> {label} ({entry.kind}){title}")
        elif event == "progress":
            self._note(label, entry.reason)
        elif event == "step" and not (self.quiet_plan and entry.status in ("would_run", "unknown")):
            took = f" {entry.duration:.1f}s" if entry.duration is not None else ""
            why = f": {entry.reason}" if entry.reason else ""
            if entry.status == "failed":
                why = f": {entry.error}"
            self._line(f"   [{_MARK.get(entry.status, entry.status)}] {label}{took}{why}")

    def _note(self, label: str, text: str) -> None:
        now = time.monotonic()
        last_text, last_time = self._last_note
        if self.tty:
            self.stream.write(f"\r\033[K   ... {label}: {text}"[:200])
            self.stream.flush()
            self._last_note = (text, now)
        elif text.split(":")[0] != last_text.split(":")[0] or now - last_time > 10:
            self._line(f"   ... {label}: {text}")
            self._last_note = (text, now)

    def _line(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def _json(self, event: str, entry: PlanEntry) -> None:
        record: dict[str, Any] = {"event": event, "step": entry.step_id, "item": entry.item_key,
                                  "status": entry.status, "ts": round(time.time(), 3)}
        if event == "progress":
            record["note"] = entry.reason
        elif event == "step":
            record.update(reason=entry.reason, error=entry.error, duration=entry.duration, gated=entry.gated)
        self.stream.write(json.dumps(record, default=str) + "\n")
        self.stream.flush()
