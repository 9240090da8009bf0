"""Items at once: ``parallel`` steps, pipelines, the run-level bound, clone limits, lock retries, and a
journal written from several threads; then a simulated cluster-create that is faster with concurrency.

The runner tests use a fake executor that records when each action starts and ends, so overlap is
counted, not timed. Only the last test looks at wall time, with a generous ratio.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.executors.api import LOCK_ERROR
from engine.load.problems import InputError
from engine.run.journal import RunMeta, RunRecord, load_run, new_run_id, read_journal
from engine.run.runner import GateStop, Runner, StepError
from engine.run.sections import sections
from engine.runbook.actions import Action, ApiRequest, Result, StepFailed
from engine.runbook.parser import parse_runbook
from tests.conftest import REPO

HEAD = "---\nname: t\nformat: 2\ndescription: d\n---\n"
ITEMS = "[1, 2, 3, 4, 5, 6, 7, 8]"


class Fake:
    """An executor whose every action takes ``seconds`` (or what ``delay`` says); it counts overlaps.

    ``fail`` maps an action's text (path or script) to a StepFailed raised instead of answering.
    """

    def __init__(
        self,
        seconds: float = 0.05,
        delay: Callable[[str], float] | None = None,
        fail: dict[str, list[BaseException]] | None = None,
    ):
        self.seconds = seconds
        self.delay = delay
        self.fail = fail or {}
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.calls: list[str] = []
        self.events: list[tuple[str, str]] = []  # ("start"|"end", text), in order
        self.most_by: dict[str, int] = {}
        self._by: dict[str, int] = {}

    def execute(self, action: Action, progress: Callable[[str], None]) -> Result:
        text = action.path if isinstance(action, ApiRequest) else action.script.strip()  # type: ignore[union-attr]
        group = text.split("/clone")[0] if isinstance(action, ApiRequest) and "/clone" in text else None
        with self.lock:
            self.calls.append(text)
            self.events.append(("start", text))
            self.running += 1
            self.most = max(self.most, self.running)
            if group:
                self._by[group] = self._by.get(group, 0) + 1
                self.most_by[group] = max(self.most_by.get(group, 0), self._by[group])
            failures = self.fail.get(text)
            failure = failures.pop(0) if failures else None
        try:
            time.sleep(self.delay(text) if self.delay else self.seconds)
            if failure is not None:
                raise failure
            return Result({"text": text})
        finally:
            with self.lock:
                self.running -= 1
                self.events.append(("end", text))
                if group:
                    self._by[group] -= 1


class Yes:
    who = "test"

    def __init__(self, answers: dict[str, bool] | None = None):
        self.answers = answers or {}
        self.asked: list[str] = []

    def approve(self, entry: Any) -> bool:
        self.asked.append(f"{entry.step_id}[{entry.item_key}]")
        return self.answers.get(f"{entry.step_id}[{entry.item_key}]", True)


def runbook(body: str) -> Any:
    return parse_runbook(HEAD + body, "runbooks/t.md", "t")


def runner(body: str, executor: Any, *, context: dict[str, Any] | None = None, **options: Any) -> Runner:
    return Runner(
        runbook(body),
        {"nodes": [{"name": "pve01"}], **(context or {})},
        executor=executor,
        dry_run=False,
        approver=options.pop("approver", Yes()),
        **options,
    )


def record(tmp_path: Path) -> RunRecord:
    now = datetime.now(UTC)
    meta = RunMeta(
        run_id=new_run_id("t", now),
        runbook="t",
        runbook_file="runbooks/t.md",
        runbook_sha256="a" * 64,
        profile=None,
        profile_file=None,
        profile_sha256=None,
        cluster_config_sha256="b" * 64,
        parameters={},
        mode="run",
        started_at=now.isoformat(),
    )
    return RunRecord.create(tmp_path / "state", meta)


# ---------------------------------------------------------------- the bound


def test_parallel_runs_items_at_once_up_to_its_bound() -> None:
    fake = Fake()
    entries = runner(f"```local {{id: s, foreach: '{ITEMS}', parallel: 3}}\necho {{{{ item }}}}\n```\n", fake).run()
    assert fake.most == 3
    assert sorted(fake.calls) == sorted(f"echo {n}" for n in range(1, 9))
    # Entries come back in item order, whatever order the items ended in.
    assert [e.item_key for e in entries] == [str(n) for n in range(1, 9)]


def test_the_run_level_concurrency_bounds_every_step() -> None:
    fake = Fake()
    runner(
        f"```local {{id: s, foreach: '{ITEMS}', parallel: 8}}\necho {{{{ item }}}}\n```\n", fake, concurrency=2
    ).run()
    assert fake.most == 2
    one = Fake(seconds=0.01)
    runner(f"```local {{id: s, foreach: '{ITEMS}', parallel: 8}}\necho {{{{ item }}}}\n```\n", one, concurrency=1).run()
    assert one.most == 1 and one.calls == [f"echo {n}" for n in range(1, 9)]


def test_a_step_without_parallel_runs_one_item_at_a_time() -> None:
    fake = Fake(seconds=0.01)
    runner(f"```local {{id: s, foreach: '{ITEMS}'}}\necho {{{{ item }}}}\n```\n", fake).run()
    assert fake.most == 1 and fake.calls == [f"echo {n}" for n in range(1, 9)]


def test_outputs_of_a_parallel_step_are_in_item_order() -> None:
    fake = Fake(delay=lambda text: 0.08 if text.endswith("1") else 0.01)  # the first item ends last
    body = (
        f"```local {{id: s, foreach: '{ITEMS}', parallel: 8}}\necho {{{{ item }}}}\n```\n\n"
        "```local {id: after}\necho {{ steps.s | map(attribute='text') | join(',') }}\n```\n"
    )
    runner(body, fake).run()
    assert fake.calls[-1] == "echo 'echo 1,echo 2,echo 3,echo 4,echo 5,echo 6,echo 7,echo 8'"


# ---------------------------------------------------------------- pipelines

PIPELINE = """
```local {id: a, foreach: '[1, 2, 3, 4]', as: n, pipeline: p, parallel: 4, check: 'false'}
echo a{{ n }}
```

```local {id: b, foreach: '[1, 2, 3, 4]', as: n, pipeline: p, check: 'false'}
echo b{{ n }} {{ steps.a[loop_index].text }}
```

```local {id: c, foreach: '[1, 2, 3, 4]', as: n, pipeline: p, check: 'false'}
echo c{{ n }}
```

```local {id: after}
echo {{ steps.b | map(attribute='text') | join(',') }}
```
"""


def test_a_pipeline_runs_each_item_through_its_steps_in_order_without_waiting_for_the_others() -> None:
    # Item 4 is slow at a: the other items finish their whole chain before it leaves a.
    fake = Fake(delay=lambda text: 0.3 if text == "echo a4" else 0.02)
    entries = runner(PIPELINE, fake).run()
    order = [text for kind, text in fake.events if kind == "start"]
    for n in range(1, 5):
        chain = [order.index(f"echo a{n}"), order.index(f"echo b{n} 'echo a{n}'"), order.index(f"echo c{n}")]
        assert chain == sorted(chain), f"item {n} ran out of order: {order}"
    ended = [text for kind, text in fake.events if kind == "end"]
    assert ended.index("echo c1") < ended.index("echo a4"), "item 1 waited for item 4 to finish step a"
    assert fake.most == 4
    # After the pipeline each step's output is the usual list, in item order.
    assert fake.calls[-1] == (
        "echo 'echo b1 '\"'\"'echo a1'\"'\"',echo b2 '\"'\"'echo a2'\"'\"',"
        "echo b3 '\"'\"'echo a3'\"'\"',echo b4 '\"'\"'echo a4'\"'\"''"
    )
    assert [(e.step_id, e.item_key) for e in entries[:12]] == [(s, str(n)) for s in "abc" for n in range(1, 5)]


def test_a_pipeline_at_concurrency_one_runs_item_after_item() -> None:
    fake = Fake(seconds=0.001)
    runner(PIPELINE, fake, concurrency=1).run()
    assert [c.split()[0] for c in fake.calls[:6]] == ["echo"] * 6
    assert [c.split()[1][0] for c in fake.calls[:6]] == ["a", "b", "c", "a", "b", "c"]


def test_inside_a_pipeline_only_this_items_output_can_be_read() -> None:
    body = PIPELINE.replace("steps.a[loop_index].text", "steps.a[0].text")
    with pytest.raises(InputError, match=r"steps.a\[0\] reads other items of pipeline 'p'.*steps.a\[loop_index\]"):
        runner(body, Fake(seconds=0.001)).run()


def test_a_plan_lists_a_pipeline_step_by_step() -> None:
    entries = Runner(runbook(PIPELINE), {}, executor=None, dry_run=True, approver=Yes()).run()
    assert [(e.step_id, e.item_key) for e in entries[:12]] == [(s, str(n)) for s in "abc" for n in range(1, 5)]
    assert entries[4].status == "unknown" and "(known after run: steps.a[0].text)" in entries[4].display


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "```api {id: a, foreach: '[1]', pipeline: p, check: 'false'}\nPOST /nodes/pve01/qemu/{{ item }}/status/start\n```\n\n"
            "```api {id: b, foreach: '[1]', pipeline: p, check: 'false'}\nPOST /nodes/pve01/qemu/{{ item }}/status/stop\n```\n",
            "step b (pipeline p) is gated (stops or restarts a VM), but a pipeline never stops to ask",
        ),
        (
            "```local {id: a, foreach: '[1]', pipeline: p, check: 'false', confirm: true}\necho\n```\n",
            "step a (pipeline p) is gated (marked confirm)",
        ),
        (
            "```local {id: a, foreach: '[1]', pipeline: p}\necho\n```\n",
            "step a (pipeline p) changes something but has no check",
        ),
        (
            "```local {id: a, foreach: '[1]', pipeline: p, check: x}\necho\n```\n\n"
            "```local {id: b, foreach: '[2]', pipeline: p, check: x}\necho\n```\n",
            "must loop over the same items, with the same 'as', as its first step a",
        ),
        (
            "```local {id: a, foreach: '[1]', pipeline: p, check: x}\necho\n```\n\n"
            "```local {id: b, foreach: '[1]', pipeline: p, check: x, parallel: 2}\necho\n```\n",
            "a pipeline has one width, given by parallel on its first step a",
        ),
        (
            "```local {id: a, foreach: '[1]', pipeline: p, check: x}\necho\n```\n\n```local {id: m}\necho\n```\n\n"
            "```local {id: b, foreach: '[1]', pipeline: p, check: x}\necho\n```\n",
            "pipeline 'p' already ended at line",
        ),
    ],
)
def test_what_cannot_be_a_pipeline_is_refused_before_anything_runs(body: str, message: str) -> None:
    fake = Fake(seconds=0.001)
    with pytest.raises(InputError) as caught:
        runner(body, fake).run()
    assert message in "\n".join(str(p) for p in caught.value.problems)
    assert fake.calls == []
    _, problems = sections(runbook(body))
    assert problems  # and runbook validate reports the same


def test_validate_reports_pipeline_problems(cli: Any, make_home: Any) -> None:
    home = make_home(
        {
            "runbooks/bad.md": "---\nname: bad\nformat: 2\ndescription: d\n---\n\n"
            "```local {id: a, foreach: '[1]', pipeline: p}\necho\n```\n"
        },
        runbooks=False,
    )
    result = cli("--home", str(home.root), "validate")
    assert result.exit_code == 1
    assert (
        "runbooks/bad.md:7: attributes.check: step a (pipeline p) changes something but has no check" in result.stdout
    )


# ---------------------------------------------------------------- failures and resume


def test_a_failure_stops_new_items_and_keeps_the_finished_records(tmp_path: Path) -> None:
    boom = StepFailed("node on fire")
    fake = Fake(delay=lambda text: 0.2 if text == "echo 1" else 0.02, fail={"echo 2": [boom]})
    journal = record(tmp_path)
    with journal:
        with pytest.raises(StepError, match="node on fire") as caught:
            runner(
                f"```local {{id: s, foreach: '{ITEMS}', parallel: 2}}\necho {{{{ item }}}}\n```\n",
                fake,
                recorder=journal,
            ).run()
    assert caught.value.entry.item_key == "2"
    assert sorted(fake.calls) == ["echo 1", "echo 2"], "an item started after the failure"
    records, _ = read_journal(journal.folder / "journal.jsonl")
    outcome = {(r["type"], r["item"]) for r in records if r["type"].startswith("step_")}
    assert ("step_finished", "1") in outcome and ("step_failed", "2") in outcome
    assert not {item for kind, item in outcome if item not in ("1", "2")}


def test_a_failure_in_a_pipeline_stops_every_item_before_its_next_step(tmp_path: Path) -> None:
    fake = Fake(delay=lambda text: 0.2 if text == "echo a1" else 0.02, fail={"echo a2": [StepFailed("no")]})
    with pytest.raises(StepError):
        runner(PIPELINE, fake).run()
    started = {text for kind, text in fake.events if kind == "start"}
    assert "echo a1" in started and not any(text.startswith(("echo b1", "echo c1")) for text in started)
    ends = [text for kind, text in fake.events if kind == "end"]
    assert "echo a1" in ends, "the item running when another failed was not waited for"


class Crash(BaseException):
    """The process dies in the middle of a step (the journal keeps the step started, never finished)."""


def marked_pipeline(marks: Path) -> str:
    """PIPELINE whose checks look for a marker file per step and item, as a real check looks at the cluster."""
    body = PIPELINE
    for step in "abc":
        body = body.replace(
            f"id: {step}, foreach: '[1, 2, 3, 4]', as: n, pipeline: p, parallel: 4, check: 'false'",
            f"id: {step}, foreach: '[1, 2, 3, 4]', as: n, pipeline: p, parallel: 4, "
            f"check: \"exists('{marks}/{step}' ~ (n | string))\"",
        )
        body = body.replace(
            f"id: {step}, foreach: '[1, 2, 3, 4]', as: n, pipeline: p, check: 'false'",
            f"id: {step}, foreach: '[1, 2, 3, 4]', as: n, pipeline: p, "
            f"check: \"exists('{marks}/{step}' ~ (n | string))\"",
        )
    return body


def test_resume_after_a_crash_in_a_pipeline_redoes_only_what_is_needed(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()

    def effect(text: str) -> float:
        (marks / text.split()[1]).touch()  # "echo b3 ..." leaves marks/b3
        return 0.02

    body = marked_pipeline(marks)
    journal = record(tmp_path)
    # Item 3 dies inside step b, before its effect: the journal has b[3] started, never finished.
    fake = Fake(
        delay=lambda text: 0.0 if text.startswith("echo b3") else effect(text), fail={"echo b3 'echo a3'": [Crash()]}
    )
    with journal:
        with pytest.raises(Crash):
            runner(body, fake, recorder=journal).run()
    before = load_run(tmp_path / "state", journal.run_id)
    assert [str(k) for k in before.state.in_doubt] == ["b[3]"]
    done = {(k.step, k.item): s.outputs for k, s in before.state.steps.items() if s.status == "finished"}
    assert ("a", "3") in done and ("c", "3") not in done
    again = Fake(delay=effect)
    resumed, _ = RunRecord.resume(tmp_path / "state", journal.run_id)
    with resumed:
        entries = runner(
            body,
            again,
            recorder=resumed,
            done=done,
            check_unfinished=frozenset((k.step, k.item) for k in before.state.in_doubt),
        ).run()
    ran = {call.split()[1] for call in again.calls if not call.startswith("echo 'echo")}
    assert "b3" in ran and "c3" in ran, "the item in doubt was not taken up again"
    assert not ran & {f"{step}{item}" for step, item in done}, "a step finished before the crash ran again"
    final = {(e.step_id, e.item_key): e.status for e in entries if e.step_id in "abc"}
    assert len(final) == 12 and set(final.values()) <= {"succeeded", "skipped"}


def test_an_item_in_doubt_is_rechecked_not_redone_when_its_check_holds(tmp_path: Path) -> None:
    marks = tmp_path / "m"
    marks.mkdir()
    body = (
        f"```local {{id: s, foreach: '[1, 2, 3]', parallel: 3, check: \"exists('{marks}/' ~ (item | string))\"}}\n"
        f"touch {marks}/{{{{ item }}}}\n```\n"
    )

    class Touching(Fake):
        def execute(self, action: Action, progress: Callable[[str], None]) -> Result:
            result = super().execute(action, progress)
            Path(action.script.split()[1]).touch()  # type: ignore[union-attr]
            return result

    journal = record(tmp_path)
    with journal:
        with pytest.raises(Crash):
            runner(body, Touching(seconds=0.01, fail={f"touch {marks}/2": [Crash()]}), recorder=journal).run()
    (marks / "2").touch()  # the crashed step did take effect
    before = load_run(tmp_path / "state", journal.run_id)
    done = {(k.step, k.item): s.outputs for k, s in before.state.steps.items() if s.status == "finished"}
    again = Touching(seconds=0.01)
    entries = runner(
        body, again, done=done, check_unfinished=frozenset((k.step, k.item) for k in before.state.in_doubt)
    ).run()
    assert again.calls == []
    assert [e.status for e in entries] == ["succeeded", "skipped", "succeeded"]


# ---------------------------------------------------------------- gates


def test_the_gates_of_a_parallel_step_are_asked_in_order_before_any_item_runs(tmp_path: Path) -> None:
    fake = Fake()
    approver = Yes({"s[3]": False})
    body = "```local {id: s, foreach: '[1, 2, 3, 4]', parallel: 4, confirm: true}\necho {{ item }}\n```\n"
    journal = record(tmp_path)
    with journal:
        with pytest.raises(GateStop) as caught:
            runner(body, fake, approver=approver, recorder=journal).run()
    assert approver.asked == ["s[1]", "s[2]", "s[3]"]
    assert caught.value.entry.item_key == "3"
    assert sorted(fake.calls) == ["echo 1", "echo 2"], "the items approved before the refusal run, the rest do not"
    records, _ = read_journal(journal.folder / "journal.jsonl")
    kinds = [(r["type"], r["item"]) for r in records if r["type"] != "run_started"]
    assert kinds[:5] == [
        ("gate_waiting", "1"),
        ("gate_approved", "1"),
        ("gate_waiting", "2"),
        ("gate_approved", "2"),
        ("gate_waiting", "3"),
    ]


# ---------------------------------------------------------------- PVE's locks


CLONE = (
    "```api {id: clone, foreach: '[1, 2, 3, 4, 5, 6]', parallel: 6}\n"
    'POST /nodes/pve01/qemu/{{ 100 if item % 2 else 200 }}/clone\nnewid: "{{ 1000 + item }}"\n'
    "storage: \"{{ 'fast' if item < 4 else 'slow' }}\"\n```\n"
)


def test_clones_are_limited_per_template_and_per_storage() -> None:
    # Each clone lasts long enough (0.4 s) that items allowed at once do overlap, even when a loaded
    # machine starts the threads late: the counts below are about limits, not about speed.
    fake = Fake(seconds=0.4)
    runner(CLONE, fake, context={"config": {"limits": {"clones_per_template": 2}}}).run()
    assert fake.most_by == {"/nodes/pve01/qemu/100": 2, "/nodes/pve01/qemu/200": 2}
    assert fake.most == 4  # two templates, two each

    class ByStorage(Fake):
        def execute(self, action: Action, progress: Callable[[str], None]) -> Result:
            storage = action.params["storage"]  # type: ignore[union-attr]
            with self.lock:
                self._by[storage] = self._by.get(storage, 0) + 1
                self.most_by[storage] = max(self.most_by.get(storage, 0), self._by[storage])
            try:
                return super().execute(action, progress)
            finally:
                with self.lock:
                    self._by[storage] -= 1

    storage = ByStorage(seconds=0.4)
    runner(CLONE, storage, context={"config": {"limits": {"clones_per_storage": 1}}}).run()
    assert storage.most_by["fast"] == 1 and storage.most_by["slow"] == 1
    free = Fake(seconds=0.4)
    runner(CLONE, free).run()
    assert free.most == 6  # no limits configured: only the step's parallel and the run's bound


def locked() -> StepFailed:
    return StepFailed(
        "POST /nodes/pve01/qemu/100/clone on pve01: HTTP 500 VM is locked (clone)", retryable=True, lock=True
    )


def test_a_held_lock_is_waited_out_with_jittered_backoff_up_to_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []
    real_sleep = time.sleep
    # (time is one module: the fake's own sleep(0) goes through here too, and is not a pause)
    monkeypatch.setattr("engine.run.runner.time.sleep", lambda s: (s and pauses.append(s), real_sleep(0))[1])
    body = "```api {id: s, foreach: '[1]', parallel: 2}\nPOST /nodes/pve01/qemu/100/status/start\n```\n"
    fake = Fake(seconds=0, fail={"/nodes/pve01/qemu/100/status/start": [locked(), locked(), locked()]})
    entries = runner(body, fake, context={"config": {"limits": {"lock_retries": 3}}}, lock_backoff=1.0).run()
    assert entries[0].status == "succeeded" and len(fake.calls) == 4
    assert len(pauses) == 3
    for number, pause in enumerate(pauses):  # 1, 2, 4 s, each jittered down to at most half
        assert 0.5 * 2**number <= pause <= 2**number
    assert len(set(pauses)) == 3

    pauses.clear()
    failing = Fake(seconds=0, fail={"/nodes/pve01/qemu/100/status/start": [locked() for _ in range(5)]})
    with pytest.raises(StepError, match="VM is locked"):
        runner(body, failing, context={"config": {"limits": {"lock_retries": 2}}}, lock_backoff=0.01).run()
    assert len(failing.calls) == 3 and len(pauses) == 2


def test_every_pve_lock_message_counts_and_other_failures_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engine.run.runner.time.sleep", lambda s: None)
    body = "```api {id: s, foreach: '[1]', parallel: 2}\nPOST /nodes/pve01/qemu/100/status/start\n```\n"
    for message in (
        "task qmstart on pve01 failed: can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout",
        "HTTP 500 VM is locked (backup)",
        "HTTP 500 cfs-lock 'storage-local-lvm' error: got lock request timeout",
    ):
        # As the API executor reports it: PVE's lock messages are recognised there.
        failure = StepFailed(message, retryable=True, lock=bool(LOCK_ERROR.search(message)))
        fake = Fake(seconds=0, fail={"/nodes/pve01/qemu/100/status/start": [failure]})
        assert runner(body, fake).run()[0].status == "succeeded", message
    other = Fake(seconds=0, fail={"/nodes/pve01/qemu/100/status/start": [StepFailed("HTTP 500 boom", retryable=True)]})
    with pytest.raises(StepError, match="boom"):
        runner(body, other).run()


def test_a_lock_in_a_sequential_step_stops_the_run_unless_it_has_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engine.run.runner.time.sleep", lambda s: None)
    body = "```api {id: s}\nPOST /nodes/pve01/qemu/100/status/start\n```\n"
    fake = Fake(seconds=0, fail={"/nodes/pve01/qemu/100/status/start": [locked()]})
    with pytest.raises(StepError, match="VM is locked"):
        runner(body, fake).run()
    again = Fake(seconds=0, fail={"/nodes/pve01/qemu/100/status/start": [locked()]})
    assert runner(body.replace("id: s", "id: s, retries: 1"), again).run()[0].status == "succeeded"


# ---------------------------------------------------------------- the journal under threads


def test_journal_records_from_many_threads_are_whole_lines_with_gap_free_seq(tmp_path: Path) -> None:
    journal = record(tmp_path)
    with journal:

        def write(thread: int) -> None:
            for n in range(50):
                journal.step_started("s", f"{thread}-{n}", {"type": "ShellCommand", "script": "x" * (n * 40)})
                journal.step_finished("s", f"{thread}-{n}", {"n": n}, 0.1)

        threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    records, warnings = read_journal(journal.folder / "journal.jsonl")  # raises on any broken line or seq
    assert not warnings
    assert [r["seq"] for r in records] == list(range(1, 802))
    run = load_run(tmp_path / "state", journal.run_id)
    assert len([s for s in run.state.steps.values() if s.status == "finished"]) == 400


def test_a_parallel_run_journals_one_start_and_one_end_per_item(tmp_path: Path) -> None:
    journal = record(tmp_path)
    with journal:
        runner(PIPELINE, Fake(seconds=0.005), recorder=journal).run()
    records, _ = read_journal(journal.folder / "journal.jsonl")
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    started = [(r["step"], r["item"]) for r in records if r["type"] == "step_started"]
    finished = [(r["step"], r["item"]) for r in records if r["type"] == "step_finished"]
    assert sorted(started) == sorted(finished) and len(set(started)) == len(started) == 13


# ---------------------------------------------------------------- cluster-create on the simulated cluster


def _six_vm_profile() -> str:
    profile = yaml.safe_load((REPO / "clusters" / "dev-generic.yaml").read_text())
    profile["name"] = "six"
    profile["tags"] = ["six", "kubernetes"]
    profile["network"] = {"pod_cidr": "10.250.0.0/16", "service_cidr": "10.128.0.0/12"}
    workers = profile["nodes"]["workers"]
    workers.update(count=5, start_vmid=1311, name_prefix="six-w", placement="spread")
    profile["nodes"]["controlplane"].update(start_vmid=1301, name_prefix="six-cp", placement="spread")
    # Every VM away from the template's node, so each is cloned and then migrated (20 PVE s).
    profile["nodes"]["controlplane"]["assignments"] = [{"name": "six-cp01", "node": "pve02", "vmid": 1301}]
    workers["assignments"] = [
        {"name": f"six-w0{n}", "node": "pve03" if n % 2 else "pve02", "vmid": 1310 + n} for n in range(1, 6)
    ]
    return yaml.safe_dump(profile, sort_keys=False)


def test_cluster_create_on_a_slow_simulated_cluster_is_faster_with_concurrency(
    cli: Any, make_home: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.sim.wiring as wiring

    real_start = wiring.SimCluster.start.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(
        wiring.SimCluster,
        "start",
        classmethod(
            lambda cls, home, config, profiles, time_scale=0.0: real_start(cls, home, config, profiles, time_scale=0.04)
        ),
    )
    import shutil

    first = make_home({"clusters/six.yaml": _six_vm_profile()})
    second = first.root.parent / "second"
    shutil.copytree(first.root, second)
    took = {}
    for concurrency, root in (("1", first.root), ("6", second)):
        started = time.monotonic()
        result = cli(
            "--home",
            str(root),
            "run",
            "cluster-create",
            "--profile",
            "six",
            "--simulate",
            "--yes",
            "--json",
            "--concurrency",
            concurrency,
        )
        took[concurrency] = time.monotonic() - started
        assert result.exit_code == 0, result.output
        final = json.loads(result.stdout.splitlines()[-1])
        migrated = [s for s in final["steps"] if s["step"] == "migrate" and s["status"] == "succeeded"]
        assert len(migrated) == 6
        status = json.loads(cli("--home", str(root), "sim", "status", "--json").stdout)
        vms = {vm["name"]: (vm["node"], vm["status"]) for vm in status["vms"] if not vm["template"]}
        assert vms == {
            "six-cp01": ("pve02", "running"),
            **{f"six-w0{n}": ("pve03" if n % 2 else "pve02", "running") for n in range(1, 6)},
        }
    assert took["1"] > 2 * took["6"], took


# ---------------------------------------------------------------- polling


def test_polling_asks_a_known_kind_of_task_when_it_is_likely_to_have_ended(tmp_path: Path) -> None:
    import ssl

    from engine.executors.api import ApiExecutor
    from engine.run.credentials import TokenSource
    from tests.support.fakepve_server import TOKEN_ID, FakePveServer

    with FakePveServer(tmp_path, "s3cret", time_scale=0.01) as server:
        for vmid in (201, 202, 203, 204):
            server.do(server.pve.add_vm, vmid, f"vm{vmid}", node="pve01")
            server.do(setattr, server.pve.vm(vmid), "start_secs", 40)  # 0.4 s
        tokens = TokenSource(
            {"credentials": {"token_env": "PROXMOX_API_TOKEN", "pass_path": "unused"}},
            {"PROXMOX_API_TOKEN": f"{TOKEN_ID}=s3cret"},
        )

        def start(api: ApiExecutor, vmid: int, progress: Any = None) -> Result:
            return api.execute(ApiRequest("POST", f"/nodes/pve01/qemu/{vmid}/status/start"), progress)

        with ApiExecutor([("pve01", server.url)], tokens, ssl.create_default_context(cafile=server.certfile)) as api:
            first = start(api, 201)
            second = start(api, 202)
        # Never seen: asked at once, then after 50 ms growing by half (about 7 polls in 0.4 s).
        assert first.requests >= 5
        # Seen: the first poll comes when the task is likely to have ended; one status request, or two.
        assert second.requests <= 3

        with ApiExecutor([("pve01", server.url)], tokens, ssl.create_default_context(cafile=server.certfile)) as api:
            api.expect_tasks({"qmstart": 0.4})  # what the journals of earlier runs said
            probe = start(api, 203)  # the first of its kind in this run asks 10% early
            hinted = start(api, 204)
        assert probe.requests <= 4 and hinted.requests <= 3


def test_task_times_come_down_quickly_from_a_figure_that_is_too_high() -> None:
    from engine.executors.api import TaskTimes

    times = TaskTimes()
    expected, learnt = times.expect("qmclone", hint=10.0)
    assert (expected, learnt) == (9.0, "probe")  # the run's first task probes early
    assert times.expect("qmclone", hint=10.0) == (10.0, "hint")  # the others go by the hint
    times.observe("qmclone", expected, 0.0, 9.2)  # already stopped at its first poll
    seen = []
    for _ in range(6):  # every task ends at 5 s, but is asked about at the expected time
        expected, source = times.expect("qmclone")
        assert source == "learnt"
        seen.append(expected)
        times.observe("qmclone", expected, 0.0, expected * 1.02)
    assert seen[-1] < 6.0, seen  # from 9 s down towards 5 s within a few tasks: 1%, 2%, 4%, 8%...
    times.observe("qmclone", seen[-1] * 0.9, 4.9, 5.3)  # caught running: the bracket wins
    assert times.expect("qmclone") == (pytest.approx(5.2), "learnt")
    # Tasks started together with one expectation lower it once, not once each.
    before = times.expect("qmclone")[0]
    for _ in range(10):
        times.observe("qmclone", before, 0.0, before)
    assert times.expect("qmclone")[0] == pytest.approx(before * 0.99)
