"""The one retry helper: per-policy counts, the pause schedule, and what is raised when retries run out."""

from __future__ import annotations

import random

import pytest

from engine.run.retry import Backoff, Policy, retry


class Flaky:
    def __init__(self, failures: list[Exception]) -> None:
        self.failures, self.calls = list(failures), 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"


def test_pauses_grow_to_the_cap_and_are_jittered_down_to_at_most_half() -> None:
    backoff = Backoff(1.0, 5.0)
    rng = random.Random(1)
    for number, top in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (10, 5.0)):
        assert top / 2 <= backoff.pause(number, rng) <= top
    assert [Backoff.fixed(2.0).pause(n, rng) for n in (1, 2, 9)] == [2.0, 2.0, 2.0]


def test_each_policy_counts_its_own_retries_and_is_told_before_each_pause() -> None:
    pauses: list[float] = []
    told: list[tuple[str, int]] = []
    flaky = Flaky([KeyError("a"), ValueError("b"), KeyError("c"), ValueError("d")])
    answer = retry(
        flaky,
        Policy(2, Backoff.fixed(0.1), lambda e: isinstance(e, KeyError), lambda e, n, p: told.append(("key", n))),
        Policy(2, Backoff.fixed(0.3), lambda e: isinstance(e, ValueError), lambda e, n, p: told.append(("value", n))),
        sleep=pauses.append,
    )
    assert answer == "done" and flaky.calls == 5
    assert told == [("key", 1), ("value", 1), ("key", 2), ("value", 2)]
    assert pauses == [0.1, 0.3, 0.1, 0.3]


def test_the_last_failure_or_one_no_policy_takes_is_raised_as_it_is() -> None:
    pauses: list[float] = []
    spent = Flaky([KeyError("1"), KeyError("2"), KeyError("3")])
    with pytest.raises(KeyError, match="2"):
        retry(spent, Policy(1, Backoff.fixed(0.1), lambda e: True), sleep=pauses.append)
    assert spent.calls == 2 and pauses == [0.1]
    other = Flaky([TypeError("no")])
    with pytest.raises(TypeError):
        retry(other, Policy(3, Backoff.fixed(0.1), lambda e: isinstance(e, KeyError)), sleep=pauses.append)
    assert other.calls == 1 and pauses == [0.1]
