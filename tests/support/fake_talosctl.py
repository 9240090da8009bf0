"""A stand-in ``talosctl`` for tests: records how it was called and answers as it is told.

Why: executor tests must prove what really reaches the binary (argv, TALOSCONFIG, cwd) and how
failures and hangs are handled, without a Talos cluster. The script only uses the standard
library and is meant to grow into a simulated Talos later: add behaviour as new rule fields.

Run as a program (``main``), it
- appends one JSON line ``{"argv", "talosconfig", "cwd", "pid"}`` to the file named by
  ``FAKE_TALOSCTL_LOG`` (when set), before doing anything else;
- reads rules from the JSON file named by ``FAKE_TALOSCTL_STATE`` (when set):
  ``{"rules": [{"argv": [...], "stdout": "", "stderr": "", "exit": 0, "hang": false}]}``.
  The first rule whose ``argv`` is a prefix of the arguments (no ``argv``: every call) decides:
  it writes ``stdout`` and ``stderr``, then hangs forever if ``hang``, else exits with ``exit``.
  Without a matching rule it exits 0 silently, except to ``version --client`` (what a run asks
  before its first change), answered as the real talosctl at the profiles' version, v1.9.5.

In tests, ``install(directory)`` writes a ``talosctl`` launcher there and returns a
``FakeTalosctl`` to put on PATH (``env()``), to script (``respond``) and to inspect (``calls``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG_VAR = "FAKE_TALOSCTL_LOG"
STATE_VAR = "FAKE_TALOSCTL_STATE"
#: What a run asks talosctl before its first change, to compare its version with the profile's.
PREFLIGHT = ["version", "--client"]
#: The answer to PREFLIGHT when no rule says otherwise: the real talosctl's, at the profiles' version.
CLIENT_VERSION = "Client:\nTalos v1.9.5\n"


def main(argv: list[str]) -> int:
    """Behave as one talosctl invocation with arguments ``argv``; returns the exit code."""
    log = os.environ.get(LOG_VAR)
    if log:
        record = {
            "argv": argv,
            "talosconfig": os.environ.get("TALOSCONFIG"),
            "cwd": os.getcwd(),
            "pid": os.getpid(),
        }
        # One write on an O_APPEND descriptor: parallel invocations never interleave lines.
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(record) + "\n").encode())
        finally:
            os.close(fd)
    # A rule for every call (no argv: a talosctl that hangs, say) is about the steps, not the
    # version question a run asks first; only a rule naming ``version`` answers that.
    rule = _matching_rule(argv, every=argv[:2] != PREFLIGHT) or (
        {"stdout": CLIENT_VERSION} if argv[:2] == PREFLIGHT else {}
    )
    sys.stdout.write(rule.get("stdout", ""))
    sys.stderr.write(rule.get("stderr", ""))
    sys.stdout.flush()
    sys.stderr.flush()
    if rule.get("hang"):
        while True:
            time.sleep(3600)
    return int(rule.get("exit", 0))


def _matching_rule(argv: list[str], *, every: bool = True) -> dict[str, Any]:
    state = os.environ.get(STATE_VAR)
    if not state or not os.path.exists(state):
        return {}
    with open(state, encoding="utf-8") as f:
        rules = json.load(f).get("rules", [])
    for rule in rules:
        prefix = rule.get("argv", [])
        if (prefix or every) and argv[: len(prefix)] == prefix:
            return dict(rule)
    return {}


@dataclass
class FakeTalosctl:
    """An installed fake: its directory (put first on PATH), call log and rules file."""

    bin_dir: Path
    log: Path
    state: Path

    @property
    def binary(self) -> Path:
        return self.bin_dir / "talosctl"

    def env(self) -> dict[str, str]:
        """Variables to set so that ``talosctl`` on PATH is this fake, logging and reading rules here."""
        return {
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
            LOG_VAR: str(self.log),
            STATE_VAR: str(self.state),
        }

    def respond(
        self,
        argv: list[str] | None = None,
        *,
        stdout: str = "",
        stderr: str = "",
        exit: int = 0,
        hang: bool = False,
    ) -> None:
        """Add a rule for calls starting with ``argv`` (all calls when None); earlier rules win."""
        rules = json.loads(self.state.read_text()).get("rules", []) if self.state.exists() else []
        rule: dict[str, Any] = {"stdout": stdout, "stderr": stderr, "exit": exit, "hang": hang}
        if argv is not None:
            rule["argv"] = argv
        rules.append(rule)
        self.state.write_text(json.dumps({"rules": rules}))

    def calls(self, *, preflight: bool = False) -> list[dict[str, Any]]:
        """Every recorded invocation, oldest first; without ``preflight``, not the ``version --client``
        a run asks before its first change (engine.run.preflight)."""
        if not self.log.exists():
            return []
        calls = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [call for call in calls if preflight or call["argv"][:2] != PREFLIGHT]


def install(directory: Path) -> FakeTalosctl:
    """Write a ``talosctl`` launcher into ``directory/bin`` that runs this file with this interpreter.

    The launcher names ``sys.executable`` so the fake runs the same Python as the tests, whatever
    ``python3`` on PATH is.
    """
    bin_dir = directory / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    launcher = bin_dir / "talosctl"
    launcher.write_text(
        f"#!{sys.executable}\n"
        "import runpy, sys\n"
        f"sys.exit(runpy.run_path({str(Path(__file__).resolve())!r})['main'](sys.argv[1:]))\n"
    )
    launcher.chmod(0o755)
    return FakeTalosctl(
        bin_dir=bin_dir, log=directory / "talosctl-calls.jsonl", state=directory / "talosctl-state.json"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
