"""How a layer's output tensor is read as per-unit maps: the (n, units, h, w) view.

Convolutional layers output (n, C, h, w) and are read as they are. Token layers are not:

- ``tokens``: (n, T, C), a sequence of T tokens of C channels, as ViT and DeiT encoder blocks
  output. The first ``prefix`` tokens (class, distillation and register tokens) are dropped and
  the remaining ``g_h * g_w`` patch tokens are laid out on their ``grid`` (row-major, as the
  patch embedding flattened them), giving a (n, C, g_h, g_w) view.
- ``nhwc``: (n, h, w, C), channels last, as Swin's stages and ConvNeXt's permuted blocks output.

Without a declaration (``model.layouts`` in the job spec) a layer's layout is inferred from its
output: 4-D is ``nchw``; 3-D is ``tokens`` when T is a perfect square (no prefix) or one more
than a perfect square (one class token: torchvision's ``vit_b_16`` encoder layers, (n, 197,
768) -> (n, 768, 14, 14)); any other 3-D output must be declared. A 2-D (n, C) output is a
(n, C, 1, 1) map. Every view here is a strided view of the output (no copy), so an edit of the
view can be written back into the layer's output (:func:`edit_in_layout`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ray_dissect.errors import ModelError
from ray_dissect.spec import LayerLayout

Edit = Callable[[Any], Any]


def _square(n: int) -> int | None:
    """``g`` when ``n == g * g`` (g >= 1), else ``None``."""
    g = math.isqrt(n)
    return g if n > 0 and g * g == n else None


def _token_grid(name: str, tokens: int, layout: LayerLayout | None) -> tuple[int, int, int]:
    """(prefix, g_h, g_w) for a (n, ``tokens``, C) output."""
    prefix = layout.prefix if layout is not None and layout.prefix is not None else None
    grid = layout.grid if layout is not None else None
    if grid is not None:
        prefix = tokens - grid[0] * grid[1] if prefix is None else prefix
        if prefix < 0 or prefix + grid[0] * grid[1] != tokens:
            raise _layout_error(name, f"{tokens} tokens", f"prefix + {grid[0]} x {grid[1]}")
        return prefix, grid[0], grid[1]
    for skip in (prefix,) if prefix is not None else (0, 1):
        g = _square(tokens - skip) if tokens > skip else None
        if g is not None:
            return skip, g, g
    raise _layout_error(name, f"{tokens} tokens", "a square grid of patch tokens after "
                        f"{'the declared prefix' if prefix is not None else '0 or 1 tokens'}")


def _layout_error(name: str, given: str, expected: str) -> ModelError:
    return ModelError(f"layer {name!r} outputs {given}, which is not {expected}",
                      hint=f"declare its layout in the job spec: model.layouts: {{{name!r}: "
                           "{kind: tokens, prefix: P, grid: [H, W]}}")


def resolve(name: str, shape: tuple[int, ...], layout: LayerLayout | None) -> str:
    """The layout kind of a layer whose output (batch included) has ``shape``.

    Raises:
        ModelError: a declared layout that does not fit the output's rank, or an output of
            another rank than 2, 3 or 4.
    """
    wanted = {2: "nchw", 3: "tokens", 4: "nchw"}.get(len(shape))
    kind = layout.kind if layout is not None else wanted
    rank = {"nchw": (2, 4), "nhwc": (4,), "tokens": (3,)}
    if kind is None or len(shape) not in rank[kind]:
        raise ModelError(f"layer {name!r} outputs a tensor of shape {tuple(shape)}, not "
                         f"{'a ' + kind + ' layout' if kind else '(n, C[, h, w]) maps'}",
                         expected="(n, C), (n, C, h, w), (n, T, C) tokens or declared (n, h, "
                                  "w, C)", hint="pick another layer or declare model.layouts")
    return kind


def as_maps(name: str, tensor: Any, layout: LayerLayout | None = None) -> Any:
    """The (n, C, h, w) view of a layer's output ``tensor`` (a view: no copy, any dtype).

    Args:
        name: the layer's module name (for messages).
        tensor: the module's output, (n, C) / (n, C, h, w) / (n, T, C) / (n, h, w, C).
        layout: the layer's declared layout, or ``None`` to infer it (module doc).
    """
    kind = resolve(name, tuple(tensor.shape), layout)
    if tensor.ndim == 2:
        return tensor[:, :, None, None]
    if kind == "nhwc":
        return tensor.permute(0, 3, 1, 2)
    if kind == "tokens":
        prefix, gh, gw = _token_grid(name, tensor.shape[1], layout)
        patches = tensor[:, prefix:, :]
        return patches.unflatten(1, (gh, gw)).permute(0, 3, 1, 2)
    return tensor


def map_shape(name: str, shape: tuple[int, ...], layout: LayerLayout | None = None
              ) -> tuple[int, ...]:
    """(C, h, w) of a layer whose output without batch has ``shape`` (the shape
    :func:`as_maps` gives, without the batch axis)."""
    import torch

    return tuple(as_maps(name, torch.empty((1, *shape), device="meta"), layout).shape[1:])


def edit_in_layout(edit: Edit, name: str, layout: LayerLayout | None = None) -> Edit:
    """``edit`` (which maps (n, C, h, w) maps to new maps) applied to a layer's output in its
    own layout: the output is copied, its maps view is overwritten with the edited maps and
    the copy returned (dropped tokens, e.g. a class token, pass unchanged)."""
    def in_layout(out: Any) -> Any:
        if out.ndim == 2 or resolve(name, tuple(out.shape), layout) == "nchw":
            return edit(out)
        edited = edit(as_maps(name, out, layout))
        copy = out.clone()
        as_maps(name, copy, layout)[...] = edited
        return copy

    return in_layout
