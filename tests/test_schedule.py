"""The scheduling core (``engine.run.schedule``), driven step by step as a thread pool or a workflow would.

No thread and no clock here: the tests say what finished and look at what the schedule lets begin.
The properties are checked over every interleaving hypothesis finds: never more items in flight
than the width, never a step of an item before its previous step finished, nothing new after a
failure, every item through every step when nothing fails, and never more clones than the limits.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.run.schedule import CloneLimits, Clones, Schedule, Task, plan_order, width
from engine.runbook.actions import ApiRequest, ShellCommand
from engine.runbook.parser import parse_runbook


def step(attrs: str) -> Any:
    text = f"---\nname: t\nformat: 2\ndescription: d\n---\n\n```local {{id: s{attrs}}}\necho\n```\n"
    return parse_runbook(text, "runbooks/t.md", "t").steps[0]


def test_width_is_the_steps_parallel_bounded_by_the_runs_concurrency_and_one_in_a_plan() -> None:
    assert width(step(""), 16, dry_run=False) == 1
    assert width(step(", foreach: '[1]', parallel: 4"), 16, dry_run=False) == 4
    assert width(step(", foreach: '[1]', parallel: 8"), 2, dry_run=False) == 2
    assert width(step(", foreach: '[1]', parallel: 8"), 16, dry_run=True) == 1


def test_a_parallel_step_begins_items_in_order_up_to_its_width() -> None:
    schedule = Schedule(5, 1, 2)
    assert schedule.start() == [Task(0), Task(1)]
    assert schedule.start() == []  # full: two in flight
    schedule.finished(Task(1))
    assert schedule.start() == [Task(2)]
    schedule.finished(Task(0))
    schedule.finished(Task(2))
    assert schedule.start() == [Task(3), Task(4)]
    schedule.finished(Task(3))
    assert not schedule.done and schedule.exhausted  # item 4 still runs; nothing more to hand out
    schedule.finished(Task(4))
    assert schedule.done


def test_a_pipeline_item_goes_on_to_its_next_step_without_waiting_for_the_others() -> None:
    schedule = Schedule(3, 3, 2)
    assert schedule.start() == [Task(0, 0), Task(1, 0)]
    schedule.finished(Task(0, 0))
    # Item 0 goes on; item 2 does not begin: two items are in flight.
    assert schedule.start() == [Task(0, 1)]
    schedule.finished(Task(0, 1))
    assert schedule.start() == [Task(0, 2)]
    schedule.finished(Task(0, 2))  # item 0 is through: item 2 may begin
    assert schedule.start() == [Task(2, 0)]


def test_the_first_failure_stops_new_items_and_next_steps_while_the_running_ones_end() -> None:
    schedule = Schedule(4, 2, 2)
    assert schedule.start() == [Task(0, 0), Task(1, 0)]
    schedule.failed(Task(1, 0))
    assert schedule.start() == [] and not schedule.done
    schedule.finished(Task(0, 0))  # it ends and is reported, but item 0 begins no next step
    assert schedule.start() == [] and schedule.done


def test_a_finished_task_that_was_ready_to_go_on_is_dropped_when_the_run_stops() -> None:
    schedule = Schedule(2, 2, 2)
    schedule.start()
    schedule.finished(Task(0, 0))  # item 0's next step is ready ...
    schedule.stop()  # ... but the operator interrupts first
    assert schedule.start() == [] and schedule.in_flight == {1}
    schedule.finished(Task(1, 0))
    assert schedule.done and not schedule.in_flight


def test_width_one_runs_item_after_item_and_a_plan_step_after_step() -> None:
    schedule = Schedule(2, 2, 1)
    order = []
    while (task := schedule.take()) is not None:
        order.append(task)
        schedule.finished(task)
    assert order == [Task(0, 0), Task(0, 1), Task(1, 0), Task(1, 1)]
    assert plan_order(2, 2) == [Task(0, 0), Task(1, 0), Task(0, 1), Task(1, 1)]


def test_an_empty_section_is_done_at_once_and_a_nonsense_one_is_refused() -> None:
    assert Schedule(0, 3, 4).done
    with pytest.raises(ValueError, match="width >= 1"):
        Schedule(1, 1, 0)


# ---------------------------------------------------------------- properties

# A run of the schedule: at each turn, begin what may begin, or end one running task (well or not).
turns = st.lists(st.tuples(st.sampled_from(["start", "finish", "fail"]), st.integers(0, 50)), max_size=200)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 8), st.integers(1, 4), st.integers(1, 5), turns)
def test_any_interleaving_keeps_the_width_the_step_order_and_the_stop(
    items: int, stages: int, wide: int, plan: list[tuple[str, int]]
) -> None:
    schedule = Schedule(items, stages, wide)
    done: set[Task] = set()
    began: set[Task] = set()
    failed_at: int | None = None
    for number, (what, pick) in enumerate(plan):
        if what == "start":
            for task in schedule.start():
                assert failed_at is None, "a task began after a failure"
                assert task not in began, "a task began twice"
                assert task.stage == 0 or Task(task.item, task.stage - 1) in done, (
                    "a step began before its previous one"
                )
                began.add(task)
        elif schedule.running:
            task = sorted(schedule.running)[pick % len(schedule.running)]
            if what == "finish":
                schedule.finished(task)
                done.add(task)
            else:
                schedule.failed(task)
                failed_at = number if failed_at is None else failed_at
        assert len(schedule.in_flight) <= wide
        assert len(schedule.running) <= len(schedule.in_flight)
        assert {task.item for task in schedule.running} <= schedule.in_flight
    # Let everything end well: without a failure every item goes through every step, in order.
    while not schedule.done:
        for task in schedule.start():
            assert failed_at is None
            began.add(task)
        for task in sorted(schedule.running):
            schedule.finished(task)
            done.add(task)
    if failed_at is None:
        assert done == {Task(item, stage) for item in range(items) for stage in range(stages)}


def clone(template: int, storage: str | None) -> ApiRequest:
    params = {"newid": "1000"} | ({"storage": storage} if storage else {})
    return ApiRequest("POST", f"/nodes/pve01/qemu/{template}/clone", params)


def test_only_a_clone_takes_slots_and_it_takes_its_template_and_its_storage() -> None:
    limits = CloneLimits(per_template=2, per_storage=1)
    assert limits.slots(clone(100, "fast")) == ((("template", "100"), 2), (("storage", "fast"), 1))
    assert limits.slots(clone(100, None))[1] == (("storage", "storage of VM 100"), 1)
    assert limits.slots(ApiRequest("GET", "/nodes/pve01/qemu/100/clone")) == ()
    assert limits.slots(ApiRequest("POST", "/nodes/pve01/qemu/100/status/start")) == ()
    assert limits.slots(ShellCommand("qm clone 100 101")) == ()
    assert CloneLimits().slots(clone(100, "fast")) == ()


def test_a_clone_waits_for_a_full_slot_and_takes_both_or_neither() -> None:
    clones = Clones(CloneLimits(per_template=2, per_storage=1))
    first = clones.limits.slots(clone(100, "fast"))
    clones.take(first)
    second = clones.limits.slots(clone(100, "fast"))
    assert clones.full(second) == ("storage", "fast")
    with pytest.raises(ValueError, match="storage fast is full"):
        clones.take(second)
    assert clones.held[("template", "100")] == 1, "a refused clone held its template's slot"
    other = clones.limits.slots(clone(100, "slow"))
    assert clones.full(other) is None
    clones.take(other)
    assert clones.full(clones.limits.slots(clone(100, "third"))) == ("template", "100")
    clones.release(first)
    assert clones.full(second) is None


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 3),
    st.lists(st.tuples(st.booleans(), st.integers(100, 102), st.sampled_from(["a", "b", None])), max_size=60),
)
def test_clones_in_flight_never_pass_the_limits(per_template: int, per_storage: int, plan: list[Any]) -> None:
    clones = Clones(CloneLimits(per_template, per_storage))
    in_flight: list[Any] = []
    for begin, template, storage in plan:
        if begin:
            slots = clones.limits.slots(clone(template, storage))
            if clones.full(slots) is None:
                clones.take(slots)
                in_flight.append(slots)
        elif in_flight:
            clones.release(in_flight.pop(0))
        for slot, count in clones.held.items():
            assert count <= (per_template if slot[0] == "template" else per_storage)
    for slots in in_flight:
        clones.release(slots)
    assert not clones.held
