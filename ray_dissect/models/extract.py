"""Activations of the chosen layers, one batch at a time.

``Extractor`` is a plain class (model loaded once in ``__init__``, then called per batch), so it
runs the same inside a Ray actor and in a test. It returns, per layer, the module's output as
(n_images, units, h, w) float32; a module whose output is (n, units) is stored as (n, units, 1, 1).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from ray_dissect.errors import ModelError
from ray_dissect.models.build import build_model, check_layers
from ray_dissect.spec import ModelSpec, PreprocessSpec

log = logging.getLogger(__name__)


def preprocess(images: Sequence[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    """Resize (PIL bilinear, only when needed) and normalise a batch of images.

    Args:
        images: each (h, w, 3) uint8 RGB.
    Returns:
        (n, 3, size, size) float32, ``(x / 255 - mean) / std``.
    """
    size = spec.size
    out = np.empty((len(images), 3, size, size), dtype=np.float32)
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    for i, img in enumerate(images):
        if img.shape[:2] != (size, size):
            img = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))
        out[i] = (img.transpose(2, 0, 1).astype(np.float32) / 255.0 - mean) / std
    return out


class _Recorder:
    """Forward hooks that keep each named module's output of the current forward pass."""

    def __init__(self, model: Any, layers: Sequence[str]) -> None:
        self.outputs: dict[str, list[Any]] = {name: [] for name in layers}
        modules = dict(model.named_modules())
        self.handles = [modules[name].register_forward_hook(self._hook(name)) for name in layers]

    def _hook(self, name: str) -> Any:
        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            self.outputs[name].append(output)
        return hook

    def take(self) -> dict[str, Any]:
        result = {}
        for name, outs in self.outputs.items():
            if len(outs) != 1:
                raise ModelError(f"layer {name!r} ran {len(outs)} times in one forward pass",
                                 expected="a module called exactly once",
                                 hint="pick a module that is not shared (see `ray-dissect layers`)")
            result[name] = outs[0]
            outs.clear()
        return result


class Extractor:
    """One model replica that turns preprocessed batches into layer activations.

    Args:
        model_spec: which model; built here, once.
        layers: module names whose outputs are kept.
        threads: torch intra-op threads (fixed so results do not depend on the worker count).
        device: ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, model_spec: ModelSpec, layers: Sequence[str], threads: int = 1,
                 device: str = "cpu") -> None:
        import torch

        torch.set_num_threads(threads)
        self.device = device
        self.model = build_model(model_spec).to(device)
        check_layers(self.model, layers)
        self.layers = tuple(layers)
        self.preprocess_spec = model_spec.preprocess
        self._recorder = _Recorder(self.model, self.layers)

    def __call__(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch of (h, w, 3) uint8 images; return {layer: (n, units, h, w) float32}."""
        import torch

        batch = torch.from_numpy(preprocess(images, self.preprocess_spec)).to(self.device)
        with torch.inference_mode():
            self.model(batch)
        out = {}
        for name, tensor in self._recorder.take().items():
            if not isinstance(tensor, torch.Tensor) or tensor.ndim not in (2, 4):
                raise ModelError(f"layer {name!r} output is not a (n, c) or (n, c, h, w) tensor",
                                 hint="choose a convolutional layer")
            arr = tensor.detach().float().cpu().numpy()
            out[name] = arr[:, :, None, None] if arr.ndim == 2 else arr
        return out
