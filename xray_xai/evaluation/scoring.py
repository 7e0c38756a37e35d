"""Score labelled films with a classifier exactly as the app scores an upload: the app's loader,
:meth:`Classifier.prepare`, batched logits and the app's out-of-distribution check."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from .. import CLASSES
from ..data import Sample
from ..imaging import InputError, LoadedImage, load_image
from ..models.classifier import Classifier
from ..models.ood import assess_ood


@dataclass
class Scored:
    """Scores of the images that could be read, and the files that could not."""

    samples: list[Sample]
    logits: np.ndarray  # raw (uncalibrated) logit of PNEUMONIA, one per sample
    member_probabilities: np.ndarray  # (n, members) calibrated P(pneumonia) of each ensemble member
    unusual: np.ndarray  # (n,) bool: the app's out-of-distribution check flags the film
    failures: list[tuple[str, str]]  # (file name, reason)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=int)


def blur_input(sigma: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """A Gaussian blur of ``sigma`` px at the model's input size (reflected borders): a softer film."""

    def perturb(x: torch.Tensor) -> torch.Tensor:
        blurred = gaussian_filter(x[0, 0].double().numpy(), sigma, mode="reflect")
        return torch.from_numpy(blurred).to(x.dtype)[None, None].contiguous(memory_format=torch.channels_last)

    return perturb


def stretch_input(factor: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The film stretched in height by ``factor`` about its centre, width kept (border pixels
    repeated where a squeeze leaves room): the same film squashed into the square from another
    shape. The training films' squash makes the lungs' aspect ratio a label cue, so a network that
    leans on it moves with this."""

    def perturb(x: torch.Tensor) -> torch.Tensor:
        theta = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0 / factor, 0.0]]], dtype=x.dtype).expand(x.shape[0], 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x.contiguous(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.contiguous(memory_format=torch.channels_last)

    return perturb


def score_samples(
    classifier: Classifier,
    samples: list[Sample],
    batch_size: int = 32,
    progress: bool = True,
    perturb: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Scored:
    """Decode, preprocess (then ``perturb``) and score ``samples`` in batches, with the app's own
    out-of-distribution check; unreadable files are skipped and listed."""
    kept: list[Sample] = []
    failures: list[tuple[str, str]] = []
    images: list[LoadedImage] = []
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    batch: list[torch.Tensor] = []
    threshold = classifier.card.ood.get("threshold")

    def flush() -> None:
        if batch:
            scores = classifier.score(torch.cat(batch))
            distances = [None] * len(batch) if scores.distance is None else [float(d) for d in scores.distance]
            unusual = [assess_ood(image, d, threshold).flagged for image, d in zip(images, distances, strict=True)]
            parts.append((scores.logits, scores.member_probabilities, np.array(unusual, dtype=bool)))
            batch.clear()
            images.clear()

    for sample in tqdm(samples, desc="scoring", unit="img", file=sys.stderr, disable=not progress):
        try:
            image = load_image(sample.path)
        except InputError as error:
            failures.append((f"{CLASSES[sample.label]}/{sample.path.name}", str(error)))
            continue
        x = classifier.prepare(image.pixels)
        batch.append(x if perturb is None else perturb(x))
        images.append(image)
        kept.append(sample)
        if len(batch) == batch_size:
            flush()
    flush()
    if not parts:
        return Scored(kept, np.zeros(0), np.zeros((0, 1)), np.zeros(0, dtype=bool), failures)
    logits, members, unusual = (np.concatenate(column) for column in zip(*parts, strict=True))
    return Scored(kept, logits, members, unusual, failures)


def calibrated(classifier: Classifier, logits: np.ndarray) -> np.ndarray:
    """Calibrated P(pneumonia) of raw logits, by the card's temperature."""
    return classifier.calibrate(torch.as_tensor(logits, dtype=torch.float64)).numpy()
