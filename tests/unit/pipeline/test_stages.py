"""The stage table: one entry per stage, read by the manifest, --force and status."""

from __future__ import annotations

import pytest

from ray_dissect.job.layout import ANALYSIS_SUBDIRS, SUBDIRS
from ray_dissect.pipeline.stages import STAGE_NAMES, STAGES, stage, stage_hashes
from ray_dissect.spec import parse_spec

BASE = {"model": {"name": "resnet18"}, "layers": ["layer4"], "dataset": {"root": "/data/x"}}


def test_table_order_is_the_data_flow() -> None:
    """Stages run in the order their inputs need, each named once."""
    assert STAGE_NAMES == ("concepts", "activations", "attribution", "prism_pca", "prism",
                           "thresholds", "scoring", "masking", "top_images", "receptive_fields",
                           "threshold_sweep")
    assert len(set(STAGE_NAMES)) == len(STAGES)


def test_outputs_are_inside_the_job_directory() -> None:
    """Every declared output is a top-level name of the job directory's layout."""
    for s in STAGES:
        for output in s.outputs:
            top = output.split("/")[0]
            assert ".." not in output.split("/") and not output.startswith("/")
            assert top in SUBDIRS + ANALYSIS_SUBDIRS or top.endswith(".zarr"), (s.name, output)


def test_model_stages_run_on_actors_and_the_rest_on_tasks() -> None:
    """Extraction and concept masking need the model; the others are CPU work."""
    assert {s.name for s in STAGES if s.runs_on == "actors"} == {
        "activations", "attribution", "masking", "prism_pca", "prism", "receptive_fields"}


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
