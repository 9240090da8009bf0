"""Ctrl-C for real: the CLI as a subprocess on the simulated cluster, interrupted while a step runs.

It ends with exit 130, the run id and the exact resume command; the journal says interrupted; steps
running on worker threads finish theirs while the profile stays locked; and the printed command
resumes the run, naming the gates it asks again.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from engine import exitcodes
from engine.load.home import Home
from engine.run.runlock import LockHeld, ProfileLock
from tests.support.cluster import RUNBOOK

TIMEOUT = 60

SEQUENTIAL = """---
name: slow
format: 2
description: A change, a slow step, another change.
---

# Slow

## Cores

```api {id: cores}
PUT /nodes/pve01/qemu/101/config
cores: "3"
```

## Wait

```local {id: slow}
echo waiting; sleep 30
```

## Memory

```api {id: memory}
PUT /nodes/pve01/qemu/101/config
memory: "3072"
```
"""

PARALLEL = """---
name: par
format: 2
description: Two slow items at once, then a change.
---

# Par

## Wait on two threads

```local {id: slow, foreach: "[1, 2]", parallel: 2}
echo started {{ item }}; sleep 3; echo done {{ item }}
```

## Memory

```api {id: memory}
PUT /nodes/pve01/qemu/101/config
memory: "3072"
```
"""


class Child:
    """``runbook ARGS`` in its own session (like a shell job: Ctrl-C reaches it, not the test), its
    stderr collected line by line on a thread, so waiting for a line never blocks past a deadline."""

    def __init__(self, home: Home, *args: str):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [str(RUNBOOK), "--home", str(home.root), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stderr is not None
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stderr.readline, "")))
        self.reader.start()

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not any(text in line for line in self.lines):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"{text!r} never appeared; stderr so far:\n{''.join(self.lines)}")
            time.sleep(0.05)

    def finish(self) -> tuple[int, str]:
        code = self.proc.wait(TIMEOUT)
        self.reader.join(TIMEOUT)
        return code, "".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def journal(home: Home, run_id: str) -> list[dict[str, Any]]:
    path = home.state_dir / "runs" / run_id / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def template(home: Home) -> dict[str, Any]:
    state = json.loads((home.root / ".runbook" / "sim" / "state.json").read_text())
    return next(vm for vm in state["vms"] if vm["vmid"] == 101)["config"]


def run_id_in(stderr: str) -> str:
    line = next(line for line in stderr.splitlines() if line.startswith("run ") and " interrupted" in line)
    return line.split()[1]


def test_ctrl_c_during_a_step_exits_130_and_the_printed_command_resumes(make_home, tmp_path: Path) -> None:
    home = make_home({"runbooks/slow.md": SEQUENTIAL})
    child = Child(home, "run", "slow", "--simulate")
    try:
        child.wait_for("-> slow (local)")
        time.sleep(0.3)
        os.killpg(child.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground job
        code, stderr = child.finish()
    finally:
        child.kill()
    assert code == exitcodes.INTERRUPTED, stderr
    assert "Traceback" not in stderr and "Aborted!" not in stderr
    run_id = run_id_in(stderr)
    command = f"runbook resume {run_id} --home {shlex.quote(str(home.root))}"
    assert f"Resume it: {command}" in stderr
    records = journal(home, run_id)
    assert records[-1]["type"] == "run_finished" and records[-1]["status"] == "interrupted"
    assert [r["step"] for r in records if r["type"] == "step_finished"] == ["cores"]
    assert template(home)["cores"] == "3" and template(home)["memory"] != "3072"
    listed = subprocess.run(
        [str(RUNBOOK), "--home", str(home.root), "runs", "--json"], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert json.loads(listed.stdout)["runs"][0]["status"] == "interrupted"

    # The printed command, as printed. The slow step started and never finished, and it has no
    # check: resume must ask about it, so in a pipe it names it and changes nothing.
    argv = [str(RUNBOOK), *shlex.split(command)[1:]]
    asked = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path)
    assert asked.returncode == exitcodes.GATE, asked.stderr
    assert "are not carried over" in asked.stderr
    assert "gate: slow: started in an earlier attempt but never finished" in asked.stderr
    assert f"runbook resume {run_id} --approve slow" in asked.stderr
    assert template(home)["memory"] != "3072"
    fast = home.root / "runbooks" / "slow.md"
    fast.write_text(fast.read_text().replace("sleep 30", "true"))
    resumed = subprocess.run([*argv, "--approve", "slow", "--force"], capture_output=True, text=True, timeout=TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr
    assert template(home)["memory"] == "3072"
    again = [r for r in journal(home, run_id) if r["type"] == "step_started" and r["step"] == "cores"]
    assert len(again) == 1, "the step finished before the interruption was run again"


def test_worker_threads_finish_their_step_under_the_lock(make_home) -> None:
    home = make_home({"runbooks/par.md": PARALLEL})
    child = Child(home, "run", "par", "--simulate")
    try:
        child.wait_for("-> slow[1]")
        child.wait_for("-> slow[2]")
        child.proc.send_signal(signal.SIGTERM)  # a service manager stopping the run: the same as Ctrl-C
        child.wait_for("interrupted: stopping")
        lock = ProfileLock(home.state_dir, "runbook-par", "test")
        try:
            lock.acquire()
        except LockHeld:
            pass
        else:
            lock.release()
            raise AssertionError("the profile lock was released while steps were still running")
        code, stderr = child.finish()
    finally:
        child.kill()
    assert code == exitcodes.INTERRUPTED, stderr
    run_id = run_id_in(stderr)
    kinds = [(r["type"], r.get("item")) for r in journal(home, run_id) if r["type"] != "step_started"]
    assert kinds[-3:] == [("step_finished", "1"), ("step_finished", "2"), ("run_finished", None)] or kinds[-3:] == [
        ("step_finished", "2"),
        ("step_finished", "1"),
        ("run_finished", None),
    ], kinds
    assert template(home).get("memory") != "3072", "a step after the interruption ran"
    ProfileLock(home.state_dir, "runbook-par", "test").acquire()  # released once the run ended
