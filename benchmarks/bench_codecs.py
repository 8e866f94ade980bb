"""Blosc codecs for the activation stores, side by side in one run.

ResNet18 (random init, ``torch.manual_seed(0)``) ``layer4`` activations of ``--images``
generated 224-px photos (``ray-dissect make-dataset``, normalised as the job does) are written
to a fresh sharded Zarr array (256-image shards, 32-image chunks, as ``storage/arrays.py``
creates them) and read back whole, once per codec. Prints per codec the CPU seconds of the
write and of the read (the best of ``--repeats``, after a warm-up) and the store's size
relative to the raw bytes; the first row is the codec the stores use (``arrays.CODEC``),
the second the one they used before.

Usage: PYTHONPATH=$PWD python benchmarks/bench_codecs.py [--images 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

CODECS: dict[str, dict[str, Any] | None] = {
    "lz4 5 shuffle (now)": None,
    "zstd 3 bitshuffle (before)": {"cname": "zstd", "clevel": 3, "shuffle": "bitshuffle"},
    "zstd 1 shuffle": {"cname": "zstd", "clevel": 1, "shuffle": "shuffle"},
    "uncompressed": {},
}


def activations(images: int) -> np.ndarray:
    """(images, 512, 7, 7) float32 ResNet18 ``layer4`` maps of generated photos."""
    import torch

    from ray_dissect.datasets.registry import open_dataset
    from ray_dissect.models.extract import Extractor
    from ray_dissect.spec import parse_spec

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "ray_dissect", "make-dataset", tmp, "--images",
                        str(images), "--image-size", "224", "--mask-size", "112"],
                       check=True, stdout=subprocess.DEVNULL)
        spec = parse_spec({"model": {"name": "resnet18", "weights": "none"},
                           "layers": ["layer4"], "dataset": {"root": tmp}})
        dataset = open_dataset(spec.dataset)
        torch.manual_seed(0)
        extractor = Extractor(spec.model, spec.layers, threads=2)
        out = [extractor([dataset.read_image(i) for i in range(b, min(b + 32, images))])
               for b in range(0, images, 32)]
    return np.concatenate([o["layer4"] for o in out])


def measure(acts: np.ndarray, codec: dict[str, Any] | None) -> tuple[float, float, float]:
    """(write CPU s, read CPU s, stored bytes / raw bytes) of one codec."""
    import zarr
    from zarr.codecs import BloscCodec

    from ray_dissect.storage.arrays import CODEC

    settings = CODEC if codec is None else codec
    compressors = BloscCodec(**settings) if settings else None
    with tempfile.TemporaryDirectory() as tmp:
        arr = zarr.open_group(tmp, mode="w").create_array(
            "a", shape=acts.shape, dtype="float32", chunks=(32, *acts.shape[1:]),
            shards=(256, *acts.shape[1:]), compressors=compressors)
        t0 = time.process_time()
        arr[:] = acts
        t1 = time.process_time()
        back = arr[:]
        t2 = time.process_time()
        assert np.array_equal(back, acts)
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    return t1 - t0, t2 - t1, size / acts.nbytes


def best(acts: np.ndarray, codec: dict[str, Any] | None, repeats: int
         ) -> tuple[float, float, float]:
    """The least write and read CPU seconds over ``repeats`` runs, and the size."""
    runs = [measure(acts, codec) for _ in range(repeats)]
    return min(r[0] for r in runs), min(r[1] for r in runs), runs[0][2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="the best of this many runs")
    args = parser.parse_args()
    acts = activations(args.images)
    print(f"{args.images} images, {acts.nbytes / 1e6:.0f} MB, "
          f"{float((acts == 0).mean()):.2f} zeros")
    measure(acts, None)  # warm-up: Blosc's and Zarr's first-use costs
    rows = {name: best(acts, codec, args.repeats) for name, codec in CODECS.items()}
    base = rows["zstd 3 bitshuffle (before)"]
    for name, (w, r, size) in rows.items():
        print(f"{name:28s} write {w:6.3f} s  read {r:6.3f} s  size {size:5.3f}  "
              f"(before / this: write {base[0] / w:4.1f}x, read {base[1] / r:4.1f}x)")


if __name__ == "__main__":
    main()
