"""Forward hooks that zero a layer's activations, and the model's decisions under them.

CCE's ``compute_ranges_importance`` zeroed the activations inside a hook and then recomputed
the logits as ``fc(flatten(avgpool(.)))``, which only works at ResNet's ``layer4``. Here the
hook *returns* the modified tensor, so PyTorch hands it to every later module and the model's
own forward computes the logits, whatever the architecture. Edits see the layer's (n, units,
h, w) maps view, also for token and channels-last layers, whose other tokens pass unchanged
(:func:`ray_dissect.models.layout.edit_in_layout`). The decision functions require the model's
output to be (batch, classes) logits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from ray_dissect.errors import ModelError
from ray_dissect.models.layout import edit_in_layout
from ray_dissect.spec import LayerLayout

Edit = Callable[[Any], Any]


@contextmanager
def replaced_output(model: Any, layer: str, edit: Edit, layout: LayerLayout | None = None
                    ) -> Iterator[None]:
    """Within the block, module ``layer``'s output is replaced by ``edit(output)``.

    Args:
        model: an ``nn.Module``.
        layer: the module's name in ``model.named_modules()``.
        edit: maps the layer's (n, units, h, w) maps to the maps later modules receive.
        layout: the layer's declared layout (``None``: inferred from its output).
    """
    module = dict(model.named_modules())[layer]
    in_layout = edit_in_layout(edit, layer, layout)
    handle = module.register_forward_hook(lambda _m, _inputs, out: in_layout(out))
    try:
        yield
    finally:
        handle.remove()


def _per_unit(values: np.ndarray, like: Any) -> Any:
    """(U,) numpy values as a tensor broadcasting over ``like``'s (n, U, ...) layout."""
    import torch

    shape = (1, -1) + (1,) * (like.ndim - 2)
    return torch.as_tensor(values, device=like.device).view(shape)


def range_zeroer(lo: np.ndarray, hi: np.ndarray, inclusive: bool) -> Edit:
    """An edit zeroing unit u's activations a with lo[u] < a < hi[u] (<= when ``inclusive``).

    Args:
        lo, hi: (U,) float64 bounds per unit; lo = +inf (or lo > hi) leaves a unit untouched.
            The comparison is done in float64, so bounds taken from float32 activations
            include exactly those values.
        inclusive: the clustered method's ``bounds: inclusive`` rule (else ``strict``).
    """
    import torch

    def edit(out: Any) -> Any:
        low, high = _per_unit(lo, out), _per_unit(hi, out)
        a = out.double()
        inside = (a >= low) & (a <= high) if inclusive else (a > low) & (a < high)
        return torch.where(inside, torch.zeros_like(out), out)

    return edit


def unit_zeroer(units: Sequence[int], n_units: int) -> Edit:
    """An edit setting the activations of ``units`` (channel indices of an (n, U, ...) output
    with ``n_units`` channels) to zero, NaN included."""
    import torch

    zero = np.zeros(n_units, dtype=bool)
    zero[list(units)] = True

    def edit(out: Any) -> Any:
        return torch.where(_per_unit(zero, out), torch.zeros_like(out), out)

    return edit


def logits_of(model: Any, x: Any) -> np.ndarray:
    """The model's output on batch ``x`` as (n, K) float64 logits.

    Raises:
        ModelError: the output is not a (batch, classes) tensor.
    """
    import torch

    with torch.inference_mode():
        out = model(x)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError("the model's output is not (batch, classes) logits", given=shape,
                         hint="studies ranges_importance and unit_ablation need a classifier; "
                              "drop them for this model")
    return out.detach().double().cpu().numpy()


def check_logits(model: Any, size: int) -> None:
    """Forward one black ``size`` x ``size`` image; raise :class:`ModelError` unless the model
    returns (batch, classes) logits."""
    import torch

    logits_of(model, torch.zeros(1, 3, size, size))


def decide(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (n, K) float64 and argmax classes (n,) int64 (ties: lowest)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    return probs, np.argmax(logits, axis=1).astype(np.int64)


def decisions(model: Any, x: Any, layer: str | None = None, edit: Edit | None = None,
              layout: LayerLayout | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decide` on the model's logits for ``x``, with ``layer``'s output edited (its
    maps view: ``layout`` as :func:`replaced_output`)."""
    if layer is None or edit is None:
        return decide(logits_of(model, x))
    with replaced_output(model, layer, edit, layout):
        return decide(logits_of(model, x))
