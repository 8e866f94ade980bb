"""Manifest, job-directory safety and status."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from fixtures.s3 import LocalS3

from ray_dissect.errors import StoreError
from ray_dissect.job.layout import JobDir, layer_key
from ray_dissect.job.manifest import write_manifest
from ray_dissect.pipeline.prepare import prepare_job_dir
from ray_dissect.pipeline.status import render_status
from ray_dissect.pipeline.table import job_manifest, stage_hashes, stale_stages
from ray_dissect.spec import parse_spec
from ray_dissect.storage import arrays, location

BASE = {"model": {"name": "resnet18"}, "layers": ["layer4"], "dataset": {"root": "/data/x"}}


def _spec(**method: object):
    return parse_spec({**BASE, "method": {"kind": "compositional", **method}})


def test_stage_hashes_change_only_downstream() -> None:
    """beam changes scoring (and masking) and the studies that search (the sweep, the
    heuristics study) only; quantile changes thresholds on; top-image counts change only
    their stage; actors change nothing."""
    a, b = stage_hashes(_spec()), stage_hashes(_spec(beam=3))

    def changed(other: dict[str, str]) -> set[str]:
        return {s for s in a if a[s] != other[s]}

    assert changed(b) == {"scoring", "masking", "threshold_sweep", "heuristics"}
    assert changed(stage_hashes(_spec(quantile=0.01))) == {
        "thresholds", "scoring", "masking", "top_images", "receptive_fields", "unit_attribution",
        "threshold_sweep", "ranges_importance", "unit_ablation", "concept_blackout_iou",
        "concept_blackout", "heuristics"}
    e = stage_hashes(parse_spec({**BASE, "method": {"kind": "compositional"},
                                 "top_images": {"k": 4}}))
    assert changed(e) == {"top_images"}
    f = stage_hashes(parse_spec({**BASE, "method": {"kind": "compositional"},
                                 "analyses": {"attribution": {"methods": ["saliency"]}}}))
    assert changed(f) == {"attribution"}
    d = stage_hashes(parse_spec({**BASE, "method": {"kind": "compositional"},
                                 "resources": {"actors": 9}}))
    assert d == a
    assert stale_stages(job_manifest(_spec(), "0"), _spec(beam=3)) == [
        "scoring", "masking", "threshold_sweep", "heuristics"]


def test_layer_names_cannot_escape_the_job_directory(tmp_path: Path) -> None:
    """Slashes and dot-only names are encoded, so every path stays inside DIR."""
    job = JobDir(tmp_path)
    for layer in ("../../etc/passwd", "..", "/abs", "a/../../b", "layer4.1.conv2"):
        for path in (job.thresholds(layer), job.records(layer), job.record_part(layer, (0, 1))):
            assert tmp_path.resolve() in path.resolve().parents, (layer, path)
    assert layer_key("layer4.1.conv2") == "layer4.1.conv2"


def test_unwritable_output_is_a_store_error(tmp_path: Path) -> None:
    """An --out below a file cannot be created: one-line StoreError with a hint."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot write the output directory") as err:
        prepare_job_dir(_spec(), tmp_path / "file" / "out")
    assert err.value.exit_code == 5 and "\n" not in str(err.value)


def test_missing_bucket_is_a_store_error(local_s3: LocalS3) -> None:
    """An --out in a bucket that does not exist: one-line StoreError, nothing written."""
    with pytest.raises(StoreError, match="cannot write the output directory "
                                         "'s3://no-such-bucket/run'") as err:
        prepare_job_dir(_spec(), location("s3://no-such-bucket/run"))
    assert err.value.exit_code == 5 and "\n" not in str(err.value)
    assert "existing bucket" in str(err.value)


def test_job_directory_on_s3_is_prepared_and_guarded(local_s3: LocalS3) -> None:
    """A URI --out gets spec.json and manifest.json; another spec there is refused."""
    from ray_dissect.errors import SpecError
    from ray_dissect.storage import read_text, touch

    root = location(local_s3.bucket("prep")) / "run"
    prepare_job_dir(_spec(), root)
    assert '"beam": 5' in read_text(root / "spec.json")
    assert render_status(root).startswith("job s3://prep/run  spec ")
    with pytest.raises(SpecError, match="changed stages: scoring, masking"):
        prepare_job_dir(_spec(beam=3), root)
    part, earlier = root / "parts" / "x.done", root / "thresholds" / "l.npz"
    touch(part), touch(earlier)
    prepare_job_dir(_spec(beam=3), root, force=True)  # only the search's outputs go
    assert not part.exists() and earlier.exists()


def test_disk_full_during_a_write_is_a_store_error(tmp_path: Path, monkeypatch) -> None:
    """ENOSPC while writing a shard is reported as a resumable StoreError."""
    import numpy as np

    arrays.create_image_array(tmp_path / "a.zarr", "x", (4, 2), "float32", 2, 2)
    import zarr

    def full(*_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zarr.Array, "__setitem__", full)
    with pytest.raises(StoreError, match=r"No space left.*resumed"):
        arrays.write_shard(tmp_path / "a.zarr", "x", 0, 2, np.zeros((2, 2), np.float32))
    assert not arrays.done_shards(tmp_path / "a.zarr", "x").any()


def test_status_renders_progress(tmp_path: Path) -> None:
    """status shows every stage with done/total, and refuses a non-job directory."""
    manifest = job_manifest(_spec(), "0.1.0")
    manifest.stages["activations"].total, manifest.stages["activations"].done = 8, 3
    write_manifest(tmp_path, manifest)
    text = render_status(tmp_path)
    assert "activations" in text and "3/8" in text and "scoring" in text
    with pytest.raises(StoreError, match="no manifest"):
        render_status(tmp_path / "nope")
