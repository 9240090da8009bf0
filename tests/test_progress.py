"""Progress for people (plain lines when piped, a rich live line on a terminal) and for machines (--json)."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.load.schemas import validator
from engine.report.progress import Progress
from engine.run.runner import PlanEntry

REPO = Path(__file__).resolve().parent.parent


def entry(step: str, kind: str = "api", title: str | None = None, item: str | None = None) -> PlanEntry:
    return PlanEntry(step, kind, title, 1, item_key=item)


def progress_note(progress: Progress, e: PlanEntry, text: str) -> None:
    e.reason = text  # as the runner's _note does
    progress("progress", e)


def finish(
    progress: Progress,
    e: PlanEntry,
    status: str,
    reason: str = "",
    duration: float | None = None,
    error: str | None = None,
) -> None:
    e.status, e.reason, e.duration, e.error = status, reason, duration, error
    progress("step", e)


def a_run(progress: Progress) -> None:
    """Clone a VM (with notes from the task poll), skip a step, fail a loop item, stop at a gate."""
    clone = entry("clone", "api", "Clone the template", item="name=web1")
    progress("start", clone)
    progress_note(progress, clone, "waiting for task qmclone on pve01: running 0.5 s")
    progress_note(progress, clone, "waiting for task qmclone on pve01: running 1.0 s")
    progress_note(progress, clone, "task log: transferred 2 GiB")  # held back, printed when the step ends
    finish(progress, clone, "succeeded", duration=1.234)
    finish(progress, entry("start-vm"), "skipped", "check is true: already in place")
    wait = entry("wait", "shell", None, item="web1")
    progress("start", wait)
    finish(progress, wait, "failed", "ignored", duration=0.5, error="exit status 1")
    finish(progress, entry("destroy"), "stopped_at_gate", "gated: needs approval")


PLAIN = [
    "-> clone[name=web1] (api)  Clone the template",
    "   ... clone[name=web1]: waiting for task qmclone on pve01: running 0.5 s",
    "   ... clone[name=web1]: waiting for task qmclone on pve01: running 1.0 s",
    "   ... clone[name=web1]: task log: transferred 2 GiB",
    "   [ok] clone[name=web1] 1.2s",
    "   [skip] start-vm: check is true: already in place",
    "-> wait[web1] (shell)",
    "   [FAIL] wait[web1] 0.5s: exit status 1",
    "   [GATE] destroy: gated: needs approval",
]


# -- not a terminal ------------------------------------------------------------------------------


def test_plain_lines_are_exactly_as_before() -> None:
    out = io.StringIO()
    with Progress(out) as progress:
        assert not progress.tty
        a_run(progress)
    assert out.getvalue().splitlines() == PLAIN
    assert out.getvalue().endswith("\n")


def test_plain_mode_writes_no_escape_codes(tmp_path: Path) -> None:
    with open(tmp_path / "log", "w", encoding="utf-8") as file:  # a real file, as when stderr is redirected
        progress = Progress(file, total=4)
        a_run(progress)
        progress.close()
    text = (tmp_path / "log").read_text(encoding="utf-8")
    assert text.splitlines() == PLAIN
    assert "\x1b" not in text and "\r" not in text


def test_plain_chatter_is_folded_to_its_first_and_last_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("engine.report.progress.time.monotonic", lambda: clock[0])
    out = io.StringIO()
    progress = Progress(out)
    e = entry("health", "talosctl")
    progress("start", e)
    for number in range(1, 18):
        progress_note(progress, e, f"waiting for check {number}: OK")
    finish(progress, e, "succeeded", duration=0.1)
    assert out.getvalue().splitlines() == [
        "-> health (talosctl)",
        "   ... health: waiting for check 1: OK",
        "   ... health: waiting for check 2: OK",
        "   ... health: (12 more lines; the journal keeps the whole output)",
        "   ... health: waiting for check 15: OK",
        "   ... health: waiting for check 16: OK",
        "   ... health: waiting for check 17: OK",
        "   [ok] health 0.1s",
    ]


def test_plain_chatter_shows_a_line_every_ten_seconds_of_a_long_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("engine.report.progress.time.monotonic", lambda: clock[0])
    out = io.StringIO()
    progress = Progress(out)
    e = entry("clone")
    progress("start", e)
    for seconds in (0, 1, 2, 5, 13, 14):
        clock[0] = 100.0 + seconds
        progress_note(progress, e, f"waiting for task qmclone on pve01: running {seconds} s")
    assert out.getvalue().splitlines()[1:] == [
        "   ... clone: waiting for task qmclone on pve01: running 0 s",
        "   ... clone: waiting for task qmclone on pve01: running 1 s",
        "   ... clone: waiting for task qmclone on pve01: running 13 s",
    ]
    finish(progress, e, "succeeded", duration=14.0)
    assert out.getvalue().splitlines()[4:] == [
        "   ... clone: (2 more lines; the journal keeps the whole output)",
        "   ... clone: waiting for task qmclone on pve01: running 14 s",
        "   [ok] clone 14.0s",
    ]


def test_plain_notes_of_items_are_never_dropped_for_looking_alike() -> None:
    # On an empty cluster, cluster-status printed only the first of three "missing: ..." notes.
    out = io.StringIO()
    progress = Progress(out)
    for name in ("stg-cp01", "stg-cp02", "stg-cp03"):
        e = entry("missing", "local", item=f"name={name}")
        e.item_label = name
        progress("start", e)
        progress_note(progress, e, f"missing: {name} (controlplane)")
        finish(progress, e, "succeeded", duration=0.0)
    notes = [line for line in out.getvalue().splitlines() if line.startswith("   ... ")]
    assert notes == [f"   ... missing[{n}]: missing: {n} (controlplane)" for n in ("stg-cp01", "stg-cp02", "stg-cp03")]


def test_a_shown_step_prints_its_output_once() -> None:
    out = io.StringIO()
    progress = Progress(out)
    e = entry("nodes", "local")
    e.show = True
    progress("start", e)
    table = "NAME  STATUS\nstg-cp01  Ready\n"
    for line in table.splitlines():
        progress_note(progress, e, line)  # a command's output, streamed line by line
    e.output = {"stdout": table, "stderr": "", "exit_code": 0}
    finish(progress, e, "succeeded", duration=0.1)
    assert out.getvalue().splitlines() == [
        "-> nodes (local)",
        "   [ok] nodes 0.1s",
        "      NAME  STATUS",
        "      stg-cp01  Ready",
    ]


def test_a_shown_list_of_objects_is_a_table_and_an_object_key_value_lines() -> None:
    out = io.StringIO()
    progress = Progress(out)
    vms = entry("vms")
    vms.show, vms.status, vms.duration = True, "succeeded", 0.0
    vms.output = [
        {"name": "stg-cp01", "vmid": 1031, "node": "pve01", "status": "running", "uptime": None},
        {"name": "stg-cp02", "vmid": 1032, "node": "pve02", "status": "stopped", "uptime": "3h 2m"},
    ]
    progress("step", vms)
    archive = entry("archive")
    archive.show, archive.status = True, "succeeded"
    archive.output = {"volid": "local:backup/vzdump-qemu-1031.vma.zst", "protected": False, "tags": ["a", "b"]}
    progress("step", archive)
    assert out.getvalue().splitlines() == [
        "   [ok] vms 0.0s",
        "      NAME      VMID  NODE   STATUS   UPTIME",
        "      stg-cp01  1031  pve01  running  -",
        "      stg-cp02  1032  pve02  stopped  3h 2m",
        "   [ok] archive",
        "      volid:     local:backup/vzdump-qemu-1031.vma.zst",
        "      protected: no",
        "      tags:      a, b",
    ]


def test_a_failed_step_on_a_terminal_leaves_its_last_notes() -> None:
    out = io.StringIO()
    progress = Progress(io.StringIO(), console=_console(out))
    e = entry("health", "talosctl")
    progress("start", e)
    for number in range(1, 6):
        progress_note(progress, e, f"waiting for check {number}: ...")
    finish(progress, e, "failed", duration=1.0, error="exited with 1")
    progress.close()
    lines = _strip(out.getvalue()).splitlines()
    tail = [line for line in lines if line.startswith("   ... ")]
    assert tail == [
        "   ... health: (2 more lines; the journal keeps the whole output)",
        "   ... health: waiting for check 3: ...",
        "   ... health: waiting for check 4: ...",
        "   ... health: waiting for check 5: ...",
    ]
    assert "   [FAIL] health 1.0s: exited with 1" in lines


def test_quiet_plan_leaves_out_plan_entries() -> None:
    out = io.StringIO()
    progress = Progress(out, quiet_plan=True)
    finish(progress, entry("a"), "would_run")
    finish(progress, entry("b"), "unknown", "uses values known only after run")
    finish(progress, entry("c"), "succeeded", "finished in an earlier attempt")
    assert out.getvalue().splitlines() == ["   [ok] c: finished in an earlier attempt"]


def test_piped_progress_does_not_import_rich() -> None:
    code = (
        "import io, sys\n"
        "from engine.report.progress import Progress\n"
        "from engine.run.runner import PlanEntry\n"
        "p = Progress(io.StringIO())\n"
        "e = PlanEntry('a', 'api', None, 1)\n"
        "p('start', e); e.reason = 'note'; p('progress', e); e.status = 'succeeded'; p('step', e); p.close()\n"
        "j = Progress(io.StringIO(), as_json=True); j('start', e); j.close()\n"
        "assert not [m for m in sys.modules if m == 'rich' or m.startswith('rich.')], 'rich imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# -- JSON ----------------------------------------------------------------------------------------


class _TtyStringIO(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream_type", [io.StringIO, _TtyStringIO])
def test_json_lines_parse(stream_type: type[io.StringIO]) -> None:
    out = stream_type()
    with Progress(out, as_json=True, total=4) as progress:
        assert not progress.tty
        a_run(progress)
    text = out.getvalue()
    assert "\x1b" not in text
    records = [json.loads(line) for line in text.splitlines()]
    assert [(r["event"], r["step"], r["item"]) for r in records] == [
        ("start", "clone", "name=web1"),
        ("progress", "clone", "name=web1"),
        ("progress", "clone", "name=web1"),
        ("progress", "clone", "name=web1"),
        ("step", "clone", "name=web1"),
        ("step", "start-vm", None),
        ("start", "wait", "web1"),
        ("step", "wait", "web1"),
        ("step", "destroy", None),
    ]
    assert records[1]["note"] == "waiting for task qmclone on pve01: running 0.5 s"  # JSON is never throttled
    assert records[4] | {"ts": 0} == {
        "format": 1,
        "event": "step",
        "ts": 0,
        "step": "clone",
        "item": "name=web1",
        "label": "clone[name=web1]",
        "kind": "api",
        "title": "Clone the template",
        "line": 1,
        "status": "succeeded",
        "reason": "",
        "waits_for": [],
        "error": None,
        "duration": 1.234,
        "attempts": None,
        "gated": False,
        "gate_reasons": [],
        "action": None,
        "display": None,
        "output": None,
    }
    for record in records:
        errors = list(validator("events.schema.json").iter_errors(record))
        assert not errors, errors[0].message
    assert records[7]["error"] == "exit status 1"
    assert all(isinstance(r["ts"], float) for r in records)


# -- a terminal, through rich's test hook ---------------------------------------------------------


def _console(out: io.StringIO):  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(
        file=out, force_terminal=True, width=200, color_system="standard", highlight=False, markup=False, emoji=False
    )


def _refresh_threads() -> list[threading.Thread]:
    from rich.live import _RefreshThread

    return [t for t in threading.enumerate() if isinstance(t, _RefreshThread) and t.is_alive()]


def _until(predicate, timeout: float = 3.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_terminal_shows_a_live_status_line_and_prints_finished_steps() -> None:
    out = io.StringIO()
    console = _console(out)
    progress = Progress(io.StringIO(), console=console, total=3)
    assert progress.tty and not progress.live
    clone = entry("clone", "api", "Clone the template", item="name=web1")
    progress("start", clone)
    assert progress.live and console.is_terminal
    progress_note(progress, clone, "waiting for task qmclone on pve01: running 3.2 s")
    status = progress.status_text()
    assert status.startswith("step 1/3  clone[name=web1] (api)  ")
    assert status.endswith("s  waiting for task qmclone on pve01: running 3.2 s")
    # The live line is redrawn by itself (a few times a second) with the note and the elapsed time.
    assert _until(lambda: "waiting for task qmclone on pve01: running 3.2 s" in out.getvalue())
    assert "clone[name=web1]" in out.getvalue() and "step 1/3" in out.getvalue()
    finish(progress, clone, "succeeded", duration=1.234)
    assert not progress.live and progress.status_text() == ""
    finish(progress, entry("start-vm"), "skipped", "check is true: already in place")
    wait = entry("wait", "shell", item="web1")
    progress("start", wait)
    assert progress.status_text().startswith("step 3/3  wait[web1] (shell)  ")
    finish(progress, wait, "failed", duration=0.5, error="exit status 1 [see log]")
    finish(progress, entry("destroy"), "stopped_at_gate", "gated: needs approval")
    progress.close()

    text = out.getvalue()
    assert "\x1b[" in text  # coloured
    plain = _strip(text)
    for line in (
        "   [ok] clone[name=web1] 1.2s",
        "   [skip] start-vm: check is true: already in place",
        "   [FAIL] wait[web1] 0.5s: exit status 1 [see log]",
        "   [GATE] destroy: gated: needs approval",
    ):
        assert line in plain.splitlines()
    assert not progress.live and not _refresh_threads() and not console._live_stack
    assert text.rindex("\x1b[?25h") > text.rindex("\x1b[?25l")  # the cursor is shown again


def test_terminal_step_numbers_without_a_total_and_one_line_notes() -> None:
    progress = Progress(io.StringIO(), console=_console(io.StringIO()))
    finish(progress, entry("first"), "succeeded", "finished in an earlier attempt")
    e = entry("second", "shell")
    progress("start", e)
    progress_note(progress, e, "line one\nline\ttwo \x1b[31mred\r")
    status = progress.status_text()
    assert status.startswith("step 2  second (shell)  ")
    assert status.endswith("  line one line two [31mred")
    assert "\x1b" not in status and "\n" not in status
    progress.close()
    assert not progress.live


def test_close_on_an_exception_stops_the_live_line_and_says_where() -> None:
    out = io.StringIO()
    console = _console(out)
    with pytest.raises(KeyboardInterrupt):
        with Progress(io.StringIO(), console=console) as progress:
            e = entry("clone", item="name=web1")
            progress("start", e)
            progress_note(progress, e, "waiting for task qmclone on pve01: running 1.0 s")
            assert progress.live
            raise KeyboardInterrupt
    assert not progress.live and not _refresh_threads() and not console._live_stack
    lines = _strip(out.getvalue()).splitlines()
    assert any(
        line.startswith("   [interrupted] clone[name=web1] ")
        and line.endswith("s: waiting for task qmclone on pve01: running 1.0 s")
        for line in lines
    )
    progress.close()  # twice is fine
    progress("start", entry("late"))  # and nothing starts after close
    assert not progress.live


def test_terminal_has_no_live_line_between_steps() -> None:
    # A gate asks on the terminal between one step's end and the next one's start.
    progress = Progress(io.StringIO(), console=_console(io.StringIO()))
    for name in ("a", "b"):
        e = entry(name)
        progress("start", e)
        assert progress.live
        finish(progress, e, "succeeded", duration=0.1)
        assert not progress.live and not _refresh_threads()
    progress.close()


# -- a real pseudo-terminal -----------------------------------------------------------------------


def _read_all(fd: int, timeout: float = 0.5) -> bytes:
    data = b""
    while True:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return data
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return data
        if not chunk:
            return data
        data += chunk


def test_on_a_pseudo_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "JUPYTER_COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", "200")
    master, slave = pty.openpty()
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(_read_all(master, 1.0)), daemon=True)
    reader.start()
    stream = os.fdopen(slave, "w", encoding="utf-8", closefd=True)
    try:
        with Progress(stream, total=2) as progress:
            assert progress.tty
            e = entry("clone", item="name=web1")
            progress("start", e)
            progress_note(progress, e, "waiting for task qmclone on pve01: running 3.2 s")
            time.sleep(0.6)  # a refresh or two
            finish(progress, e, "succeeded", duration=1.234)
            finish(progress, entry("gate"), "stopped_at_gate", "gated: needs approval")
        assert not progress.live and not _refresh_threads()
        stream.flush()
        reader.join(5)
    finally:
        stream.close()
        os.close(master)
    text = b"".join(received).decode("utf-8", "replace")
    plain = _strip(text).replace("\r", "")
    assert "waiting for task qmclone on pve01: running 3.2 s" in plain and "step 1/2" in plain
    assert "   [ok] clone[name=web1] 1.2s" in plain.splitlines()
    assert "   [GATE] gate: gated: needs approval" in plain.splitlines()
    assert "\x1b[?25l" in text and text.rindex("\x1b[?25h") > text.rindex("\x1b[?25l")  # cursor back


def _strip(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_no_color_turns_off_every_style_and_the_spinner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    out = _TtyStringIO()
    with Progress(out, total=4) as progress:
        assert not progress.tty, "no live spinner line"
        a_run(progress)
    text = out.getvalue()
    assert "\x1b" not in text and "-> clone[name=web1] (api)" in text
    monkeypatch.setenv("NO_COLOR", "")  # empty means unset (no-color.org)
    assert Progress(_TtyStringIO()).tty


def test_no_color_tables_carry_no_escape_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.report.table import Table, console

    def header(**env: str) -> str:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        printer = console()
        with printer.capture() as captured:
            printer.print(Table("NAME", "STATE").table)
        return captured.get()

    assert "\x1b[1m" in header(FORCE_COLOR="1"), "a forced terminal shows the bold header"
    assert "\x1b" not in header(FORCE_COLOR="1", NO_COLOR="1")
