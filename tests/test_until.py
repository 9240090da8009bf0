"""`until`: a read-only step repeated until its condition over `result` holds, bounded."""

from __future__ import annotations

from typing import Any

import pytest

from engine.actions import Result
from engine.parser import parse_runbook
from engine.runner import Runner, StepError

HEAD = "---\nname: t\ndescription: d\n---\n"


class Counting:
    """An executor answering a status that becomes 'running' on the third call."""

    def __init__(self) -> None:
        self.calls = 0

    def execute(self, action: Any, progress: Any) -> Result:
        self.calls += 1
        return Result({"status": "running" if self.calls >= 3 else "stopped"})


class Yes:
    who = "test"

    def approve(self, entry: Any) -> bool:
        return True


def run(body: str, executor: Counting) -> list:
    runbook = parse_runbook(HEAD + body, "runbooks/t.md", "t")
    return Runner(runbook, {"nodes": [{"name": "pve01"}]}, executor=executor, dry_run=False, approver=Yes()).run()


def test_until_repeats_until_true() -> None:
    executor = Counting()
    entries = run("```api {id: s, until: 'result == \"running\"', delay: 0.01, extract: '.status'}\n"
                  "GET /nodes/pve01/qemu/100/status/current\n```\n", executor)
    assert executor.calls == 3
    assert entries[-1].output == "running"


def test_until_gives_up_with_the_last_result() -> None:
    executor = Counting()
    with pytest.raises(StepError, match=r"gave up after 2 attempts .*still false \(last result: stopped\)"):
        run("```api {id: s, until: 'result == \"never\"', retries: 1, delay: 0.01, extract: '.status'}\n"
            "GET /nodes/pve01/qemu/100/status/current\n```\n", executor)


def test_until_on_a_step_that_changes_things_is_refused() -> None:
    from engine.problems import InputError

    with pytest.raises(InputError, match="until repeats the step, so it is only for steps that change nothing"):
        run("```api {id: s, until: 'result'}\nPOST /nodes/pve01/qemu/100/status/start\n```\n", Counting())
