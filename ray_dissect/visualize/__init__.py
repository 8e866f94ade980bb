"""Visual methods on the model actors: receptive fields by occlusion, attribution maps
(saliency, guided backprop, CAM, Grad-CAM) and PRISM. Pure torch/numpy.
May import: `models`, `units`, `storage`, `errors`.
"""
