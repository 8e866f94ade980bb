"""What attribution maps explain: the target classes of each image, their probabilities and
the class names.

Targets are ``(B, T) int64`` class indices (T maps per image and method; -1 for the regression
target) with ``(B, T) float32`` softmax probabilities of the logits (NaN for regression):

- ``"predicted"``: each image's argmax (T = 1); ``{top_k: k}`` (a ``TopKTarget``): its k most
  probable classes, most probable first (T = k);
- an index, or a list of indices: the same classes for every image (T = 1 or the list's length);
- ``"folder"``: the class of each image's folder (given as ``folder_targets``);
- ``"regression"``: the sum of all outputs (T = 1).

Class names (:func:`class_names`): a ``classes`` file (one name a line, in output order), the
dataset's class folders when they are as many as the outputs, or the ImageNet names
torchvision ships for a 1,000-way head (no download).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ray_dissect import storage
from ray_dissect.errors import SpecError
from ray_dissect.spec.analyses import AttributionTarget, TopKTarget

IMAGENET_CLASSES = 1000


def imagenet_names() -> tuple[str, ...]:
    """The 1,000 ImageNet class names, in the order of torchvision's classifiers' outputs."""
    from torchvision.models import ResNet18_Weights

    return tuple(ResNet18_Weights.DEFAULT.meta["categories"])


def read_class_names(path: str, outputs: int) -> tuple[str, ...]:
    """A classes file's names (one a line, blank lines dropped); SpecError unless there are
    exactly ``outputs`` of them."""
    try:
        text = storage.read_text(storage.location(path))
    except OSError as err:
        raise SpecError("job spec field 'analyses.attribution.classes': cannot read the file",
                        given=path, hint=str(err)) from None
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != outputs:
        raise SpecError("job spec field 'analyses.attribution.classes': one name per output",
                        given=f"{len(names)} names in {path}",
                        expected=f"{outputs} (the model's outputs)",
                        hint="one class name a line, in output order")
    return names


def class_names(outputs: int, classes_file: str | None, folders: Sequence[str]
                ) -> tuple[str, ...]:
    """The model's class names: the file, the folders when as many as the outputs, ImageNet's
    for 1,000 outputs, else () (numbers only)."""
    if classes_file is not None:
        return read_class_names(classes_file, outputs)
    if len(folders) == outputs:
        return tuple(folders)
    return imagenet_names() if outputs == IMAGENET_CLASSES else ()


def folder_targets(folders: Sequence[str], labels: np.ndarray, names: Sequence[str]
                   ) -> np.ndarray:
    """(N,) int64 class index of each image's folder: the folder's own number when the class
    names are the folders, else the folder name's position among ``names`` (case and ``_``
    vs space ignored).

    Raises:
        SpecError: an image has no folder, or a folder is not a class name.
    """
    if tuple(names) == tuple(folders):
        index = {i: i for i in range(len(folders))}
    else:
        keys = {_key(n): i for i, n in enumerate(names)}
        missing = [f for f in folders if _key(f) not in keys]
        if missing or not names:
            raise SpecError("target 'folder': a class folder is not one of the model's classes",
                            given=missing[:3] or list(folders)[:3],
                            expected="folder names among the class names",
                            hint="name the folders after the classes or give 'classes:'")
        index = {i: keys[_key(f)] for i, f in enumerate(folders)}
    if len(labels) and int(np.min(labels)) < 0:
        raise SpecError("target 'folder': an image lies outside every class folder",
                        given=int(np.sum(labels < 0)), expected="every image in a subfolder",
                        hint="use target: predicted")
    return np.array([index[int(lab)] for lab in labels], dtype=np.int64)


def _key(name: str) -> str:
    return name.strip().lower().replace("_", " ")


def resolve(target: AttributionTarget, logits: Tensor, folder: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """The (B, T) int64 target classes of a batch and their (B, T) float32 probabilities.

    Args:
        target: the spec's ``target``.
        logits: (B, K) outputs of the batch (any (B, ...) for ``regression``).
        folder: (B,) int64 folder classes, needed by ``"folder"``.
    """
    batch = logits.shape[0]
    if target == "regression":
        return (np.full((batch, 1), -1, np.int64), np.full((batch, 1), np.nan, np.float32))
    probs = torch.softmax(logits.detach().double().flatten(1), 1)
    if isinstance(target, TopKTarget):
        classes = probs.topk(min(target.top_k, probs.shape[1]), 1).indices
    elif target == "predicted":
        classes = probs.argmax(1, keepdim=True)
    elif target == "folder":
        if folder is None:
            raise SpecError("target 'folder' needs the images' class folders",
                            hint="use format: images with one subfolder per class")
        classes = torch.as_tensor(folder, device=probs.device).reshape(batch, 1)
    else:
        wanted = [target] if isinstance(target, int) else list(target)
        _check_range(wanted, probs.shape[1])
        classes = torch.as_tensor(wanted, device=probs.device).expand(batch, -1)
    chosen = probs.gather(1, classes)
    return classes.cpu().numpy().astype(np.int64), chosen.cpu().numpy().astype(np.float32)


def _check_range(classes: list[int], n: int) -> None:
    bad = [c for c in classes if not 0 <= c < n]
    if bad:
        raise SpecError("job spec field 'analyses.attribution.target': class out of range",
                        given=bad, expected=f"indices in [0, {n})", hint="targets index the logits")
