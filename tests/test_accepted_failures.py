"""`accept_exit` and `accept_task_error`: failures a step declares an answer, not a failure.

Command steps run real bash through the real LocalExecutor; the talosctl side is exercised by the
crash harness (tests/test_crash_resume.py) and the simulated runbooks, the API side by
cluster-teardown's shutdown in simulation (tests/test_runbooks_simulated.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from engine.executors.shell import LocalExecutor
from engine.load.problems import InputError
from engine.run.runner import Runner, StepError
from engine.runbook.actions import Result, ShellCommand, StepFailed
from engine.runbook.parser import parse_runbook
from tests.support.approvers import Yes

HEAD = "---\nname: t\ndescription: d\n---\n"


class Local:
    """Every step on this machine, through the executor `runbook run` uses for `local` steps."""

    def __init__(self) -> None:
        self.local = LocalExecutor(default_timeout=30)
        self.scripts: list[str] = []

    def execute(self, action: Any, progress: Any) -> Result:
        assert isinstance(action, ShellCommand)
        self.scripts.append(action.script)
        return self.local.execute(action, progress)


def run(body: str) -> tuple[list[Any], Local]:
    executor = Local()
    runbook = parse_runbook(HEAD + body, "runbooks/t.md", "t")
    return Runner(runbook, {"nodes": []}, executor=executor, dry_run=False, approver=Yes()).run(), executor


def test_an_accepted_exit_code_is_an_answer_later_steps_read() -> None:
    entries, executor = run(
        "```local {id: probe, readonly: true, accept_exit: [1]}\necho looked; exit 1\n```\n\n"
        "```local {id: when_absent, when: 'steps.probe.exit_code == 1'}\necho absent\n```\n\n"
        "```local {id: when_present, when: 'steps.probe.exit_code == 0'}\necho present\n```\n"
    )
    probe = entries[0]
    assert probe.status == "succeeded" and probe.output["exit_code"] == 1
    assert probe.output["stdout"] == "looked\n"
    assert probe.reason == "exited with 1, an answer this step accepts (accept_exit)"
    assert [e.step_id for e in entries if e.status == "succeeded"] == ["probe", "when_absent"]
    assert executor.scripts[-1].strip().endswith("echo absent")


def test_an_exit_code_not_listed_still_fails_the_step_with_its_stderr() -> None:
    with pytest.raises(StepError, match=r"(?s)local script exited with 2.*no such thing"):
        run("```local {id: probe, accept_exit: [1]}\necho 'no such thing' >&2; exit 2\n```\n")


def test_a_timeout_is_never_accepted() -> None:
    with pytest.raises(StepError, match=r"timed out after 0.2 s"):
        run("```local {id: probe, accept_exit: [1], timeout: 0.2}\nsleep 5\n```\n")


def test_json_of_an_accepted_failure_that_printed_nothing_is_null() -> None:
    entries, _ = run(
        "```local {id: probe, accept_exit: [3], json: true}\nexit 3\n```\n\n"
        "```local {id: doc, json: true}\necho '{\"a\": 1}'\n```\n"
    )
    assert entries[0].output["json"] is None and entries[0].output["exit_code"] == 3
    assert entries[1].output["json"] == {"a": 1}


@pytest.mark.parametrize(
    "value, field, message",
    [
        ("[0]", "[0]", "0 always counts as success: list only the other exit codes (got 0)"),
        ("[255]", "[0]", "exit codes go up to 254 here (255 is ssh's own failure, and none is higher) (got 255)"),
        ("[1, 1]", "", "lists 1 twice: keep one"),
        ("1", "", "must be a list (got 1)"),
        ("[x]", "[0]", "must be an integer (got the text 'x')"),
    ],
)
def test_bad_accept_exit_values_are_refused_naming_the_attribute(value: str, field: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_runbook(HEAD + f"\n```local {{id: probe, accept_exit: {value}}}\nexit 1\n```\n", "runbooks/t.md", "t")
    problems = [(p.file, p.line, p.field, p.message) for p in caught.value.problems]
    assert problems == [("runbooks/t.md", 6, "attributes.accept_exit" + field, message)]


def test_api_steps_have_no_exit_code_to_accept() -> None:
    with pytest.raises(InputError, match="accept_exit"):
        parse_runbook(HEAD + "```api {id: v, accept_exit: [1]}\nGET /version\n```\n", "runbooks/t.md", "t")


class FailedTask:
    """An API executor whose task ends in error, as ApiExecutor reports it (``retryable`` and ``lock`` for a lock)."""

    def __init__(self, exitstatus: str, retryable: bool = False) -> None:
        self.exitstatus, self.retryable, self.calls = exitstatus, retryable, 0

    def execute(self, action: Any, progress: Any) -> Result:
        self.calls += 1
        upid = "UPID:pve01:0000A1B2:00C0FFEE:6745A1B2:qmshutdown:1031:root@pam!runbook:"
        raise StepFailed(
            f"task qmshutdown on pve01 failed: {self.exitstatus}",
            retryable=self.retryable,
            lock=self.retryable,
            data={"upid": upid, "node": "pve01", "exitstatus": self.exitstatus, "data": upid},
        )


SHUTDOWN = (
    "```api {id: shutdown, accept_task_error: true, retries: 1}\nPOST /nodes/pve01/qemu/1031/status/shutdown\n```\n"
)


def test_a_task_ending_in_error_is_an_answer_with_accept_task_error() -> None:
    executor = FailedTask("VM quit/powerdown failed - got timeout")
    runbook = parse_runbook(HEAD + SHUTDOWN, "runbooks/t.md", "t")
    entries = Runner(runbook, {"nodes": [{"name": "pve01"}]}, executor=executor, dry_run=False, approver=Yes()).run()
    assert entries[0].status == "succeeded" and executor.calls == 1
    assert entries[0].output["exitstatus"] == "VM quit/powerdown failed - got timeout"
    assert entries[0].reason == (
        "task ended: VM quit/powerdown failed - got timeout, an answer this step accepts (accept_task_error)"
    )


def test_a_held_lock_is_not_an_answer() -> None:
    executor = FailedTask("can't lock file '/var/lock/qemu-server/lock-1031.conf' - got timeout", retryable=True)
    runbook = parse_runbook(HEAD + SHUTDOWN, "runbooks/t.md", "t")
    with pytest.raises(StepError, match="can't lock file"):
        Runner(runbook, {"nodes": [{"name": "pve01"}]}, executor=executor, dry_run=False, approver=Yes()).run()
    assert executor.calls > 1  # retried as a lock error, then failed: never taken as the answer


def test_without_the_attribute_a_failed_task_fails_the_step() -> None:
    runbook = parse_runbook(HEAD + SHUTDOWN.replace("accept_task_error: true, ", ""), "runbooks/t.md", "t")
    with pytest.raises(StepError, match="VM quit/powerdown failed"):
        Runner(
            runbook,
            {"nodes": [{"name": "pve01"}]},
            executor=FailedTask("VM quit/powerdown failed"),
            dry_run=False,
            approver=Yes(),
        ).run()


def test_accept_task_error_without_waiting_for_the_task_is_refused() -> None:
    with pytest.raises(InputError) as caught:
        parse_runbook(
            HEAD
            + "\n```api {id: s, poll: false, accept_task_error: true}\nPOST /nodes/pve01/qemu/1/status/shutdown\n```\n",
            "runbooks/t.md",
            "t",
        )
    assert [(p.line, p.field, p.message) for p in caught.value.problems] == [
        (6, "attributes.accept_task_error", "accept_task_error needs the task waited for: remove poll: false")
    ]
