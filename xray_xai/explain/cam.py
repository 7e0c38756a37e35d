"""Class activation maps through pytorch-grad-cam, safe to call from concurrent requests.

The package keeps per-call state on the CAM object, registers hooks on the model it is given
and calls ``model.zero_grad()``. :func:`compute_cam` therefore gives it a private copy of the
model that shares the weights' storage but has its own parameter objects (no gradients) and
no hooks, so other threads running the real model never see the CAM's hooks and the model's
parameters, their ``.grad`` and its train/eval mode stay untouched. The CAM object is used as
a context manager (its hooks are removed on exit) and calls are serialised by a module-level
lock.

pytorch-grad-cam (with torchvision's detection ops, scikit-learn's decomposition and
matplotlib behind it) is imported on the first CAM, not with this module: the app starts
seconds sooner and warms it up in the background (:meth:`xray_xai.pipeline.Pipeline.warm_up`).
"""

from __future__ import annotations

import copy
import importlib
import threading
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..models.ensemble import members
from .cam_methods import CAM_METHODS  # kept importable from here too

_LOCK = threading.Lock()


class CamError(ValueError):
    """An unknown CAM method, an unsupported model or an invalid input."""


def cam_class(method: str) -> type:
    """The pytorch-grad-cam class of a method name (imports the package on first use)."""
    if method not in CAM_METHODS:
        raise CamError(f"Unknown CAM method {method!r}; choose one of {', '.join(CAM_METHODS)}.")
    return getattr(importlib.import_module("pytorch_grad_cam"), CAM_METHODS[method])


def find_target_layer(model: nn.Module) -> nn.Module:
    """The last block of a network's deepest feature stage: the stage timm's ``feature_info``
    names (``layer4`` for a ResNet, also the name looked for without ``feature_info``)."""
    info = getattr(model, "feature_info", None)
    name = info[-1]["module"] if isinstance(info, list) and info else "layer4"
    try:
        blocks = list(model.get_submodule(name).children())
    except AttributeError:
        blocks = []
    if not blocks:
        raise CamError(
            f"Cannot find a target layer in {type(model).__name__}: expected a timm network with a "
            f"non-empty '{name}' stage. Pass target_layer explicitly."
        )
    return blocks[-1]


def compute_cam(
    model: nn.Module,
    x: torch.Tensor,
    method: str = "gradcam",
    target_class: int = 1,
    target_layer: nn.Module | None = None,
) -> np.ndarray:
    """Class activation map of a single-logit model for a normalised ``(1, 1, S, S)`` input.

    ``target_class`` 1 shows evidence for the positive class (PNEUMONIA), 0 for the negative
    class (NORMAL). Returns float32 ``(S, S)`` in [0, 1]: the package keeps the positive part
    and min-max scales it per image, so 1 is this image's strongest evidence and a map with
    no positive evidence at all is all zeros. Works inside ``torch.inference_mode()``.

    For an :class:`~xray_xai.models.ensemble.Ensemble` the target is the ensemble's own (mean) logit
    and the map is taken at every member's last stage: the package scales each member's map
    to [0, 1] and averages them, so each member's evidence counts equally.
    """
    method_class = cam_class(method)
    if target_class not in (0, 1):
        raise CamError(f"target_class must be 0 or 1, got {target_class!r}")
    if x.ndim != 4 or x.shape[0] != 1:
        raise CamError(f"expected a (1, C, H, W) input, got shape {tuple(x.shape)}")
    layers = [find_target_layer(m) for m in members(model)] if target_layer is None else [target_layer]
    with _LOCK, torch.inference_mode(False), torch.enable_grad():
        copies: dict[int, object] = {}
        private = private_copy(model, lambda p: nn.Parameter(p.detach(), requires_grad=False), copies)
        if any(id(layer) not in copies for layer in layers):
            raise CamError("target_layer is not a submodule of the model")
        x = x.detach().clone().requires_grad_(True)  # a normal tensor even if x is an inference tensor
        heat = None
        target = importlib.import_module("pytorch_grad_cam.utils.model_targets").BinaryClassifierOutputTarget(
            target_class
        )
        with method_class(model=private, target_layers=[copies[id(layer)] for layer in layers]) as cam:
            heat = cam(input_tensor=x, targets=[target])
    if heat is None:  # the package's __exit__ swallows IndexError
        raise CamError(f"{method} failed on an input of shape {tuple(x.shape)}")
    return heat[0].astype(np.float32)


_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def private_copy(
    module: nn.Module,
    parameter: Callable[[nn.Parameter], torch.Tensor] = lambda p: p,
    copies: dict[int, object] | None = None,
) -> nn.Module:
    """A copy of ``module`` without any of its hooks that shares its buffers and, mapped through
    ``parameter``, its parameters (no tensor data is copied). ``copies`` receives
    ``id(original) -> copy`` for every object copied, e.g. to find a submodule's copy."""
    copies = {} if copies is None else copies
    copies.update({id(p): parameter(p) for p in module.parameters()})
    copies.update({id(b): b for b in module.buffers()})
    for sub in module.modules():
        for name in _HOOK_DICTS:
            hooks = getattr(sub, name, None)
            if hooks is not None:
                copies[id(hooks)] = type(hooks)()
    return copy.deepcopy(module, copies)
