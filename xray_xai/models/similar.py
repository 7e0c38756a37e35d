"""Similar training films: the nearest training radiographs in the classifier's feature space.

The features are the pooled penultimate-layer features of the timm interface
(``forward_head(forward_features(x), pre_logits=True)``), the same ones the prediction and the
out-of-distribution distance use, so a query costs no extra forward pass. They are
standardised with the mean and standard deviation of the index films, projected on their
leading principal axes (which keeps the index small for any width of network, an ensemble's
concatenated features included) and compared by cosine similarity.

An index is a ``NAME.json`` card (ids, classes, the sha256 of the classifier weights it was
built with, the sha256 of its own tensor file) plus ``NAME.safetensors`` (float16 unit-length
embeddings, labels, the standardisation and projection, and the grayscale JPEG thumbnails
packed into one byte array). An index built with other classifier weights is stale: its
neighbours would be wrong, so :func:`load_matching` refuses it with a logged warning.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from safetensors.numpy import load_file, save_file

from ..checkpoint import PROJECT_ROOT, Card, sha256_file, verified_file
from ..results import SimilarCase

DEFAULT_INDEX = PROJECT_ROOT / "checkpoints" / "similar.json"
K = 6  # neighbours shown per analysis
ATTRIBUTION = (
    'Similar films: training split of Kermany, Zhang and Goldbaum (2018), "Labeled Optical Coherence '
    'Tomography (OCT) and Chest X-Ray Images for Classification", Mendeley Data v2, '
    "doi:10.17632/rscbjbr9sj.2, CC BY 4.0 (thumbnails downscaled to grayscale)."
)

log = logging.getLogger(__name__)


class SimilarIndexError(RuntimeError):
    """A similar-case index is missing, incomplete or fails its integrity check."""


class StaleIndexError(SimilarIndexError):
    """An index built with other classifier weights than the loaded classifier's."""


@dataclass(frozen=True, eq=False)
class FeatureSpace:
    """Standardisation plus projection on the leading principal axes of the index films."""

    mean: np.ndarray  # (d,)
    scale: np.ndarray  # (d,) standard deviations, floored
    projection: np.ndarray  # (d, p), orthonormal columns
    explained_variance: float  # share of the standardised variance the p axes keep

    @classmethod
    def fit(cls, features: np.ndarray, dims: int) -> FeatureSpace:
        """Fit on ``(n, d)`` index features; ``dims`` >= d keeps every axis (exact cosine)."""
        features = np.asarray(features, dtype=np.float64)
        mean, scale = features.mean(axis=0), np.maximum(features.std(axis=0), 1e-6)
        _, singular, axes = np.linalg.svd((features - mean) / scale, full_matrices=False)
        p = min(dims, axes.shape[0])
        energy = singular**2
        kept = float(energy[:p].sum() / energy.sum()) if energy.sum() > 0 else 1.0
        return cls(
            mean.astype(np.float32), scale.astype(np.float32), np.ascontiguousarray(axes[:p].T, dtype=np.float32), kept
        )

    def embed(self, features: np.ndarray) -> np.ndarray:
        """``(m, d)`` features -> ``(m, p)`` unit-length embeddings (float32)."""
        features = np.asarray(features, dtype=np.float32)
        if features.shape[-1] != self.mean.shape[0]:
            raise StaleIndexError(
                f"features have {features.shape[-1]} dimensions, the index expects {self.mean.shape[0]}"
            )
        projected = np.einsum("md,dp->mp", np.atleast_2d((features - self.mean) / self.scale), self.projection)
        return projected / np.maximum(np.linalg.norm(projected, axis=-1, keepdims=True), 1e-12)


def nearest(embeddings: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the ``k`` most cosine-similar embeddings for each unit query: ``(m, k)`` indices and similarities.

    ``einsum`` (a single-threaded loop) rather than ``@``: multithreaded BLAS on a matrix-vector
    product this small costs tens of milliseconds when the cores are busy, against ~0.2 ms.
    """
    similarity = np.einsum("mp,np->mn", np.atleast_2d(queries), embeddings)
    k = min(k, embeddings.shape[0])
    top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    top_sim = np.take_along_axis(similarity, top, axis=1)
    order = np.argsort(-top_sim, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_sim, order, axis=1)


def encode_thumbnail(pixels: np.ndarray, size: int, quality: int) -> bytes:
    """A grayscale [0, 1] image squashed to ``size`` x ``size`` and JPEG-encoded."""
    image = Image.fromarray(np.rint(np.clip(pixels, 0, 1) * 255).astype(np.uint8), mode="L")
    buffer = io.BytesIO()
    image.resize((size, size), Image.Resampling.LANCZOS).save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


@dataclass
class IndexCard(Card):
    """What an index holds and which classifier weights it belongs to."""

    classifier_sha256: str
    classes: tuple[str, ...]
    ids: tuple[str, ...]
    dims: int
    explained_variance: float
    thumbnail_size: int
    attribution: str = ATTRIBUTION
    build: dict[str, Any] = field(default_factory=dict)
    weights: str = ""
    sha256: str = ""


@dataclass(frozen=True, eq=False)
class SimilarIndex:
    """Training films searchable by feature similarity, with their labels and thumbnails."""

    card: IndexCard
    space: FeatureSpace
    embeddings: np.ndarray  # (n, p) float32, unit rows
    labels: np.ndarray  # (n,) class indices
    thumbnails: np.ndarray  # uint8 bytes of all JPEGs, concatenated
    offsets: np.ndarray  # (n + 1,) start of each JPEG in ``thumbnails``
    rows: dict[str, int] = field(init=False, repr=False)  # id -> row

    def __len__(self) -> int:
        return len(self.card.ids)

    def search(self, features: np.ndarray, k: int = K) -> tuple[SimilarCase, ...]:
        """The ``k`` most similar index films to one ``(d,)`` feature vector, most similar first."""
        rows, sims = nearest(self.embeddings, self.space.embed(np.reshape(features, (1, -1))), k)
        sims = np.clip(sims, -1.0, 1.0)  # float16 embeddings can overshoot by ~1e-4
        return tuple(
            SimilarCase(self.card.ids[r], self.card.classes[self.labels[r]], round(float(s), 4))
            for r, s in zip(rows[0], sims[0], strict=True)
        )

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", {case_id: i for i, case_id in enumerate(self.card.ids)})

    def thumbnail(self, case_id: str) -> np.ndarray:
        """The uint8 grayscale thumbnail of an index film."""
        row = self.rows[case_id]
        data = self.thumbnails[self.offsets[row] : self.offsets[row + 1]].tobytes()
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("L"))

    def save(self, card_path: str | Path) -> IndexCard:
        """Write the card and its tensor file next to it; fill in the card's sha256."""
        card_path = Path(card_path)
        card_path.parent.mkdir(parents=True, exist_ok=True)
        weights = card_path.with_suffix(".safetensors")
        tensors = {
            "embeddings": self.embeddings.astype(np.float16),
            "labels": self.labels.astype(np.uint8),
            "mean": self.space.mean,
            "scale": self.space.scale,
            "projection": self.space.projection,
            "thumbnails": self.thumbnails,
            "offsets": self.offsets.astype(np.int64),
        }
        # safetensors writes an array's buffer as is: a transposed view would be stored scrambled
        save_file({name: np.ascontiguousarray(t) for name, t in tensors.items()}, str(weights))
        self.card.weights, self.card.sha256 = weights.name, sha256_file(weights)
        card_path.write_text(json.dumps(asdict(self.card), indent=1) + "\n")
        return self.card

    @classmethod
    def load(cls, card_path: str | Path = DEFAULT_INDEX) -> SimilarIndex:
        card_path = Path(card_path)
        if not card_path.is_file():
            raise SimilarIndexError(
                f"Similar-case index not found: {card_path}. Build it with python -m xray_xai.artifacts.similar_index."
            )
        card = IndexCard.from_json(card_path)
        t = load_file(str(verified_file(card_path, card.weights, card.sha256, SimilarIndexError)))
        space = FeatureSpace(t["mean"], t["scale"], t["projection"], card.explained_variance)
        return cls(
            card, space, t["embeddings"].astype(np.float32), t["labels"].astype(np.int64), t["thumbnails"], t["offsets"]
        )


def load_matching(card_path: str | Path, classifier_sha256: str) -> SimilarIndex | None:
    """The index at ``card_path`` if it exists and was built with these classifier weights, else None.

    A missing index is silent (it is optional); a stale or broken one is logged as a warning.
    """
    if not Path(card_path).is_file():
        return None
    try:
        index = SimilarIndex.load(card_path)
    except SimilarIndexError as error:
        log.warning("Similar cases disabled: %s", error)
        return None
    if index.card.classifier_sha256 != classifier_sha256:
        log.warning(
            "Similar cases disabled: the index %s was built with classifier weights %s..., not the loaded %s...; "
            "rebuild it with python -m xray_xai.artifacts.similar_index.",
            Path(card_path).name,
            index.card.classifier_sha256[:12],
            classifier_sha256[:12],
        )
        return None
    return index
