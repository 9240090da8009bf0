"""Trying an operation again: one loop and one pause schedule for every retry in the engine.

Held PVE locks, a step's ``retries`` and ``until``, and an idempotent API request that got no
answer are all retried the same way: an attempt fails, the first policy that takes the failure
and has retries left counts it, says so (a progress note, a log line), pauses and tries again;
a failure no policy takes, or one whose policy is spent, is raised to the caller, which turns it
into the message the operator reads. Written once, the bounds and pauses cannot drift apart
between the places that retry, and tests can hand in their own ``sleep`` and random source.

Each policy counts its own retries, so one loop can wait out several held locks and still allow
a step its own ``retries`` for other failures.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

_RANDOM = random.Random()


@dataclass(frozen=True)
class Backoff:
    """The pause before retry ``number`` (1, 2...): ``first`` times ``factor`` to the ``number - 1``,
    at most ``cap``, then scaled by a random share between ``1 - jitter`` and 1.

    The jitter keeps items that failed together (clones of one template meeting one lock) from
    all trying again at the same moment; ``fixed`` pauses the same every time, without jitter.
    """

    first: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.5

    @classmethod
    def fixed(cls, pause: float) -> Backoff:
        return cls(pause, pause, factor=1.0, jitter=0.0)

    def pause(self, number: int, rng: random.Random) -> float:
        pause = min(self.cap, self.first * self.factor ** (number - 1))
        return pause * rng.uniform(1 - self.jitter, 1) if self.jitter else pause


@dataclass(frozen=True)
class Policy:
    """Which failures are tried again (``when``), how many more times (``retries``), after which
    pauses; ``on_retry(error, number, pause)`` is told before each pause (a note, a log line)."""

    retries: int
    backoff: Backoff
    when: Callable[[Exception], bool]
    on_retry: Callable[[Exception, int, float], None] | None = None


def retry(
    attempt: Callable[[], T],
    *policies: Policy,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """``attempt()``'s answer, trying again while a policy takes its failure (the first one that has
    retries left and whose ``when`` is true, each counting its own retries); any other failure,
    or the last one, is raised as it is. ``sleep`` defaults to ``time.sleep``, looked up at each
    pause; ``rng`` draws the jitter."""
    used = [0] * len(policies)
    while True:
        try:
            return attempt()
        except Exception as error:
            chosen = next(
                (index for index, policy in enumerate(policies) if used[index] < policy.retries and policy.when(error)),
                None,
            )
            if chosen is None:
                raise
            used[chosen] += 1
            policy = policies[chosen]
            pause = policy.backoff.pause(used[chosen], rng or _RANDOM)
            if policy.on_retry is not None:
                policy.on_retry(error, used[chosen], pause)
            (sleep or time.sleep)(pause)
