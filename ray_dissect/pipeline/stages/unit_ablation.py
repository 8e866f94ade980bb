"""Stage ``unit_ablation`` (study): zero the units that share a label and see what the
classifier does (model actors, an image shard each; only with ``studies.unit_ablation``).

Groups (per layer, from the records): the interpretable units (label IoU >= the method's
``iou_threshold``) that share a NetDissect label, in label-number order; with
``single_units`` also every unit alone, split by its own label when it has one (IoU > 0).
Which images contain a label's concept comes from the concept index (any pixel of it;
whole-image labels count for their images).

Work unit: shard s -> per group, over all valid images, those with the concept and those
without: images, argmax flips and the sum of probability drops of the class predicted
unablated. Driver: ``studies/unit_ablation/shard_<s>.npz``, then
``studies/unit_ablation.jsonl`` (:class:`UnitAblationRow`, label groups then single units).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ray_dissect.pipeline.context import JobContext, Plan, WorkEnv
from ray_dissect.pipeline.stage import Stage, label_inputs, section, uses
from ray_dissect.pipeline.stages.image_studies import (
    model_input,
    needs_concepts,
    needs_logits,
    save_shard,
    shard_plan,
    shard_sums,
    study_outputs,
    valid_batches,
)
from ray_dissect.records.io import write_jsonl
from ray_dissect.records.schema import UnitRecord
from ray_dissect.records.studies import AblationEffect, Concept, UnitAblationRow
from ray_dissect.report.studies import STUDIES_PAGE
from ray_dissect.spec import JobSpec
from ray_dissect.studies.effects import concept_presence, effect_sums, shares
from ray_dissect.studies.hooks import decisions, unit_zeroer

NAME = "unit_ablation"


@dataclass(frozen=True)
class Group:
    """Units of one layer (of ``layer_units`` units) zeroed together, and their label (0:
    none)."""

    layer: str
    layer_units: int
    kind: Literal["label", "unit"]
    units: tuple[int, ...]
    label: int


def label_groups(layer: str, records: list[UnitRecord], width: int) -> list[Group]:
    """The interpretable units of a layer (of ``width`` units in the model) grouped by
    label, ascending label number."""
    by_label: dict[int, list[int]] = {}
    for rec in records:
        if rec.interpretable and rec.label is not None:
            by_label.setdefault(rec.label.number, []).append(rec.unit)
    return [Group(layer, width, "label", tuple(units), label)
            for label, units in sorted(by_label.items())]


def unit_groups(layer: str, records: list[UnitRecord], width: int) -> list[Group]:
    """Every unit of a layer (of ``width`` in the model) alone, with its label (0: none)."""
    return [Group(layer, width, "unit", (rec.unit,),
                  rec.label.number if rec.label else 0)
            for rec in records]


def groups_of(ctx: JobContext) -> list[Group]:
    """Every group of the study, layer by layer: label groups, then (optionally) units."""
    spec = ctx.spec.studies.unit_ablation
    single = spec is not None and spec.single_units
    out = []
    for layer in ctx.spec.layers:
        width = ctx.shapes[layer][0]
        out += label_groups(layer, ctx.records[layer], width)
        if single:
            out += unit_groups(layer, ctx.records[layer], width)
    return out


def ablation_work(env: WorkEnv, valid: np.ndarray, groups: list[Group], presence: np.ndarray,
                  columns: dict[int, int], shard: int) -> dict[str, np.ndarray]:
    """Sums of one shard: ``sums`` (G, 3, 3) float64, per group the rows
    :data:`ray_dissect.studies.effects.SUBSETS` by (images, flips, sum of probability drops).

    Args:
        presence: (N, L) bool, image contains label ``l`` of the groups' labels.
        columns: label number -> its column in ``presence``.
    """
    sums = np.zeros((len(groups), 3, 3))
    for images in valid_batches(env, valid, shard, len(valid)):
        x = model_input(env, images)
        base_probs, base = decisions(env.model, x)
        for g, group in enumerate(groups):
            probs, classes = decisions(env.model, x, group.layer,
                                       unit_zeroer(group.units, group.layer_units),
                                       env.spec.model.layouts.get(group.layer))
            present = presence[images, columns[group.label]] if group.label else None
            sums[g] += effect_sums(base_probs, base, probs, classes, present)
    return {"sums": sums}


def plan(ctx: JobContext) -> Plan | None:
    """Shards without a done marker; the valid images, the groups and each image's presence
    of each of the groups' labels ((N, L) bool, a column per distinct label) are shared.
    None without the study."""
    if ctx.spec.studies.unit_ablation is None:
        return None
    groups = groups_of(ctx)
    ctx.parts["unit_ablation_groups"] = groups
    labels = sorted({g.label for g in groups if g.label})
    presence = concept_presence(ctx.concept_index, np.array(labels, dtype=np.int64))
    columns = {label: j for j, label in enumerate(labels)}
    return shard_plan(ctx, NAME, len(ctx.valid_images),
                      (ctx.valid_images, groups, presence, columns))


def collect(ctx: JobContext, call: tuple[int], sums: dict[str, np.ndarray]) -> int:
    """Write a shard's sums, then its done marker."""
    return save_shard(ctx, NAME, call[0], sums)


def _effect(sums: np.ndarray) -> AblationEffect:
    images, flips, fraction, drop = shares(sums)
    return AblationEffect(images=images, flips=flips, flip_fraction=fraction,
                          probability_drop=drop)


def _row(ctx: JobContext, group: Group, sums: np.ndarray) -> UnitAblationRow:
    vocab = ctx.concept_index.vocab
    label = (Concept(name=vocab.names[group.label], number=group.label,
                     category=vocab.category_of(group.label)) if group.label else None)
    return UnitAblationRow(
        layer=group.layer, kind=group.kind, units=list(group.units), label=label,
        overall=_effect(sums[0]),
        with_concept=_effect(sums[1]) if label else None,
        without_concept=_effect(sums[2]) if label else None)


def finish(ctx: JobContext) -> int:
    """Sum the shards and write one row per group."""
    groups = ctx.parts["unit_ablation_groups"]
    sums = shard_sums(ctx, NAME).get("sums", np.zeros((len(groups), 3, 3)))
    write_jsonl(ctx.job.study(NAME), [_row(ctx, group, sums[g])
                                      for g, group in enumerate(groups)])
    return 0


def covers(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    """The ``studies.unit_ablation`` section and what the labels it groups by depend on."""
    return {"unit_ablation": section(spec, "studies", NAME),
            "labels": label_inputs(data, "denominator", "iou_threshold")}


STAGE = Stage(name=NAME, runs_on="actors", work=ablation_work, plan=plan, collect=collect,
              finish=finish, outputs=study_outputs(NAME), covers=covers, owns=("studies",),
              check_dataset=needs_concepts(NAME), check=needs_logits(NAME),
              report=STUDIES_PAGE,
              used=uses("studies", NAME))
