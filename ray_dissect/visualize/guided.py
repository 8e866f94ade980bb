"""Guided backpropagation at every rectifier a model calls (Springenberg et al. 2015).

captum's ``GuidedBackprop`` rewrites the gradient of ``nn.ReLU`` modules only, so on a net
built from ``nn.ReLU6`` (EfficientNet-Lite, MobileNet) or functional ``F.relu`` calls it
returns the plain gradient. Here a :class:`~torch.overrides.TorchFunctionMode` sees every
rectifying call of the forward, module or functional, and swaps it for the same forward with
the guided backward rule:

    grad_in = max(grad_out, 0) * [lo < x < hi]

(``lo = 0, hi = inf`` for ``relu``; ``0, 6`` for ``relu6``; ``min_val, max_val`` for
``hardtanh``; the scalar bounds of ``clamp``/``clamp_min``/``clamp_max``): only positive
gradients pass, and only where the forward input lay in the unit's linear range. The calls
covered are ``torch.relu``, ``F.relu``, ``Tensor.relu``, ``F.relu6``, ``F.hardtanh`` (which
``nn.ReLU``, ``nn.ReLU6`` and ``nn.Hardtanh`` call) and scalar-bounded clamps. An in-place
variant called directly (``torch.relu_``, ``Tensor.relu_``, ``Tensor.clamp_``) is refused with
a one-line error naming it; ``inplace=True`` module/functional calls are run out of place
(their result is what the next layer reads). A forward with no rectifier is refused too: it
would return the plain gradient under another name.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from ray_dissect.errors import SpecError

Bounds = tuple[float, float]

_INPLACE = {torch.relu_, torch.Tensor.relu_, F.relu_, torch.Tensor.clamp_,
            torch.clamp_, torch.Tensor.clamp_min_, torch.clamp_min_, F.hardtanh_}
_OTHER_ACTIVATIONS = {F.silu: "silu", F.gelu: "gelu", F.hardswish: "hardswish",
                      F.leaky_relu: "leaky_relu", F.elu: "elu", torch.sigmoid: "sigmoid",
                      torch.tanh: "tanh", F.mish: "mish", F.softplus: "softplus"}


class _GuidedRectifier(torch.autograd.Function):
    """``clamp(x, lo, hi)`` forward; backward ``relu(grad) * [lo < x < hi]``."""

    @staticmethod
    def forward(x: Tensor, lo: float, hi: float) -> Tensor:
        return x.clamp(min=None if math.isinf(lo) else lo, max=None if math.isinf(hi) else hi)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, lo, hi = inputs
        ctx.save_for_backward((x > lo) & (x < hi))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (inside,) = ctx.saved_tensors
        return grad.clamp(min=0) * inside, None, None


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], i: int, name: str,
         default: Any) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _clamp_bounds(args: tuple[Any, ...], kwargs: dict[str, Any], func: Any) -> Bounds | None:
    """The scalar bounds of a clamp call, None when a bound is a tensor (not a rectifier)."""
    if func in (torch.clamp_min, torch.Tensor.clamp_min):
        lo, hi = _arg(args, kwargs, 1, "min", None), None
    elif func in (torch.clamp_max, torch.Tensor.clamp_max):
        lo, hi = None, _arg(args, kwargs, 1, "max", None)
    else:
        lo, hi = _arg(args, kwargs, 1, "min", None), _arg(args, kwargs, 2, "max", None)
    if isinstance(lo, Tensor) or isinstance(hi, Tensor):
        return None
    return (-math.inf if lo is None else float(lo), math.inf if hi is None else float(hi))


def _bounds(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Bounds | None:
    """(lo, hi) of a rectifying call, None for any other call."""
    if func in (torch.relu, F.relu, torch.Tensor.relu):
        return 0.0, math.inf
    if func is F.relu6:
        return 0.0, 6.0
    if func is F.hardtanh:
        return (float(_arg(args, kwargs, 1, "min_val", -1.0)),
                float(_arg(args, kwargs, 2, "max_val", 1.0)))
    if func in (torch.clamp, torch.Tensor.clamp, torch.clip, torch.Tensor.clip,
                torch.clamp_min, torch.Tensor.clamp_min, torch.clamp_max, torch.Tensor.clamp_max):
        return _clamp_bounds(args, kwargs, func)
    return None


class GuidedMode(TorchFunctionMode):
    """Inside ``with GuidedMode() as mode:`` every rectifier call backpropagates guided.

    Attributes:
        rectifiers: how many calls of each rectifying function were rewritten.
        others: how many calls of other activation functions were seen (for the refusal).
    """

    def __init__(self) -> None:
        super().__init__()
        self.rectifiers: Counter[str] = Counter()
        self.others: Counter[str] = Counter()

    def __torch_function__(self, func: Callable[..., Any], types: Any,
                           args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
                           ) -> Any:
        kwargs = kwargs or {}
        if func in _INPLACE:
            raise SpecError("guided backprop cannot rewrite an in-place rectifier called "
                            "directly", given=_name(func),
                            expected="relu/relu6/hardtanh/clamp calls or nn.ReLU-style modules",
                            hint="use the out-of-place call (x = torch.relu(x))")
        bounds = _bounds(func, args, kwargs)
        x = args[0] if args else None
        if bounds is None or not isinstance(x, Tensor) or not x.is_floating_point():
            if func in _OTHER_ACTIVATIONS:
                self.others[_OTHER_ACTIVATIONS[func]] += 1
            return func(*args, **kwargs)
        self.rectifiers[_name(func)] += 1
        return _GuidedRectifier.apply(x, *bounds)


def _name(func: Any) -> str:
    return str(getattr(func, "__name__", func))


def guided_gradients(score: Callable[[Tensor], Tensor], images: Tensor) -> Tensor:
    """Guided-backprop gradients of ``score`` (the (B,) target scores of (B, C, H, W) images).

    Returns:
        (B, C, H, W) gradients, the images' dtype and device.

    Raises:
        SpecError: the forward called no rectifier (naming the activations it did call), or
            called an in-place one directly.
    """
    leaf = images.detach().requires_grad_(True)
    with GuidedMode() as mode:
        total = score(leaf).sum()
    if not mode.rectifiers:
        found = ", ".join(f"{n} x{c}" for n, c in sorted(mode.others.items())) or "none"
        raise SpecError("guided_backprop needs a rectifier (ReLU, ReLU6, Hardtanh, clamp) and "
                        "the model calls none", given=f"activations {found}",
                        expected="a model with ReLU-style units",
                        hint="use saliency or integrated_gradients for this model")
    (grad,) = torch.autograd.grad(total, leaf)
    return grad
