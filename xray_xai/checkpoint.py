"""Checkpoints: model cards, sha256-verified safetensors files and the stored weight precision.

Configuration lives in data: a checkpoint is a ``NAME.safetensors`` tensor file plus a
``NAME.json`` card that names what to build, how to preprocess for it, what was fitted on it
and the sha256 of the tensor file. Nothing here builds a network and nothing is ever unpickled;
this module imports nothing from the package, so every layer can use it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

# torch and safetensors are imported in the functions that read or write tensors, not here: the
# page reads cards and is served before the models load, and must not wait for torch.

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = PROJECT_ROOT / "checkpoints"
DEFAULT_CHECKPOINT = CHECKPOINTS / "classifier.json"
DEFAULT_LUNG_CHECKPOINT = CHECKPOINTS / "lungs.json"

C = TypeVar("C", bound="Card")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or fails its integrity check."""


@dataclass
class Card:
    """A JSON card: unknown keys are ignored (older readers stay able to read newer cards) and
    lists are read back as tuples where the field is a tuple."""

    @classmethod
    def from_json(cls: type[C], path: str | Path) -> C:
        raw = json.loads(Path(path).read_text())
        values = {}
        for f in fields(cls):
            if f.name in raw:
                value = raw[f.name]
                values[f.name] = tuple(value) if isinstance(value, list) and str(f.type).startswith("tuple") else value
        return cls(**values)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")


@dataclass
class ModelCard(Card):
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
    members: int = 1  # > 1: a mean-logit ensemble of that many ``arch`` networks (xray_xai.models.ensemble)
    framing: dict[str, Any] = field(default_factory=dict)  # members that see lung-box crops (xray_xai.models.framing)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to create_model, e.g. {"output_stride": 16}
    member_kwargs: list[dict[str, Any]] = field(default_factory=list)  # per member, where they differ
    conformal: dict[str, Any] = field(default_factory=dict)  # per-class conformal thresholds (xray_xai.conformal)
    runtime: dict[str, Any] = field(default_factory=dict)  # the serving runtime and precision (xray_xai.models.runtime)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks (weight files can be large)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


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


def read_card(card_path: str | Path, card_type: type[C] = ModelCard) -> C:  # type: ignore[assignment]
    """The card at ``card_path`` (raises CheckpointError when there is none)."""
    card_path = Path(card_path)
    if not card_path.is_file():
        raise CheckpointError(f"Model card not found: {card_path}. Train a model or pass --checkpoint.")
    return card_type.from_json(card_path)


def load_tensors(card_path: str | Path, card: Card) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The verified weights of a card as a float32 state dict, and the extra tensors stored beside them
    (e.g. feature statistics for out-of-distribution checks)."""
    from safetensors.torch import load_file  # deferred: see the imports at the top

    tensors = load_file(str(verified_file(Path(card_path), card.weights, card.sha256)))
    state = {
        k.removeprefix("model."): v.float() if v.is_floating_point() else v
        for k, v in tensors.items()
        if k.startswith("model.")
    }
    extras = {k.removeprefix("extra."): v for k, v in tensors.items() if k.startswith("extra.")}
    return state, extras


def save_checkpoint(
    model: torch.nn.Module,
    card: Card,
    card_path: str | Path,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> Card:
    """Write ``card_path`` (JSON) and its weight file next to it; fill in the card's sha256.

    Convolution kernels are stored in ``dtype`` (``None``: ``torch.float16``), everything else
    in float32. ``model``'s own state dict is stored: pass the bare network, not a wrapper that
    adds inputs to it (see :func:`xray_xai.models.framing.unframed`)."""
    import torch  # deferred: see the imports at the top
    from safetensors.torch import save_file

    dtype = torch.float16 if dtype is None else dtype
    card_path = Path(card_path)
    card_path.parent.mkdir(parents=True, exist_ok=True)
    weights_path = card_path.with_suffix(".safetensors")
    tensors = {f"model.{k}": _stored(v, dtype) for k, v in model.state_dict().items()}
    tensors.update({f"extra.{k}": v.detach().float().contiguous().cpu() for k, v in (extra_tensors or {}).items()})
    tmp = weights_path.with_suffix(".safetensors.tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, weights_path)
    card.weights = weights_path.name
    card.weights_dtype = (
        "float32"
        if dtype == torch.float32
        else f"{str(dtype).removeprefix('torch.')} convolution kernels, float32 elsewhere"
    )
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


def round_kernels(model: torch.nn.Module, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Round ``model``'s convolution kernels in place to the values :func:`save_checkpoint` stores
    in ``dtype`` (``None``: ``torch.float16``, its default), so that whatever is fitted afterwards
    describes the stored file exactly."""
    import torch  # deferred: see the imports at the top

    dtype = torch.float16 if dtype is None else dtype
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if _is_kernel(tensor):
                tensor.copy_(tensor.to(dtype).float())
    return model
