"""Adding a stage is one module plus one line in the table: a toy stage, declared here alone
(a test-only spec section, its work function, its ``STAGE``) and registered for the test,
runs end to end in-process, shows in ``status``, is checked before any work, and
``--force`` redoes it alone when its section changes. No engine module knows it.

The toy stage, ``toy``: per job layer (one CPU work unit each), every unit's spatial maximum
averaged over the valid images, times ``toy.scale``; written to ``toy/<layer>.npz``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pytest
from fixtures.photos import BAD, photo_folder, photo_job

from ray_dissect import storage
from ray_dissect.errors import SpecError
from ray_dissect.job.layout import JobDir, layer_key
from ray_dissect.pipeline.context import JobContext, Plan, WorkEnv
from ray_dissect.pipeline.run import run_stages
from ray_dissect.pipeline.stage import ModelInfo, Shapes, Stage
from ray_dissect.pipeline.status import render_status
from ray_dissect.pipeline.table import STAGE_NAMES, registered, stage_hashes, stage_names
from ray_dissect.spec import JobSpec, parse_spec
from ray_dissect.spec.base import ADDED_LATER, Frozen
from ray_dissect.storage import AnyPath, arrays


class ToySpec(Frozen):
    """The toy stage's spec section."""

    layer: str
    scale: float = 1.0


class ToyJobSpec(JobSpec):
    """A job spec with the test-only ``toy`` section (absent: the spec hashes as before)."""

    toy: Annotated[ToySpec | None, ADDED_LATER] = None


def _toy(spec: JobSpec) -> ToySpec | None:
    return getattr(spec, "toy", None)


def _path(job: JobDir, layer: str) -> AnyPath:
    return job.stage_dir("toy") / f"{layer_key(layer)}.npz"


def toy_work(env: WorkEnv, valid: np.ndarray, scale: float, layer: str) -> np.ndarray:
    """(units,) float64: mean over the valid images of each unit's spatial maximum, scaled."""
    acts = np.asarray(arrays.open_array(env.job.activations_zarr, layer_key(layer))[:])
    return acts[valid].max(axis=(2, 3)).astype(np.float64).mean(axis=0) * scale


def plan(ctx: JobContext) -> Plan | None:
    toy = _toy(ctx.spec)
    if toy is None:
        return None
    todo = [toy.layer] if not _path(ctx.job, toy.layer).exists() else []
    return Plan(1, 1 - len(todo), [(layer,) for layer in todo],
                shared=(ctx.valid_images, toy.scale))


def collect(ctx: JobContext, call: tuple[str], result: np.ndarray) -> int:
    path = _path(ctx.job, call[0])
    storage.makedirs(path.parent)  # a stage creates its own directory
    storage.save_npz(path, maxima=result)
    return 1


def finish(ctx: JobContext) -> int:
    return 0


def check(spec: JobSpec, info: ModelInfo) -> Shapes:
    toy = _toy(spec)
    if toy is not None and toy.layer not in info.shapes:
        raise SpecError(f"job spec field 'toy.layer': {toy.layer!r} is not among the job's "
                        "layers", expected=f"one of {list(spec.layers)}")
    return {}


def covers(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    return {"toy": data.get("toy")}


STAGE = Stage(name="toy", runs_on="tasks", work=toy_work, plan=plan, collect=collect,
              finish=finish, outputs=lambda job: (job.stage_dir("toy"),), covers=covers,
              owns=("toy",), check=check)


def _spec(root: Path, **toy: Any) -> ToyJobSpec:
    data = parse_spec(photo_job(root)).model_dump(mode="json")
    return ToyJobSpec.model_validate({**data, "toy": toy or None})


def _computed(out: Path) -> dict[str, int]:
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    return {name: state["computed"] for name, state in stages.items()}


def _reference(out: Path, scale: float) -> np.ndarray:
    """The toy's numbers straight from the stored activations, the bad photos left out."""
    acts = np.asarray(arrays.open_array(JobDir(out).activations_zarr, "features")[:])
    images = sorted(p.relative_to(out.parent / "photos").as_posix()
                    for p in (out.parent / "photos").rglob("*.png"))
    good = [i for i, name in enumerate(images) if name not in BAD]
    return np.asarray(acts[good].max(axis=(2, 3)), np.float64).mean(axis=0) * scale


@pytest.fixture
def toy_job(tmp_path: Path) -> Path:
    photo_folder(tmp_path / "photos")
    with registered(STAGE):
        run_stages(_spec(tmp_path / "photos", layer="features", scale=2.0), tmp_path / "out")
    return tmp_path / "out"


def test_a_registered_stage_runs_end_to_end_and_shows_in_status(toy_job: Path) -> None:
    """The toy runs after the table's stages; its numbers are the reference's; ``status``
    lists it as done."""
    got = storage.load_npz(toy_job / "toy" / "features.npz")["maxima"]
    expected = _reference(toy_job, 2.0)
    assert got.shape == (8,) and np.abs(expected).sum() > 0
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    with registered(STAGE):
        row = next(line for line in render_status(toy_job).splitlines()
                   if line.startswith("toy "))
    assert row.split()[1:3] == ["done", "1/1"]
    assert list(_computed(toy_job))[-1] == "toy" and _computed(toy_job)["toy"] == 1


def test_force_redoes_only_the_toy_when_its_section_changes(toy_job: Path) -> None:
    """Another scale: refused without --force (naming the toy as the only changed stage);
    with it, the toy alone is recomputed, every other stage reused."""
    spec = _spec(toy_job.parent / "photos", layer="features", scale=-3.0)
    with registered(STAGE):
        with pytest.raises(SpecError, match=r"changed stages: toy\. "):
            run_stages(spec, toy_job)
        run_stages(spec, toy_job, force=True)
    assert _computed(toy_job) == {**dict.fromkeys(STAGE_NAMES, 0), "toy": 1}
    got = storage.load_npz(toy_job / "toy" / "features.npz")["maxima"]
    np.testing.assert_allclose(got, _reference(toy_job, -3.0), rtol=1e-12)


def test_the_toy_section_is_owned_by_the_toy_alone(tmp_path: Path) -> None:
    """The section changes the toy's hash only; without it every hash is the table's."""
    base = _spec(tmp_path, layer="features", scale=1.0)
    other = _spec(tmp_path, layer="features", scale=5.0)
    plain = stage_hashes(parse_spec(photo_job(tmp_path)))
    with registered(STAGE):
        a, b = stage_hashes(base), stage_hashes(other)
    assert {name for name in a if a[name] != b[name]} == {"toy"}
    assert {name: a[name] for name in STAGE_NAMES} == plain


def test_the_stages_preflight_check_refuses_before_any_work(tmp_path: Path) -> None:
    """A toy layer outside the job's layers is refused before the job directory exists."""
    photo_folder(tmp_path / "photos")
    with registered(STAGE), pytest.raises(SpecError, match=r"'toy.layer': 'head'"):
        run_stages(_spec(tmp_path / "photos", layer="head"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_registration_ends_with_the_block_and_refuses_a_taken_name() -> None:
    """Outside ``registered`` the table is back to its own stages; a name already in the
    table is refused."""
    with registered(STAGE):
        assert stage_names() == (*STAGE_NAMES, "toy")
    assert stage_names() == STAGE_NAMES
    clash = Stage(name="scoring", runs_on="tasks", work=toy_work, plan=plan, collect=collect,
                  finish=finish, outputs=lambda job: (), covers=None)
    with pytest.raises(ValueError, match="scoring"), registered(clash):
        pass
