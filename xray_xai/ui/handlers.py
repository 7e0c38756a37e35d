"""Handlers behind the Gradio Space: pipeline results -> component values.

Everything the app shows is computed here so it can be tested without a browser; ``app.py``
only lays out components and wires them to these functions.
"""

from __future__ import annotations

import functools
import html
import inspect
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import gradio as gr
import gradio.utils
import numpy as np
from PIL import Image

from .. import DISCLAIMER
from ..explain.cam import CAM_METHODS
from ..imaging import SUPPORTED, InputError, load_image
from .overlay import LEGEND, draw_result
from ..pipeline import OCCLUSION_PRESETS, Options, Pipeline, Result, display_pixels
from ..report import band_reason_text, method_name, percent
from ..results import BAND_EXPLANATION, Agreement, Prediction

BAND_COLOURS = {"High": "#1b7f3b", "Moderate": "#b7791f", "Low": "#9b2c2c"}
# The settings offered in the UI and published as enums by the API: (shown label, value).
OPERATING_POINT_CHOICES = [
    ("Balanced (Youden's J)", "balanced"),
    ("Screening (sensitivity >= 95%)", "screening"),
    ("Rule-in (specificity >= 90%)", "rule_in"),
]
CAM_CHOICES = list(CAM_METHODS)
OCCLUSION_CHOICES = list(OCCLUSION_PRESETS)
# Outputs live in Gradio's own cache folder, so Gradio serves them without copying and its
# ``delete_cache`` of the Blocks (checked every 10 minutes, files older than an hour) is the
# only retention policy; the folder is also emptied when the server stops.
OUTPUT_RETENTION = (600, 3600)
DISPLAY_JPEG = {"format": "JPEG", "quality": 95, "subsampling": 0}  # how the UI's images are written

AGREEMENT_HELP = (
    "Agreement compares the Grad-CAM and occlusion maps on the occlusion grid: Spearman rank "
    "correlation and overlap (IoU) of each map's top 20% cells."
)


def badge_html(prediction: Prediction, ood_flagged: bool = False) -> str:
    """The confidence band as a coloured badge, with the reported label."""
    colour = BAND_COLOURS[prediction.band]
    caution = " · UNRELIABLE INPUT" if ood_flagged else ""
    return (
        f'<div class="band-badge" style="background:{colour}">'
        f"{html.escape(prediction.label)} · {prediction.band} confidence "
        f"({html.escape(percent(prediction.confidence))}){caution}</div>"
        f"{band_reasons_html(prediction)}"
        f'<div class="band-help">{html.escape(BAND_EXPLANATION)}</div>'
    )


def band_reasons_html(prediction: Prediction) -> str:
    """Why the band is lower than the probability alone would give (nothing when it is not)."""
    if not prediction.band_reasons:
        return ""
    return f'<div class="band-reasons">Band lowered: {html.escape(" ".join(band_reason_text(r) for r in prediction.band_reasons))}</div>'


def uncertainty_text(prediction: Prediction) -> str:
    """The ensemble members' spread, e.g. "Uncertainty ±0.04 (2 members)"; empty for one network."""
    if prediction.uncertainty is None:
        return ""
    members = len(prediction.member_probabilities)
    return f"Uncertainty ±{prediction.uncertainty:.2f}" + (f" ({members} members)" if members else "")


def probability_html(prediction: Prediction) -> str:
    """Calibrated probabilities as meters, formatted by the report's own :func:`percent`, and the
    ensemble's uncertainty when there is one."""
    rows = "".join(
        f'<div class="prob-row"><span class="prob-name">{name}</span>'
        f'<meter min="0" max="1" value="{value:.6f}"></meter><b class="prob-value">{html.escape(percent(value))}</b></div>'
        for name, value in (("PNEUMONIA", prediction.probability), ("NORMAL", 1.0 - prediction.probability))
    )
    spread = uncertainty_text(prediction)
    title = "standard deviation of the ensemble members' calibrated probabilities of pneumonia"
    spread_html = f'<div class="uncertainty" title="{title}">{html.escape(spread)}</div>' if spread else ""
    return f'<div class="probability"><div class="prob-title">Calibrated probability</div>{rows}{spread_html}</div>'


def agreement_markdown(agreement: Agreement | None) -> str:
    if agreement is None:
        return "**Agreement:** waiting for the occlusion map..."
    return (
        f"**Grad-CAM and occlusion {agreement.verdict}** "
        f"(Spearman {agreement.spearman:+.2f}, top-20% IoU {agreement.top20_iou:.2f}). {AGREEMENT_HELP}"
    )


def legend_markdown(result: Result) -> str:
    """One line per map saying what its colours mean for this result."""
    analysis = result.analysis
    label = analysis.explained_class
    cam = method_name(analysis.cam_method)
    lines = [f"**{cam}:** " + LEGEND["cam"].format(label=label, method=cam)]
    if "occlusion" in result.maps:
        lines.append("**Occlusion:** " + LEGEND["occlusion"].format(label=label))
    return "  \n".join(lines)


def alerts_markdown(result: Result) -> str:
    """Warnings that must be seen next to the result: unreliable input, shortcut, input notes."""
    analysis = result.analysis
    lines = []
    if analysis.ood.flagged:
        lines.append("**This image looks unlike the training data; do not rely on this result.** " + " ".join(analysis.ood.reasons))
    if analysis.anatomy is not None and analysis.anatomy.shortcut_warning:
        lines.append("**The explanation may rest on something other than the lungs** (markers, borders, devices, text).")
    lines.extend(analysis.input_warnings)
    return "\n\n".join(f"⚠️ {line}" for line in lines)


def output_dir() -> Path:
    """The app's output folder, inside Gradio's cache (``GRADIO_TEMP_DIR``, default
    ``<tmp>/gradio``): files returned from there are served as they are, not copied."""
    folder = Path(gradio.utils.get_upload_folder()) / "xray_xai"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _output_path(suffix: str) -> str:
    handle, path = tempfile.mkstemp(suffix=suffix, prefix="analysis_", dir=output_dir())
    os.close(handle)
    return path


def write_json(result: Result) -> str:
    """The whole analysis as a JSON file for download."""
    path = _output_path(".json")
    Path(path).write_text(json.dumps({**result.to_json(), "disclaimer": DISCLAIMER}, indent=2))
    return path


def write_image(image: np.ndarray | None, display: bool = False) -> str | None:
    """A uint8 grey or RGB image written into the app's output folder: a lossless PNG with light
    compression, or with ``display=True`` a JPEG at quality 95 without chroma subsampling, which
    looks the same and takes a fraction of the time to encode (~3 ms against ~20 ms for a 640-px
    overlay) and of the bytes to send. The UI shows JPEGs; the API returns PNGs."""
    if image is None:
        return None
    path = _output_path(".jpg" if display else ".png")
    Image.fromarray(image).save(path, **(DISPLAY_JPEG if display else {"compress_level": 1}))
    return path


def preview_image(path: str | None) -> str | None:
    """The upload as the app's own loader reads it (any format it accepts, incl. DICOM and
    16-bit films), downscaled for display; nothing when the input was cleared."""
    if not path:
        return None
    return write_image(_uint8(display_pixels(load_image(path).pixels)), display=True)


def examples_in(folder: Path) -> list[tuple[str, str]]:
    """``(path, caption)`` of every example film; the caption starts with its ground truth."""
    return [(str(p), f"{p.parent.name} · {p.stem}") for p in sorted(folder.glob("*/*.jpeg"))]


def example_picker(examples: list[tuple[str, str]]) -> Callable[[gr.SelectData], str]:
    """A ``Gallery.select`` handler returning the path of the clicked example."""

    def pick(selection: gr.SelectData) -> str:
        return examples[selection.index][0]

    return pick


def gallery_value(result: Result) -> list[tuple[str, str]]:
    """The similar training films for ``gr.Gallery``: (JPEG path, "LABEL · similarity · id"), most similar first."""
    return [
        (write_image(thumbnail, display=True), f"{case.label} · similarity {case.similarity:.2f} · {case.id}")
        for case, thumbnail in zip(result.analysis.similar, result.thumbnails)
    ]


def ui_values(
    result: Result, opacity: float, outline: bool, final: bool = True, unchanged: tuple[str, ...] = (), boxes: bool = True
) -> tuple[Any, ...]:
    """Values for the UI outputs, in the order of :data:`UI_OUTPUTS`.

    ``final=False`` marks a stream's first answer: the JSON download is cleared, not written,
    until the analysis is whole. Outputs named in ``unchanged`` get ``gr.skip()``: Gradio
    neither re-encodes nor re-sends what the first answer already shows. ``boxes`` draws the
    evidence boxes on the overlays.
    """
    analysis = result.analysis
    maps = [name for name in ("gradcam", "occlusion") if name not in unchanged and name in result.maps]
    overlays = draw_result(result, opacity, outline, maps, boxes)
    values = {
        "badge": badge_html(analysis.prediction, analysis.ood.flagged),
        "probability": probability_html(analysis.prediction),
        "original": None if "original" in unchanged else write_image(_uint8(result.pixels), display=True),
        "gradcam": write_image(overlays.get("gradcam"), display=True),
        "occlusion": write_image(overlays.get("occlusion"), display=True),
        "agreement": agreement_markdown(analysis.agreement),
        "legend": legend_markdown(result),
        "alerts": alerts_markdown(result),
        "report": analysis.report,
        "json": write_json(result) if final else None,
        "similar": None if "similar" in unchanged else gallery_value(result),
    }
    return tuple(gr.skip() if name in unchanged else values[name] for name in UI_OUTPUTS)


UI_OUTPUTS = ("badge", "probability", "original", "gradcam", "occlusion", "agreement", "legend", "alerts", "report", "json", "similar")


def _uint8(pixels: np.ndarray) -> np.ndarray:
    return (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8)


def _options(operating_point: str, cam_method: str, occlusion: str) -> Options:
    return Options(operating_point=operating_point, cam_method=cam_method, occlusion=occlusion)


def user_errors(fn: Callable) -> Callable:
    """Show the library's user-input errors (:class:`InputError`: unreadable uploads, unknown
    settings) as ``gr.Error`` with their own message. Anything else is a bug and propagates."""

    def convert(error: InputError) -> gr.Error:
        return gr.Error(str(error), title="Cannot analyse this file")

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except InputError as error:
                raise convert(error) from None

        return generator

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as error:
            raise convert(error) from None

    return wrapper


class Handlers:
    """The Space's event handlers bound to one loaded pipeline."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    @staticmethod
    def require(path: str | None) -> str:
        if not path:
            raise InputError(f"Upload a chest radiograph ({SUPPORTED}) first.")
        return path

    def stream(
        self,
        path: str | None,
        operating_point: str,
        cam_method: str,
        occlusion: str,
        opacity: float,
        outline: bool,
        boxes: bool = True,
        progress: Callable | None = None,
    ) -> Iterator[tuple[Any, ...]]:
        """First answer (prediction + Grad-CAM + similar films), then the complete analysis with occlusion."""
        options = _options(operating_point, cam_method, occlusion)
        first = self.pipeline.first_pass(self.require(path), options)
        yield ui_values(first, opacity, outline, final=False, boxes=boxes)
        report = (lambda done, total: progress((done, total), desc="Occlusion sensitivity")) if progress else None
        complete = self.pipeline.complete(first, options, report)
        yield ui_values(complete, opacity, outline, unchanged=("original", "gradcam", "similar"), boxes=boxes)

    def predict(self, image: str, operating_point: str = "balanced") -> tuple[str, float, str, float | None]:
        """Classify a chest radiograph, without explanations (fast).

        Args:
            image: The radiograph: PNG, JPEG (8 or 16 bit), TIFF, BMP, WebP, GIF or DICOM.
            operating_point: Decision threshold: "balanced" (maximum Youden's J: the validation prevalence of pneumonia, for calibrated probabilities), "screening" (validation sensitivity >= 95%) or "rule_in" (validation specificity >= 90%).

        Returns:
            label: "PNEUMONIA" or "NORMAL" at the chosen operating point (a research output, not a diagnosis).
            probability: Calibrated probability of pneumonia, between 0 and 1.
            band: Confidence band of the reported label: "High", "Moderate" or "Low" (lowered when the ensemble's members disagree or the film looks unlike the training films).
            uncertainty: Standard deviation of the ensemble members' calibrated probabilities (null for a single network).
        """
        prediction = self.pipeline.predict(self.require(image), operating_point).prediction
        return prediction.label, prediction.probability, prediction.band, prediction.uncertainty

    def explain(
        self, image: str, operating_point: str = "balanced", cam_method: str = "gradcam", occlusion: str = "fast"
    ) -> tuple[str, float, str, str, str, dict, str, dict, float | None]:
        """Classify a chest radiograph and explain the answer with Grad-CAM and occlusion.

        Args:
            image: The radiograph: PNG, JPEG (8 or 16 bit), TIFF, BMP, WebP, GIF or DICOM.
            operating_point: "balanced", "screening" or "rule_in".
            cam_method: CAM method: "gradcam", "hirescam", "gradcam++" or "layercam".
            occlusion: Occlusion detail: "fast" or "fine".

        Returns:
            label: "PNEUMONIA" or "NORMAL" at the chosen operating point (a research output, not a diagnosis).
            probability: Calibrated probability of pneumonia, between 0 and 1.
            band: Confidence band of the reported label: "High", "Moderate" or "Low".
            gradcam: Grad-CAM overlay on the radiograph (PNG, the upload's aspect ratio).
            occlusion_map: Occlusion-sensitivity overlay on the radiograph (PNG).
            agreement: Spearman correlation, top-20% IoU and verdict of the two maps.
            report: Structured plain-language report, ending with the medical disclaimer.
            analysis: The whole analysis as JSON (prediction with band reasons, OOD check, anatomy, agreement, similar training films, track record of this kind of answer on validation and shift_dev, evidence boxes, report, disclaimer).
            uncertainty: Standard deviation of the ensemble members' calibrated probabilities (null for a single network).
        """
        options = _options(operating_point, cam_method, occlusion)
        result = self.pipeline.analyze(self.require(image), options)
        overlays = draw_result(result)
        analysis = result.analysis
        payload = {**result.to_json(), "disclaimer": DISCLAIMER}
        return (
            analysis.prediction.label,
            analysis.prediction.probability,
            analysis.prediction.band,
            write_image(overlays["gradcam"]),
            write_image(overlays["occlusion"]),
            payload["agreement"],
            analysis.report,
            payload,
            analysis.prediction.uncertainty,
        )
