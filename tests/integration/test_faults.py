"""Killed workers and corrupt samples: the job completes with the right results."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
from fixtures.procs import manifest, wait_for, worker_pids
from PIL import Image

from ray_dissect.records.io import read_unit_records
from ray_dissect.runtime.driver import run_job
from ray_dissect.spec import parse_spec

PLANTED = str(Path(__file__).parents[1] / "fixtures" / "planted.py")
RAW = {"mean": [0, 0, 0], "std": [1, 1, 1]}
pytestmark = pytest.mark.usefixtures("ray_cluster")


def _spec(root: Path, factory: str = "slow_mixed_units", layer: str = "inner.pool",
          actors: int = 2) -> object:
    return parse_spec({
        "model": {"factory": f"{PLANTED}:{factory}", "preprocess": {"size": 64, **RAW}},
        "layers": [layer], "dataset": {"root": str(root)},
        "method": {"kind": "compositional", "length": 2, "quantile": 0.05},
        "resources": {"actors": actors, "batch_size": 8, "shard_images": 16,
                      "units_per_task": 1}})


def _records(out: Path, layer: str) -> list:
    """Records without provenance, and top images named by path only (row indices shift
    when bad rows are inserted into the index)."""
    return [_by_path(r.model_dump(exclude={"provenance"}))
            for r in read_unit_records(out / "records" / f"{layer}.jsonl")]


def _by_path(value: object) -> object:
    if isinstance(value, dict):
        return {k: _by_path(v) for k, v in value.items() if k != "index"}
    if isinstance(value, list):
        return [_by_path(v) for v in value]
    return value


def _run_in_thread(spec: object, out: Path) -> tuple[threading.Thread, list]:
    errors: list = []

    def target() -> None:
        try:
            run_job(spec, out)  # type: ignore[arg-type]
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, errors


def _stage(out: Path, name: str) -> dict:
    m = manifest(out)
    return m["stages"][name] if m else {"state": "pending", "done": 0}


def _timings(out: Path) -> dict[str, float]:
    m = manifest(out)
    assert m is not None
    return m["runs"][-1]["timings"]


@pytest.fixture(scope="module")
def clean_run(generated: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of the faults' job (the records every faulty run must give)."""
    clean = tmp_path_factory.mktemp("faults") / "clean"
    run_job(_spec(generated), clean)  # type: ignore[arg-type]
    return clean


def test_killed_actor_in_extraction_and_in_search(generated: Path, clean_run: Path,
                                                  tmp_path: Path) -> None:
    """SIGKILL a model actor during extraction, then one running search work units (2 actors
    hold both CPUs, so the CPU stages run on them): same records as a clean run."""
    out = tmp_path / "faulty"
    thread, errors = _run_in_thread(_spec(generated), out)
    wait_for(lambda: _stage(out, "activations")["state"] == "running"
             and bool(worker_pids("ray::ModelActor.run")), 120, what="a busy actor")
    os.kill(worker_pids("ray::ModelActor.run")[0], signal.SIGKILL)
    wait_for(lambda: _stage(out, "scoring")["state"] == "running"
             and bool(worker_pids("ray::ModelActor.run")), 240, what="an actor searching")
    os.kill(worker_pids("ray::ModelActor.run")[0], signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive() and not errors, errors
    assert "scoring.task_work" not in _timings(out)  # no scoring task ran
    assert _records(out, "inner.pool") == _records(clean_run, "inner.pool")


def test_killed_search_task_worker(generated: Path, clean_run: Path, tmp_path: Path) -> None:
    """With one actor the CPU stages run as tasks on both CPUs: SIGKILL a search task's
    worker; Ray retries it and the records equal the clean 2-actor run's."""
    out = tmp_path / "faulty"
    thread, errors = _run_in_thread(_spec(generated, actors=1), out)
    wait_for(lambda: bool(worker_pids("ray::scoring_task")), 360, what="a search task")
    os.kill(worker_pids("ray::scoring_task")[0], signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive() and not errors, errors
    assert "scoring.task_work" in _timings(out)
    assert _records(out, "inner.pool") == _records(clean_run, "inner.pool")


def _salt(clean: Path, salted: Path) -> dict[str, str]:
    """Copy a dataset and add corrupt rows of every kind; return image -> expected reason."""
    shutil.copytree(clean, salted)
    index = (salted / "index.csv").read_text().splitlines()
    header, rows = index[0], index[1:]
    template = rows[1].split(",")  # an object image row with colour/object layers
    images = salted / "images" / "bad"
    images.mkdir()
    good_jpg = salted / "images" / template[0]
    bad: dict[str, str] = {}

    def add(name: str, reason: str, color: str | None = None, at: int | None = None) -> None:
        row = list(template)
        row[0] = f"bad/{name}"
        if color is not None:
            row[6] = color
        rows.insert(len(rows) if at is None else at, ",".join(row))
        bad[f"bad/{name}"] = reason

    (images / "zero.jpg").write_bytes(b"")
    add("zero.jpg", "unreadable image", at=5)
    (images / "trunc.jpg").write_bytes(good_jpg.read_bytes()[:200])
    add("trunc.jpg", "unreadable image", at=20)
    add("missing.jpg", "unreadable image")  # index row naming a missing file
    shutil.copy(good_jpg, images / "nomask.jpg")
    add("nomask.jpg", "unreadable mask", color="bad/nomask_color.png", at=40)
    shutil.copy(good_jpg, images / "small.jpg")
    Image.fromarray(np.zeros((7, 9, 3), np.uint8)).save(images / "small_color.png")
    add("small.jpg", "expected 32x32", color="bad/small_color.png")
    (salted / "index.csv").write_text("\n".join([header, *rows]) + "\n")
    return bad


def test_corrupt_samples_are_recorded_and_skipped(generated: Path, tmp_path: Path) -> None:
    """Every bad sample is listed with its reason; good samples score as without them."""
    salted = tmp_path / "salted"
    bad = _salt(generated, salted)
    spec = lambda root: _spec(root, "color_detectors", "pool")  # noqa: E731
    run_job(spec(generated), tmp_path / "clean")  # type: ignore[arg-type]
    summary = run_job(spec(salted), tmp_path / "out")  # type: ignore[arg-type]
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").open()]
    listed = {e["image"]: e["reason"] for e in errors}
    assert set(listed) == set(bad)
    for image, reason in bad.items():
        assert reason in listed[image], (image, listed[image])
    assert summary.bad_samples == len(bad) and summary.valid_images == summary.images - len(bad)
    assert _records(tmp_path / "out", "pool") == _records(tmp_path / "clean", "pool")
