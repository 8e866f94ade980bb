"""Scaling with the number of images on a Broden-shaped dataset: time, memory, label sets.

For each size (default 2,000, 8,000 and 32,000 images) a dataset of the Broden-shaped
vocabulary is generated (``--vocabulary broden``: 1,197 concepts in Broden's category sizes,
64-px images, 32-px masks) and a whole job runs on a fresh local Ray session:
EfficientNet-Lite0 at 64 px (layers ``_blocks.15`` and ``_bn1``), NetDissect, 2 actors.
Reported per size: the number of label sets and the concept index's size (on disk and as
arrays), the sample table's size, seconds per image per stage and in total, the driver's peak
RSS, and the peak RSS (VmHWM) of every Ray worker process (largest first; polled every 0.5 s
during the job, since the model actors end before it returns). The exponent b of
time ~ images^b is fitted over the sizes and the marginal cost between consecutive sizes is
printed.

Each size is generated, then run, in fresh processes: a peak RSS is a per-process high-water
mark, so a driver that ran a smaller size (or generated the data) first would report that.

``--parse`` also measures, side by side in fresh processes, the driver memory of parsing
``index.csv`` the old way (one ``Sample`` object per row) and into the compact
:class:`~ray_dissect.datasets.sample_table.SampleTable`, and prints the ratio.

Usage:
    python benchmarks/bench_scale.py [--sizes 2000 8000 32000] [--workdir DIR] [--parse]
        [--vocabulary broden|default] [--image-size 64] [--mask-size 32]
Broden's own size: ``--sizes 63305`` (generation ~16 ms per image here, ~16 KB per image
on disk at 64/32 px, i.e. ~1 GB; the job directory adds ~1.5x that).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ray_dissect.datasets.base import Sample
from ray_dissect.datasets.broden import BrodenDataset
from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.spec import DatasetSpec, parse_spec

STAGES = ("concepts", "activations", "thresholds", "scoring")


def worker_peaks_mb() -> dict[str, float]:
    """Peak resident set (VmHWM, MB) of each live Ray worker process, by ``pid:name``."""
    peaks: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            if not cmd.startswith(b"ray::"):
                continue
            name = cmd.split(b"\0")[0].decode()[5:]
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[f"{entry.name}:{name}"] = int(line.split()[1]) / 1024
        except OSError:
            continue
    return peaks


class PeakSampler:
    """Polls :func:`worker_peaks_mb` every ``period`` seconds in a thread, keeping each
    process's largest VmHWM: the model actors, which now also run the CPU stages, are ended
    before the job returns, so a look at the end would miss them."""

    def __init__(self, period: float = 0.5) -> None:
        self.period, self.peaks = period, {}  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        for key, mb in worker_peaks_mb().items():
            pid = key.split(":", 1)[0]
            old = self.peaks.get(pid, (key, 0.0))
            self.peaks[pid] = (key, max(mb, old[1]))

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def by_process(self) -> dict[str, float]:
        """The largest peak seen of each process, by ``pid:name`` (its last name)."""
        return {key: mb for key, mb in self.peaks.values()}


def rss_mb() -> float:
    """This process's current resident set, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def index_figures(out: Path) -> dict[str, float]:
    """Label sets, shard-local sets, entries and bytes of a job's ``concepts/index.npz``."""
    path = out / "concepts" / "index.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return {"label_sets": len(arrays["m_indptr"]) - 1, "local_sets": len(arrays["remap"]),
            "entries": len(arrays["image_sets"]), "index_file_bytes": path.stat().st_size,
            "index_array_bytes": sum(a.nbytes for a in arrays.values())}


def search_space_bytes(out: Path, root: Path) -> int:
    """Bytes of the arrays a search task builds from the job's index (``SearchSpace``)."""
    from ray_dissect.concepts.index import load_index
    from ray_dissect.explain.search import SearchSpace

    vocab = BrodenDataset(DatasetSpec(root=str(root))).vocab
    space = SearchSpace.from_index(load_index(out / "concepts" / "index.npz", vocab))
    m = space.membership_t
    return m.data.nbytes + m.indices.nbytes + m.indptr.nbytes + sum(
        getattr(space, f).nbytes for f in ("set_counts", "label_area", "atoms",
                                           "image_of_entry", "entry_sets", "entry_valid"))


def run_size(n: int, workdir: Path, tag: str) -> dict[str, float]:
    """Run one size in this (fresh) process; the dataset must exist."""
    import ray

    from ray_dissect.runtime.driver import run_job

    root = workdir / f"{tag}{n}"
    spec = parse_spec({
        "model": {"factory": "ray_dissect.zoo:efficientnet_lite0", "preprocess": {"size": 64}},
        "layers": ["_blocks.15", "_bn1"], "dataset": {"root": str(root)},
        "resources": {"actors": 2, "batch_size": 64, "shard_images": 512,
                      "units_per_task": 400}})
    out = workdir / f"out_{tag}{n}"
    shutil.rmtree(out, ignore_errors=True)
    ray.init(num_cpus=2, include_dashboard=False)
    base = rss_mb()
    start = time.perf_counter()
    with PeakSampler() as sampler:
        summary = run_job(spec, out)
    total = time.perf_counter() - start
    workers = sampler.by_process()
    ray.shutdown()
    row: dict[str, float] = {f"{k}_s": v for k, v in summary.stage_seconds.items()}
    row |= {"total_s": total, "ms_per_image": 1000 * total / n, "driver_base_mb": base,
            "driver_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "store_mb": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20,
            "table_bytes": BrodenDataset(DatasetSpec(root=str(root))).samples.nbytes}
    row |= index_figures(out) | {"search_space_bytes": search_space_bytes(out, root)}
    return row | {"workers": workers}  # type: ignore[dict-item]


def old_parse(root: Path) -> tuple[Sample, ...]:
    """index.csv as the reader parsed it before the compact table: one Sample per row."""
    rows = list(csv.DictReader(io.StringIO((root / "index.csv").read_text(), newline="")))
    cats = ("color", "object", "part", "material", "scene", "texture")
    out = []
    for row in rows:
        cells = [(c, x.strip()) for c in cats for x in filter(None, (row.get(c) or "").split(";"))]
        out.append(Sample(row["image"], (int(row["ih"]), int(row["iw"])),
                          tuple((c, x) for c, x in cells if not x.isdigit()),
                          tuple((c, int(x)) for c, x in cells if x.isdigit())))
    return tuple(out)


def parse_memory(root: Path, mode: str) -> dict[str, float]:
    """RSS growth (MB, current and peak) of parsing ``root``'s index in this fresh process."""
    before = rss_mb()
    start = time.perf_counter()
    kept = old_parse(root) if mode == "old" else BrodenDataset(DatasetSpec(root=str(root)))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"held_mb": rss_mb() - before, "peak_mb": peak - before, "s": seconds,
            "n": len(kept.samples if isinstance(kept, BrodenDataset) else kept)}


def _child(*args: str) -> str:
    return subprocess.run([sys.executable, __file__, *args], check=True, text=True,
                          stdout=subprocess.PIPE).stdout


def _print_row(n: int, r: dict) -> None:
    stages = ", ".join(f"{s} {r.get(f'{s}_s', 0.0):.1f} s = {1000 * r.get(f'{s}_s', 0.0) / n:.2f}"
                       for s in STAGES)
    workers = sorted(r["workers"].items(), key=lambda kv: -kv[1])
    peaks = ", ".join(f"{k.split(':', 1)[1]} {v:.0f}" for k, v in workers[:6])
    print(f"images={n:6d} label sets {r['label_sets']} (shard-local {r['local_sets']}, "
          f"{r['entries'] / n:.1f} per image); concept index {r['index_array_bytes'] / 1e6:.1f} MB "
          f"as arrays ({r['index_array_bytes'] / n:.0f} B/image), {r['index_file_bytes'] / 1e6:.1f}"
          f" MB on disk; sample table {r['table_bytes'] / 1e6:.2f} MB "
          f"({r['table_bytes'] / n:.0f} B/image); a search task's SearchSpace "
          f"{r['search_space_bytes'] / 1e6:.1f} MB, one set-space float64 vector "
          f"{8 * r['label_sets'] / 1e6:.2f} MB\n"
          f"  total {r['total_s']:.1f} s = {r['ms_per_image']:.2f} ms/image; per stage "
          f"s = ms/image: {stages}\n  driver peak {r['driver_peak_mb']:.0f} MB "
          f"(base {r['driver_base_mb']:.0f}); workers peak {peaks} MB; "
          f"job dir {r['store_mb']:.0f} MB", flush=True)


def _print_fit(rows: dict[int, dict]) -> None:
    sizes = np.array(sorted(rows), dtype=float)
    times = np.array([rows[int(n)]["total_s"] for n in sizes])
    sets = np.array([rows[int(n)]["label_sets"] for n in sizes], dtype=float)
    print(f"time ~ images^{np.polyfit(np.log(sizes), np.log(times), 1)[0]:.3f}, label sets ~ "
          f"images^{np.polyfit(np.log(sizes), np.log(sets), 1)[0]:.3f} over "
          f"{', '.join(str(int(n)) for n in sizes)} images")
    for i in range(len(sizes) - 1):
        marginal = 1000 * (times[i + 1] - times[i]) / (sizes[i + 1] - sizes[i])
        print(f"marginal {int(sizes[i])} -> {int(sizes[i + 1])}: {marginal:.2f} ms/image")


def _print_parse(n: int, workdir: Path, root: Path) -> None:
    old = json.loads(_child("--parse-one", "old", "--root", str(root)).splitlines()[-1])
    new = json.loads(_child("--parse-one", "new", "--root", str(root)).splitlines()[-1])
    print(f"index.csv parse, {n} images: one Sample per row holds {old['held_mb']:.1f} MB "
          f"({1e6 * old['held_mb'] / n:.0f} B/image, peak +{old['peak_mb']:.1f} MB, "
          f"{old['s']:.2f} s); compact table {new['held_mb']:.1f} MB "
          f"({1e6 * new['held_mb'] / n:.0f} B/image, peak +{new['peak_mb']:.1f} MB, "
          f"{new['s']:.2f} s); held ratio old/new "
          f"{old['held_mb'] / max(new['held_mb'], 1e-3):.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 32000])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--vocabulary", default="broden", choices=["broden", "default"])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--mask-size", type=int, default=32)
    parser.add_argument("--parse", action="store_true", help="also compare index parses")
    parser.add_argument("--no-job", action="store_true", help="skip the jobs (with --parse)")
    parser.add_argument("--generate", type=int, help=argparse.SUPPRESS)  # child: make data
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child: run one size
    parser.add_argument("--parse-one", help=argparse.SUPPRESS)  # child: old or new parse
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_scale_"))
    tag = f"{args.vocabulary}_{args.image_size}_{args.mask_size}_"
    if args.parse_one:
        print(json.dumps(parse_memory(args.root, args.parse_one)))
        return
    if args.generate:
        start = time.perf_counter()
        generate_dataset(workdir / f"{tag}{args.generate}", args.generate, seed=0,
                         image_size=args.image_size, mask_size=args.mask_size,
                         vocabulary=args.vocabulary)
        print(json.dumps({"s": time.perf_counter() - start}))
        return
    if args.one:
        print(json.dumps(run_size(args.one, workdir, tag)))
        return
    rows = {}
    for n in args.sizes:
        root = workdir / f"{tag}{n}"
        if not (root / "index.csv").exists():
            made = json.loads(_child("--generate", str(n), "--workdir", str(workdir),
                                     *_data_args(args)).splitlines()[-1])
            print(f"generated {n} images in {made['s']:.0f} s "
                  f"({1000 * made['s'] / n:.1f} ms/image)", flush=True)
        if args.parse:
            _print_parse(n, workdir, root)
        if not args.no_job:
            rows[n] = json.loads(_child("--one", str(n), "--workdir", str(workdir),
                                        *_data_args(args)).splitlines()[-1])
            _print_row(n, rows[n])
    if len(rows) > 1:
        _print_fit(rows)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


def _data_args(args: argparse.Namespace) -> list[str]:
    return ["--vocabulary", args.vocabulary, "--image-size", str(args.image_size),
            "--mask-size", str(args.mask_size)]


if __name__ == "__main__":
    main()
