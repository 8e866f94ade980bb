"""Host buffers, copies, step timing and device decoding as the pipeline uses them, on CPU."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from ray_dissect.models import device as device_module
from ray_dissect.models.device import Device, StepClock, decode_on_device
from ray_dissect.models.extract import preprocess
from ray_dissect.spec import PreprocessSpec


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


def _jpeg(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, "JPEG", quality=95)
    return out.getvalue()


def test_decode_on_device_matches_pil_and_falls_back() -> None:
    """JPEGs decode to PIL's normalised pixels (resized ones to within bilinear rounding), a
    truncated one goes to the fallback, a pre-decoded array passes through unchanged."""
    spec = PreprocessSpec(size=16)
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (4, 4, 3)), np.ones((4, 4, 1))).astype(np.uint8)
    big = np.kron(smooth, np.ones((2, 2, 1))).astype(np.uint8)  # 32 px: resized to 16
    good, large = _jpeg(smooth), _jpeg(big)
    ready = np.full((3, 16, 16), 7.0, np.float32)
    asked: list[int] = []

    def fallback(i: int) -> np.ndarray:
        asked.append(i)
        return np.full((3, 16, 16), -1.0, np.float32)

    out = decode_on_device([good, good[:300], ready, large], spec, "cpu", fallback).numpy()
    expected = preprocess([np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
                           for b in (good, large)], spec)
    assert asked == [1] and np.all(out[1] == -1.0) and np.array_equal(out[2], ready)
    np.testing.assert_allclose(out[0], expected[0], atol=1e-5)
    np.testing.assert_allclose(out[3], expected[1], atol=0.1)
