"""Sub-specs of the visual analyses a job runs beside (or instead of) dissection."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ray_dissect.spec.base import UNIQUE, Frozen

GradientMethod = Literal["saliency", "guided_backprop", "cam", "gradcam", "guided_gradcam"]
LAYER_METHODS = frozenset({"cam", "gradcam", "guided_gradcam"})


class AttributionSpec(Frozen):
    """Attribution maps of every image (the ``attribution`` stage, on the model actors).

    ``methods``: ``saliency`` and ``guided_backprop`` (max over colour channels of the absolute
    gradient of the target logit), ``gradcam`` (captum's LayerGradCam at ``layer``, ReLU'd,
    upsampled bilinearly), ``cam`` (the ``head``-weighted GAP input maps; conv -> GAP ->
    linear models only; ``head`` defaults to the model's last ``nn.Linear``) and
    ``guided_gradcam`` (their product). ``target``: ``predicted`` (each image's argmax),
    a class index, or ``regression`` (the sum of all outputs). ``layer_input`` takes the
    layer's input instead of its output (e.g. EfficientNet's ``_avg_pooling``).
    ``crop_threshold``: Grad-CAM crop boxes where the min-max-normalised map reaches it.
    ``limit``: only the first N images.
    """

    methods: Annotated[tuple[GradientMethod, ...], Field(min_length=1), UNIQUE] = ("saliency",
                                                                            "gradcam")
    layer: str | None = None
    head: str | None = None
    layer_input: bool = False
    target: Literal["predicted", "regression"] | Annotated[int, Field(ge=0)] = "predicted"
    crop_threshold: Annotated[float, Field(gt=0, le=1)] = 0.3
    limit: Annotated[int, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _layer_for_layer_methods(self) -> AttributionSpec:
        needs = sorted(LAYER_METHODS & set(self.methods))
        if needs and self.layer is None:
            raise ValueError(f"{', '.join(needs)} need 'layer' (e.g. the last conv block)")
        return self


class AnalysesSpec(Frozen):
    """The visual analyses to run (each optional)."""

    attribution: AttributionSpec | None = None
