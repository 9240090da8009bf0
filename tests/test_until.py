"""`until`: a read-only step repeated until its condition over `result` holds, bounded."""

from __future__ import annotations

from typing import Any

import pytest

from engine.run.runner import Runner, StepError
from engine.runbook.actions import Result
from engine.runbook.parser import parse_runbook
from tests.support.approvers import Yes

HEAD = "---\nname: t\nformat: 2\ndescription: d\n---\n"


class Counting:
    """An executor answering a status that becomes 'running' on the third call."""

    def __init__(self) -> None:
        self.calls = 0

    def execute(self, action: Any, progress: Any) -> Result:
        self.calls += 1
        return Result({"status": "running" if self.calls >= 3 else "stopped"})


def run(body: str, executor: Counting) -> list:
    runbook = parse_runbook(HEAD + body, "runbooks/t.md", "t")
    return Runner(runbook, {"nodes": [{"name": "pve01"}]}, executor=executor, dry_run=False, approver=Yes()).run()


def test_until_repeats_until_true() -> None:
    executor = Counting()
    entries = run(
        "```api {id: s, until: 'result == \"running\"', delay: 0.01, extract: '.status'}\n"
        "GET /nodes/pve01/qemu/100/status/current\n```\n",
        executor,
    )
    assert executor.calls == 3
    assert entries[-1].output == "running"


def test_until_gives_up_with_the_last_result() -> None:
    executor = Counting()
    with pytest.raises(StepError, match=r"gave up after 2 attempts .*still false \(last result: stopped\)"):
        run(
            "```api {id: s, until: 'result == \"never\"', retries: 1, delay: 0.01, extract: '.status'}\n"
            "GET /nodes/pve01/qemu/100/status/current\n```\n",
            executor,
        )


def test_until_on_a_step_that_changes_things_is_refused() -> None:
    from engine.load.problems import InputError

    with pytest.raises(InputError, match="until repeats the step, so it is only for steps that change nothing"):
        run("```api {id: s, until: 'result'}\nPOST /nodes/pve01/qemu/100/status/start\n```\n", Counting())


def test_a_jq_error_refuses_the_step_with_its_message() -> None:
    with pytest.raises(StepError, match=r"refused: VM 42 is not here"):
        run(
            '```api {id: s, extract: \'if .status == "x" then . else error("VM 42 is not here") end\'}\n'
            "GET /nodes/pve01/qemu/100/status/current\n```\n",
            Counting(),
        )


def test_jq_sees_the_config_and_plan_as_variables() -> None:
    runbook = parse_runbook(
        HEAD + "```api {id: s, extract: '$config.cluster.name + \"/\" + .status'}\nGET /version\n```\n",
        "runbooks/t.md",
        "t",
    )
    entries = Runner(
        runbook,
        {"nodes": [], "config": {"cluster": {"name": "lab"}}},
        executor=Counting(),
        dry_run=False,
        approver=Yes(),
    ).run()
    assert entries[0].output == "lab/stopped"


def test_a_body_that_branches_on_a_run_time_value_is_unknown_in_a_dry_run() -> None:
    from engine.runbook.render import StepOutputs  # noqa: F401  (the runner builds it)

    runbook = parse_runbook(
        HEAD + "```api {id: where}\nGET /cluster/resources\n```\n\n"
        "```api {id: move}\nPOST /nodes/pve01/qemu/100/migrate\ntarget: pve02\n"
        "online: \"{{ 1 if steps.where.status == 'running' else 0 }}\"\n```\n",
        "runbooks/t.md",
        "t",
    )
    entries = Runner(runbook, {"nodes": []}, executor=None, dry_run=True, approver=Yes()).run()
    assert entries[-1].status == "unknown"
    assert "steps.where.status" in entries[-1].reason
