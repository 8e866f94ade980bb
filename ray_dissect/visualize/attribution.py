"""Gradient and CAM attribution maps (design visual.md section 2), batched and hook-clean.

Raw maps are ``(B, H, W) float32`` tensors at input resolution, one per method in
:data:`METHODS`; captum (0.9) does the gradient work. The target score is the logit (before
softmax) of the per-sample predicted class (default), of one class index for all samples, of
per-sample class indices, or ``"regression"``: the sum of all outputs (the all-ones vector over
the outputs, as in the journey seed's robot model).

- ``saliency``: max over colour channels of ``|d score / d input|`` (captum ``Saliency``).
- ``guided_backprop``: max over colour channels of ``|guided gradient|``, the guided rule at
  every rectifier the forward calls, module or functional (:mod:`.guided`; captum's
  ``GuidedBackprop`` only sees ``nn.ReLU`` modules). A model without one is refused.
- ``gradcam``: captum ``LayerGradCam(..., relu_attributions=True)`` at the named layer,
  upsampled bilinearly (``align_corners=False``) to H x W. A token layer (ViT: (B, T, C), or
  any layer with a declared ``layout``) is read as (B, C, h, w) maps exactly as extraction
  reads it (:func:`ray_dissect.models.layout.as_maps`): the layer's output and its gradient
  are both reshaped, then ``relu(sum_c mean_hw(dS/dA_c) A_c)``, the same formula.
- ``cam``: the head-weighted sum of the global-average-pool input maps, ``sum_c W[t, c] A_c``
  (no ReLU, no bias), for models conv -> GAP -> linear head; upsampled the same way.
- ``guided_gradcam``: ``guided_backprop`` times the upsampled ``gradcam``, pixel by pixel.
- ``integrated_gradients``, ``smoothgrad``, ``input_x_gradient``, ``occlusion`` (captum) and
  ``gradcam_pp``, ``scorecam``, ``layercam`` (on the Grad-CAM layer, upsampled the same way):
  see :mod:`.methods`.

The seed's defects are not reproduced: every sample gets its own target (no item-0 backward),
guided backprop is not the DeconvNet rule, hooks are removed also on exceptions, and the model
is left in eval mode with its weights, buffers and hooks unchanged. Normalisation is for display
only (:func:`to_display`, :func:`overlay`); :func:`crop` is the seed's ``gradcam2crop`` done as a
real crop. Everything runs on the device of the model and images.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ray_dissect.errors import LayerNotFoundError, SpecError
from ray_dissect.models.layout import as_maps
from ray_dissect.spec import LayerLayout
from ray_dissect.visualize import methods as mt
from ray_dissect.visualize.display import Crop, crop, jet, overlay, tile, to_display
from ray_dissect.visualize.guided import guided_gradients

__all__ = ["METHODS", "AttributionRunner", "Crop", "crop", "feature_maps", "jet", "layer_maps",
           "overlay", "tile", "to_display", "weights"]

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("saliency", "guided_backprop", "cam", "gradcam", "guided_gradcam",
                             "integrated_gradients", "smoothgrad", "input_x_gradient",
                             "occlusion", "gradcam_pp", "scorecam", "layercam")
LAYER_METHODS = frozenset({"cam", "gradcam", "guided_gradcam", "gradcam_pp", "scorecam",
                           "layercam"})
LOW_METHODS = ("cam", "gradcam", "gradcam_pp", "scorecam", "layercam")
"""Methods computed at the layer's (h, w) and upsampled (``upsample=False`` keeps them low)."""
Target = str | int | Sequence[int] | Tensor
_EPS = 1e-12


@dataclass(frozen=True)
class _Probe:
    """One no-grad forward: the outputs, the layer's maps and the head's input."""

    logits: Tensor
    maps: Tensor | None
    head_input: Tensor | None


class _SumOutputs(nn.Module):
    """Wraps a model so that its single output per sample is the sum of all its outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        """(B, ...) -> (B, 1): the regression target score."""
        return self.model(x).flatten(1).sum(1, keepdim=True)


def _module(model: nn.Module, name: str) -> nn.Module:
    """The named submodule, or LayerNotFoundError listing close and valid names."""
    names = [n for n, _ in model.named_modules() if n]
    if name in names:
        return model.get_submodule(name)
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    preview = ", ".join(repr(n) for n in names[:12]) + (" ..." if len(names) > 12 else "")
    raise LayerNotFoundError(
        "unknown layer", given=name,
        expected=f"one of the model's {len(names)} module names ({preview})",
        hint=f"did you mean {', '.join(map(repr, close))}?" if close
        else "list them with [n for n, _ in model.named_modules()]")


def _upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, h, w) -> (B, H, W) bilinear, ``align_corners=False``."""
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def _channel_max_abs(grads: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H, W) float32: max over channels of the absolute value."""
    return grads.detach().abs().amax(1).float()


def _check_images(images: Tensor) -> Tensor:
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise SpecError("images must be a batch", given=shape,
                        expected="a (B, 3, H, W) floating-point tensor",
                        hint="add the batch dimension with images[None]")
    return images


class AttributionRunner:
    """Binds a model (and a layer and linear head for CAM methods), then computes maps.

    The model is put in eval mode once here; nothing else about it is changed.

    Args:
        model: the network; ``model(images)`` returns (B, K) logits (any (B, ...) for the
            ``"regression"`` target).
        layer: module name for cam / gradcam / guided_gradcam (e.g. ``"layer4"``); it must run
            exactly once per forward.
        head: module name of the ``nn.Linear`` head, needed by cam only (e.g. ``"fc"``).
        layer_input: use the layer's input instead of its output (captum's
            ``attribute_to_layer_input``), e.g. ``layer="_avg_pooling"`` for the GAP input of
            EfficientNet-Lite, whose last ReLU6 module is reused.
        params: settings of integrated gradients, smoothgrad, occlusion and Score-CAM.
        layout: how the layer's output is read as maps (the job's ``model.layouts`` entry);
            None: 4-D outputs are (B, C, h, w), 3-D ones ViT tokens (inferred).
    """

    def __init__(self, model: nn.Module, layer: str | None = None, head: str | None = None,
                 *, layer_input: bool = False, params: mt.MethodParams | None = None,
                 layout: LayerLayout | None = None) -> None:
        self.params, self.layout = params or mt.MethodParams(), layout
        if model.training:
            log.debug("AttributionRunner: switching the model to eval mode")
        self.model = model.eval()
        self.layer_name, self.head_name, self.layer_input = layer, head, layer_input
        self.layer = _module(model, layer) if layer is not None else None
        self.head = _module(model, head) if head is not None else None
        if self.head is not None and not isinstance(self.head, nn.Linear):
            raise SpecError("the CAM head must be an nn.Linear module", given=head,
                            expected="the name of the final nn.Linear (e.g. 'fc')",
                            hint=f"{head!r} is a {type(self.head).__name__}")

    def attribute(self, images: Tensor, methods: Sequence[str], target: Target = "predicted",
                  *, upsample: bool = True) -> dict[str, Tensor]:
        """Computes each requested method's maps for the whole batch.

        Args:
            images: (B, C, H, W) float, on the model's device (normalised as the model expects).
            methods: names from :data:`METHODS`.
            target: ``"predicted"`` (per-sample argmax of the logits), a class index, a (B,)
                sequence/tensor of per-sample class indices, or ``"regression"``.
            upsample: False returns the :data:`LOW_METHODS` at the layer's (h, w) resolution.

        Returns:
            method name -> (B, H, W) float32 raw map ((B, h, w) for the layer methods but
            guided_gradcam when ``upsample`` is False), on the images' device.
        """
        names = self._check_methods(methods)
        images = _check_images(images)
        probe = self._probe(images, with_layer=bool(LAYER_METHODS & set(names)),
                            with_head="cam" in names)
        targets, regression = _resolve_target(target, probe.logits)
        scorer: nn.Module = _SumOutputs(self.model) if regression else self.model
        work = _Work(self, images, targets, scorer, probe, regression)
        out = {name: work.get(name) for name in names}
        if not upsample:
            out.update({n: work.get(n + "_low") for n in LOW_METHODS if n in names})
        return out

    def _check_methods(self, methods: Sequence[str]) -> list[str]:
        if isinstance(methods, str):
            methods = [methods]
        bad = [m for m in methods if m not in METHODS]
        if bad or not methods:
            raise SpecError("unknown attribution method", given=bad or list(methods),
                            expected=f"names from {', '.join(METHODS)}",
                            hint="check the spelling in the spec's methods list")
        if self.layer is None and LAYER_METHODS & set(methods):
            raise SpecError("the CAM methods need a layer", given=list(methods),
                            expected="AttributionRunner(model, layer='...')",
                            hint="name the last convolutional block, e.g. 'layer4'")
        if "cam" in methods and self.head is None:
            raise SpecError("cam needs the linear head after the global average pool",
                            given=self.head_name, expected="AttributionRunner(..., head='fc')",
                            hint="cam works on conv -> GAP -> nn.Linear models only")
        return list(dict.fromkeys(methods))

    def _probe(self, images: Tensor, *, with_layer: bool, with_head: bool) -> _Probe:
        """No-grad forward keeping the layer's maps (checked: one call) and the head's input."""
        seen: dict[str, list[Tensor]] = {"maps": [], "head": []}
        hooks = []
        if with_layer and self.layer is not None:
            def on_layer(_m: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
                seen["maps"].append(args[0] if self.layer_input else out)
            hooks.append(self.layer.register_forward_hook(on_layer))
        if with_head and self.head is not None:
            def on_head(_m: nn.Module, args: tuple[Tensor, ...]) -> None:
                seen["head"].append(args[0])
            hooks.append(self.head.register_forward_pre_hook(on_head))
        try:
            with torch.no_grad():
                logits = self.model(images)
        finally:
            for hook in hooks:
                hook.remove()
        if with_layer and len(seen["maps"]) != 1:
            raise SpecError(f"layer {self.layer_name!r} must run once per forward",
                            given=f"{len(seen['maps'])} calls", expected="exactly 1 call",
                            hint="reused modules (a shared ReLU) are ambiguous: pick another")
        return _Probe(_check_logits(logits), seen["maps"][0] if seen["maps"] else None,
                      seen["head"][-1] if seen["head"] else None)


def _check_logits(logits: object) -> Tensor:
    if not isinstance(logits, Tensor) or logits.dim() < 2:
        given = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise SpecError("the model must return one tensor of scores per sample", given=given,
                        expected="a (B, K) tensor", hint="wrap the model to return its logits")
    return logits


def _resolve_target(target: Target, logits: Tensor) -> tuple[Tensor, bool]:
    """(B,) int64 class indices on the logits' device, and whether the target is regression."""
    batch, device = logits.shape[0], logits.device
    if isinstance(target, str) and target in ("predicted", "regression"):
        if target == "regression":
            return torch.zeros(batch, dtype=torch.long, device=device), True
        return _classes(logits).argmax(1), False
    if isinstance(target, int) and not isinstance(target, bool):
        idx = torch.full((batch,), target, dtype=torch.long, device=device)
    elif isinstance(target, Tensor | Sequence) and not isinstance(target, str):
        idx = torch.as_tensor(target, device=device).long().reshape(-1)
    else:
        raise SpecError("unknown target", given=target,
                        expected="'predicted', 'regression', a class index or B indices")
    n = _classes(logits).shape[1]
    if idx.shape[0] != batch or bool(((idx < 0) | (idx >= n)).any()):
        raise SpecError("target class out of range or wrong length", given=idx.tolist(),
                        expected=f"{batch} indices in [0, {n})", hint="targets index the logits")
    return idx, False


def _classes(logits: Tensor) -> Tensor:
    if logits.dim() != 2:
        raise SpecError("class targets need (B, K) logits", given=tuple(logits.shape),
                        expected="a 2-D output", hint="use target='regression' for other outputs")
    return logits


class _Work:
    """One attribute() call: computes each map once, reusing shared parts (guided_gradcam)."""

    def __init__(self, run: AttributionRunner, images: Tensor, targets: Tensor,
                 scorer: nn.Module, probe: _Probe, regression: bool) -> None:
        self.run, self.images, self.targets, self.scorer = run, images, targets, scorer
        self.probe, self.regression = probe, regression
        self.size = (images.shape[2], images.shape[3])
        self.cache: dict[str, Tensor] = {}
        self.recipes: dict[str, Callable[[], Tensor]] = {
            "saliency": self._saliency, "guided_backprop": self._guided,
            "gradcam_low": self._gradcam, "cam_low": self._cam, "scorecam_low": self._scorecam,
            "gradcam_pp_low": lambda: mt.gradcam_pp(*self.get_pair()),
            "layercam_low": lambda: mt.layercam(*self.get_pair()),
            "guided_gradcam": lambda: self.get("guided_backprop") * self.get("gradcam")}
        for low in LOW_METHODS:
            self.recipes[low] = partial(self._upsampled, low)
        for name, fn in mt.INPUT_METHODS.items():
            self.recipes[name] = partial(fn, scorer, images, targets, run.params)

    def get(self, name: str) -> Tensor:
        if name not in self.cache:
            self.cache[name] = self.recipes[name]()
        return self.cache[name]

    def _upsampled(self, name: str) -> Tensor:
        return _upsample(self.get(name + "_low"), self.size)

    def get_pair(self) -> tuple[Tensor, Tensor]:
        """The layer's maps and their gradients, (B, K, h, w) each, computed once."""
        if "maps" not in self.cache:
            self.cache["maps"], self.cache["grads"] = self._layer_gradients()
        return self.cache["maps"], self.cache["grads"]

    def _leaf(self) -> Tensor:
        """The images as a new leaf that requires grad (the caller's tensor is left alone)."""
        return self.images.detach().requires_grad_(True)

    def _score(self, x: Tensor) -> Tensor:
        """(B,) target scores of images x (with grad)."""
        return self.scorer(x).gather(1, self.targets[:, None])[:, 0]

    def _saliency(self) -> Tensor:
        from captum.attr import Saliency

        grads = Saliency(self.scorer).attribute(self._leaf(), target=self.targets, abs=True)
        return _channel_max_abs(grads)

    def _guided(self) -> Tensor:
        return _channel_max_abs(guided_gradients(self._score, self.images))

    def _gradcam(self) -> Tensor:
        from captum.attr import LayerGradCam

        if _laid_out(self.probe.maps, self.run.layout):  # tokens: captum would mix axes
            maps, grads = self.get_pair()
            return F.relu((grads.mean((2, 3), keepdim=True) * maps).sum(1)).float()

        gc = LayerGradCam(self.scorer, self.run.layer)
        maps = gc.attribute(self.images, target=self.targets, relu_attributions=True,
                            attribute_to_layer_input=self.run.layer_input)
        return _spatial(maps, self.run.layer_name)[:, 0].detach().float()

    def _layer_gradients(self) -> tuple[Tensor, Tensor]:
        """The layer's (B, K, h, w) maps in a forward with grad and d score / d maps."""
        seen: list[Tensor] = []
        layer = self.run.layer
        assert layer is not None
        hook = layer.register_forward_hook(
            lambda _m, args, out: seen.append(args[0] if self.run.layer_input else out))
        try:
            score = self._score(self._leaf()).sum()
        finally:
            hook.remove()
        maps = self._spatial(seen[0] if len(seen) == 1 else None)
        (grads,) = torch.autograd.grad(score, seen[0])  # the output itself: a view is no input
        return maps.detach(), self._spatial(grads).detach()

    def _spatial(self, maps: Tensor | None) -> Tensor:
        return _spatial(maps, self.run.layer_name, self.run.layout)

    def _scorecam(self) -> Tensor:
        maps = self._spatial(self.probe.maps)
        return mt.scorecam(self.scorer, self.images, maps, self.targets, self.run.params,
                           probabilities=not self.regression)

    def _cam(self) -> Tensor:
        maps = self._spatial(self.probe.maps)
        head = self.run.head
        if not isinstance(head, nn.Linear) or self.probe.head_input is None:
            raise SpecError(f"head {self.run.head_name!r} did not run in the forward",
                            expected="the model's final nn.Linear")
        _check_gap(maps, self.probe.head_input, self.probe.logits, head, self.run)
        rows = (head.weight.sum(0).expand(maps.shape[0], -1) if self.regression
                else head.weight[self.targets])
        return torch.einsum("bc,bchw->bhw", rows.detach(), maps).float()


def _laid_out(maps: Tensor | None, layout: LayerLayout | None) -> bool:
    """Whether a layer's output needs :func:`as_maps` (tokens, channels last)."""
    return maps is not None and (maps.dim() == 3 or (layout is not None and
                                                     layout.kind != "nchw"))


def _spatial(maps: Tensor | None, name: str | None, layout: LayerLayout | None = None
             ) -> Tensor:
    """(B, C, h, w) maps of a layer's output, read in its layout (a view)."""
    if _laid_out(maps, layout):
        assert maps is not None
        maps = as_maps(name or "", maps, layout)
    if maps is None or maps.dim() != 4:
        raise SpecError(f"layer {name!r} does not give (B, C, h, w) maps",
                        given=None if maps is None else tuple(maps.shape),
                        expected="a convolutional layer", hint="pick a conv block's module")
    return maps


def _check_gap(maps: Tensor, head_input: Tensor, logits: Tensor, head: nn.Linear,
               run: AttributionRunner) -> None:
    """SpecError unless head input == spatial mean of the maps (conv -> GAP -> linear)."""
    pooled, fed = maps.mean((2, 3)), head_input.flatten(1)
    scale = float(pooled.abs().max()) + 1.0
    if fed.shape != pooled.shape or not torch.allclose(fed, pooled, rtol=1e-4, atol=1e-5 * scale):
        raise SpecError(f"cam needs conv -> global average pool -> linear: the input of head "
                        f"{run.head_name!r} is not the spatial mean of {run.layer_name!r}'s maps",
                        given=f"maps {tuple(maps.shape)}, head input {tuple(head_input.shape)}",
                        expected="the GAP input (ResNet: layer='layer4', head='fc')",
                        hint="use gradcam for other architectures")
    if logits.dim() == 2 and logits.shape[1] != head.out_features:
        raise SpecError(f"head {run.head_name!r} is not the model's output layer",
                        given=head.out_features, expected=f"{logits.shape[1]} outputs")


def layer_maps(model: nn.Module, layer: str, images: Tensor, *, layer_input: bool = False,
               layout: LayerLayout | None = None) -> Tensor:
    """A layer's raw maps: (B, C, h, w) float32 from one no-grad forward (model in eval),
    token and channels-last outputs read in ``layout`` as extraction reads them."""
    run = AttributionRunner(model, layer, layer_input=layer_input)
    probe = run._probe(_check_images(images), with_layer=True, with_head=False)
    return _spatial(probe.maps, layer, layout).float()


def feature_maps(model: nn.Module, layer: str, images: Tensor, *, layer_input: bool = False,
                 layout: LayerLayout | None = None) -> np.ndarray:
    """A layer's maps as grey images: (B, C, h, w) uint8, each map min-max scaled."""
    return to_display(layer_maps(model, layer, images, layer_input=layer_input, layout=layout))


def weights(model: nn.Module, layer: str | None = None) -> np.ndarray:
    """Conv filters as images: (O, kh, kw, I) uint8, each filter min-max over all its values.

    Args:
        model: the network.
        layer: an ``nn.Conv2d`` module name; default the first one in registration order.
    """
    conv: nn.Module | None
    if layer is None:
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    else:
        conv = _module(model, layer)
    if not isinstance(conv, nn.Conv2d):
        raise SpecError("weights needs an nn.Conv2d", given=layer or type(model).__name__,
                        expected="a Conv2d module name", hint="e.g. 'conv1' on ResNets")
    filters = conv.weight.detach().float().cpu().numpy()
    return np.moveaxis(to_display(filters.reshape(filters.shape[0], -1, 1)).reshape(
        filters.shape), 1, -1)
