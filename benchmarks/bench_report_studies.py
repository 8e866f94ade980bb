"""The studies page on a large ``concept_blackout.jsonl``: validating every row against the
two passes :func:`ray_dissect.report.studies.blackout_rows` makes.

A blackout file holds a row per (unit, concept): units x concepts rows (4096 x 1000 = 4 M
for a large layer on Broden). The page needs every concept row, but unit rows only for the
concepts it draws (the 12 annotated in the most images). This script writes a synthetic file
of ``--units`` x ``--concepts`` seeded rows into a minimal job directory and times, side by
side in one run, (a) reading every row as a validated ``ConceptBlackoutRow`` then building
the section, and (b) the two-pass reader then the same section; it checks both give the same
table and scatters and prints wall seconds, the peak Python memory of each (tracemalloc, in
a second timing) and the ratios.
Usage: python benchmarks/bench_report_studies.py [--units 512] [--concepts 300] [--root DIR]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray_dissect.job.layout import JobDir
from ray_dissect.records.io import write_jsonl
from ray_dissect.records.studies import Concept, ConceptBlackoutRow
from ray_dissect.report import studies as st
from ray_dissect.results import JobResults
from ray_dissect.spec import parse_spec

LAYER = "layer4"


def make_job(root: Path, units: int, concepts: int) -> JobResults:
    """A job directory with a spec and a synthetic concept_blackout.jsonl."""
    spec = parse_spec({"model": {"name": "resnet18"}, "layers": [LAYER],
                       "dataset": {"root": "/data/x"}, "method": {"kind": "netdissect"}})
    job = JobDir(root)
    job.make()
    (root / "spec.json").write_text(spec.model_dump_json())
    rng = random.Random(0)
    rows = []
    for c in range(concepts):
        concept = Concept(name=f"c{c}", number=c, category="object")
        rows.append(ConceptBlackoutRow(layer=LAYER, concept=concept, images=c + 1, units=units,
                                       pearson_r=rng.uniform(-1, 1), pearson_p=rng.random()))
        rows += [ConceptBlackoutRow(layer=LAYER, concept=concept, unit=u, images=c + 1,
                                    delta=rng.uniform(-1, 1), iou=rng.random() / 5)
                 for u in range(units)]
    write_jsonl(job.study("concept_blackout"), rows)
    return JobResults(root)


def timed(fn: Callable[[], Any]) -> tuple[Any, float, int]:
    """(result, wall seconds, peak traced bytes of a second, traced run)."""
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, seconds, peak


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print it."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=512)
    ap.add_argument("--concepts", type=int, default=300)
    ap.add_argument("--root", type=Path, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = make_job(args.root or Path(tmp) / "job", args.units, args.concepts)
        rows = args.units * args.concepts + args.concepts
        every, t_all, m_all = timed(
            lambda: st.blackout_view(st.study_rows(results, "concept_blackout")))
        two, t_two, m_two = timed(lambda: st.blackout_view(st.blackout_rows(results)))
    if every[0] != two[0] or [p.svg for p, _ in every[1]] != [p.svg for p, _ in two[1]]:
        print("the two readers disagree", file=sys.stderr)
        return 1
    print(f"{rows} blackout rows ({args.units} units x {args.concepts} concepts)")
    print(f"every row validated: {t_all:.2f} s, peak {m_all / 1e6:.0f} MB")
    print(f"two passes:          {t_two:.2f} s, peak {m_two / 1e6:.0f} MB")
    print(f"time ratio {t_all / t_two:.2f}x, memory ratio {m_all / m_two:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
