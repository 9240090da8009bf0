"""Progress of a run for people or for machines.

* On a terminal: a live status line (rich) for the step being run -- its number, label, kind, the
  latest note from its executor and how long it has been running -- with each finished step
  printed above it as a permanent, coloured line.
* Not on a terminal: plain lines, no escape codes (``-> label (kind)  title``,
  ``   ... label: note`` lines, ``   [ok] label 1.2s: reason``).
* ``--json``: one JSON event per line, every note included.

Notes are chatter (a command's output line by line, a task being waited for): in plain lines a
step's first ``HEAD`` notes are printed as they come, then one every ``HEARTBEAT`` seconds so a long
wait shows life, and when the step ends the lines held back are folded to their last ``TAIL``
(the journal keeps the step's whole output). On a terminal the live line shows the latest note, and
a failed step leaves its last ``TAIL`` notes above its line. What the operator came for is not a note:
a step marked ``show`` prints its output once, under its line (``engine.report.shown``), and its notes
are not printed besides.

rich is imported only when a terminal is used, so a piped CLI starts fast. The live line runs only
between a step's "start" and its "step" event, so nothing redraws over a gate's prompt (the runner
asks before "start"). Notes come from the executors, which scrub them; nothing else is shown.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import sys
import threading
import time
from collections import deque
from typing import Any, TextIO

from ..run.runner import PlanEntry
from .shown import shown_lines
from .table import no_color

_MARK = {
    "succeeded": "ok",
    "skipped": "skip",
    "failed": "FAIL",
    "stopped_at_gate": "GATE",
    "would_run": "plan",
    "unknown": "plan",
}
_STYLE = {
    "succeeded": "green",
    "skipped": "dim",
    "failed": "bold red",
    "stopped_at_gate": "bold yellow",
    "would_run": "cyan",
    "unknown": "cyan",
}
_REFRESH_PER_SECOND = 4
#: Notes of a step printed as they come (plain lines), before the rest is held back.
HEAD = 2
#: Held-back notes printed when the step ends (and, on a terminal, above a failed step's line).
TAIL = 3
#: Seconds after which a held-back note is printed anyway, so a long wait in a pipe shows life.
HEARTBEAT = 10.0


class Progress:
    """Receives the runner's events and prints them.

    ``total`` is the number of steps when known (shown as ``step 3/7``); ``console`` is a
    ``rich.console.Console`` to use instead of one made for ``stream`` (a test hook; it implies the
    terminal mode). Call ``close()`` (or use it as a context manager) to stop the live line.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        as_json: bool = False,
        quiet_plan: bool = False,
        total: int | None = None,
        console: Any = None,
    ):
        self.stream = stream or sys.stderr
        self.as_json = as_json
        self.quiet_plan = quiet_plan
        self.total = total
        # NO_COLOR (no-color.org) asks for plain text: no styles and no live spinner line either.
        self.tty = not as_json and not no_color() and (console is not None or _isatty(self.stream))
        self._chatter: dict[int, _Chatter] = {}
        self._console = console
        self._live: Any = None
        self._current: _Current | None = None
        self._numbers: dict[str, int] = {}
        self._closed = False
        # Events come from the runner's worker threads when items run at once: one event at a time,
        # so lines never interleave and the live line's state stays whole.
        self._lock = threading.RLock()

    # -- events ------------------------------------------------------------------------------

    def __call__(self, event: str, entry: PlanEntry) -> None:
        with self._lock:
            self._event(event, entry)

    def _event(self, event: str, entry: PlanEntry) -> None:
        if self.as_json:
            self._json(event, entry)
            return
        label = entry.label
        number = self._numbers.setdefault(entry.step_id, len(self._numbers) + 1)
        if self.tty:
            self._tty_event(event, entry, label, number)
            return
        if event == "start":
            title = f"  {entry.title}" if entry.title else ""
            self._line(f"-> {label} ({entry.kind}){title}")
            self._chatter[id(entry)] = _Chatter()
        elif event == "progress":
            self._note(entry, label, entry.reason)
        elif event == "step":
            chatter = self._chatter.pop(id(entry), None)
            if not self._shows(entry):
                return
            if chatter is not None and not (entry.show and entry.status == "succeeded"):
                for line in chatter.folded(label):
                    self._line(line)
            self._line(f"   [{_MARK.get(entry.status, entry.status)}] {label}{_took(entry)}{_why(entry)}")
            for line in shown_output(entry):
                self._line(line)

    def _shows(self, entry: PlanEntry) -> bool:
        return not (self.quiet_plan and entry.status in ("would_run", "unknown"))

    # -- plain lines -------------------------------------------------------------------------

    def _note(self, entry: PlanEntry, label: str, text: str) -> None:
        chatter = self._chatter.setdefault(id(entry), _Chatter())
        now = time.monotonic()
        for line in str(text).splitlines() or [""]:
            if chatter.take(line, now, head=0 if entry.show else HEAD):
                self._line(f"   ... {label}: {line}")

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    # -- terminal ----------------------------------------------------------------------------

    def _tty_event(self, event: str, entry: PlanEntry, label: str, number: int) -> None:
        if event == "start" or (event == "progress" and (self._current is None or self._current.entry is not entry)):
            self._current = _Current(entry, label, number, time.monotonic())
            self._start_live()
        if event == "start":
            self._chatter[id(entry)] = _Chatter()
        if event == "progress" and self._current is not None:
            self._current.note = _one_line(entry.reason)
            self._chatter.setdefault(id(entry), _Chatter()).hold(_one_line(entry.reason))
        elif event == "step":
            chatter = self._chatter.pop(id(entry), None)
            if self._current is not None and self._current.entry is entry:
                self._current = None
                self._stop_live()
            if self._shows(entry):
                if chatter is not None and entry.status == "failed":
                    for line in chatter.folded(label):
                        self._plain_on_console(line, "dim")
                self._print_finished(entry, label)
                for line in shown_output(entry, self._rich().width):
                    self._plain_on_console(line)

    def _print_finished(self, entry: PlanEntry, label: str, status: str | None = None, why: str | None = None) -> None:
        from rich.text import Text

        status = status or entry.status
        line = Text("   ")
        line.append(f"[{_MARK.get(status, status)}]", style=_STYLE.get(status, "yellow"))
        line.append(" ")
        line.append(label, style="bold")
        line.append(_took(entry), style="dim")
        reason = _why(entry) if why is None else why
        line.append(reason, style="red" if status == "failed" else "")
        self._rich().print(line, soft_wrap=True)

    def _plain_on_console(self, text: str, style: str = "") -> None:
        from rich.text import Text

        self._rich().print(Text(text, style=style), soft_wrap=True)

    def _rich(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False, markup=False, emoji=False)
        return self._console

    def _start_live(self) -> None:
        if self._live is not None or self._closed:
            return
        from rich.live import Live
        from rich.spinner import Spinner

        console = self._rich()
        spinner = Spinner("dots" if console.encoding.lower().startswith("utf") else "line", style="cyan")
        redirect = self.stream is sys.stderr or self.stream is sys.__stderr__
        live = Live(
            _StatusLine(self, spinner),
            console=console,
            refresh_per_second=_REFRESH_PER_SECOND,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=redirect,
        )
        live.start(refresh=True)
        self._live = live
        atexit.register(self.close)

    def _stop_live(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            refresher = getattr(live, "_refresh_thread", None)
            try:
                live.stop()
                if refresher is not None:  # stopped already; it ends at once, without drawing again
                    refresher.join(timeout=1)
            finally:
                atexit.unregister(self.close)

    def status_text(self) -> str:
        """The live line's text for the step being run ("" when none)."""
        current = self._current
        if current is None:
            return ""
        number = f"step {current.number}/{self.total}" if self.total else f"step {current.number}"
        text = f"{number}  {current.label} ({current.entry.kind})  {time.monotonic() - current.started:.1f}s"
        return text + (f"  {current.note}" if current.note else "")

    @property
    def live(self) -> bool:
        """Whether a live status line is being shown."""
        return self._live is not None

    # -- the end -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the live line (a step still running is printed as interrupted). Safe to call twice."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        current, self._current = self._current, None
        try:
            self._stop_live()
        finally:
            if self.tty and current is not None:
                shown = dataclasses.replace(current.entry, duration=time.monotonic() - current.started)
                note = f": {current.note}" if current.note else ""
                self._print_finished(shown, current.label, "interrupted", note)
            try:
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- machines ----------------------------------------------------------------------------

    def _json(self, event: str, entry: PlanEntry) -> None:
        record: dict[str, Any] = {
            "event": event,
            "step": entry.step_id,
            "item": entry.item_key,
            "status": entry.status,
            "ts": round(time.time(), 3),
        }
        if event == "progress":
            record["note"] = entry.reason
        elif event == "step":
            record.update(reason=entry.reason, error=entry.error, duration=entry.duration, gated=entry.gated)
        self.stream.write(json.dumps(record, default=str) + "\n")
        self.stream.flush()


class _Chatter:
    """One running step's notes: how many came, how many were printed, the last ones held back."""

    def __init__(self) -> None:
        self.count = 0
        self.printed = 0
        self.last_printed = time.monotonic()
        self.held: deque[str] = deque(maxlen=TAIL)

    def take(self, line: str, now: float, head: int) -> bool:
        """Count ``line``; True to print it now (one of the first ``head``, or a heartbeat)."""
        self.count += 1
        if self.printed < head or now - self.last_printed >= HEARTBEAT:
            self.printed += 1
            self.last_printed = now
            self.held.clear()
            return True
        self.held.append(line)
        return False

    def hold(self, line: str) -> None:
        """Count ``line`` without printing it (a terminal shows it on the live line)."""
        self.count += 1
        self.held.append(line)

    def folded(self, label: str) -> list[str]:
        """The lines to print when the step ends: how many were left out, then the last ones."""
        left_out = self.count - self.printed - len(self.held)
        lines = [f"   ... {label}: ({left_out} more lines; the journal keeps the whole output)"] if left_out else []
        return lines + [f"   ... {label}: {line}" for line in self.held]


class _Current:
    """The step the live line shows."""

    def __init__(self, entry: PlanEntry, label: str, number: int, started: float):
        self.entry = entry
        self.label = label
        self.number = number
        self.started = started
        self.note = ""


class _StatusLine:
    """The live line, rendered afresh at each refresh so the elapsed time moves."""

    def __init__(self, progress: Progress, spinner: Any):
        self.progress = progress
        self.spinner = spinner

    def __rich__(self) -> Any:
        from rich.text import Text

        line = Text(no_wrap=True, overflow="ellipsis")
        current = self.progress._current
        if current is None:
            return line
        total = self.progress.total
        line.append_text(self.spinner.render(time.monotonic()))
        line.append(f" step {current.number}/{total}" if total else f" step {current.number}", style="dim")
        line.append("  ")
        line.append(current.label, style="bold")
        line.append(f" ({current.entry.kind})", style="dim")
        line.append(f"  {time.monotonic() - current.started:.1f}s", style="cyan")
        if current.note:
            line.append(f"  {current.note}")
        return line


def _took(entry: PlanEntry) -> str:
    return f" {entry.duration:.1f}s" if entry.duration is not None else ""


def _why(entry: PlanEntry) -> str:
    if entry.status == "failed":
        return f": {entry.error}"
    return f": {entry.reason}" if entry.reason else ""


def _one_line(text: str) -> str:
    """A note fit for one status line: no control characters or line breaks."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in str(text)).split())


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def shown_output(entry: PlanEntry, width: int | None = None) -> list[str]:
    """The output of a step marked ``show``, once it succeeded (empty for other steps)."""
    if not entry.show or entry.status != "succeeded" or entry.output is None:
        return []
    return shown_lines(entry.output, width)
