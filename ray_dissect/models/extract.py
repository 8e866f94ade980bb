"""Activations of the chosen layers, one batch at a time.

``Extractor`` is a plain class (model loaded once in ``__init__``, then called per batch), so it
runs the same inside a Ray actor and in a test. It returns, per layer, the module's output as
(n_images, units, h, w) float32; a module whose output is (n, units) is stored as (n, units, 1, 1),
token and channels-last outputs as their maps view (:mod:`ray_dissect.models.layout`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from ray_dissect.errors import ModelError
from ray_dissect.models.build import build_model, check_layers
from ray_dissect.models.crop import resize_crop
from ray_dissect.models.layout import as_maps
from ray_dissect.spec import ModelSpec, PreprocessSpec

log = logging.getLogger(__name__)


def normalise(image: np.ndarray, spec: PreprocessSpec, out: np.ndarray) -> None:
    """Resize (PIL bilinear, only when needed) and normalise one image into ``out``; with
    ``spec.resize``, resize the shorter side and centre-crop (:mod:`ray_dissect.models.crop`).

    Args:
        image: (h, w, 3) uint8 RGB.
        spec: size, resize, mean and std.
        out: (3, size, size) float32, receives ``(x / 255 - mean) / std``.
    """
    size = spec.size
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    if spec.resize is not None:
        image = resize_crop(image, spec.resize, size)
    elif image.shape[:2] != (size, size):
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
    out[...] = (image.transpose(2, 0, 1).astype(np.float32) / 255.0 - mean) / std


def preprocess(images: Sequence[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    """Resize (PIL bilinear, only when needed) and normalise a batch of images.

    Args:
        images: each (h, w, 3) uint8 RGB.
    Returns:
        (n, 3, size, size) float32, ``(x / 255 - mean) / std``.
    """
    out = np.empty((len(images), 3, spec.size, spec.size), dtype=np.float32)
    for i, img in enumerate(images):
        normalise(img, spec, out[i])
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


def _set_tf32(torch: Any, on: bool) -> None:
    """TF32 in cuDNN convolutions and cuBLAS matmuls on (``tf32``) or off (strict fp32)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        conv.fp32_precision = torch.backends.cuda.matmul.fp32_precision = (
            "tf32" if on else "ieee")
    else:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = on


class Extractor:
    """One model replica that turns preprocessed batches into layer activations.

    On CUDA, cuDNN is made deterministic (``benchmark`` off, ``deterministic`` on) and TF32
    follows ``model_spec.tf32`` (off by default: strict fp32); on CPU ``tf32`` does nothing.
    ``model_spec.bf16`` runs the forward under bfloat16 autocast and
    ``model_spec.channels_last`` puts the model and its input in NHWC, on both.

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
        self.threads, self.device = threads, device
        self.kind = torch.device(device).type
        if self.kind == "cuda":
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
            _set_tf32(torch, model_spec.tf32)
        self.model = build_model(model_spec).to(device)
        self.channels_last, self.bf16 = model_spec.channels_last, model_spec.bf16
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        check_layers(self.model, layers)
        self.layers = tuple(layers)
        self.preprocess_spec = model_spec.preprocess
        self.layouts = model_spec.layouts
        self._recorder = _Recorder(self.model, self.layers)

    def forward(self, batch: Any) -> dict[str, Any]:
        """Run one preprocessed batch already on the device.

        Args:
            batch: (n, 3, size, size) float32 tensor on ``device``.
        Returns:
            {layer: (n, units, h, w) float32 contiguous (NCHW) tensor on ``device``}; a
            (n, units) output becomes (n, units, 1, 1).
        """
        import torch

        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(self.kind, torch.bfloat16,
                                                     enabled=self.bf16):
            self.model(batch)
            return {name: self._maps(name, tensor)
                    for name, tensor in self._recorder.take().items()}

    def _maps(self, name: str, tensor: Any) -> Any:
        """A layer's output as a (n, units, h, w) float32 contiguous tensor."""
        import torch

        if not isinstance(tensor, torch.Tensor):
            raise ModelError(f"layer {name!r} output is a {type(tensor).__name__}, not a "
                             "tensor", hint="choose a module that returns one tensor")
        maps = as_maps(name, tensor.detach(), self.layouts.get(name))
        return maps.float().contiguous()

    def __call__(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch of (h, w, 3) uint8 images; return {layer: (n, units, h, w) float32}."""
        import torch

        batch = torch.from_numpy(preprocess(images, self.preprocess_spec)).to(self.device)
        return {name: t.cpu().numpy() for name, t in self.forward(batch).items()}
