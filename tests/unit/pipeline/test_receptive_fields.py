"""The receptive_fields stage in whole in-process jobs, against brute force and direct occlusion."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.photos import photo_folder
from fixtures.planted import tiny_classifier
from PIL import Image

from ray_dissect import storage
from ray_dissect.errors import SpecError
from ray_dissect.job.layout import JobDir, done_marker
from ray_dissect.models.extract import preprocess
from ray_dissect.pipeline.run import run_stages
from ray_dissect.records.io import read_unit_records
from ray_dissect.spec import JobSpec, PreprocessSpec, parse_spec
from ray_dissect.storage import arrays
from ray_dissect.visualize.receptive_fields import (
    NoiseFill,
    OcclusionGrid,
    consolidate,
    discrepancy_maps,
)

PLANTED = str(Path(__file__).parents[2] / "fixtures" / "planted.py")
RAW = {"mean": [0, 0, 0], "std": [1, 1, 1]}
SIDE, OCC, STRIDE, HALF = 40, 11, 3, 4  # input side, occluder, stride, half the 9 x 9 footprint
PEAKS = [(18, 18), (19, 20), (20, 19)]  # three phases of the window grid


def _tent(q: tuple[int, int]) -> np.ndarray:
    """(SIDE, SIDE) uint8 separable tent of radius 8 at q (the 9 x 9 sum peaks only there)."""
    d = np.arange(SIDE)
    ty = np.clip(1 - np.abs(d - q[0]) / 8, 0, None)
    tx = np.clip(1 - np.abs(d - q[1]) / 8, 0, None)
    return np.round(255 * np.outer(ty, tx)).astype(np.uint8)


def _tent_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    for i, q in enumerate(PEAKS):
        Image.fromarray(np.stack([_tent(q)] * 3, axis=-1)).save(root / f"{i}.png")
    return root


def _box_spec(root: Path, factory: str = "box_sum", **rf: object) -> JobSpec:
    return parse_spec({
        "model": {"factory": f"{PLANTED}:{factory}", "preprocess": {"size": SIDE, **RAW}},
        "layers": ["out"], "dataset": {"format": "images", "root": str(root)},
        "method": {"kind": "none"},
        "analyses": {"receptive_fields": {"layers": ["out"], "occluder": OCC, "stride": STRIDE,
                                          "fill": 0, "images_per_task": 2, **rf}},
        "resources": {"batch_size": 4, "shard_images": 4}})


def _brute_force(images: list[np.ndarray]) -> np.ndarray:
    """The mean over images of each black-window discrepancy map, painted by brute force and
    translated so the unit's clean peak (the argmax of the 9 x 9 sums) lands on the centre."""
    origins = range(0, SIDE - OCC + 1, STRIDE)
    fields = []
    for img in images:
        x = 3 * img.astype(np.float64) / 255  # the unit sums 3 channels of the same value
        padded = np.pad(x, HALF)
        sums = np.array([[padded[i:i + 9, j:j + 9].sum() for j in range(SIDE)]
                         for i in range(SIDE)])
        py, px = np.unravel_index(np.argmax(sums), sums.shape)
        box = np.zeros_like(x)
        box[py - HALF:py + HALF + 1, px - HALF:px + HALF + 1] = x[py - HALF:py + HALF + 1,
                                                                  px - HALF:px + HALF + 1]
        painted = np.zeros((SIDE, SIDE))
        for y in range(SIDE):
            for c in range(SIDE):
                d = [box[a:a + OCC, b:b + OCC].sum() for a in origins for b in origins
                     if a <= y < a + OCC and b <= c < b + OCC]
                painted[y, c] = np.mean(d) if d else 0.0
        shifted = np.zeros_like(painted)
        dy, dx = SIDE // 2 - py, SIDE // 2 - px
        shifted[max(dy, 0):SIDE + min(dy, 0), max(dx, 0):SIDE + min(dx, 0)] = painted[
            max(-dy, 0):SIDE - max(dy, 0), max(-dx, 0):SIDE - max(dx, 0)]
        fields.append(shifted)
    return np.mean(fields, axis=0)


@pytest.fixture(scope="module")
def box_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The planted 9 x 9 unit on three tent images, whole job in-process."""
    base = tmp_path_factory.mktemp("rf")
    root = _tent_folder(base / "tents")
    run_stages(_box_spec(root), base / "out")
    return root, base / "out"


def test_planted_footprint_gives_a_centred_field_of_the_footprints_size(
        box_job: tuple[Path, Path]) -> None:
    """The stored field equals the brute-force mean of re-centred black-window maps; the
    record's size is its half-maximum side (between the 9 px footprint and footprint plus
    occluder) and its offset is ~0."""
    _, out = box_job
    field = arrays.open_array(out / "receptive_fields.zarr", "out")[:]
    expected = _brute_force([_tent(q) for q in PEAKS])
    assert field.shape == (1, SIDE, SIDE) and field.dtype == np.float32
    np.testing.assert_allclose(field[0], expected, rtol=1e-5, atol=1e-4)
    rows, cols = np.nonzero(expected >= expected.max() / 2)
    [record] = read_unit_records(out / "records" / "out.jsonl")
    rf = record.receptive_field
    assert rf is not None and rf.images == 3 and rf.offset is not None
    assert rf.size == pytest.approx(math.sqrt(rows.size))
    assert rf.offset == pytest.approx((rows.mean() - SIDE // 2, cols.mean() - SIDE // 2))
    assert abs(rf.offset[0]) <= 1 and abs(rf.offset[1]) <= 1
    assert 9 <= rf.size <= 9 + OCC


def test_resume_redoes_only_the_unmarked_block(box_job: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    """With one block's done marker deleted, a rerun occludes that block alone and writes the
    same field, byte for byte."""
    root, out = box_job
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    before = arrays.open_array(copy / "receptive_fields.zarr", "out")[:]
    done_marker(JobDir(storage.location(copy)).receptive_fields_part("out", 1)).unlink()
    run_stages(_box_spec(root), copy)
    stage = json.loads((copy / "manifest.json").read_text())["stages"]["receptive_fields"]
    assert stage["computed"] == 1 and stage["done"] == stage["total"] == 2
    after = arrays.open_array(copy / "receptive_fields.zarr", "out")[:]
    assert after.tobytes() == before.tobytes()


def test_each_image_is_occluded_once_and_fields_equal_direct_occlusion(tmp_path: Path) -> None:
    """Chosen units of a real conv layer: every distinct top image is in exactly one part with
    exactly the units that list it, and each field equals consolidating discrepancy maps
    computed here with the seeded noise fill in normalised units; other units get none."""
    root = photo_folder(tmp_path / "photos")
    spec = parse_spec({
        "model": {"factory": f"{PLANTED}:tiny_classifier", "preprocess": {"size": 16}},
        "layers": ["features"], "dataset": {"format": "images", "root": str(root)},
        "method": {"kind": "none"}, "top_images": {"k": 3},
        "analyses": {"receptive_fields": {"layers": ["features"], "units": [5, 0, 3],
                                          "top_k": 2, "occluder": 5, "stride": 3, "seed": 4,
                                          "images_per_task": 2}},
        "resources": {"batch_size": 4, "shard_images": 4}})
    run_stages(spec, tmp_path / "out")
    records = list(read_unit_records(tmp_path / "out" / "records" / "features.jsonl"))
    tops = {u: [t.index for t in records[u].top_images[:2]] for u in (0, 3, 5)}
    parts = [np.load(p) for p in sorted((tmp_path / "out" / "receptive_fields"
                                         / "features").glob("*.npz"))]
    pairs = sorted(zip(np.concatenate([p["image"] for p in parts]).tolist(),
                       np.concatenate([p["unit"] for p in parts]).tolist(), strict=True))
    assert pairs == sorted((i, u) for u, images in tops.items() for i in images)
    images_per_part = [sorted(set(p["image"].tolist())) for p in parts]
    assert sum(len(x) for x in images_per_part) == len({i for i, _ in pairs})
    model, pre = tiny_classifier(), PreprocessSpec(size=16)
    from ray_dissect.datasets.images import ImageFolderDataset

    dataset = ImageFolderDataset(spec.dataset)
    fill = NoiseFill().normalized(pre.mean, pre.std)
    field = arrays.open_array(tmp_path / "out" / "receptive_fields.zarr", "features")[:]
    for u, images in tops.items():
        maps, centres = [], []
        for i in images:
            x = torch.from_numpy(preprocess([dataset.read_image(i)], pre)[0])
            d = discrepancy_maps(model.features, x, grid=OcclusionGrid(16, 16, 5, 3),
                                 batch_size=4, seed=4, image_index=i, fill=fill, units=[u])
            maps.append(d.maps[0])
            centres.append(d.centres[0])
        want = consolidate(np.stack(maps)[None], np.stack(centres)[None])[0]
        np.testing.assert_allclose(field[u], want, rtol=1e-5, atol=1e-6)
        assert records[u].receptive_field is not None
        assert records[u].receptive_field.images == 2
    for u in (1, 2, 4, 6, 7):
        assert records[u].receptive_field is None and not field[u].any()


@pytest.mark.parametrize(("rf", "top", "field"), [
    ({"layers": ["conv"]}, {}, "receptive_fields.layers"),
    ({"layers": ["out"], "top_k": 5}, {"k": 4}, "receptive_fields.top_k"),
    ({"layers": ["out"], "units": [1]}, {}, "receptive_fields.units"),
    ({"layers": ["out"], "occluder": 41}, {}, "receptive_fields.occluder"),
])
def test_bad_receptive_fields_are_refused_before_any_work(tmp_path: Path, rf: dict, top: dict,
                                                          field: str) -> None:
    """A layer outside the job's layers, more top images than top_images keeps, a unit the
    layer lacks or an occluder larger than the input stop the job before it writes anything."""
    root = _tent_folder(tmp_path / "tents")
    spec = _box_spec(root).model_dump(mode="json")
    spec["analyses"]["receptive_fields"] = rf
    spec["top_images"] = {**spec["top_images"], **top}
    with pytest.raises(SpecError, match=rf"'analyses\.{field}'"):
        run_stages(parse_spec(spec), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_compat_runs_the_seeds_chain(tmp_path: Path) -> None:
    """compat: true stores the seed's consolidation (signed max, overwrite painting, contour
    chain, min-max) of the same black-window occlusions, computed here directly."""
    from fixtures.planted import box_sum

    root = _tent_folder(tmp_path / "tents")
    run_stages(_box_spec(root, compat=True), tmp_path / "out")
    field = arrays.open_array(tmp_path / "out" / "receptive_fields.zarr", "out")[:]
    maps = []
    for i, q in enumerate(PEAKS):
        x = torch.from_numpy(np.stack([_tent(q)] * 3).astype(np.float32) / 255)
        maps.append(discrepancy_maps(box_sum(), x, grid=OcclusionGrid(SIDE, SIDE, OCC, STRIDE),
                                     image_index=i, fill=NoiseFill.constant(0.0),
                                     compat=True).maps[0])
    want = consolidate(np.stack(maps)[None], compat=True)[0]
    assert want.max() == pytest.approx(1.0)
    np.testing.assert_allclose(field[0], want, atol=1e-5)


def test_compat_warns_when_the_seeds_cut_erases_a_weak_unit(tmp_path: Path) -> None:
    """On a weak unit the seed's cut leaves an empty field: the record says so (size 0 and a
    warning) and keeps the uncut field, stored beside it and equal to the compat maps
    re-centred on their peaks and averaged, computed here directly."""
    from fixtures.planted import weak_box_sum

    root = _tent_folder(tmp_path / "tents")
    run_stages(_box_spec(root, "weak_box_sum", compat=True), tmp_path / "out")
    store = tmp_path / "out" / "receptive_fields.zarr"
    assert not arrays.open_array(store, "out")[:].any()
    uncut = arrays.open_array(store, "out+uncut")[:]
    found = [discrepancy_maps(weak_box_sum(), torch.from_numpy(
        np.stack([_tent(q)] * 3).astype(np.float32) / 255), grid=OcclusionGrid(
        SIDE, SIDE, OCC, STRIDE), image_index=i, fill=NoiseFill.constant(0.0), compat=True)
        for i, q in enumerate(PEAKS)]
    maps = np.stack([d.maps[0] for d in found])[None]
    centres = np.stack([d.centres[0] for d in found])[None]
    np.testing.assert_allclose(uncut[0], consolidate(maps, centres)[0], rtol=1e-5, atol=1e-7)
    rec, = read_unit_records(tmp_path / "out" / "records" / "out.jsonl")
    rf = rec.receptive_field
    assert rf is not None and rf.size == 0 and rf.offset is None
    assert rf.uncut_size is not None and rf.uncut_size > 0 and "seed's absolute cut" in rf.warning


def test_without_compat_nothing_uncut_is_stored(box_job: tuple[Path, Path]) -> None:
    _, out = box_job
    rec, = read_unit_records(out / "records" / "out.jsonl")
    assert rec.receptive_field is not None and rec.receptive_field.uncut_size is None
    assert rec.receptive_field.warning is None
    assert arrays.done_shards(out / "receptive_fields.zarr", "out+uncut").size == 0


def test_each_units_per_image_maps_are_kept_in_rank_order(box_job: tuple[Path, Path]) -> None:
    """With one chosen unit (<= 64) the per-image maps are kept: its top images in rank order,
    each with the painted map and peak centre of a direct black-window occlusion."""
    from fixtures.planted import box_sum

    _, out = box_job
    store = out / "receptive_fields.zarr"
    stored = {name: arrays.open_array(store, f"out+{name}")[:]
              for name in ("units", "images", "maps", "centres")}
    [record] = read_unit_records(out / "records" / "out.jsonl")
    ranked = [t.index for t in record.top_images[:10]]
    assert stored["units"].tolist() == [0]
    assert stored["images"][0, :len(ranked)].tolist() == ranked
    assert (stored["images"][0, len(ranked):] == -1).all()
    for j, index in enumerate(ranked):
        x = torch.from_numpy(np.stack([_tent(PEAKS[index])] * 3).astype(np.float32) / 255)
        d = discrepancy_maps(box_sum(), x, grid=OcclusionGrid(SIDE, SIDE, OCC, STRIDE),
                             image_index=index, fill=NoiseFill.constant(0.0))
        np.testing.assert_allclose(stored["maps"][0, j], d.maps[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(stored["centres"][0, j], d.centres[0])


def test_image_maps_false_keeps_none(tmp_path: Path) -> None:
    root = _tent_folder(tmp_path / "tents")
    run_stages(_box_spec(root, image_maps=False), tmp_path / "out")
    assert arrays.done_shards(tmp_path / "out" / "receptive_fields.zarr", "out+maps").size == 0
