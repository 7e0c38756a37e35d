"""The CAM method names, without torch: the page lists them before the models (and torch) load.

:mod:`xray_xai.explain.cam` computes the maps and re-exports :data:`CAM_METHODS`.
"""

# Name -> class name in pytorch_grad_cam. All weight the last stage's activations by the gradient of the logit:
# Grad-CAM by the channel-mean gradient, HiResCAM element-wise (provably faithful to the
# logit for a global-average-pooled head), Grad-CAM++ with higher-order weights, LayerCAM by
# the positive gradient at each position.
CAM_METHODS: dict[str, str] = {
    "gradcam": "GradCAM",
    "hirescam": "HiResCAM",
    "gradcam++": "GradCAMPlusPlus",
    "layercam": "LayerCAM",
}
