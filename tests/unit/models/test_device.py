"""Host buffers, copies and step timing as the pipeline uses them, on CPU."""

from __future__ import annotations

import pytest
import torch

from ray_dissect.models import device as device_module
from ray_dissect.models.device import Device, StepClock


def test_cpu_device_copies_rows_synchronously() -> None:
    """download writes each layer into its rows of the host buffer; no events on CPU, and
    a CUDA name without CUDA behaves the same."""
    for name in ["cpu"] + ([] if torch.cuda.is_available() else ["cuda"]):
        device = Device(name)
        assert not device.cuda
        host = device.host_empty((4, 2, 1, 1))
        host.zero_()
        x, ready = device.upload(torch.ones(2, 3))
        assert ready is None and x.data_ptr() != 0
        clock = device.clock()
        out = torch.arange(4.0).reshape(2, 2, 1, 1)
        device.download({"l": out}, {"l": host}, slice(1, 3), clock)
        assert device.fence() is None
        assert host[:, :, 0, 0].tolist() == [[0, 0], [0, 1], [2, 3], [0, 0]]
        assert set(clock.totals()) == {"copy"}


def test_step_clock_sums_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Repeated steps add up per name (on CPU from perf_counter, here a scripted one)."""
    ticks = iter([0.0, 1.0, 1.0, 3.0, 3.0, 6.0, 10.0, 20.0])
    monkeypatch.setattr(device_module.time, "perf_counter", lambda: next(ticks))
    clock = StepClock(cuda=False)
    for _ in range(3):
        with clock("a"):
            pass
    with clock("b"):
        pass
    assert clock.totals() == {"a": 6.0, "b": 10.0}
