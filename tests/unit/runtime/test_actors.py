"""The driver's book of actor calls (two in flight per actor, a dead actor's calls redone),
the actor's one-off costs, and the spec as workers receive it."""

from __future__ import annotations

import errno
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import ray_dissect
from ray_dissect.errors import StageError, StoreError
from ray_dissect.pipeline.context import spec_blob
from ray_dissect.runtime.actors import MAX_ATTEMPTS, ModelActor, _Pool, raise_cause
from ray_dissect.spec import parse_spec

PLANTED = str(Path(__file__).parents[2] / "fixtures" / "planted.py")


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


def test_an_actor_reports_its_one_off_costs_once(four_images: Path, tmp_path: Path) -> None:
    """A model actor (the plain class, no Ray) reports its spawn delay (from the driver's
    request time), dataset open and model load at the end of its first stage, and nothing
    more at the end of the next one, its dataset and model being kept."""
    spec = parse_spec({
        "model": {"factory": f"{PLANTED}:red_channel",
                  "preprocess": {"size": 8, "mean": [0, 0, 0], "std": [1, 1, 1]}},
        "layers": ["pool"], "dataset": {"root": str(four_images)}})
    actor = ModelActor(spec_blob(spec), str(tmp_path), "cpu", time.time() - 5.0)
    dataset, extractor = actor.env.dataset, actor.env.extractor
    first = actor.end_stage()
    assert sorted(first) == ["actor_spawn", "dataset_open", "model_load"]
    assert first["actor_spawn"] >= 5.0
    assert actor.end_stage() == {}
    assert actor.env.dataset is dataset and actor.env.extractor is extractor


def test_a_spec_blob_unpickles_without_importing_torchvision(tmp_path: Path) -> None:
    """A worker rebuilds the driver's spec from its blob, equal to it, in a fresh interpreter
    that does not import torchvision (re-validating the JSON would, to check the name)."""
    spec = parse_spec({"model": {"name": "resnet18"}, "layers": ["layer4"],
                       "dataset": {"root": str(tmp_path)}})
    (tmp_path / "spec.pkl").write_bytes(spec_blob(spec))
    code = ("import pickle, sys; from ray_dissect.pipeline.context import WorkEnv; "
            f"env = WorkEnv.from_blob(open({str(tmp_path / 'spec.pkl')!r}, 'rb').read(), "
            f"{str(tmp_path)!r}); print(env.spec.model_dump_json()); "
            "print('torchvision' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=str(Path(ray_dissect.__file__).parents[1]))
    dumped, imported = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                      text=True, check=True, env=env).stdout.splitlines()
    assert dumped == spec.model_dump_json() and imported == "False"


class _TaskError(Exception):
    """Stands in for Ray's RayTaskError: the remote exception is its ``cause``."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(repr(cause))
        self.cause = cause


@pytest.mark.parametrize(("cause", "kind", "code"), [
    (OSError(errno.ENOSPC, "No space left on device", "/j/report/u.png"), StoreError, 5),
    (OSError(errno.EROFS, "Read-only file system"), StoreError, 5),
    (OSError(errno.EIO, "Input/output error"), StageError, 6),
    (ValueError("boom"), StageError, 6),
])
def test_a_remote_failure_keeps_the_exit_code_it_has_in_process(
        cause: BaseException, kind: type, code: int) -> None:
    """A full disk in a Ray task is unwritable output (exit 5) as it is in-process, named in
    one line; any other remote failure is a stage failure (exit 6)."""
    with pytest.raises(kind) as caught:
        raise_cause(_TaskError(cause), "report block 7")
    assert type(caught.value) is kind and caught.value.exit_code == code
    assert "report block 7 failed" in str(caught.value) and "\n" not in str(caught.value)
