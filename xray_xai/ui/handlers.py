"""Handlers behind the Gradio Space: pipeline results -> component values.

Everything the app shows is computed here so it can be tested without a browser; the page
(:mod:`xray_xai.ui.layout`) only lays out components and wires them to these functions.
The words and numbers come from :mod:`xray_xai.report`, so the page and the report agree.
"""

from __future__ import annotations

import functools
import html
import inspect
import json
import logging
import os
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import gradio.utils
import numpy as np
from PIL import Image

from .. import DISCLAIMER
from ..calibration import OPERATING_POINTS
from ..checkpoint import ModelCard
from ..explain.cam_methods import CAM_METHODS  # not .cam: the page is served before torch loads
from ..imaging import SUPPORTED, InputError, load_image
from ..pipeline import OCCLUSION_PRESETS, Options, PendingPipeline, Pipeline, Result, display_pixels
from ..report import (
    BAND_LEGEND,
    answer_reason,
    band_reason_short,
    band_reason_text,
    is_inconclusive,
    method_name,
    operating_point_name,
    percent,
    probability_pair,
    spread_text,
)
from ..results import Agreement, Analysis, OODResult, Prediction, to_jsonable
from .overlay import LEGEND, draw_result

log = logging.getLogger(__name__)

BAND_COLOURS = {"High": "#1b7f3b", "Moderate": "#b7791f", "Low": "#9b2c2c"}
INCONCLUSIVE_COLOUR = "#4a5568"  # neutral grey: no label, no band colour
NO_ANSWER_COLOUR = "#1a202c"
# What each operating point trades, shown only when the card's points are ordered (screening <=
# balanced <= rule-in), where the words are true; else the measured validation rates alone.
OPERATING_POINT_TITLES = {"balanced": "Balanced", "screening": "Screening", "rule_in": "Rule-in"}
OPERATING_POINT_TRADES = {
    "balanced": "",
    "screening": "fewer missed cases, more false alarms",
    "rule_in": "fewer false alarms, more missed cases",
}
CAM_CHOICES = list(CAM_METHODS)
OCCLUSION_CHOICES = list(OCCLUSION_PRESETS)
# Outputs live in Gradio's own cache folder, so Gradio serves them without copying and its
# ``delete_cache`` of the Blocks (checked every 10 minutes, files older than an hour) is the
# only retention policy; the folder is also emptied when the server stops.
OUTPUT_RETENTION = (600, 3600)
DISPLAY_JPEG = {"format": "JPEG", "quality": 95, "subsampling": 0}  # how the UI's images are written

# The UI's result outputs, in the order the handlers return them (the layout adds the Result state last).
UI_OUTPUTS = (
    "badge", "probability", "alerts", "gradcam_caption", "gradcam", "occlusion_caption", "occlusion",
    "agreement", "report", "json", "similar",
)  # fmt: skip
CAM_CAPTION = "**Class-activation map** (the CAM method chosen in the settings)"
OCCLUSION_CAPTION = "**Occlusion sensitivity**"


def operating_point_choices(points: dict[str, dict] | None = None) -> list[tuple[str, str]]:
    """(shown label, value) of each operating point for the radio buttons and the API's enum.

    The label names the card's ``target`` where the card records it, else the point's measured
    validation sensitivity and specificity; what a point trades ("fewer missed cases, more
    false alarms") is said only when the card's thresholds are ordered screening <= balanced <=
    rule-in, where it is true (and when no card is given)."""
    points = points or {}
    thresholds = [points.get(name, {}).get("threshold") for name in ("screening", "balanced", "rule_in")]
    ordered = not points or (None not in thresholds and thresholds[0] <= thresholds[1] <= thresholds[2])
    choices = []
    for name in OPERATING_POINTS:
        raw = points.get(name, {})
        label = OPERATING_POINT_TITLES.get(name, name)
        if ordered and OPERATING_POINT_TRADES.get(name):
            label += f": {OPERATING_POINT_TRADES[name]}"
        if raw.get("target"):
            label += f" ({raw['target']})"
        elif "sensitivity" in raw and "specificity" in raw:
            label += (
                f" (validation sensitivity {percent(raw['sensitivity'])}, specificity {percent(raw['specificity'])})"
            )
        choices.append((label, name))
    return choices


OPERATING_POINT_CHOICES = operating_point_choices()


# ---------------------------------------------------------------------------------------------
# What one result shows


def badge_html(prediction: Prediction, ood: OODResult | bool = OODResult(), cam_method: str = "gradcam") -> str:
    """The answer as a badge: a label with its band (and why the band was lowered), a neutral
    INCONCLUSIVE with the reason, or no answer at all for something that is not a radiograph."""
    if isinstance(ood, bool):  # the flag alone
        ood = OODResult(flagged=ood)
    if ood.not_radiograph:
        why = " ".join(ood.reasons) or "The input check found it unlike a chest radiograph."
        return (
            f'<div class="answer-badge" style="background:{NO_ANSWER_COLOUR}">NOT A CHEST RADIOGRAPH · no answer</div>'
            f'<div class="answer-why">Why: {html.escape(why)}</div>'
        )
    pneumonia, _ = probability_pair(prediction)
    if is_inconclusive(prediction):
        return (
            f'<div class="answer-badge" style="background:{INCONCLUSIVE_COLOUR}">'
            "INCONCLUSIVE · the model cannot tell reliably</div>"
            f'<div class="answer-why">P(pneumonia) {html.escape(pneumonia)}; '
            f"why: {html.escape(answer_reason(prediction, ood))}.</div>"
        )
    pair = probability_pair(prediction)
    confidence = pair[0] if prediction.label == "PNEUMONIA" else pair[1]
    return (
        f'<div class="answer-badge" style="background:{BAND_COLOURS[prediction.band]}">'
        f"{html.escape(prediction.label)} · {html.escape(confidence)} · {prediction.band} confidence band</div>"
        f"{band_reasons_html(prediction, cam_method)}"
        f'<div class="band-help">{html.escape(BAND_LEGEND)}</div>'
    )


def band_reasons_html(prediction: Prediction, cam_method: str = "gradcam") -> str:
    """Why the band is lower than the probability alone would give (nothing when it is not):
    the steps in a few words, the full sentences on hover."""
    if not prediction.band_reasons:
        return ""
    steps = "; ".join(
        f"from {r.from_band} to {r.to_band}: {band_reason_short(r, cam_method)}" for r in prediction.band_reasons
    )
    full = " ".join(band_reason_text(r, cam_method) for r in prediction.band_reasons)
    return f'<div class="band-reasons" title="{html.escape(full)}">Band lowered {html.escape(steps)}.</div>'


def uncertainty_text(prediction: Prediction) -> str:
    """The ensemble members' spread, e.g. "Uncertainty ±4.1 points (3 networks)"; empty for one network."""
    if prediction.uncertainty is None:
        return ""
    members = len(prediction.member_probabilities)
    return f"Uncertainty {spread_text(prediction.uncertainty)}" + (f" ({members} networks)" if members else "")


def probability_html(prediction: Prediction, ood: OODResult = OODResult()) -> str:
    """Calibrated probabilities as meters, adding up to 100.0% (:func:`~xray_xai.report.probability_pair`),
    the operating point and the ensemble's uncertainty when there is one; nothing for a film
    that is not a radiograph."""
    if ood.not_radiograph:
        return ""
    shown = probability_pair(prediction)
    rows = "".join(
        f'<div class="prob-row"><span class="prob-name">{name}</span>'
        f'<meter min="0" max="1" value="{value:.6f}"></meter><b class="prob-value">{html.escape(text)}</b></div>'
        for name, value, text in (
            ("PNEUMONIA", prediction.probability, shown[0]),
            ("NORMAL", 1.0 - prediction.probability, shown[1]),
        )
    )
    point = prediction.operating_point
    where = (
        f'<div class="prob-point">{html.escape(operating_point_name(point.name))} operating point: '
        f"PNEUMONIA side from {html.escape(percent(point.threshold))}</div>"
    )
    spread = uncertainty_text(prediction)
    title = "standard deviation of the ensemble members' calibrated probabilities of pneumonia, in percentage points"
    spread_html = f'<div class="uncertainty" title="{title}">{html.escape(spread)}</div>' if spread else ""
    return (
        f'<div class="probability"><div class="prob-title">Calibrated probability</div>{rows}{where}{spread_html}</div>'
    )


def agreement_markdown(agreement: Agreement | None, cam_method: str = "gradcam", final: bool = False) -> str:
    """The agreement verdict of both maps, named after the CAM method that ran."""
    cam = method_name("gradcam", cam_method)
    if agreement is None:
        if final:
            return f"**Agreement of {cam} and occlusion:** not available (occlusion was switched off)."
        return "**Agreement:** waiting for the occlusion map..."
    return (
        f"**{cam} and occlusion {agreement.verdict}** "
        f"(Spearman {agreement.spearman:+.2f}, top-20% IoU {agreement.top20_iou:.2f}). Agreement compares the {cam} "
        "and occlusion maps on the occlusion grid: Spearman rank correlation and overlap (IoU) of each map's "
        "top 20% cells."
    )


def captions(result: Result) -> tuple[str, str]:
    """The caption above each heatmap: the map's name (the CAM method in use) and what its colours mean."""
    analysis = result.analysis
    if analysis.ood.not_radiograph:
        return "**No heatmaps:** this image does not look like a chest radiograph.", ""
    label = analysis.explained_class
    cam = method_name("gradcam", analysis.cam_method)
    cam_caption = f"**{cam}** · " + LEGEND["cam"].format(label=label, method=cam)
    occlusion = (
        f"{OCCLUSION_CAPTION} · " + LEGEND["occlusion"].format(label=label)
        if "occlusion" in result.maps
        else OCCLUSION_CAPTION
    )
    return cam_caption, occlusion


def legend_markdown(result: Result) -> str:
    """Both captions in one block (what each map's colours mean for this result)."""
    return "  \n".join(caption for caption in captions(result) if caption)


def alerts_markdown(result: Result) -> str:
    """Warnings that must be seen next to the result: no answer, unreliable input, shortcut, input notes."""
    analysis = result.analysis
    lines = []
    if analysis.ood.not_radiograph:
        lines.append(
            "**This image does not look like a chest radiograph, so it gets no answer.** "
            + " ".join(analysis.ood.reasons)
        )
    elif analysis.ood.flagged:
        lines.append(
            "**This image looks unlike the training data; do not rely on this result.** "
            + " ".join(analysis.ood.reasons)
        )
    if analysis.anatomy is not None and analysis.anatomy.shortcut_warning:
        lines.append(
            "**The explanation may rest on something other than the lungs** (markers, borders, devices, text)."
        )
    lines.extend(analysis.input_warnings)
    return "\n\n".join(f"⚠️ {line}" for line in lines)


# ---------------------------------------------------------------------------------------------
# Files


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


def safe_stem(path: str | os.PathLike | None) -> str:
    """The upload's file name without its suffix, reduced to safe characters (``"upload"`` if none)."""
    stem = Path(path).stem if path else ""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:80] or "upload"


def write_json(result: Result, stem: str = "upload") -> str:
    """The whole analysis as ``<stem>_analysis.json``, in a folder of its own (one per request)
    inside the app's output folder, so that two uploads of the same name never collide."""
    folder = Path(tempfile.mkdtemp(prefix="request_", dir=output_dir()))
    path = folder / f"{stem}_analysis.json"
    path.write_text(json.dumps(analysis_payload(result.analysis), indent=2))
    return str(path)


def analysis_payload(analysis: Analysis) -> dict:
    """The analysis as JSON for the download and the API: the answer first, the disclaimer last."""
    return {"answer": analysis.prediction.answer, **to_jsonable(analysis), "disclaimer": DISCLAIMER}


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
    """``(path, caption)`` of every example film; the caption is its ground truth (the file name
    shows in the upload once it is picked)."""
    return [(str(p), p.parent.name) for p in sorted(folder.glob("*/*.jpeg"))]


def example_picker(examples: list[tuple[str, str]]) -> Callable[[gr.SelectData], str]:
    """A ``Gallery.select`` handler returning the path of the clicked example."""

    def pick(selection: gr.SelectData) -> str:
        return examples[selection.index][0]

    return pick


def gallery_value(result: Result) -> list[tuple[str, str]]:
    """The similar training films for ``gr.Gallery``: (JPEG path, "similarity · LABEL · id"), most
    similar first; the similarity leads, so that a cut caption still shows it."""
    return [
        (write_image(thumbnail, display=True), f"{case.similarity:.2f} · {case.label} · {case.id}")
        for case, thumbnail in zip(result.analysis.similar, result.thumbnails, strict=True)
    ]


# ---------------------------------------------------------------------------------------------
# Values for the page


def ui_values(
    result: Result,
    opacity: float,
    outline: bool,
    final: bool = True,
    unchanged: tuple[str, ...] = (),
    boxes: bool = True,
    stem: str = "upload",
) -> tuple[Any, ...]:
    """Values for the UI outputs, in the order of :data:`UI_OUTPUTS`.

    ``final=False`` marks a stream's first answer: the JSON download is cleared, not written,
    until the analysis is whole. Outputs named in ``unchanged`` get ``gr.skip()``: Gradio
    neither re-encodes nor re-sends what the first answer already shows. ``boxes`` draws the
    evidence boxes on the overlays; ``stem`` names the JSON download after the upload. A film
    that is plainly not a radiograph gets the reason and the report, and nothing else.
    """
    analysis = result.analysis
    maps = [name for name in ("gradcam", "occlusion") if name not in unchanged and name in result.maps]
    overlays = draw_result(result, opacity, outline, maps, boxes)
    cam_caption, occlusion_caption = captions(result)
    no_answer = analysis.ood.not_radiograph
    values = {
        "badge": badge_html(analysis.prediction, analysis.ood, analysis.cam_method),
        "probability": probability_html(analysis.prediction, analysis.ood),
        "alerts": alerts_markdown(result),
        "gradcam_caption": cam_caption,
        "gradcam": write_image(overlays.get("gradcam"), display=True),
        "occlusion_caption": occlusion_caption,
        "occlusion": write_image(overlays.get("occlusion"), display=True),
        "agreement": "" if no_answer else agreement_markdown(analysis.agreement, analysis.cam_method, final),
        "report": analysis.report,
        "json": write_json(result, stem) if final else None,
        "similar": gallery_value(result),
    }
    return tuple(gr.skip() if name in unchanged else values[name] for name in UI_OUTPUTS)


def cleared_values() -> tuple[Any, ...]:
    """Every result output emptied (the order of :data:`UI_OUTPUTS`): nothing of an earlier film
    stays on the page next to another one."""
    values = {
        "badge": "", "probability": "", "alerts": "", "gradcam_caption": CAM_CAPTION, "gradcam": None,
        "occlusion_caption": OCCLUSION_CAPTION, "occlusion": None, "agreement": "", "report": "", "json": None,
        "similar": [],
    }  # fmt: skip
    return tuple(values[name] for name in UI_OUTPUTS)


def _uint8(pixels: np.ndarray) -> np.ndarray:
    return (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8)


def _options(operating_point: str, cam_method: str, occlusion: str) -> Options:
    return Options(operating_point=operating_point, cam_method=cam_method, occlusion=occlusion)


def user_errors(fn: Callable) -> Callable:
    """Show the library's user-input errors (:class:`InputError`: unreadable uploads, unknown
    settings) as ``gr.Error`` with their own message, logging one line and no traceback.
    Anything else is a bug and propagates (with its traceback)."""

    def convert(error: InputError) -> gr.Error:
        log.info("Refused (%s): %s", getattr(fn, "__name__", "handler"), error)
        return gr.Error(str(error), title="Cannot analyse this file", print_exception=False)

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


class Superseded(Exception):
    """Raised inside a running analysis when the page asked for another one (a new film, an
    example, Analyse again): it stops, and nothing it would still show reaches the page."""


MAX_SESSIONS = 4096  # sessions whose newest request is remembered (a few bytes each)


class Handlers:
    """The Space's event handlers bound to one pipeline.

    Outputs always belong to the film on screen: every clear (a new upload, an example,
    Analyse) starts a new *generation* of the page's session; an analysis or a redraw started
    in an older generation stops at its next step (between the first answer and occlusion, or
    at any occlusion progress report) and sends nothing more.

    The pipeline may still be loading (a :class:`PendingPipeline`): the page is built from its
    card, and every handler that needs the models waits for them."""

    def __init__(self, pipeline: Pipeline | PendingPipeline) -> None:
        self._source = pipeline
        self._generations: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def pipeline(self) -> Pipeline:
        """The loaded pipeline (waiting for it while it loads)."""
        source = self._source
        return source.result() if isinstance(source, PendingPipeline) else source

    @property
    def card(self) -> ModelCard:
        """The classifier's model card, without waiting for the models."""
        source = self._source
        return source.card if isinstance(source, PendingPipeline) else source.classifier.card

    @staticmethod
    def require(path: str | None) -> str:
        if not path:
            raise InputError(f"Upload a chest radiograph ({SUPPORTED}) first.")
        return path

    @staticmethod
    def _session(request: gr.Request | None) -> str:
        return getattr(request, "session_hash", None) or ""

    def generation(self, request: gr.Request | None) -> int:
        """The number of clears of this page so far."""
        with self._lock:
            return self._generations.get(self._session(request), 0)

    def _next_generation(self, request: gr.Request | None) -> int:
        key = self._session(request)
        with self._lock:
            self._generations[key] = self._generations.pop(key, 0) + 1
            while len(self._generations) > MAX_SESSIONS:
                self._generations.popitem(last=False)
            return self._generations[key]

    def operating_point_choices(self) -> list[tuple[str, str]]:
        """The radio buttons' (label, value) pairs, worded from this classifier's card."""
        return operating_point_choices(self.card.operating_points)

    def clear(self, request: gr.Request | None = None) -> tuple[Any, ...]:
        """Every result output emptied and the kept result dropped (the last value is the
        state); whatever still runs for this page from before stops sending."""
        self._next_generation(request)
        return (*cleared_values(), None)

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
        request: gr.Request | None = None,
    ) -> Iterator[tuple[Any, ...]]:
        """First answer (prediction + CAM + similar films), then the complete analysis with
        occlusion; each message ends with the :class:`Result` for the page's state, from which
        :meth:`redraw` draws again without the model. Stops, silently, once the page has been
        cleared since it started."""
        generation = self.generation(request)

        def current() -> bool:
            return self.generation(request) == generation

        def report(done: int, total: int) -> None:
            if not current():
                raise Superseded
            if progress is not None:
                progress((done, total), desc="Occlusion sensitivity")

        options = _options(operating_point, cam_method, occlusion)
        stem = safe_stem(path)
        first = self.pipeline.first_pass(self.require(path), options)
        if not current():
            return
        yield (*ui_values(first, opacity, outline, final=False, boxes=boxes, stem=stem), first)
        try:
            complete = self.pipeline.complete(first, options, report)
        except Superseded:
            return
        if not current():
            return
        shown = ("gradcam", "gradcam_caption", "similar") if complete.maps else ()
        yield (*ui_values(complete, opacity, outline, unchanged=shown, boxes=boxes, stem=stem), complete)

    def stream_upload(
        self, path: str | None, *settings, progress: Callable | None = None, request: gr.Request | None = None
    ) -> Iterator[tuple[Any, ...]]:
        """:meth:`stream` for a new upload: nothing at all when the upload was removed."""
        if not path:
            return
        yield from self.stream(path, *settings, progress=progress, request=request)

    def redraw(
        self, result: Result | None, opacity: float, outline: bool, boxes: bool, request: gr.Request | None = None
    ) -> tuple[Any, Any]:
        """The overlays drawn again from the maps already computed (display settings only: no
        model call); a map not computed yet, or a page cleared meanwhile, is left as it is."""
        generation = self.generation(request)
        if result is None or not result.maps:
            return gr.skip(), gr.skip()
        overlays = draw_result(result, opacity, outline, list(result.maps), boxes)
        if self.generation(request) != generation:
            return gr.skip(), gr.skip()
        return tuple(
            write_image(overlays[name], display=True) if name in overlays else gr.skip()
            for name in ("gradcam", "occlusion")
        )

    def predict(
        self, image: str, operating_point: str = "balanced"
    ) -> tuple[str, str | None, float | None, str | None, float | None, bool, list[str], list[str]]:
        """Classify a chest radiograph, without explanations (fast). A research output, not a diagnosis.

        Args:
            image: The radiograph: PNG, JPEG (8 or 16 bit), TIFF, BMP, WebP, GIF or DICOM.
            operating_point: Decision threshold: "balanced" (the validation prevalence of pneumonia, which balances sensitivity and specificity for calibrated probabilities), "screening" (favours sensitivity: fewer missed cases, more false alarms) or "rule_in" (favours specificity: fewer false alarms, more missed cases); each point's rates hold on the validation films it was fitted on, not beyond.

        Returns:
            answer: The answer to show: "PNEUMONIA", "NORMAL" or "INCONCLUSIVE" (the model cannot tell reliably: both labels in its conformal prediction set, or a film unlike the training films, or not a chest radiograph at all).
            label: The label the probability alone gives at the operating point, before those checks ("PNEUMONIA" or "NORMAL"); never show it without the answer. Null when the image is plainly not a chest radiograph.
            probability: Calibrated probability of pneumonia, between 0 and 1 (null when the image is plainly not a chest radiograph).
            band: Confidence band of the label: "High", "Moderate" or "Low", already lowered where the answer deserves less trust (null when the image is plainly not a chest radiograph).
            uncertainty: Standard deviation of the ensemble members' calibrated probabilities (null for a single network).
            flagged: True when the image looks unlike the training films (out-of-distribution check), including when it is plainly not a chest radiograph.
            band_reasons: Why the band was lowered, one sentence per step ([] when it was not).
            ood_reasons: What the out-of-distribution check found, one sentence each ([] when nothing).
        """
        analysis = self.pipeline.predict(self.require(image), operating_point).analysis
        return api_answer(analysis)

    def explain(
        self, image: str, operating_point: str = "balanced", cam_method: str = "gradcam", occlusion: str = "fast"
    ) -> tuple[str, str | None, float | None, str | None, float | None, str | None, str | None, dict | None, str, dict]:
        """Classify a chest radiograph and explain the answer with a class-activation map and occlusion. A research output, not a diagnosis.

        Args:
            image: The radiograph: PNG, JPEG (8 or 16 bit), TIFF, BMP, WebP, GIF or DICOM.
            operating_point: "balanced", "screening" or "rule_in" (see /predict).
            cam_method: CAM method: "gradcam", "hirescam", "gradcam++" or "layercam".
            occlusion: Occlusion detail: "fast" or "fine".

        Returns:
            answer: "PNEUMONIA", "NORMAL" or "INCONCLUSIVE" (see /predict).
            label: The label the probability alone gives at the operating point (null when the image is plainly not a chest radiograph; never show it without the answer).
            probability: Calibrated probability of pneumonia, between 0 and 1 (null when not a chest radiograph).
            band: Confidence band of the label: "High", "Moderate" or "Low", already lowered where needed (null when not a chest radiograph).
            uncertainty: Standard deviation of the ensemble members' calibrated probabilities (null for a single network).
            gradcam: Overlay of the chosen CAM method on the radiograph (PNG, the upload's aspect ratio; null when not a chest radiograph).
            occlusion_map: Occlusion-sensitivity overlay on the radiograph (PNG; null when not a chest radiograph).
            agreement: Spearman correlation, top-20% IoU and verdict of the two maps (null when not computed).
            report: Structured plain-language report, ending with the medical disclaimer.
            analysis: The whole analysis as JSON (answer, prediction with its conformal set and band reasons, OOD check, anatomy, agreement, similar training films, track record of this kind of answer on validation and shift_dev, evidence boxes, report, disclaimer).
        """
        options = _options(operating_point, cam_method, occlusion)
        result = self.pipeline.analyze(self.require(image), options)
        overlays = draw_result(result)
        analysis = result.analysis
        payload = analysis_payload(analysis)
        answer, label, probability, band, uncertainty, *_ = api_answer(analysis)
        return (
            answer,
            label,
            probability,
            band,
            uncertainty,
            write_image(overlays.get("gradcam")),
            write_image(overlays.get("occlusion")),
            payload["agreement"],
            analysis.report,
            payload,
        )


def api_answer(
    analysis: Analysis,
) -> tuple[str, str | None, float | None, str | None, float | None, bool, list[str], list[str]]:
    """``(answer, label, probability, band, uncertainty, flagged, band_reasons, ood_reasons)`` of
    an analysis, as ``/predict`` returns them; label, probability and band are None for an image
    that is plainly not a chest radiograph (no answer at all)."""
    prediction, ood = analysis.prediction, analysis.ood
    reasons = [band_reason_text(r, analysis.cam_method) for r in prediction.band_reasons]
    if ood.not_radiograph:
        return prediction.answer, None, None, None, None, True, [], list(ood.reasons)
    return (
        prediction.answer,
        prediction.label,
        prediction.probability,
        prediction.band,
        prediction.uncertainty,
        bool(ood.flagged),
        reasons,
        list(ood.reasons),
    )
