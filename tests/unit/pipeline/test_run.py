"""The whole stage table run in-process (no Ray): hand-computed IoUs, resume, reuse."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fixtures.hand import HAND_PLAIN

from ray_dissect.errors import SpecError
from ray_dissect.job.layout import JobDir, done_marker
from ray_dissect.pipeline.run import run_stages
from ray_dissect.pipeline.table import STAGE_NAMES
from ray_dissect.records.io import read_unit_records
from ray_dissect.spec import JobSpec, parse_spec

PLANTED = str(Path(__file__).parents[2] / "fixtures" / "planted.py")
RAW = {"mean": [0, 0, 0], "std": [1, 1, 1]}


def _spec(root: Path, **method: object) -> JobSpec:
    return parse_spec({
        "model": {"factory": f"{PLANTED}:red_channel", "preprocess": {"size": 8, **RAW}},
        "layers": ["pool"], "dataset": {"root": str(root)},
        "method": {"quantile": 0.1, "top_k": 8, **method},
        "resources": {"batch_size": 2, "shard_images": 2, "units_per_task": 1}})


def _computed(out: Path) -> dict[str, int]:
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    return {name: state["computed"] for name, state in stages.items()}


def test_in_process_run_gives_the_hand_computed_ious(four_images: Path, tmp_path: Path) -> None:
    """Every stage runs in this process; the record's IoUs are the hand-computed ones."""
    summary = run_stages(_spec(four_images), tmp_path / "out")
    (rec,) = read_unit_records(tmp_path / "out" / "records" / "pool.jsonl")
    assert rec.label is not None and rec.label.name == "red" and rec.mask_pixels == 7
    scores = {c.name: c.iou for c in rec.top}
    for name, value in HAND_PLAIN.items():
        assert scores.get(name, 0.0) == pytest.approx(float(value), abs=1e-9), name
    assert summary.images == 4 and summary.layers[0].interpretable == 1
    assert list(_computed(tmp_path / "out")) == list(STAGE_NAMES)


def test_rerun_reuses_everything_and_resume_redoes_one_block(four_images: Path,
                                                             tmp_path: Path) -> None:
    """A second run computes nothing; a lost done marker redoes exactly that work unit,
    and the records stay byte-identical."""
    out, spec = tmp_path / "out", _spec(four_images)
    run_stages(spec, out)
    first = (out / "records" / "pool.jsonl").read_bytes()
    run_stages(spec, out)
    assert set(_computed(out).values()) == {0}
    done_marker(JobDir(out).record_part("pool", (0, 1))).unlink()
    run_stages(spec, out)
    assert _computed(out) == {**{name: 0 for name in STAGE_NAMES}, "scoring": 1}
    assert (out / "records" / "pool.jsonl").read_bytes() == first


def test_compositional_job_runs_in_process(four_images: Path, tmp_path: Path) -> None:
    """A compositional job explains the unit with a formula whose IoU is at least the
    best single concept's."""
    run_stages(_spec(four_images, kind="compositional", length=2, beam=3), tmp_path / "out")
    (rec,) = read_unit_records(tmp_path / "out" / "records" / "pool.jsonl")
    (exp,) = rec.explanations
    assert exp.text is not None and exp.iou >= float(HAND_PLAIN["red"]) - 1e-12


def test_layer_patterns_are_expanded_before_any_work(four_images: Path, tmp_path: Path) -> None:
    """A 'type:' pattern runs as the module names it selects, which spec.json stores."""
    spec = _spec(four_images).model_copy(update={"layers": ("type:AvgPool2d",)})
    run_stages(spec, tmp_path / "out")
    stored = JobSpec.model_validate_json((tmp_path / "out" / "spec.json").read_text())
    assert stored.layers == ("pool",)
    assert (tmp_path / "out" / "records" / "pool.jsonl").exists()


def test_a_shared_module_is_refused_before_any_work(four_images: Path, tmp_path: Path) -> None:
    """A module called twice per forward is refused with a one-line error, nothing written."""
    spec = parse_spec({"model": {"name": "resnet18", "preprocess": {"size": 32}},
                       "layers": ["layer1.0.relu"], "dataset": {"root": str(four_images)}})
    with pytest.raises(SpecError, match="runs more than once") as err:
        run_stages(spec, tmp_path / "out")
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("bad", "opened"), [
    ({"layers": ["nope"]}, []),              # model checked before the session (Ray)
    ({"method": {"quantile": 0.2}}, []),     # another job in the directory: refused
    ({}, ["open", "closed"]),                # a good job opens and closes it once
])
def test_session_opens_after_the_checks(four_images: Path, tmp_path: Path, bad: dict,
                                        opened: list[str]) -> None:
    """The session (Ray) opens only once the model and the job directory pass their checks:
    a layer typo is refused before any cluster starts."""
    run_stages(_spec(four_images), tmp_path / "out")
    events: list[str] = []

    @contextmanager
    def session() -> Iterator[None]:
        events.append("open")
        try:
            yield
        finally:
            events.append("closed")

    data = json.loads(_spec(four_images).model_dump_json()) | bad
    target = tmp_path / ("out" if "method" in bad else "other")

    def run() -> None:
        run_stages(JobSpec.model_validate(data), target, session=session)

    if bad:
        with pytest.raises(SpecError):
            run()
    else:
        run()
    assert events == opened
