#!/usr/bin/env bash
# The one test command (the README's, and what CI runs): install what the tests need, then run them.
#
#   bash tests/run.sh [PYTEST ARGS...]
#
# 1. The system tools the end-to-end tests drive for real (OpenSSH server and client, pass, GnuPG,
#    headless Chromium): installed with apt-get where this user may (root, or sudo without a
#    password); otherwise the exact command to run is printed, and outside CI the tests that need a
#    missing tool are skipped with that reason. With CI=true a missing tool is a failure.
# 2. The package and its test dependencies, into .venv/ (made when missing; reinstalled only when
#    pyproject.toml changed since the last install).
# 3. With no arguments (the whole suite, as CI runs it): ruff's lint and format check first, then
#    pytest spread over the machine's CPUs (pytest-xdist, one test file per process at a time: a
#    file's module fixtures, such as its Temporal server, start once). Most of the suite's time is
#    spent waiting on real servers and processes, so this roughly halves it on two CPUs.
# 4. pytest, with the arguments given (one process: a file or a test, as you name it).
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/install-tools.sh

if [[ ! -x .venv/bin/python ]]; then
    echo "run.sh: making .venv/"
    python3 -m venv .venv
fi
stamp=.venv/.runbook-install-stamp
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f $stamp || "$(cat "$stamp")" != "$want" || ! -x .venv/bin/runbook ]]; then
    echo "run.sh: installing the package and its test dependencies into .venv/"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
    echo "$want" > "$stamp"
fi

if [[ $# -eq 0 ]]; then
    echo "run.sh: ruff check and ruff format --check"
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .
    exec .venv/bin/python -m pytest -n auto --dist loadfile
fi

exec .venv/bin/python -m pytest "$@"
