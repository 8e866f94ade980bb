"""The stage table: one entry per stage, read by the manifest, --force and status."""

from __future__ import annotations

from pathlib import Path

import pytest

from ray_dissect.job.layout import JobDir
from ray_dissect.pipeline.table import STAGE_NAMES, STAGES, stage, stage_hashes
from ray_dissect.spec import parse_spec

BASE = {"model": {"name": "resnet18"}, "layers": ["layer4"], "dataset": {"root": "/data/x"}}


def test_table_order_is_the_data_flow() -> None:
    """Stages run in the order their inputs need, each named once."""
    assert STAGE_NAMES == ("concepts", "activations", "attribution", "prism_pca", "prism",
                           "thresholds", "scoring", "masking", "top_images", "receptive_fields",
                           "unit_attribution", "threshold_sweep", "ranges_importance",
                           "unit_ablation", "concept_blackout_iou", "concept_blackout",
                           "heuristics")
    assert len(set(STAGE_NAMES)) == len(STAGES)


OUTPUTS = {
    "concepts": ("concepts.zarr", "concepts"), "activations": ("activations.zarr", "activations"),
    "attribution": ("attribution.zarr",), "prism_pca": ("prism",), "prism": ("prism.zarr",),
    "thresholds": ("thresholds",), "scoring": ("parts", "records"), "masking": (),
    "top_images": ("top_images",),
    "receptive_fields": ("receptive_fields.zarr", "receptive_fields"),
    "unit_attribution": ("unit_attribution",),
    "threshold_sweep": ("studies/threshold_sweep", "studies/threshold_sweep.jsonl"),
    "ranges_importance": ("studies/ranges_importance", "studies/ranges_importance.jsonl"),
    "unit_ablation": ("studies/unit_ablation", "studies/unit_ablation.jsonl"),
    "concept_blackout_iou": ("studies/concept_blackout_iou",),
    "concept_blackout": ("studies/concept_blackout", "studies/concept_blackout.jsonl"),
    "heuristics": ("studies/heuristics", "studies/heuristics.jsonl"),
}


def test_outputs_are_the_paths_each_stage_writes() -> None:
    """Each stage's outputs (what --force removes) are its paths inside the job directory,
    the ones the stage table listed by name before the stages declared their own."""
    root = Path("/jobs/j")
    got = {s.name: tuple(str(p.relative_to(root)) for p in s.outputs(JobDir(root)))
           for s in STAGES}
    assert got == OUTPUTS


def test_model_stages_run_on_actors_and_the_rest_on_tasks() -> None:
    """Extraction, concept masking and the studies that forward images need the model; the
    others are CPU work."""
    assert {s.name for s in STAGES if s.runs_on == "actors"} == {
        "activations", "attribution", "masking", "prism_pca", "prism", "receptive_fields",
        "unit_attribution", "ranges_importance", "unit_ablation", "concept_blackout"}


def test_hashes_are_cumulative_along_the_table() -> None:
    """Changing the dataset changes every stage; changing the layers leaves concepts."""
    a = stage_hashes(parse_spec(BASE))
    b = stage_hashes(parse_spec({**BASE, "dataset": {"root": "/data/y"}}))
    c = stage_hashes(parse_spec({**BASE, "layers": ["layer3"]}))
    assert list(a) == list(STAGE_NAMES)
    assert all(a[s] != b[s] for s in STAGE_NAMES)
    assert a["concepts"] == c["concepts"] and a["activations"] != c["activations"]


def test_unknown_stage_names_the_known_ones() -> None:
    """A typo in a stage name lists the table."""
    with pytest.raises(KeyError, match="concepts, activations"):
        stage("scorin")


def test_each_study_section_redoes_only_its_stages() -> None:
    """A study's section changes its own stages alone; label fields reach the label studies;
    the blackout's image limit leaves its IoU stage alone."""
    clustered = {**BASE, "method": {"kind": "clustered"}}
    studies = {"ranges_importance": {}, "unit_ablation": {}, "concept_blackout": {}}
    a = stage_hashes(parse_spec({**clustered, "studies": studies}))

    def changed(spec: dict) -> set[str]:
        b = stage_hashes(parse_spec(spec))
        return {s for s in a if a[s] != b[s]}

    assert changed({**clustered, "studies": {**studies, "unit_ablation": {
        "single_units": True}}}) == {"unit_ablation"}
    assert changed({**clustered, "studies": {**studies, "ranges_importance": {
        "per_unit": False}}}) == {"ranges_importance"}
    assert changed({**clustered, "studies": {**studies, "concept_blackout": {
        "limit": 5}}}) == {"concept_blackout"}
    iou = {**clustered, "method": {"kind": "clustered", "iou_threshold": 0.1}}
    assert changed({**iou, "studies": studies}) == {"scoring", "masking", "threshold_sweep",
                                                    "unit_ablation"}
    strict = {**clustered, "method": {"kind": "clustered", "bounds": "strict"}}
    assert "ranges_importance" in changed({**strict, "studies": studies})


@pytest.mark.parametrize("change", [{"model": {"name": "resnet18", "tf32": True}},
                                    {"model": {"name": "resnet18", "bf16": True}},
                                    {"model": {"name": "resnet18", "channels_last": True}},
                                    {"resources": {"gpu_decode": True}}])
def test_opt_in_numerics_redo_extraction_on(change: dict) -> None:
    """Each results-changing extraction option, once set, changes the spec hash and the
    hashes from activations on, never the concept index's."""
    a, b = parse_spec(BASE), parse_spec({**BASE, **change})
    ha, hb = stage_hashes(a), stage_hashes(b)
    assert a.spec_hash() != b.spec_hash()
    assert ha["concepts"] == hb["concepts"]
    assert all(ha[s] != hb[s] for s in STAGE_NAMES[1:])


def test_pipeline_sizes_are_scheduling_fields() -> None:
    """Decode threads and queued batches change no hash (resumable with other values)."""
    a = parse_spec(BASE)
    b = parse_spec({**BASE, "resources": {"decode_threads": 7, "queue_batches": 9}})
    assert a.spec_hash() == b.spec_hash() and stage_hashes(a) == stage_hashes(b)


def test_extraction_keeps_two_calls_in_flight_per_actor() -> None:
    """Only extraction, whose work unit is thread-safe, gets two calls per actor."""
    assert {s.name: s.calls_per_actor for s in STAGES if s.runs_on == "actors"} == {
        "activations": 2, "attribution": 1, "masking": 1, "ranges_importance": 1,
        "unit_ablation": 1, "concept_blackout": 1, "prism_pca": 1, "prism": 1,
        "receptive_fields": 1, "unit_attribution": 1}


def test_analysis_sections_redo_only_their_stages() -> None:
    """Adding or changing receptive fields or PRISM changes only their stages' hashes; a PRISM
    field the PCA does not use (clusters) leaves prism_pca as it was."""
    rf = {"receptive_fields": {"layers": ["layer4"]}}
    pr = {"prism": {"layer": "layer4", "ge_layers": ["layer1"]}}
    a = stage_hashes(parse_spec(BASE))
    b = stage_hashes(parse_spec({**BASE, "analyses": rf}))
    c = stage_hashes(parse_spec({**BASE, "analyses": {**rf, **pr}}))
    d = stage_hashes(parse_spec({**BASE, "analyses": {
        **rf, "prism": {**pr["prism"], "clusters": 3}}}))
    assert {s for s in STAGE_NAMES if a[s] != b[s]} == {"receptive_fields"}
    assert {s for s in STAGE_NAMES if b[s] != c[s]} == {"prism_pca", "prism"}
    assert {s for s in STAGE_NAMES if c[s] != d[s]} == {"prism"}
    e = stage_hashes(parse_spec({**BASE, "analyses": {
        **rf, "unit_attribution": {"layer": "layer4", "units": [3]}}}))
    assert {s for s in STAGE_NAMES if b[s] != e[s]} == {"unit_attribution"}


def test_attribution_hash_ignores_the_new_fields_at_their_defaults() -> None:
    """The attribution stage's hash of a spec without the fields added with targets per
    image is the one written before them (old job directories resume), and changes with
    any of them."""
    old = {"methods": ["saliency", "gradcam"], "layer": "layer4"}
    a = stage_hashes(parse_spec({**BASE, "analyses": {"attribution": old}}))
    b = stage_hashes(parse_spec({**BASE, "analyses": {"attribution": {
        **old, "ig_steps": 32, "feature_layers": []}}}))
    c = stage_hashes(parse_spec({**BASE, "analyses": {"attribution": {
        **old, "target": {"top_k": 3}}}}))
    assert a == b
    assert {s for s in STAGE_NAMES if a[s] != c[s]} == {"attribution"}
    assert a["attribution"] == "b273b31fdf919822"  # as computed by the tree before them
