"""Exit codes of the ``runbook`` command, in one place so ``--help`` and the docs list the same ones."""

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

HELP = """Exit codes: 0 ok; 1 problems found in runbooks, profiles, config or arguments;
2 bad command line; 3 no runbook home found; 4 stopped before a gated step that needs
approval; 5 a step failed (resume with 'runbook resume RUN_ID'); 6 another run holds the
profile's lock; 7 refused: the runbook, profile or config changed since the run started
(resume --force overrides), or an ingested runbook was not reviewed yet (runbook trust);
8 refused: another cluster answers than the one the run started on (no --force overrides it);
9 a program the run needs is not installed here (found before any change)."""
