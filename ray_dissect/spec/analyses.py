"""Sub-specs of the visual analyses a job runs beside (or instead of) dissection."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ray_dissect.spec.base import ADDED_LATER, UNIQUE, Frozen

GRADIENT_METHODS = ("saliency", "guided_backprop", "cam", "gradcam", "guided_gradcam",
                    "integrated_gradients", "smoothgrad", "input_x_gradient", "occlusion",
                    "gradcam_pp", "scorecam", "layercam")
GradientMethod = Literal["saliency", "guided_backprop", "cam", "gradcam", "guided_gradcam",
                         "integrated_gradients", "smoothgrad", "input_x_gradient", "occlusion",
                         "gradcam_pp", "scorecam", "layercam", "feature_maps", "weights"]
LAYER_METHODS = frozenset({"cam", "gradcam", "guided_gradcam", "gradcam_pp", "scorecam",
                           "layercam", "feature_maps"})


class UnitAttributionSpec(Frozen):
    """Per-unit attribution (stage ``unit_attribution``): which input pixels drive unit u of
    ``layer`` (one of the job's layers) on its top images.

    For each of ``units`` (``all`` or indices) its first ``top_k`` top images (the
    ``top_images`` stage; ``top_k`` at most ``top_images.k``) are attributed to the unit's
    spatial mean activation with captum's ``NeuronGradient`` (``gradient``: max over channels
    of the absolute gradient) or ``NeuronIntegratedGradients`` (``integrated_gradients``:
    summed over channels, zero baseline, ``steps``), ``units_per_task`` units per work unit.
    """

    layer: str
    """A layer among the job's `layers` (its top images come from them)."""
    units: Annotated[tuple[Annotated[int, Field(ge=0)], ...], Field(min_length=1),
                     UNIQUE] | Literal["all"] = "all"
    """`all` or a list of unit indices."""
    top_k: Annotated[int, Field(ge=1, le=100)] = 3
    """Top images per unit (at most `top_images.k`)."""
    method: Literal["gradient", "integrated_gradients"] = "gradient"
    """captum's `NeuronGradient` or `NeuronIntegratedGradients`."""
    steps: Annotated[int, Field(ge=2, le=1024)] = 16
    """Integrated-gradients steps."""
    units_per_task: Annotated[int, Field(ge=1)] = 16
    """Units per work unit."""


class TopKTarget(Frozen):
    """``{top_k: k}``: explain each image's k most probable classes."""

    top_k: Annotated[int, Field(ge=1, le=20)]
    """How many classes, most probable first."""


AttributionTarget = (Literal["predicted", "regression", "folder"] | Annotated[int, Field(ge=0)]
                     | Annotated[tuple[Annotated[int, Field(ge=0)], ...], Field(min_length=1),
                                 UNIQUE] | TopKTarget)


class AttributionSpec(Frozen):
    """Attribution maps of every image (the ``attribution`` stage, on the model actors).

    ``methods``: ``saliency`` and ``guided_backprop`` (max over colour channels of the absolute
    gradient of the target logit; guided at every rectifier the model calls, refused for a
    model with none), ``gradcam`` (captum's LayerGradCam at ``layer``, ReLU'd, upsampled
    bilinearly), ``gradcam_pp``, ``scorecam`` and ``layercam`` (at ``layer``, the same way),
    ``cam`` (the ``head``-weighted GAP input maps; conv -> GAP -> linear models only; ``head``
    defaults to the model's last ``nn.Linear``), ``guided_gradcam`` (guided backprop times
    Grad-CAM), ``integrated_gradients`` (``ig_steps``, zero baseline), ``smoothgrad``
    (``smoothgrad_samples`` copies with N(0, ``smoothgrad_stdev``) noise in network-input
    units, seeded by ``seed``), ``input_x_gradient`` and ``occlusion`` (a zero
    ``occlusion_window`` square every ``occlusion_stride`` px); ``feature_maps``, the maps of
    ``feature_layers`` (default: ``layer``'s output) as grey images (each map min-max scaled
    to uint8), and ``weights``, the first convolution's filters as images. ``target``:
    ``predicted`` (each image's argmax), ``{top_k: k}`` (its k most probable classes), a
    class index or a list of them (every image explained for each), ``folder`` (the class of
    the image's folder, ``format: images``), or ``regression`` (the sum of all outputs).
    ``classes``: a text file of class names, one a line, in output order (default: the
    ImageNet names for a 1,000-way head, else the dataset's class folders when they are as
    many as the outputs). ``layer_input`` takes the layer's input instead of its output (e.g.
    EfficientNet's ``_avg_pooling``). ``crop_threshold``: Grad-CAM crop boxes where the
    min-max-normalised map reaches it. ``limit``: only the first N images.
    """

    methods: Annotated[tuple[GradientMethod, ...], Field(min_length=1), UNIQUE] = ("saliency",
                                                                            "gradcam")
    """Maps to compute: `saliency`, `guided_backprop`, `gradcam`, `cam`, `guided_gradcam`,
    `integrated_gradients`, `smoothgrad`, `input_x_gradient`, `occlusion`, `gradcam_pp`,
    `scorecam`, `layercam`, `feature_maps`, `weights`.
    """
    layer: str | None = None
    """Module for the CAM methods and, without `feature_layers`, `feature_maps` (checked before
    any work).
    """
    head: str | None = None
    """The linear head for `cam` (default: the model's last `nn.Linear`)."""
    layer_input: bool = False
    """Use the layer's input instead of its output (EfficientNet's `_avg_pooling` for `cam`)."""
    target: AttributionTarget = "predicted"
    """The classes each image's maps explain: `predicted` (argmax), `{top_k: k}` (the k most
    probable), a class index or a list of them, `folder` (the image's class folder), or
    `regression` (sum of all outputs).
    """
    crop_threshold: Annotated[float, Field(gt=0, le=1)] = 0.3
    """Grad-CAM crop boxes where the min-max-normalised map reaches this."""
    limit: Annotated[int, Field(gt=0)] | None = None
    """Only the first N images (default all)."""
    classes: Annotated[str | None, ADDED_LATER] = None
    """A text file of class names, one a line, in output order (default: ImageNet's for a
    1,000-way head, else the dataset's class folders when as many as the outputs).
    """
    feature_layers: Annotated[tuple[str, ...], UNIQUE, ADDED_LATER] = ()
    """Modules whose maps `feature_maps` stores, any number (default: `layer`'s output)."""
    ig_steps: Annotated[int, Field(ge=2, le=1024), ADDED_LATER] = 32
    """Integrated-gradients steps (from the all-zero input)."""
    smoothgrad_samples: Annotated[int, Field(ge=1, le=1024), ADDED_LATER] = 16
    """SmoothGrad's noisy copies per image."""
    smoothgrad_stdev: Annotated[float, Field(gt=0), ADDED_LATER] = 0.5
    """SmoothGrad's noise standard deviation, in network-input units (after normalisation)."""
    occlusion_window: Annotated[int, Field(ge=1), ADDED_LATER] = 16
    """Side of occlusion's zero square, pixels."""
    occlusion_stride: Annotated[int, Field(ge=1), ADDED_LATER] = 8
    """Step of occlusion's square, pixels."""
    scorecam_batch: Annotated[int, Field(ge=1, le=4096), ADDED_LATER] = 64
    """Masked copies per Score-CAM forward."""
    seed: Annotated[int, Field(ge=0), ADDED_LATER] = 0
    """Seeds SmoothGrad's noise."""

    @model_validator(mode="after")
    def _layer_for_layer_methods(self) -> AttributionSpec:
        layered = LAYER_METHODS - ({"feature_maps"} if self.feature_layers else set())
        needs = sorted(layered & set(self.methods))
        if needs and self.layer is None:
            raise ValueError(f"{', '.join(needs)} need 'layer' (e.g. the last conv block)")
        if self.feature_layers and "feature_maps" not in self.methods:
            raise ValueError("feature_layers needs 'feature_maps' in methods")
        return self

    @property
    def n_targets(self) -> int:
        """Maps per image and method: k for ``top_k``, the list's length, else 1."""
        if isinstance(self.target, TopKTarget):
            return self.target.top_k
        return len(self.target) if isinstance(self.target, tuple) else 1

    @property
    def map_layers(self) -> tuple[str, ...]:
        """The layers whose feature maps are stored (``feature_layers``, else ``layer``)."""
        if "feature_maps" not in self.methods:
            return ()
        return self.feature_layers or ((self.layer,) if self.layer else ())


class ReceptiveFieldsSpec(Frozen):
    """Empirical receptive fields by occlusion (the ``receptive_fields`` stage, model actors).

    For each unit of ``layers`` (names among the job's ``layers``) and ``units`` (``all`` or a
    list of unit indices), its first ``top_k`` top images (the ``top_images`` stage; ``top_k``
    must not exceed ``top_images.k``) are occluded in network-input space (after resizing,
    before normalisation) by an ``occluder`` x ``occluder`` window at origins ``stride`` apart
    (Zhou et al.: 11 and 3; the right/bottom remainder is occluded only with
    ``cover_remainder``). ``fill``: ``noise`` (per pixel and channel N(120, 60) / 255 clipped
    to [0, 1], seeded by ``seed`` and the image index) or a constant in [0, 1] (0 = black).
    Each unit's discrepancy at its clean peak is painted over the input (the mean of the
    windows covering a pixel), re-centred on the peak's input-space centre and averaged over
    its top images (Zhou); ``compat`` uses the seed's signed maximum, overwrite painting and
    contour / stretched-box / sum / min-max chain instead. ``batch_size`` occluded copies per
    forward (default ``resources.batch_size``); ``images_per_task`` distinct images per work
    unit (each image is occluded once per layer, for every unit that has it). ``image_maps``
    keeps each chosen unit's per-image discrepancy maps for the report's panel (the seed's
    images / maps / overlay with the field's box); ``None``: when a layer has at most 64 chosen
    units. It only adds an output, so it redoes no occlusion.
    """

    layers: Annotated[tuple[str, ...], Field(min_length=1), UNIQUE]
    """Layers (among the job's `layers`) whose units get receptive fields."""
    units: Annotated[tuple[Annotated[int, Field(ge=0)], ...], Field(min_length=1),
                     UNIQUE] | Literal["all"] = "all"
    """`all` or a list of unit indices."""
    top_k: Annotated[int, Field(ge=1, le=100)] = 10
    """Top images occluded per unit (at most `top_images.k`)."""
    occluder: Annotated[int, Field(ge=1)] = 11
    """Side of the square occluding window, in input pixels."""
    stride: Annotated[int, Field(ge=1)] = 3
    """Distance between window origins, in input pixels."""
    fill: Annotated[float, Field(ge=0, le=1)] | Literal["noise"] = "noise"
    """`noise` (seeded N(120, 60)/255 per pixel) or a constant in [0, 1] (0 is black)."""
    seed: Annotated[int, Field(ge=0)] = 0
    """Seed of the noise fill (with the image index)."""
    cover_remainder: bool = False
    """Also occlude the right/bottom remainder the stride leaves."""
    compat: bool = False
    """The seed implementation's chain (signed maximum, overwrite painting, contour / stretched box
    / sum / min-max).
    """
    batch_size: Annotated[int, Field(gt=0, le=4096)] | None = None
    """Occluded copies per forward (default `resources.batch_size`)."""
    images_per_task: Annotated[int, Field(gt=0)] = 4
    """Distinct top images per work unit."""
    image_maps: Annotated[bool | None, ADDED_LATER] = None
    """Keep each chosen unit's per-image discrepancy maps for the report's panel (default: when a
    layer has at most 64 chosen units); adds an output only.
    """


QuantizeMode = Literal["none", "plain", "inclusive", "exclusive"]


class PrismSpec(Frozen):
    """PRISM colour maps of the first ``limit`` images (stages ``prism_pca`` and ``prism``).

    The first three principal components of ``layer``'s features (every position of every
    image one sample; an exact joint PCA, each component's largest loading positive), scored
    per position, normalised to RGB over the whole image set; with ``gradual_extrapolation``
    upsampled through ``ge_layers`` (modules that run before ``layer``, in any order: they are
    applied from ``layer`` back toward the input, multiplying by each one's channel mean), so
    the maps reach the resolution of the earliest of them. ``quantize``: ``none``, or 27
    colours, all of them (``plain``: TorchPRISM with both ``--inclusive --exclusive``), only
    those common to every image (``inclusive``) or the others (``exclusive``), before GE as
    TorchPRISM. ``split_rgb`` adds per-channel panels;
    ``clusters`` groups the images by k-means of their colour presence (seeded by ``seed``).
    ``saliency: gradcam`` (TorchPRISM's ``--saliency=gradcam``) adds the Grad-CAM of each
    image's predicted class at ``layer``, min-max scaled per image, as a fourth (alpha)
    channel at the colours' resolution. The driver holds the whole set's maps (images x 3 x
    H x W float32, more with ``split_rgb``), hence ``limit`` (64 by default).
    """

    layer: str
    """The layer whose features are reduced by PCA to three colours."""
    ge_layers: Annotated[tuple[str, ...], UNIQUE] = ()
    """Modules before `layer` used for gradual extrapolation (any order)."""
    gradual_extrapolation: bool = True
    """Upsample the colours through `ge_layers` (needs them)."""
    quantize: QuantizeMode = "none"
    """`none`, or 27 colours: all (`plain`), those common to every image (`inclusive`) or the
    others (`exclusive`).
    """
    split_rgb: bool = False
    """Add a panel per colour channel."""
    clusters: Annotated[int, Field(ge=1)] | None = None
    """Group the images by k-means of their colour presence into this many clusters."""
    seed: Annotated[int, Field(ge=0)] = 0
    """Seed of that k-means."""
    limit: Annotated[int, Field(gt=0)] = 64
    """PRISM of the first N images (the driver holds all their maps)."""
    saliency: Annotated[Literal["none", "gradcam"], ADDED_LATER] = "none"
    """`gradcam`: the predicted class's Grad-CAM at `layer` as the colours' alpha channel."""

    @model_validator(mode="after")
    def _ge_needs_layers(self) -> PrismSpec:
        if self.layer in self.ge_layers:
            raise ValueError(f"ge_layers must not hold the PCA layer {self.layer!r}")
        if self.gradual_extrapolation and not self.ge_layers:
            raise ValueError("gradual_extrapolation needs ge_layers (e.g. the pooling layers "
                             "before 'layer'); or set gradual_extrapolation: false")
        return self


class AnalysesSpec(Frozen):
    """The visual analyses to run (each optional)."""

    attribution: AttributionSpec | None = None
    """Attribution maps of every image (the `attribution` stage)."""
    receptive_fields: Annotated[ReceptiveFieldsSpec | None, ADDED_LATER] = None
    """Empirical receptive fields by occlusion (`receptive_fields` stage)."""
    prism: Annotated[PrismSpec | None, ADDED_LATER] = None
    """PRISM colour maps (`prism_pca` and `prism` stages)."""
    unit_attribution: Annotated[UnitAttributionSpec | None, ADDED_LATER] = None
    """Which pixels drive chosen units on their top images (`unit_attribution` stage)."""
