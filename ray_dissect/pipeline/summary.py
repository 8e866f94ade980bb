"""After the last stage: the job's records, bad samples and summary, written by the driver."""

from __future__ import annotations

from ray_dissect import storage
from ray_dissect.job.manifest import Manifest
from ray_dissect.pipeline.context import JobContext
from ray_dissect.records.build import summarize_layer
from ray_dissect.records.io import write_jsonl
from ray_dissect.records.schema import JobSummary
from ray_dissect.spec import NoMethod


def write_summary(ctx: JobContext, manifest: Manifest) -> JobSummary:
    """Write ``records/<layer>.jsonl``, ``errors.jsonl`` and ``summary.json``; return the
    summary."""
    for layer, records in ctx.records.items():
        write_jsonl(ctx.job.records(layer), records)
    write_jsonl(ctx.job.root / "errors.jsonl", ctx.errors)
    method = ctx.spec.method
    iou = None if isinstance(method, NoMethod) else method.iou_threshold
    summary = JobSummary(
        provenance=ctx.provenance, method=method.kind, iou_threshold=iou,
        images=len(ctx.dataset), valid_images=int(ctx.valid_images.sum()),
        bad_samples=len({e.index for e in ctx.errors}),
        layers=[summarize_layer(layer, ctx.records[layer], iou)
                for layer in ctx.spec.layers],
        stage_seconds={k: round(v.seconds, 3) for k, v in manifest.stages.items()})
    storage.write_text(ctx.job.root / "summary.json", summary.model_dump_json(indent=2) + "\n")
    return summary
