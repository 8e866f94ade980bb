"""Where a CPU stage runs while model actors hold CPUs (the driver's decision, without Ray)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ray_dissect.pipeline.context import Plan
from ray_dissect.pipeline.table import STAGES, stage
from ray_dissect.runtime import driver
from ray_dissect.runtime.driver import cpu_stage_route, on_model_actors


@pytest.mark.parametrize(("free", "total", "cpus", "calls", "slots", "route"), [
    (0, 2, 1, 4, 2, "actors"),    # 2 actors on 2 cores: they run the units
    (0, 2, 1, 1, 2, "actors"),    # one unit: an actor runs it
    (1, 2, 1, 4, 1, "release"),   # 1 actor: ending it lets 2 tasks run instead of 1
    (1, 2, 1, 1, 1, "tasks"),     # one unit fits beside the actor
    (14, 16, 1, 40, 2, "release"),  # ending 2 actors frees 2 of 16 CPUs for tasks
    (14, 16, 1, 10, 2, "tasks"),  # 10 units fit in the 14 free CPUs
    (0, 2, 2, 4, 0, "release"),   # a task wants more CPUs than an actor holds
])
def test_cpu_stage_route(free: float, total: float, cpus: float, calls: int, slots: int,
                         route: str) -> None:
    """Tasks when the free CPUs suffice, the actors when their slots match, else release."""
    assert cpu_stage_route(free, total, cpus, calls, slots) == route


def test_only_on_gpus_stages_follow_the_actors_gpus() -> None:
    """Over the whole stage table: actor stages always run on the actors; thresholds and
    scoring (declared ``on_gpus``) move to them only when they hold GPUs; every other tasks
    stage stays on tasks whatever the GPUs."""
    on_gpus = {s.name for s in STAGES if s.on_gpus}
    assert on_gpus == {"thresholds", "scoring"}
    for s in STAGES:
        assert on_model_actors(s, 0.0) == (s.runs_on == "actors"), s.name
        assert on_model_actors(s, 1.0) == (s.runs_on == "actors" or s.name in on_gpus), s.name
        assert on_model_actors(s, 0.25) == on_model_actors(s, 1.0), s.name


def test_the_executor_sends_scoring_to_the_actors_when_they_hold_gpus(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The executor's own dispatch (Ray stubbed out): with GPUs per actor, the scoring plan's
    calls go to the actor pool with the stage's per-actor concurrency; without, to tasks."""
    sent: list[tuple[str, str, int]] = []
    monkeypatch.setattr(driver, "run_on_actors", lambda pool, name, calls, on_done, per, t:
                        sent.append(("actors", name, len(calls))))
    monkeypatch.setattr(driver, "run_tasks", lambda fn, calls, cpus, what, on_done, name=None:
                        sent.append(("tasks", what, len(calls))))
    monkeypatch.setattr(driver, "spec_blob", lambda spec: b"spec")
    ctx = SimpleNamespace(spec=SimpleNamespace(resources=SimpleNamespace(cpus_per_task=1.0)),
                          job=SimpleNamespace(root="/job"), index=None, timings={})
    plan = Plan(total=3, done=0, calls=[(0,), (1,), (2,)])
    for gpus, where in ((1.0, "actors"), (0.0, "tasks")):
        executor = driver.RayExecutor()
        monkeypatch.setattr(executor, "_gpus", lambda ctx, g=gpus: g)
        monkeypatch.setattr(executor, "_pool", lambda ctx: object())
        executor(stage("scoring"), plan, ctx, lambda i, v: None)  # type: ignore[arg-type]
        assert sent[-1][0] == where and sent[-1][2] == 3
