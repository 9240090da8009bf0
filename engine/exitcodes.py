"""Exit codes of the ``runbook`` command, in one place so ``--help`` and the docs list the same ones."""

OK = 0
PROBLEMS = 1  # a runbook, profile, config or argument is wrong; every problem was printed
USAGE = 2  # click's own code for a bad command line
NO_HOME = 3  # no runbook home, or its cluster config cannot be used

HELP = """Exit codes: 0 ok; 1 problems found in runbooks, profiles, config or arguments;
2 bad command line; 3 no runbook home found."""
