"""Exit codes of the ``runbook`` command: the one table, from which ``--help`` and the docs list them.

Each code says what the operator does next, so codes are never shared between outcomes that call
for different next steps: only ``FAILED`` (and an interruption) mean "a run exists; resume it".
An error before any run exists (no node reachable, TLS or the API token refused on the first read)
is ``NOT_STARTED``: there is nothing to resume, the cause is to fix and the run to start again.
``tests/test_exitcodes.py`` checks that README.md and docs/running.md list exactly this table.
"""

from __future__ import annotations

import textwrap
from typing import NamedTuple


class ExitCode(NamedTuple):
    """One documented exit code: its number, its name in this module, and what it tells the operator."""

    code: int
    name: str
    meaning: str


OK = 0
PROBLEMS = 1  # a runbook, profile, config or argument is wrong; every problem was printed
USAGE = 2  # click's own code for a bad command line
NO_HOME = 3  # no runbook home, or its cluster config cannot be used
GATE = 4  # stopped before a gated step that was not approved (no TTY and no --yes/--approve)
FAILED = 5  # a step failed; the run can be resumed with `runbook resume RUN_ID`
LOCKED = 6  # another run holds the profile's lock
REFUSED = 7  # refused: inputs changed since the run started (resume), or an ingested runbook is not trusted
OTHER_CLUSTER = 8  # another cluster answers than the one the run (or plan) was made against; no --force overrides it
TOOL_MISSING = 9  # this machine lacks a program the run needs (or has a talosctl too old); found before any change
NOT_STARTED = 10  # stopped before any run was made (cluster unusable, a read failed): nothing to resume
INTERRUPTED = 130  # Ctrl-C (SIGINT, 128 + 2) or SIGTERM during a run: the next step is the same, resume it

TABLE: tuple[ExitCode, ...] = (
    ExitCode(OK, "OK", "ok (a resume of a finished run: nothing to do)"),
    ExitCode(PROBLEMS, "PROBLEMS", "problems in a runbook, profile, config or argument (all printed)"),
    ExitCode(USAGE, "USAGE", "bad command line"),
    ExitCode(NO_HOME, "NO_HOME", "no runbook home, or its cluster config is unusable"),
    ExitCode(GATE, "GATE", "stopped before a gated step that needs approval (--yes or --approve STEP)"),
    ExitCode(FAILED, "FAILED", "a step failed; fix the cause, then resume with 'runbook resume RUN_ID'"),
    ExitCode(LOCKED, "LOCKED", "another run holds the profile's lock"),
    ExitCode(
        REFUSED,
        "REFUSED",
        "refused: the runbook, profile or config changed since the run started (resume --force overrides), "
        "an ingested runbook was not reviewed yet (runbook trust), or a saved plan no longer holds (runbook "
        "apply: the file, an input or what it was planned against moved)",
    ),
    ExitCode(
        OTHER_CLUSTER,
        "OTHER_CLUSTER",
        "refused: another cluster answers than the one the run started on, or the plan was made against "
        "(no --force overrides it)",
    ),
    ExitCode(TOOL_MISSING, "TOOL_MISSING", "a program the run needs is not installed here (found before any change)"),
    ExitCode(
        NOT_STARTED,
        "NOT_STARTED",
        "stopped before any run was made: the cluster could not be used (no node reachable, TLS, API token "
        "refused) or a read before the first change failed (a dry-run's too); nothing to resume: fix the "
        "cause and run again",
    ),
    ExitCode(
        INTERRUPTED,
        "INTERRUPTED",
        "interrupted (Ctrl-C or SIGTERM); the run id and the resume command are printed",
    ),
)


def help_text() -> str:
    """The table as ``runbook --help`` prints it, wrapped to 88 columns (``\\b`` keeps click from rewrapping it)."""
    lines = ["\b", "Exit codes:"]
    for entry in TABLE:
        lines += textwrap.wrap(entry.meaning, 88, initial_indent=f"{entry.code:>5}  ", subsequent_indent=" " * 7)
    return "\n".join(lines)


def markdown_table() -> str:
    """The table as README.md and docs/running.md show it."""
    rows = [f"| {entry.code} | {entry.meaning.replace('|', '/')} |" for entry in TABLE]
    return "\n".join(["| code | meaning |", "|---|---|", *rows])


HELP = help_text()
