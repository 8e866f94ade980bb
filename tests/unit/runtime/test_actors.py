"""The driver's book of actor calls: two in flight per actor, a dead actor's calls redone."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from ray_dissect.errors import StageError
from ray_dissect.runtime.actors import MAX_ATTEMPTS, _Pool


class _Actor:
    """Stands in for an actor handle: ``run.remote`` returns a fresh reference."""

    refs = itertools.count()

    def __init__(self) -> None:
        self.run = self
        self.calls: list[tuple[Any, ...]] = []

    def remote(self, *args: Any) -> int:
        self.calls.append(args)
        return next(self.refs)


def test_each_actor_gets_its_share_in_flight() -> None:
    """fill hands an actor calls until it holds per_actor, in queue order."""
    pool, a, b = _Pool("activations", [(s,) for s in range(5)], 2), _Actor(), _Actor()
    pool.fill(a)
    pool.fill(b)
    pool.fill(a)  # already full
    assert a.calls == [("activations", 0), ("activations", 1)]
    assert b.calls == [("activations", 2), ("activations", 3)]
    assert list(pool.queue) == [4]


def test_a_dead_actors_calls_are_all_redone_first() -> None:
    """The call that failed and the other one the actor held go back to the queue front, in
    order; the other actor's call stays in flight."""
    pool, a, b = _Pool("activations", [(s,) for s in range(5)], 2), _Actor(), _Actor()
    pool.fill(a)
    pool.fill(b)
    failed = next(ref for ref, (actor, i) in pool.inflight.items() if i == 1)
    pool.inflight.pop(failed)
    pool.requeue(a, 1, RuntimeError("died"))
    assert list(pool.queue) == [0, 1, 4]
    assert sorted(i for _, i in pool.inflight.values()) == [2, 3]
    replacement = _Actor()
    pool.fill(replacement)
    assert replacement.calls == [("activations", 0), ("activations", 1)]
    assert pool.attempts[:2] == [2, 2]


def test_a_call_that_keeps_killing_actors_fails_the_stage() -> None:
    """After MAX_ATTEMPTS the stage stops with a StageError naming the work unit."""
    pool = _Pool("activations", [(0,)], 2)
    for _ in range(MAX_ATTEMPTS):
        actor = _Actor()
        pool.fill(actor)
        (ref,) = pool.inflight
        pool.inflight.pop(ref)
        if pool.attempts[0] < MAX_ATTEMPTS:
            pool.requeue(actor, 0, RuntimeError("died"))
    with pytest.raises(StageError, match="work unit 0 failed 3 times"):
        pool.requeue(actor, 0, RuntimeError("died"))
