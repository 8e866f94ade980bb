#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): whole NetDissect and clustered K=5 jobs on ResNet18
# layer4 in-process on the GPU (no Ray), 2,000 generated images, every figure a ratio measured
# in the same run, records compared with the CPU scoring of the same activations. Under 8
# minutes on one H100 / H200 (expected: a few minutes; the clustered job's beam searches, on
# one CPU core in-process, are the longest part).
#
# The GPU machine has Python 3.12, torch, torchvision, numpy, numba, scikit-image, pandas but
# no ray, zarr, numcodecs, pydantic, universal-pathlib. Carry these small wheels (~13 MB) in
# .whl/ (git-ignored), downloaded here once with:
#
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 \
#     pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
#     universal-pathlib==0.3.11 pathlib-abc==0.5.2
#
# (pyeda has no wheel: the clustered job uses dedup "string", which needs none.) The script
# installs them into /tmp/site when zarr is not importable. The package itself runs from this
# checkout (PYTHONPATH).
#
# Usage: bash benchmarks/gpu_check.sh [--cpu] [--images N] [--batch B] [--clusters K]
#   --cpu  runs it all on the CPU (tried here first); without it and without a GPU it stops
#          at once. The JSON summary goes to $OUT/gpu_check.json when $OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
cpu=0
for a in "$@"; do [[ $a == --cpu ]] && cpu=1; done
if [[ $cpu == 0 ]] && ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu_check: no GPU here (nvidia-smi not found); use --cpu to run on the CPU" >&2
  exit 2
fi
[[ $cpu == 0 ]] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
if ! "$PY" -c "import zarr, pydantic, upath" 2>/dev/null; then
  [[ -d .whl ]] || { echo "gpu_check: zarr/pydantic missing and no .whl/ folder (see header)" >&2; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
"$PY" -c "import torch, numba; print('torch', torch.__version__, 'numba', numba.__version__)"
json=()
[[ -n ${OUT:-} ]] && json=(--json "$OUT/gpu_check.json")
exec "$PY" benchmarks/gpu_check.py "$@" "${json[@]}"
