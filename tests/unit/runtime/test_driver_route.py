"""Where a CPU stage runs while model actors hold CPUs (the driver's decision, without Ray)."""

from __future__ import annotations

import pytest

from ray_dissect.runtime.driver import cpu_stage_route


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
