"""The model sub-spec: which network, which weights, how images are preprocessed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from ray_dissect.spec.base import ADDED_LATER, Frozen
from ray_dissect.spec.fingerprint import (
    checkpoint_fingerprint,
    factory_fingerprint,
    is_file_factory,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PreprocessSpec(Frozen):
    """Images are resized to ``size`` x ``size`` (bilinear), scaled to [0, 1] and normalised;
    with ``resize``, resized so the shorter side is ``resize``, then centre-cropped to ``size``
    (the concept masks cropped alike)."""

    size: Annotated[int, Field(gt=0, le=4096)] = 224
    """Images are resized to size x size pixels (bilinear) before the model; with `resize`,
    the side of the centre crop."""
    resize: Annotated[int | None, Field(gt=0, le=4096), ADDED_LATER] = None
    """Resize-then-centre-crop (torchvision's Resize(resize) + CenterCrop(size)): the shorter
    side is resized to `resize` (>= `size`), then the central size x size window is kept; the
    concept masks are cropped to the same window. Default: no crop (the whole image, squashed
    to size x size)."""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    """Per-channel (R, G, B) mean subtracted after scaling to [0, 1] (ImageNet's)."""
    std: tuple[Annotated[float, Field(gt=0)], ...] = IMAGENET_STD
    """Per-channel (R, G, B) standard deviation divided by (ImageNet's)."""

    @field_validator("std")
    @classmethod
    def _three_channels(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(value) != 3:
            raise ValueError(f"needs 3 values (R, G, B), got {len(value)}")
        return value

    @model_validator(mode="after")
    def _crop_fits(self) -> PreprocessSpec:
        if self.resize is not None and self.resize < self.size:
            raise ValueError(f"resize {self.resize} is smaller than the crop size {self.size}; "
                             "set resize >= size (e.g. resize 256, size 224)")
        return self


class LayerLayout(Frozen):
    """How a layer's output is read as (units, h, w) maps (see :mod:`ray_dissect.models.layout`).

    ``kind``: ``nchw`` (convolutional, the default for 4-D outputs), ``nhwc`` (channels last,
    e.g. Swin stages) or ``tokens`` ((n, T, C): ``prefix`` leading tokens such as class and
    register tokens are dropped, the rest laid out row-major on ``grid`` = [rows, columns];
    either may be left out and is then inferred: a square grid after 0 or 1 tokens).
    """

    kind: Literal["nchw", "nhwc", "tokens"]
    """`nchw` (convolutional), `nhwc` (channels last) or `tokens` ((n, T, C) ViT tokens)."""
    prefix: Annotated[int | None, Field(ge=0)] = None
    """Leading tokens (class, register) dropped before the grid (`tokens` only; default
    inferred)."""
    grid: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]] | None = None
    """[rows, columns] of the patch grid (`tokens` only; default inferred: square)."""

    @model_validator(mode="after")
    def _tokens_only(self) -> LayerLayout:
        if self.kind != "tokens" and (self.prefix is not None or self.grid is not None):
            raise ValueError(f"prefix and grid go only with kind 'tokens' (got {self.kind!r})")
        return self


class CheckpointWeights(Frozen):
    """A local state dict, loaded with ``torch.load(..., weights_only=True)``."""

    checkpoint: Path
    """A local state dict (a `state_dict` key and `module.` prefixes are accepted); hashed by size
    and sha256.
    """


class ModelSpec(Frozen):
    """Which network to dissect.

    Exactly one of ``name`` (a torchvision classification model; whether torchvision has it
    is checked when the model is built, by the job's preflight, not by this schema, which
    stays torch-free) or ``factory``
    (``"path/to/file.py:function"`` or ``"package.module:function"`` returning an ``nn.Module``;
    this runs user code) must be given. ``weights`` applies to both: ``none`` keeps the
    initialisation, a torchvision weights name (``DEFAULT``, ``IMAGENET1K_V1``) downloads them
    (``name`` only), ``{checkpoint: PATH}`` loads a local state dict.

    The spec hash covers a factory file and a checkpoint by content (see
    :mod:`ray_dissect.spec.fingerprint`). ``factory_sha256`` is set by ``submit`` when it ships
    a factory file as a module: the sha256 of the shipped copy, so the shipped spec hashes as
    the original one; it is refused beside a file factory (whose file is hashed directly).
    ``classifier`` names the linear head whose (classes x units) weights the report shows
    (only the report reads it).
    Numerics (all off by default; each changes the activations, so each is hashed when set):
    ``tf32`` lets cuDNN and cuBLAS use TF32 on CUDA (off: strict fp32; a no-op on CPU),
    ``init_seed`` seeds torch's generator while the model is built, so every replica of a
    model with ``weights: none`` (or a factory that draws random tensors) has the same weights
    on every actor and in every run; set another value for another random baseline.
    ``layouts`` declares how token or channels-last layers are read as maps (every view of
    :mod:`ray_dissect.models.layout`; hashed when set, as it changes the stored maps).
    ``bf16`` runs the forward under ``torch.autocast`` in bfloat16 (activations are stored as
    float32 either way), ``channels_last`` puts the model and its input in NHWC memory format.
    """

    name: str | None = None
    """A torchvision classification model (e.g. `resnet18`); give this or `factory`."""
    factory: str | None = None
    """`path/file.py:function` or `package.module:function` returning an `nn.Module` (runs your
    code); give this or `name`.
    """
    weights: str | CheckpointWeights = "none"
    """`none` (keep the initialisation), a torchvision weights name (`DEFAULT`, `IMAGENET1K_V1`;
    downloads, `name` only) or `{checkpoint: PATH}`.
    """
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for the torchvision builder or the factory."""
    preprocess: PreprocessSpec = PreprocessSpec()
    """How images are resized and normalised for the model."""
    factory_sha256: Annotated[str | None, Field(pattern=r"^[0-9a-f]{64}$"), ADDED_LATER] = None
    """Set by `submit` when it ships a factory file: the shipped copy's sha256, so the shipped spec
    hashes as the original (not set by hand).
    """
    classifier: Annotated[str | None, ADDED_LATER, Field(
        description="module name of the model's linear head (e.g. '_fc', 'fc'); the report's "
                    "classes page ranks the last dissected layer's units by its weights")] = None
    tf32: Annotated[bool, ADDED_LATER] = False
    """TF32 convolutions and matmuls on CUDA (off: strict fp32, cuDNN deterministic; a no-op on
    CPU). Changes the activations.
    """
    bf16: Annotated[bool, ADDED_LATER] = False
    """Run the forward under bfloat16 autocast (activations are stored as float32). Changes the
    activations.
    """
    channels_last: Annotated[bool, ADDED_LATER] = False
    """NHWC memory format for the model and its input. Changes the activations."""
    init_seed: Annotated[int, Field(ge=0, lt=2**63), ADDED_LATER] = 0
    """Seeds torch while the model is built, so random-init weights are the same on every actor and
    in every run.
    """
    layouts: Annotated[dict[str, LayerLayout], ADDED_LATER, Field(
        description="per layer (module name), how its output is read as (units, h, w) maps; "
                    "undeclared layers: 4-D outputs as (n, C, h, w), 3-D ones as ViT tokens "
                    "(a square patch grid after 0 or 1 class tokens)")] = Field(
        default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.name is None) == (self.factory is None):
            raise ValueError("give exactly one of 'name' (torchvision) or 'factory'")
        if self.factory is not None and isinstance(self.weights, str) and self.weights != "none":
            raise ValueError("a factory model takes weights 'none' or {checkpoint: PATH}")
        if self.factory is not None and ":" not in self.factory:
            raise ValueError("factory must look like 'path/file.py:function' or 'pkg.mod:function'")
        if self.factory_sha256 is not None and (self.factory is None
                                                or is_file_factory(self.factory)):
            raise ValueError("factory_sha256 goes only with a module factory (set by submit "
                             "for a shipped factory file); a factory file is hashed directly")
        return self

    def content_data(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` (this spec's hashed dump) with the factory file and the checkpoint
        replaced by their content fingerprints, and ``factory_sha256`` folded into the
        factory's (see :mod:`ray_dissect.spec.fingerprint`). ``classifier`` is left out: only
        the report reads it, so naming the head redoes no stage."""
        data.pop("factory_sha256", None)
        data.pop("classifier", None)
        if self.factory is not None:
            data["factory"] = factory_fingerprint(self.factory, self.factory_sha256)
        if isinstance(self.weights, CheckpointWeights):
            data["weights"] = {"checkpoint": checkpoint_fingerprint(self.weights.checkpoint)}
        return data
