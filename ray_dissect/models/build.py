"""Building the model to dissect and discovering its layers.

A model comes from torchvision (``name``), or from a user factory (``factory``), which is
arbitrary user code: only run specs you trust. Checkpoints are always loaded with
``torch.load(..., weights_only=True)``, which cannot execute code.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ray_dissect.errors import LayerNotFoundError, ModelError, SpecError, UserCodeError
from ray_dissect.models.layout import map_shape
from ray_dissect.spec import CheckpointWeights, LayerLayout, ModelSpec
from ray_dissect.spec.messages import did_you_mean

log = logging.getLogger(__name__)

LAYERS_HINT = "run `ray-dissect layers JOB.yaml` to list the model's layers"
# Public module names of factories that live elsewhere in the package: ``ray_dissect.zoo:NAME``
# (the built-in zoo, as specs and stored job directories name it) is ray_dissect.models.zoo.
# The spec keeps the name it was given, so its hash does not depend on the package layout.
FACTORY_MODULES = {"ray_dissect.zoo": "ray_dissect.models.zoo"}


def _resolve_factory(factory: str) -> Callable[..., Any]:
    target, _, func = factory.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise ModelError("model factory file not found", given=target,
                                 hint="give an existing file as 'path/to/file.py:function'")
            module_spec = importlib.util.spec_from_file_location(f"_factory_{path.stem}", path)
            if module_spec is None or module_spec.loader is None:
                raise ModelError("cannot import model factory file", given=target)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(FACTORY_MODULES.get(target, target))
    except ModelError:
        raise
    except Exception as err:
        raise UserCodeError(f"importing model factory {factory!r} failed: {err!r}",
                            hint="fix the factory module") from err
    fn = getattr(module, func, None)
    if not callable(fn):
        raise ModelError(f"model factory {factory!r} has no callable {func!r}",
                         hint="name a function that returns an nn.Module")
    return fn


def check_model_name(name: str) -> None:
    """Raise :class:`SpecError` (naming the field and close names) when torchvision has no
    classification model ``name``.

    Checked when the model is built (preflight, ``ray-dissect layers``, every actor), not by
    the spec's schema: importing torchvision costs ~3 s, which the driver then spends while
    Ray starts instead of before.
    """
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        close = [n for n in available if n.startswith(name[:3])][:4] or ["resnet18"]
        raise SpecError("job spec field 'model.name': unknown torchvision classification "
                        "model", given=name, hint=f"try one of {close}")


def _torchvision_model(spec: ModelSpec) -> Any:
    import torchvision

    check_model_name(str(spec.name))
    weights = spec.weights if isinstance(spec.weights, str) and spec.weights != "none" else None
    try:
        return torchvision.models.get_model(spec.name, weights=weights, **spec.kwargs)
    except Exception as err:
        raise ModelError(f"building torchvision model {spec.name!r} failed: {err}",
                         hint="check model.weights and model.kwargs") from err


def load_checkpoint(model: Any, path: Path) -> None:
    """Load a state dict (optionally under ``state_dict``, optionally ``module.``-prefixed)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError("checkpoint not found", given=str(path),
                         hint="fix model.weights.checkpoint") from None
    except Exception as err:
        raise ModelError(f"cannot load checkpoint {str(path)!r} with weights_only=True: {err}",
                         hint="save a plain state dict: torch.save(model.state_dict())") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise ModelError(f"checkpoint {str(path)!r} does not fit the model: {first}",
                         hint="check model.name/factory and model.kwargs") from err


def _construct(spec: ModelSpec) -> Any:
    """The model's module as its torchvision builder or factory returns it."""
    if spec.name is not None:
        return _torchvision_model(spec)
    fn = _resolve_factory(str(spec.factory))
    try:
        return fn(**spec.kwargs)
    except Exception as err:
        raise UserCodeError(f"model factory {spec.factory!r} raised {err!r}",
                            hint="fix the factory or model.kwargs") from err


def build_model(spec: ModelSpec) -> Any:
    """Build the model in eval mode on the CPU, with its weights.

    The construction runs under ``torch.manual_seed(spec.init_seed)`` inside
    ``torch.random.fork_rng``: random initialisations are the same on every actor and in every
    run, and the caller's generator state is left as it was.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.init_seed)
        model = _construct(spec)
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"model factory {spec.factory!r} returned {type(model).__name__}",
                         expected="a torch.nn.Module")
    if isinstance(spec.weights, CheckpointWeights):
        load_checkpoint(model, spec.weights.checkpoint)
    return model.eval()


def check_layers(model: Any, layers: Sequence[str]) -> None:
    """Raise :class:`LayerNotFoundError` for the first layer that is not a module of ``model``."""
    names = {name for name, _ in model.named_modules() if name}
    for layer in layers:
        if layer not in names:
            close = sorted(n for n in names if n.split(".")[0] == layer.split(".")[0])[:3]
            raise LayerNotFoundError(
                f"job spec field 'layers': {layer!r} is not a module of the model"
                f"{did_you_mean(layer, sorted(names))}",
                expected=f"a name from named_modules(), e.g. {close or sorted(names)[:3]}",
                hint=LAYERS_HINT)


GLOB_CHARS = frozenset("*?[")


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """``*`` matches within one dotted name part, ``**`` across parts, ``?`` one character."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^.]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^.]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i)
            out.append(pattern[i:end + 1] if end > i else re.escape("["))
            i = end + 1 if end > i else i + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _matches(model: Any, pattern: str) -> list[str]:
    modules = [(name, m) for name, m in model.named_modules() if name]
    if pattern.startswith("type:"):
        kind = pattern[len("type:"):]
        return [name for name, m in modules if type(m).__name__ == kind]
    if GLOB_CHARS & set(pattern):
        regex = _glob_regex(pattern)
        return [name for name, _ in modules if regex.match(name)]
    return [pattern] if pattern in dict(modules) else []


def expand_layers(model: Any, patterns: Sequence[str]) -> tuple[str, ...]:
    """The module names that layer patterns select, in pattern order then module order.

    A pattern is a module name (``layer4``), a glob (``features.*``: ``*`` stays within one
    dotted part, ``**`` crosses parts) or a module type (``type:ReLU``, the class name).
    A name selected twice is kept once.

    Raises:
        LayerNotFoundError: a pattern selects nothing.
    """
    out: dict[str, None] = {}
    for pattern in patterns:
        found = _matches(model, pattern)
        if not found:
            kinds = sorted({type(m).__name__ for _, m in model.named_modules()})[:6]
            names = [name for name, _ in model.named_modules() if name]
            raise LayerNotFoundError(
                f"job spec field 'layers': {pattern!r} selects no module of the model"
                f"{did_you_mean(pattern, names)}",
                expected=f"a module name, a glob like 'features.*' or a type like "
                         f"'type:{kinds[0] if kinds else 'ReLU'}'", hint=LAYERS_HINT)
        out.update(dict.fromkeys(found))
    return tuple(out)


def probe_layers(model: Any, size: int, layers: Sequence[str] | None = None,
                 layouts: Mapping[str, LayerLayout] | None = None
                 ) -> list[tuple[str, tuple[int, ...], int]]:
    """(name, output shape without batch, calls) of each named module for one ``size`` x
    ``size`` image, in module order. Modules never called, or returning non-tensors, are left
    out; ``calls`` > 1 marks a module shared within one forward pass. With ``layouts`` (the
    spec's ``model.layouts``), each shape is that of the layer's (units, h, w) maps view
    (:func:`ray_dissect.models.layout.map_shape`; raises ModelError for an unreadable one)."""
    import torch

    wanted = set(layers) if layers is not None else None
    shapes: dict[str, tuple[int, ...]] = {}
    calls: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if not name or (wanted is not None and name not in wanted):
            continue

        def hook(_m: Any, _i: Any, out: Any, name: str = name) -> None:
            if isinstance(out, torch.Tensor):
                shapes.setdefault(name, tuple(out.shape[1:]))
                calls[name] = calls.get(name, 0) + 1
        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    finally:
        for handle in handles:
            handle.remove()
    if layouts is not None:
        shapes = {n: map_shape(n, shape, layouts.get(n)) for n, shape in shapes.items()}
    return [(n, shapes[n], calls[n]) for n, _ in model.named_modules() if n in shapes]


def layer_shapes(model: Any, size: int, layers: Sequence[str] | None = None
                 ) -> list[tuple[str, tuple[int, ...]]]:
    """Output shape (without batch) of each named module for one ``size`` x ``size`` image.

    Modules that are never called, or return non-tensors, are left out.
    """
    return [(name, shape) for name, shape, _ in probe_layers(model, size, layers)]
