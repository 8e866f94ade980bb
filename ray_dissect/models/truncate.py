"""Running a model only as far as the modules a computation needs (receptive fields, PRISM).

Truncation by forward hooks: a hook keeps each named module's output, and the hook of the
last of them to run raises a private exception that stops the forward pass, so no module
after it runs (an occluded forward of AlexNet cut at ``features.10`` skips the classifier).
This works on any architecture, including data-dependent control flow that torchvision's
``create_feature_extractor`` cannot trace; it needs each named module to run exactly once per
forward pass (checked) and a model that does not catch exceptions around them.

The outputs are the modules' own outputs. A later in-place operation (a ``ReLU(inplace=True)``
after a convolution) never runs, so a convolution's output is its pre-activation value, whereas
the activations stage's hooks see such a tensor after the in-place ReLU overwrote it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from ray_dissect.errors import ModelError


class _Stop(Exception):
    """Raised by the last hook to end the forward pass; never leaves :class:`Truncated`."""


class Truncated:
    """A model run up to (and including) the last of ``layers`` to execute.

    Use as a context manager (the hooks exist only inside it, so the model stays hook-free for
    other stages)::

        with Truncated(model, ["features.10"]) as cut:
            maps = cut(batch)["features.10"]    # (n, U, h, w)

    Args:
        model: an ``nn.Module`` (eval mode is the caller's choice).
        layers: module names, each run exactly once per forward pass.
    """

    def __init__(self, model: Any, layers: Sequence[str]) -> None:
        modules = dict(model.named_modules())
        unknown = [name for name in layers if name not in modules or not name]
        if unknown or not layers or len(set(layers)) != len(layers):
            raise ModelError("layers to truncate at", given=list(layers),
                             expected="distinct module names of the model",
                             hint="see `ray-dissect layers`")
        self.model, self.layers = model, tuple(layers)
        self._modules = [modules[name] for name in self.layers]
        self._outputs: dict[str, Any] = {}
        self._handles: list[Any] = []
        self._running = False

    def __enter__(self) -> Truncated:
        self._handles = [m.register_forward_hook(self._hook(name))
                         for name, m in zip(self.layers, self._modules, strict=True)]
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 trace: TracebackType | None) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, name: str) -> Callable[[Any, Any, Any], None]:
        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            if not self._running:  # the module called outside this object's forward pass
                return
            if name in self._outputs:
                raise ModelError(f"layer {name!r} ran twice in one forward pass",
                                 expected="a module called exactly once",
                                 hint="pick a module that is not shared (see `ray-dissect layers`)")
            self._outputs[name] = output
            if len(self._outputs) == len(self.layers):
                raise _Stop
        return hook

    def __call__(self, x: Any) -> dict[str, Any]:
        """Runs ``x`` until every layer has its output.

        Args:
            x: (n, 3, H, W) input batch, on the model's device.

        Returns:
            {layer: output tensor}, in the order the layers ran (not the listed order).
        """
        if not self._handles:
            raise RuntimeError("call a Truncated model inside its `with` block")
        self._outputs, self._running = {}, True
        try:
            self.model(x)
        except _Stop:
            pass
        finally:
            self._running = False
        outputs, self._outputs = self._outputs, {}
        missing = [name for name in self.layers if name not in outputs]
        if missing:
            raise ModelError(f"layer {missing[0]!r} did not run in the forward pass",
                             hint="pick a module the model calls on every input")
        return outputs

    def at(self, layer: str) -> Callable[[Any], Any]:
        """``x -> cut(x)[layer]``, e.g. the ``truncated`` argument of an occlusion."""
        return lambda x: self(x)[layer]


def call_order(model: Any, layers: Sequence[str], size: int) -> list[str]:
    """``layers`` in the order one forward pass of a ``size`` x ``size`` zero image runs them.

    Raises:
        ModelError: a layer is unknown, runs twice or does not run.
    """
    import torch

    with Truncated(model, layers) as cut, torch.no_grad():
        return list(cut(torch.zeros(1, 3, size, size)))
