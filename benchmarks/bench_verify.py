"""What verified reuse costs: writing shards with their digests, and checking them on resume.

A sharded activation store like ``activations.zarr`` (``--images`` images of ResNet18
``layer4`` shape, (512, 7, 7) float32, ``--shard`` images per shard; values are ReLU-like:
seeded normal draws with the negatives set to 0) is written shard by shard with
:func:`ray_dissect.storage.arrays.write_shard` (which now also hashes each shard), then the
done shards are listed without (``verify=False``, what a resume did before) and with the
digest check (``verify=True``: read, decode and hash every done shard). Prints the seconds
of each (best of ``--repeats``) and the check's throughput over the raw bytes.

Usage: PYTHONPATH=$PWD python benchmarks/bench_verify.py [--images 2048] [--shard 256]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ray_dissect.storage import arrays

SHAPE = (512, 7, 7)


def best(seconds: Callable[[], float], repeats: int) -> float:
    return min(seconds() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--shard", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shards = -(-args.images // args.shard)
    data = [np.maximum(rng.standard_normal((min(args.shard, args.images - s * args.shard),
                                             *SHAPE), dtype=np.float32), 0)
            for s in range(shards)]
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "a.zarr"
        arrays.create_image_array(store, "x", (args.images, *SHAPE), "float32", args.shard, 32)

        def write() -> float:
            t0 = time.perf_counter()
            for s, block in enumerate(data):
                arrays.write_shard(store, "x", s, args.shard, block)
            return time.perf_counter() - t0

        def listing(verify: bool) -> Callable[[], float]:
            def run() -> float:
                t0 = time.perf_counter()
                assert arrays.done_shards(store, "x", verify=verify).all()
                return time.perf_counter() - t0
            return run

        def hashing() -> float:
            t0 = time.perf_counter()
            for block in data:
                hashlib.sha256(np.ascontiguousarray(block).tobytes()).hexdigest()
            return time.perf_counter() - t0

        written, hashed = best(write, args.repeats), best(hashing, args.repeats)
        plain, checked = (best(listing(v), args.repeats) for v in (False, True))
    raw = args.images * int(np.prod(SHAPE)) * 4 / 2**20
    print(f"{args.images} images x {SHAPE} float32 = {raw:.0f} MiB in {shards} shards")
    print(f"write_shard (with digests): {written:.3f} s, of which sha256 {hashed:.3f} s")
    print(f"done_shards verify=False:   {plain:.4f} s")
    print(f"done_shards verify=True:    {checked:.3f} s ({raw / checked:.0f} MiB/s)")


if __name__ == "__main__":
    main()
