"""The job directory's manifest: what a job is, and how far each stage got.

``DIR/manifest.json`` holds the spec hash, the package version, one hash per stage (of the
part of the spec that stage's output depends on) and per-stage progress: work units done of
total, the units computed by the current run, elapsed seconds, bad samples. It is rewritten
atomically (temporary file, then rename) as work units finish, so ``ray-dissect status`` can
read it while a job runs. Completion itself is recorded by done markers next to each stage's
output (see :mod:`ray_dissect.store` and :mod:`ray_dissect.workunits`), never inferred from
the manifest, so a killed driver loses at most its in-flight work units.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ray_dissect import storage
from ray_dissect.spec import SCHEDULING_FIELDS, ClusteredMethod, JobSpec
from ray_dissect.storage import AnyPath

STAGES = ("concepts", "activations", "thresholds", "scoring", "masking")


class StageState(BaseModel):
    """Progress of one stage."""

    model_config = ConfigDict(extra="forbid")

    hash: str
    total: int = 0
    done: int = 0
    computed: int = Field(0, description="work units computed by the latest run")
    seconds: float = 0.0
    errors: int = 0
    state: Literal["pending", "running", "done"] = "pending"


class RunInfo(BaseModel):
    """One invocation of ``run``/``resume`` on this directory."""

    model_config = ConfigDict(extra="forbid")

    started: float
    finished: float | None = None
    host: str
    pid: int
    status: Literal["running", "finished", "failed"] = "running"
    error: str | None = None


class Manifest(BaseModel):
    """The state of a job directory."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    spec_hash: str
    package_version: str
    stages: dict[str, StageState]
    runs: list[RunInfo] = Field(default_factory=list)


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stage_hashes(spec: JobSpec) -> dict[str, str]:
    """Hash, per stage, of everything that stage's output depends on (cumulatively)."""
    data = spec.model_dump(mode="json")
    res = {k: v for k, v in data["resources"].items() if k not in SCHEDULING_FIELDS}
    method = data["method"]
    concepts = {"dataset": data["dataset"], "shard_images": res["shard_images"]}
    activations = {**concepts, "model": data["model"], "layers": data["layers"],
                   "batch": res["batch_size"], "threads": res["threads_per_actor"],
                   "gpus": res["gpus_per_actor"]}
    thresholds = {**activations, "quantile": method["quantile"]}
    if isinstance(spec.method, ClusteredMethod):
        thresholds |= {"clusters": spec.method.clusters, "seed": spec.method.seed}
    return {"concepts": _digest(concepts), "activations": _digest(activations),
            "thresholds": _digest(thresholds), "scoring": spec.spec_hash(),
            "masking": spec.spec_hash()}


def new_manifest(spec: JobSpec, version: str) -> Manifest:
    """A manifest with every stage pending."""
    return Manifest(spec_hash=spec.spec_hash(), package_version=version,
                    stages={s: StageState(hash=h) for s, h in stage_hashes(spec).items()})


def read_manifest(root: AnyPath) -> Manifest | None:
    """The manifest of a job directory, or None when there is none."""
    try:
        return Manifest.model_validate_json(storage.read_text(root / "manifest.json"))
    except FileNotFoundError:
        return None


def write_manifest(root: AnyPath, manifest: Manifest) -> None:
    """Replace the manifest atomically."""
    storage.write_text(root / "manifest.json", manifest.model_dump_json(indent=2) + "\n")


def start_run(manifest: Manifest) -> RunInfo:
    """Record a new run (this process) in the manifest and return it."""
    run = RunInfo(started=time.time(), host=socket.gethostname(), pid=os.getpid())
    manifest.runs.append(run)
    for stage in manifest.stages.values():
        stage.computed = 0
    return run


def stale_stages(old: Manifest, spec: JobSpec) -> list[str]:
    """The stages whose inputs changed between ``old`` and ``spec`` (and every later one)."""
    new = stage_hashes(spec)
    for i, stage in enumerate(STAGES):
        if old.stages.get(stage) is None or old.stages[stage].hash != new[stage]:
            return list(STAGES[i:])
    return []
