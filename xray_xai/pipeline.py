"""One analysis pipeline for the app, the API and the CLI.

``first_pass`` answers fast (decode, prediction, OOD check, lung segmentation, Grad-CAM);
``complete`` adds the slow part (occlusion of the whole ensemble, agreement, anatomy for both
maps, final report).
The app streams the first result, then the complete one; the CLI calls ``analyze``.
:class:`PendingPipeline` holds one still to be loaded while the app already serves its page.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .checkpoint import DEFAULT_CHECKPOINT, DEFAULT_LUNG_CHECKPOINT, ModelCard
from .explain.cam_methods import CAM_METHODS
from .imaging import InputError, LoadedImage, load_image
from .model_report import DEFAULT_REPORT, ModelReport, track_record
from .model_report import load_matching as load_report
from .models.ood import assess_ood
from .models.similar import DEFAULT_INDEX, SimilarIndex, load_matching
from .report import build_report
from .results import Analysis, Anatomy, BandReason, Prediction, Region, to_jsonable

# The networks, CAM, lung masks and explanation steps (torch, scipy, OpenCV) are imported where
# they are used: the app serves its page from this module's PendingPipeline before they load.
if TYPE_CHECKING:
    import torch

    from .models.classifier import Classifier
    from .models.lungs import LungMask, LungSegmenter

# Occlusion settings offered in the app: window and stride in model-input pixels.
OCCLUSION_PRESETS: dict[str, dict[str, int]] = {
    "fast": {"window": 48, "stride": 24},
    "fine": {"window": 16, "stride": 8},
}
# Occluded copies per forward pass: 48 runs as fast as 64 (2026-12-07, the 16 examples, in
# process: fast preset 1.26 s against 1.39 s a film, fine 8.2 s against 8.1 s) with a lower
# activation peak, which sets the server's peak memory (docs/benchmarks.md, load).
OCCLUSION_BATCH = 48
EXPLAIN_TARGETS = ("predicted", "pneumonia")
DISPLAY_MAX_SIDE = (
    640  # overlays are drawn on the upload, downscaled to at most this size (PNG encoding dominates latency)
)


@dataclass(frozen=True)
class Options:
    """What the user can choose for one analysis."""

    operating_point: str = "balanced"
    cam_method: str = "gradcam"
    explain: str = "predicted"  # "predicted" class or always "pneumonia"
    occlusion: str = "fast"  # a key of OCCLUSION_PRESETS, or "off"
    lung_focus: bool = True  # occlude only around the lungs when segmentation is plausible

    def validate(self) -> Options:
        if self.cam_method not in CAM_METHODS:
            raise InputError(f"Unknown CAM method {self.cam_method!r}; choose one of {', '.join(CAM_METHODS)}.")
        if self.explain not in EXPLAIN_TARGETS:
            raise InputError(f"Unknown explanation target {self.explain!r}; choose 'predicted' or 'pneumonia'.")
        if self.occlusion != "off" and self.occlusion not in OCCLUSION_PRESETS:
            raise InputError(f"Unknown occlusion detail {self.occlusion!r}; choose fast, fine or off.")
        return self


@dataclass(frozen=True)
class Result:
    """An analysis plus the arrays needed to draw it."""

    analysis: Analysis
    pixels: np.ndarray  # the upload for display, (H, W) in [0, 1], aspect ratio kept
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # method -> (S, S) in [0, 1]
    lung: LungMask | None = None
    model_input: torch.Tensor | None = field(default=None, repr=False)
    upload_shape: tuple[int, int] | None = (
        None  # (H, W) of the upload, the frame of the evidence boxes; None: ``pixels``' shape
    )
    thumbnails: tuple[np.ndarray, ...] = field(default=(), repr=False)  # uint8 grayscale, one per ``analysis.similar``

    def to_json(self) -> dict:
        return to_jsonable(self.analysis)


@dataclass(frozen=True)
class Scored:
    """The fast part of an analysis: the decoded film, the prediction, the analysis so far and the model input."""

    image: LoadedImage
    prediction: Prediction
    analysis: Analysis
    model_input: torch.Tensor = field(repr=False)


class Pipeline:
    """The loaded models and the steps of one analysis."""

    def __init__(
        self,
        classifier: Classifier,
        segmenter: LungSegmenter | None = None,
        similar: SimilarIndex | None = None,
        model_report: ModelReport | None = None,
    ) -> None:
        self.classifier = classifier
        self.segmenter = segmenter
        self.similar = similar  # similar training films; None without an index matching the classifier
        self.model_report = model_report  # stored validation/shift_dev answers; None without a matching report
        # Per-method thresholds are fitted on validation for this classifier's maps (its model
        # card); without them anatomy uses its default.
        self.shortcut_threshold = dict(classifier.card.explanations.get("shortcut_threshold", {}))

    @classmethod
    def load(
        cls,
        checkpoint: str | Path = DEFAULT_CHECKPOINT,
        lung_checkpoint: str | Path | None = DEFAULT_LUNG_CHECKPOINT,
        similar_index: str | Path | None = DEFAULT_INDEX,
        model_report: str | Path | None = DEFAULT_REPORT,
    ) -> Pipeline:
        """Load the classifier and, when their files exist, the lung segmenter, the similar-case
        index and the model report (each of the last two ignored, with a logged warning, when it
        was built with other classifier weights)."""
        from .models.classifier import Classifier
        from .models.lungs import LungSegmenter

        segmenter = None
        if lung_checkpoint is not None and Path(lung_checkpoint).is_file():
            segmenter = LungSegmenter.load(lung_checkpoint)
        classifier = Classifier.load(checkpoint, segmenter=segmenter)  # lung-box members share it
        segmenter = classifier.lung_segmenter(segmenter)  # its compiled copy, when the classifier serves one
        similar = load_matching(similar_index, classifier.card.sha256) if similar_index is not None else None
        report = load_report(model_report, classifier.card.sha256) if model_report is not None else None
        return cls(classifier, segmenter, similar, report)

    def predict(self, source: str | os.PathLike | bytes, operating_point: str = "balanced") -> Scored:
        """Decode, classify and check for out-of-distribution input (no explanations)."""
        image = load_image(source)
        x = self.classifier.prepare(image.pixels)
        scores = self.classifier.score(x)
        distance = None if scores.distance is None else float(scores.distance[0])
        ood = assess_ood(image, distance, self.classifier.card.ood.get("threshold"))
        prediction = self.classifier.decide(
            float(scores.probabilities[0]), operating_point, scores.member_probabilities[0], unusual=ood.flagged
        )
        # A film that is plainly not a radiograph gets no similar films and no track record: only the reason.
        similar = self.similar.search(scores.features[0]) if self.similar is not None and not ood.not_radiograph else ()
        record = (
            track_record(self.model_report, prediction)
            if self.model_report is not None and not ood.not_radiograph
            else ()
        )
        analysis = Analysis(
            prediction=prediction,
            ood=ood,
            input_warnings=tuple(image.warnings),
            similar=similar,
            track_record=record,
            runtime=self.classifier.served_runtime,
        )
        return Scored(image, prediction, analysis, x)

    def first_pass(self, source: str | os.PathLike | bytes, options: Options = Options()) -> Result:
        """Prediction, lung segmentation and the CAM map: the fast first answer."""
        from .explain.anatomy import analyze_anatomy
        from .explain.cam import compute_cam
        from .explain.evidence import evidence_boxes, zone_regions

        options.validate()
        scored = self.predict(source, options.operating_point)
        image, prediction, analysis, x = scored.image, scored.prediction, scored.analysis, scored.model_input
        if analysis.ood.not_radiograph:  # no heatmaps of something that is not a chest radiograph
            analysis = replace(analysis, cam_method=options.cam_method)
            return Result(
                replace(analysis, report=build_report(analysis)),
                display_pixels(image.pixels),
                {},
                None,
                x,
                image.pixels.shape,
            )
        target = self._target_class(prediction, options)
        cam = compute_cam(self.classifier.explainer, x, method=options.cam_method, target_class=target)
        lung = self.segmenter.segment(image.pixels) if self.segmenter is not None else None
        maps = {"gradcam": cam}
        analysis = replace(
            analysis,
            cam_method=options.cam_method,
            explained_class=self.classifier.card.classes[target],
            maps_source=self.classifier.maps_source,
            anatomy=analyze_anatomy(maps, lung, self.shortcut_threshold),
            boxes=evidence_boxes(cam, "gradcam", image.pixels.shape, zone_regions(lung, cam.shape)),
        )
        analysis = replace(
            analysis, prediction=evidence_checked(analysis.prediction, analysis.anatomy, self.shortcut_threshold)
        )
        analysis = replace(analysis, report=build_report(analysis))
        thumbnails = (
            tuple(self.similar.thumbnail(case.id) for case in analysis.similar) if self.similar is not None else ()
        )
        return Result(analysis, display_pixels(image.pixels), maps, lung, x, image.pixels.shape, thumbnails)

    def complete(
        self, result: Result, options: Options = Options(), progress: Callable[[int, int], None] | None = None
    ) -> Result:
        """Add occlusion sensitivity, the agreement of both maps, anatomy and the final report."""
        if options.occlusion == "off" or not result.maps:
            return result
        from .explain.agreement import agreement
        from .explain.anatomy import analyze_anatomy
        from .explain.evidence import evidence_boxes, zone_regions
        from .explain.occlusion import occlusion_map  # also imports timm

        target = self.classifier.card.classes.index(result.analysis.explained_class)
        region = occlusion_region(result.lung) if options.lung_focus else None
        precision = self.occlusion_precision(options.occlusion)
        occ = occlusion_map(  # the whole ensemble: the map explains the probability the user is shown
            self.classifier.model,
            result.model_input,
            **OCCLUSION_PRESETS[options.occlusion],
            target_class=target,
            temperature=self.classifier.card.temperature,
            region=region,
            progress=progress,
            served=self.classifier.serving,
            batch_size=OCCLUSION_BATCH,
            # The lung-box members keep the clean film's box: segmenting every occluded copy
            # again doubles the full analysis (docs/faithfulness.md) for the few copies whose box moves.
            reframe=False,
            precision=precision,
        )
        support = np.clip(occ.map, 0, None)
        occ_display = support / support.max() if support.max() > 0 else support
        maps = {**result.maps, "occlusion": occ_display.astype(np.float32)}
        frame = result.upload_shape or result.pixels.shape
        anatomy = analyze_anatomy(maps, result.lung, self.shortcut_threshold)
        analysis = replace(
            result.analysis,
            prediction=evidence_checked(result.analysis.prediction, anatomy, self.shortcut_threshold),
            agreement=agreement(result.maps["gradcam"], occ.map, occ.grid.shape, region=occ.region),
            anatomy=anatomy,
            occlusion_precision=precision,
            boxes=result.analysis.boxes
            + evidence_boxes(maps["occlusion"], "occlusion", frame, zone_regions(result.lung, occ_display.shape)),
        )
        analysis = replace(analysis, report=build_report(analysis))
        return replace(result, analysis=analysis, maps=maps)

    def occlusion_precision(self, preset: str) -> str:
        """The precision of a preset's occlusion map: the card's ``runtime["occlusion_precision"]``
        names the presets whose bf16 maps passed the check against float32 maps; f32 otherwise."""
        return self.classifier.card.runtime.get("occlusion_precision", {}).get(preset, "f32")

    def analyze(self, source: str | os.PathLike | bytes, options: Options = Options(), progress=None) -> Result:
        return self.complete(self.first_pass(source, options), options, progress)

    def warm_up(self) -> None:
        """Run one full analysis of a synthetic film, so that the first user does not pay for
        lazy imports (pytorch-grad-cam), first-call kernel set-up and BatchNorm folding."""
        self.analyze(_synthetic_png())

    def _target_class(self, prediction: Prediction, options: Options) -> int:
        classes = self.classifier.card.classes
        return classes.index("PNEUMONIA") if options.explain == "pneumonia" else classes.index(prediction.label)


class PendingPipeline:
    """A :class:`Pipeline` still to be loaded, its classifier's card readable at once: the app
    serves its page first, then loads the models, and each request waits for them.

    The first caller of :meth:`result` loads the pipeline in its own thread; every other caller
    waits for the same pipeline, or gets the loading error raised again. The app loads from its
    main thread: loaded in a short-lived thread, every later analysis ran 2-5x slower on the
    measured machine (torch's OpenMP thread teams)."""

    def __init__(self, load: Callable[[], Pipeline], card: ModelCard) -> None:
        self.card = card
        self._load = load
        self._future: Future[Pipeline] = Future()
        self._claimed = False
        self._lock = threading.Lock()

    def result(self, timeout: float | None = None) -> Pipeline:
        """The loaded pipeline: loaded here if no thread has started loading it, else waited for."""
        with self._lock:
            claimed, self._claimed = self._claimed, True
        if not claimed:
            try:
                self._future.set_result(self._load())
            except BaseException as error:
                self._future.set_exception(error)
        return self._future.result(timeout)


def evidence_checked(prediction: Prediction, anatomy: Anatomy | None, limits: dict[str, float]) -> Prediction:
    """The prediction with its band lowered one step when the strongest available map (occlusion,
    the input-space judge, once it has run; else the CAM) puts more of its mass outside the lungs
    than ``limits`` (fitted on validation maps) allow: evidence outside the lungs is a shortcut
    sign, so the answer deserves less trust. Any earlier evidence step is undone first, so the
    check follows the newest maps."""
    from .models.classifier import lower_band

    reasons = tuple(r for r in prediction.band_reasons if r.kind != "evidence_outside_lungs")
    earlier = next((r for r in prediction.band_reasons if r.kind == "evidence_outside_lungs"), None)
    band = earlier.from_band if earlier is not None else prediction.band
    shares = anatomy.outside_lung_share if anatomy is not None and anatomy.segmentation_ok else {}
    method = next((m for m in ("occlusion", "gradcam") if m in shares and m in limits), None)
    if method is not None and shares[method] > limits[method] and lower_band(band) != band:
        step = BandReason(
            "evidence_outside_lungs",
            band,
            lower_band(band),
            method=method,
            share=float(shares[method]),
            limit=float(limits[method]),
        )
        return replace(prediction, band=step.to_band, band_reasons=(*reasons, step))
    return replace(prediction, band=band, band_reasons=reasons)


def occlusion_region(lung: LungMask | None) -> Region | None:
    """Where the app occludes: the lung box a lung-box network would see (both lungs of a plausible
    mask plus ``LUNG_BOX_MARGIN`` px at 224 px), in the model input's frame; None (the whole film)
    without a plausible mask."""
    from .models.framing import framing_box

    return framing_box(lung, lung.mask.shape) if lung is not None and lung.ok else None


def _synthetic_png() -> bytes:
    """A smooth 256 x 256 grayscale test pattern, PNG-encoded in memory."""
    yy, xx = np.mgrid[0:256, 0:256]
    pattern = 128 + 60 * np.sin(xx / 23.0) * np.cos(yy / 31.0)
    buffer = io.BytesIO()
    Image.fromarray(pattern.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def display_pixels(pixels: np.ndarray) -> np.ndarray:
    """The upload downscaled (aspect ratio kept, longest side at most ``DISPLAY_MAX_SIDE``) so that
    the preview and the overlays stay light to send, and show at one size."""
    h, w = pixels.shape
    scale = DISPLAY_MAX_SIDE / max(h, w)
    if scale >= 1:
        return pixels
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
