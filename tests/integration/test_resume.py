"""A driver SIGKILLed at several points resumes to the same records, redoing little."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from fixtures.procs import kill_group, manifest, start_cli, wait_for

from ray_dissect.runtime.driver import run_job
from ray_dissect.spec import parse_spec

PLANTED = str(Path(__file__).parents[1] / "fixtures" / "planted.py")
pytestmark = pytest.mark.usefixtures("ray_cluster")


def _spec_dict(root: Path) -> dict:
    return {
        "model": {"factory": f"{PLANTED}:slow_mixed_units",
                  "preprocess": {"size": 64, "mean": [0, 0, 0], "std": [1, 1, 1]}},
        "layers": ["inner.pool"], "dataset": {"root": str(root)},
        "method": {"kind": "compositional", "length": 2, "quantile": 0.05},
        "resources": {"actors": 2, "batch_size": 8, "shard_images": 16, "units_per_task": 1}}


def _gcs_address() -> str:
    import ray

    return ray.get_runtime_context().gcs_address


def _stage(out: Path, name: str) -> dict:
    m = manifest(out)
    return m["stages"][name] if m else {"done": 0, "total": 0, "state": "pending"}


KILL_POINTS = {
    "during extraction": ("activations", lambda s: s["state"] == "running" and s["done"] >= 1),
    "between stages": ("thresholds", lambda s: s["state"] == "done"),
    "during the search": ("scoring", lambda s: s["state"] == "running" and s["done"] >= 2),
}


@pytest.fixture(scope="module")
def reference(generated: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of the same spec."""
    out = tmp_path_factory.mktemp("ref") / "out"
    run_job(parse_spec(_spec_dict(generated)), out)
    return out


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_driver_then_resume(point: str, generated: Path, reference: Path,
                                 tmp_path: Path) -> None:
    """Records after kill + resume equal the uninterrupted run; only in-flight work is redone."""
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(_spec_dict(generated)))
    out = tmp_path / "out"
    stage, ready = KILL_POINTS[point]
    proc = start_cli("run", str(job), "--out", str(out), "--address", _gcs_address())
    try:
        wait_for(lambda: ready(_stage(out, stage)), 240, proc, point)
        seen = {name: s["done"] for name, s in manifest(out)["stages"].items()}
    finally:
        kill_group(proc)
    before = manifest(out)
    assert before["runs"][-1]["status"] == "running"  # the killed run never finished
    resumed = start_cli("resume", str(out), "--address", _gcs_address())
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read().decode()[-2000:]
    after = manifest(out)
    assert after["runs"][-1]["status"] == "finished" and len(after["runs"]) == 2
    for name, state in after["stages"].items():
        assert state["done"] == state["total"]
        # at most the units not yet done when we looked (those in flight, or later ones)
        assert state["computed"] <= state["total"] - seen[name], (name, state, seen)
    for earlier in ("concepts", "activations", "thresholds", "scoring"):
        if earlier == stage:
            break
        assert after["stages"][earlier]["computed"] == 0, earlier  # finished stages reused
    for path in sorted((reference / "records").glob("*.jsonl")):
        assert (out / "records" / path.name).read_bytes() == path.read_bytes()
    ref = json.loads((reference / "summary.json").read_text())
    got = json.loads((out / "summary.json").read_text())
    ref.pop("stage_seconds"), got.pop("stage_seconds")
    assert got == ref


def test_changed_late_parameter_reuses_earlier_stages(generated: Path, reference: Path,
                                                      tmp_path: Path) -> None:
    """Changing only `beam` needs --force and then redoes the search alone."""
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    changed = _spec_dict(generated)
    changed["method"]["beam"] = 3
    from ray_dissect.errors import SpecError

    with pytest.raises(SpecError, match="changed stages: scoring"):
        run_job(parse_spec(changed), out)
    run_job(parse_spec(changed), out, force=True)
    stages = manifest(out)["stages"]
    assert [stages[s]["computed"] for s in ("concepts", "activations", "thresholds")] == [0, 0, 0]
    assert stages["scoring"]["computed"] == stages["scoring"]["total"] > 0
