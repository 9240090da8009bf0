"""The one table of exit codes: --help, the README and docs/running.md list exactly it."""

from __future__ import annotations

from pathlib import Path

from engine import exitcodes

REPO = Path(__file__).resolve().parent.parent


def test_codes_are_distinct_and_named_in_the_module() -> None:
    codes = [entry.code for entry in exitcodes.TABLE]
    assert len(codes) == len(set(codes))
    for entry in exitcodes.TABLE:
        assert getattr(exitcodes, entry.name) == entry.code, entry.name


def test_only_a_failed_step_and_an_interruption_say_resume() -> None:
    resumable = {
        entry.code
        for entry in exitcodes.TABLE
        if "resume" in entry.meaning and "nothing to resume" not in entry.meaning
    }
    assert resumable >= {exitcodes.FAILED, exitcodes.INTERRUPTED}
    assert exitcodes.NOT_STARTED not in resumable and exitcodes.INTERRUPTED == 130


def test_help_lists_the_table(cli) -> None:
    shown = cli("--help").stdout
    assert "Exit codes:" in shown
    flat = " ".join(shown.split())
    for entry in exitcodes.TABLE:
        assert f"{entry.code} {entry.meaning}" in flat, entry


def test_readme_and_running_doc_show_the_table() -> None:
    table = exitcodes.markdown_table()
    for doc in ("README.md", "docs/running.md"):
        assert table in (REPO / doc).read_text(encoding="utf-8"), f"{doc} does not list engine/exitcodes.py's table"
