"""The threaded extraction pipeline: same bytes as the serial loop, errors, overlap."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.errors import ModelError
from ray_dissect.job.layout import JobDir
from ray_dissect.models.device import decode_on_device
from ray_dissect.pipeline import shard_pipeline
from ray_dissect.pipeline.context import JobContext, WorkEnv
from ray_dissect.pipeline.prepare import preflight, prepare_job_dir
from ray_dissect.pipeline.run import run_in_flight
from ray_dissect.pipeline.shard_pipeline import STEPS, ShardResult
from ray_dissect.pipeline.stages import activations
from ray_dissect.records.schema import Provenance
from ray_dissect.spec import JobSpec, parse_spec
from ray_dissect.storage import arrays, location

PLANTED = str(Path(__file__).parents[2] / "fixtures" / "planted.py")
LAYERS = ["_blocks.10", "_bn1"]
N_IMAGES = 44  # shards of 16: the last holds a full batch of 8 and a partial one of 4
BAD = (5, 21)  # mid-batch in shard 0 and shard 1


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """44 generated 64-px images; images 5 and 21 are an empty and a truncated file."""
    root = generate_dataset(tmp_path_factory.mktemp("ds") / "ds", N_IMAGES, seed=1,
                            image_size=64, mask_size=32)
    names = [line.split(",")[0] for line in (root / "index.csv").read_text().splitlines()[1:]]
    (root / "images" / names[BAD[0]]).write_bytes(b"")
    path = root / "images" / names[BAD[1]]
    path.write_bytes(path.read_bytes()[:150])
    return root


def _spec(root: Path, decode_threads: int = 1, factory: str = "ray_dissect.zoo:efficientnet_lite0",
          layers: list[str] = LAYERS, **model: Any) -> JobSpec:
    return parse_spec({
        "model": {"factory": factory, "preprocess": {"size": 64}, **model},
        "layers": layers, "dataset": {"root": str(root)},
        "resources": {"batch_size": 8, "shard_images": 16, "decode_threads": decode_threads,
                      "queue_batches": 3}})


def _extract(spec: JobSpec, out: Path, work: Callable[..., ShardResult], inflight: int,
             env: WorkEnv | None = None) -> list[ShardResult]:
    """Create the activation arrays in ``out`` and run ``work`` on every shard."""
    spec, dataset, shapes = preflight(spec)
    job, _ = prepare_job_dir(spec, location(out))
    provenance = Provenance(job=spec.name, spec_hash=spec.spec_hash(), package_version="test")
    plan = activations.plan(JobContext(spec, job, dataset, shapes, provenance))
    env = env or WorkEnv(spec, job)
    results: dict[int, ShardResult] = {}
    try:
        run_in_flight(lambda call: work(env, *call), plan.calls, inflight,
                      results.__setitem__)
    finally:
        env.close()
    return [results[i] for i in range(len(plan.calls))]


def _store_bytes(out: Path) -> dict[str, bytes]:
    """Every file of the activations store (data shards, done markers, metadata) by path."""
    store = out / "activations.zarr"
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def serial(dataset: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[dict[str, bytes], list[ShardResult], Path]:
    """The serial reference loop's store, results and directory."""
    out = tmp_path_factory.mktemp("serial") / "out"
    results = _extract(_spec(dataset), out, activations.serial_extraction_work, 1)
    return _store_bytes(out), results, out


@pytest.mark.parametrize("threads", [1, 3])
def test_pipeline_writes_the_serial_bytes(dataset: Path, tmp_path: Path, threads: int,
                                          serial: tuple) -> None:
    """Two shards in flight, 1 or 3 decode threads: every Zarr file equals the serial one,
    and the bad images are reported identically."""
    reference, ref_results, _ = serial
    results = _extract(_spec(dataset, threads), tmp_path / "out",
                       activations.extraction_work, 2)
    written = _store_bytes(tmp_path / "out")
    assert sorted(written) == sorted(reference)
    assert [k for k in written if written[k] != reference[k]] == []
    assert [r.bad for r in results] == [r.bad for r in ref_results]
    assert all(set(r.breakdown) == set(STEPS) for r in results)


def test_serial_reference_zeros_and_reports_bad_images(serial: tuple) -> None:
    """Images 5 and 21 are reported as unreadable, their rows are zero, the others not."""
    _, results, out = serial
    bad = [index for r in results for index, _ in r.bad]
    assert bad == list(BAD)
    assert all("unreadable image" in reason for r in results for _, reason in r.bad)
    acts = np.asarray(arrays.open_array(out / "activations.zarr", "_bn1")[:])
    assert acts.shape[0] == N_IMAGES
    assert np.all(acts[list(BAD)] == 0.0)
    assert np.all(np.abs(acts).reshape(N_IMAGES, -1).max(axis=1)[[0, 1, 20, 43]] > 0)


def test_pipeline_with_bf16_and_channels_last_matches_serial(dataset: Path,
                                                             tmp_path: Path) -> None:
    """The opt-in numerics go through the same code on both paths: identical bytes."""
    spec = _spec(dataset, 2, bf16=True, channels_last=True)
    _extract(spec, tmp_path / "serial", activations.serial_extraction_work, 1)
    _extract(spec, tmp_path / "piped", activations.extraction_work, 2)
    assert _store_bytes(tmp_path / "piped") == _store_bytes(tmp_path / "serial")


TWICE = """
from torch import nn


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool2d(2)

    def forward(self, x):
        y = self.pool(x)
        return self.pool(y) if x.shape[0] > 1 else y  # shared only in batches (not the probe)


def build():
    return Twice()
"""


def test_forward_error_fails_every_shard(dataset: Path, tmp_path: Path) -> None:
    """A module that runs twice per forward of a batch (once in preflight's 1-image probe):
    both in-flight shards and later ones raise the ModelError, and the threads stop."""
    (tmp_path / "twice.py").write_text(TWICE)
    spec = _spec(dataset, 2, factory=f"{tmp_path / 'twice.py'}:build", layers=["pool"])
    with pytest.raises(ModelError, match="ran 2 times"):
        _extract(spec, tmp_path / "out", activations.extraction_work, 2)
    env = WorkEnv(spec, JobDir(location(tmp_path / "out")))
    pipe = env.shard_pipeline()
    for shard in (0, 1):
        with pytest.raises(ModelError, match="ran 2 times"):
            pipe.run(shard)
    env.close()
    assert not any(t.is_alive() for t in pipe._threads)


class _Unreadable:
    """A dataset whose image 3 fails with an error that is not a bad sample."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def read_image(self, index: int) -> np.ndarray:
        if index == 3:
            raise RuntimeError("disk on fire")
        return self.inner.read_image(index)


def test_decode_error_surfaces(dataset: Path, tmp_path: Path) -> None:
    """An unexpected decode error is raised by the shard's call, not swallowed."""
    spec = _spec(dataset, 2, factory=f"{PLANTED}:color_detectors", layers=["pool"])
    _, dataset_, _ = preflight(spec)
    env = WorkEnv(spec, JobDir(location(tmp_path / "out")))
    env.dataset = _Unreadable(dataset_)  # type: ignore[misc]
    with pytest.raises(RuntimeError, match="disk on fire"):
        _extract(spec, tmp_path / "out", activations.extraction_work, 2, env)


def test_next_shard_runs_while_the_previous_is_written(dataset: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Shard 0's write waits until the second batch of shard 1 is in the model (its first is
    then copied into shard 1's own buffer): this finishes only if the device stage overlaps
    the writer (event order, no clock)."""
    spec = _spec(dataset, 2, factory=f"{PLANTED}:color_detectors", layers=["pool"])
    env = WorkEnv(spec, JobDir(location(tmp_path / "out")))
    forwards, shard1_forward = [0], threading.Event()
    inner_forward = env.extractor.forward

    def forward(batch: Any) -> dict[str, Any]:
        forwards[0] += 1
        if forwards[0] == 4:  # batches of 8 and shards of 16: shard 1's second batch
            shard1_forward.set()
        return inner_forward(batch)

    write_shard = arrays.write_shard

    def write(path: Any, name: str, shard: int, n: int, data: np.ndarray) -> None:
        if shard == 0 and not shard1_forward.wait(timeout=60):
            raise AssertionError("shard 1 never reached the model while shard 0 was written")
        write_shard(path, name, shard, n, data)

    monkeypatch.setattr(env.extractor, "forward", forward)
    monkeypatch.setattr(shard_pipeline.arrays, "write_shard", write)
    results = _extract(spec, tmp_path / "out", activations.extraction_work, 2, env)
    assert len(results) == 3 and forwards[0] == 6


def _run_pipeline(spec: JobSpec, out: Path, **options: Any) -> list[ShardResult]:
    """Every shard through a pipeline built with ``options``, two in flight."""
    env = WorkEnv(spec, JobDir(location(out)))
    pipe = shard_pipeline.ShardPipeline(env, **options)
    try:
        return _extract(spec, out, lambda _env, shard: pipe.run(shard), 2, env)
    finally:
        pipe.close()


def test_gpu_decode_is_a_no_op_on_cpu(dataset: Path, tmp_path: Path, serial: tuple) -> None:
    """With gpu_decode on a CPU replica images are decoded as always: the serial bytes."""
    spec = _spec(dataset, 2)
    gpu = parse_spec({**spec.model_dump(mode="json"),
                      "resources": {**spec.resources.model_dump(mode="json"),
                                    "gpu_decode": True}})
    _run_pipeline(gpu, tmp_path / "out")
    assert _store_bytes(tmp_path / "out") == serial[0]


def test_device_decoding_reports_bad_images_as_the_cpu_path(
        dataset: Path, tmp_path: Path, serial: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding on the device (torchvision here), every batch: the same bad images, reasons
    and zero rows, and activations close to the PIL path's."""
    _, ref_results, ref_out = serial
    calls = []

    def counted(items: list, *args: Any) -> Any:
        calls.append(sum(isinstance(item, bytes) for item in items))
        return decode_on_device(items, *args)

    monkeypatch.setattr(shard_pipeline, "decode_on_device", counted)
    results = _run_pipeline(_spec(dataset, 2), tmp_path / "out", decode_on_device=True)
    assert len(calls) == 6 and sum(calls) == N_IMAGES - 1  # the empty file never gets there
    assert [r.bad for r in results] == [r.bad for r in ref_results]
    for layer in LAYERS:
        got = np.asarray(arrays.open_array(tmp_path / "out" / "activations.zarr", layer)[:])
        ref = np.asarray(arrays.open_array(ref_out / "activations.zarr", layer)[:])
        assert np.all(got[list(BAD)] == 0.0)
        np.testing.assert_allclose(got, ref, atol=0.05 * np.abs(ref).max())
