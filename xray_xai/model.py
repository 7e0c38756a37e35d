"""Model creation, the model card, and integrity-checked safetensors checkpoints.

Configuration lives in data: a checkpoint is a ``NAME.safetensors`` weight file plus a
``NAME.json`` model card that names the architecture, the input size, the normalisation, the
temperature, the operating points and the sha256 of the weight file. Nothing here touches the
network and nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load_file, save_file

from .ensemble import Ensemble

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = PROJECT_ROOT / "checkpoints" / "classifier.json"
DEFAULT_LUNG_CHECKPOINT = PROJECT_ROOT / "checkpoints" / "lungs.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or fails its integrity check."""


@dataclass
class ModelCard:
    """Everything needed to rebuild, preprocess for and interpret a classifier checkpoint."""

    arch: str
    input_size: int
    mean: float
    std: float
    classes: tuple[str, ...] = ("NORMAL", "PNEUMONIA")
    temperature: float = 1.0
    operating_points: dict[str, dict[str, float]] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    ood: dict[str, Any] = field(default_factory=dict)
    explanations: dict[str, Any] = field(default_factory=dict)  # e.g. shortcut_threshold per method
    uncertainty: dict[str, Any] = field(default_factory=dict)  # e.g. the member-spread limit that lowers the band
    latency: dict[str, Any] = field(default_factory=dict)
    weights: str = ""
    sha256: str = ""
    weights_dtype: str = "float16"
    members: int = 1  # > 1: a mean-logit ensemble of that many ``arch`` networks (xray_xai.ensemble)
    framing: dict[str, Any] = field(default_factory=dict)  # members that see lung-box crops (xray_xai.framing)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to create_model, e.g. {"output_stride": 16}

    @classmethod
    def from_json(cls, path: str | Path) -> "ModelCard":
        raw = json.loads(Path(path).read_text())
        raw["classes"] = tuple(raw.get("classes", cls.classes))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")


def create_model(arch: str, in_chans: int = 1, num_classes: int = 1, **kwargs: Any) -> torch.nn.Module:
    """A timm model, always randomly initialised: weights never come from a hub."""
    return timm.create_model(arch, pretrained=False, in_chans=in_chans, num_classes=num_classes, **kwargs)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks (weight files can be large)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def save_checkpoint(
    model: torch.nn.Module,
    card: ModelCard,
    card_path: str | Path,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    dtype: torch.dtype = torch.float16,
) -> ModelCard:
    """Write ``card_path`` (JSON) and its weight file next to it; fill in the card's sha256."""
    card_path = Path(card_path)
    card_path.parent.mkdir(parents=True, exist_ok=True)
    weights_path = card_path.with_suffix(".safetensors")
    from .framing import unframed  # the framing needs the lung segmenter, which needs this module

    tensors = {f"model.{k}": _stored(v, dtype) for k, v in unframed(model).state_dict().items()}
    tensors.update({f"extra.{k}": v.detach().float().contiguous().cpu() for k, v in (extra_tensors or {}).items()})
    tmp = weights_path.with_suffix(".safetensors.tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, weights_path)
    card.weights = weights_path.name
    card.weights_dtype = "float32" if dtype == torch.float32 else f"{str(dtype).removeprefix('torch.')} convolution kernels, float32 elsewhere"
    card.sha256 = sha256_file(weights_path)
    card.to_json(card_path)
    return card


def _is_kernel(tensor: torch.Tensor) -> bool:
    """Convolution kernels: 4-D floating tensors, nearly all of a CNN's bytes."""
    return tensor.is_floating_point() and tensor.ndim == 4


def _stored(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Convolution kernels in ``dtype``; norms, biases and the classifier stay float32, which
    keeps probabilities within 1e-3 of the float32 model."""
    tensor = tensor.detach().cpu().contiguous()
    if tensor.is_floating_point():
        return tensor.to(dtype) if _is_kernel(tensor) else tensor.float()
    return tensor


def round_kernels(model: torch.nn.Module, dtype: torch.dtype = torch.float16) -> torch.nn.Module:
    """Round ``model``'s convolution kernels in place to the values :func:`save_checkpoint` stores
    in ``dtype``, so that whatever is fitted afterwards describes the stored file exactly."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if _is_kernel(tensor):
                tensor.copy_(tensor.to(dtype).float())
    return model


def verified_file(card_path: Path, name: str, sha256: str, error: type[Exception] = CheckpointError) -> Path:
    """The tensor file ``name`` next to the card at ``card_path``, after checking that it exists and
    matches the card's sha256 (raises ``error`` otherwise): nothing unverified is ever loaded."""
    path = card_path.parent / name
    if not name or not path.is_file():
        raise error(f"Tensor file {path} named by {card_path.name} is missing.")
    actual = sha256_file(path)
    if actual != sha256:
        raise error(
            f"Tensor file {path.name} fails its integrity check (sha256 {actual[:12]}..., "
            f"{card_path.name} expects {sha256[:12]}...). Refusing to load it."
        )
    return path


def load_checkpoint(
    card_path: str | Path, model_factory=create_model, segmenter=None
) -> tuple[torch.nn.Module, ModelCard, dict[str, torch.Tensor]]:
    """Rebuild the model of a card, after checking the weight file's sha256.

    Returns the model in eval mode (float32, channels_last), its card, and the extra tensors
    stored beside the weights (e.g. feature statistics for out-of-distribution checks).
    ``segmenter``: an already loaded lung segmenter that lung-box members may share (used only
    if its weights are the ones the card names; see :func:`xray_xai.framing.frame_members`).
    """
    card_path = Path(card_path)
    if not card_path.is_file():
        raise CheckpointError(f"Model card not found: {card_path}. Train a model or pass --checkpoint.")
    card = ModelCard.from_json(card_path)
    tensors = load_file(str(verified_file(card_path, card.weights, card.sha256)))
    state = {k.removeprefix("model."): v.float() if v.is_floating_point() else v for k, v in tensors.items() if k.startswith("model.")}
    extras = {k.removeprefix("extra."): v for k, v in tensors.items() if k.startswith("extra.")}
    build = lambda: model_factory(card.arch, **card.model_kwargs)  # noqa: E731
    model = build() if card.members == 1 else Ensemble([build() for _ in range(card.members)])
    model.load_state_dict(state)
    if card.framing:
        from .framing import frame_members

        model = frame_members(model, card.framing, card_path.parent, card.mean, card.std, segmenter)
    model.eval().to(memory_format=torch.channels_last)
    return model, card, extras
