"""The Space's page: Gradio Blocks wired to :class:`~xray_xai.ui.handlers.Handlers`.

Wiring only: every value shown is computed by the handlers from the library's results.

The page is built around the films: the upload, the Analyse button and the examples come
first (on the first screen of a 1366 x 900 desktop and a 390 x 844 phone), the heatmaps are
large and open full screen. Whatever is on screen belongs to the film on screen: a new upload,
an example or an error clears every result at once, and a new upload runs the analysis by
itself; display settings (opacity, lung outline, boxes) redraw the maps already computed,
without the model.
"""

from __future__ import annotations

import gradio as gr

from .. import DISCLAIMER
from ..checkpoint import PROJECT_ROOT
from ..imaging import MAX_FILE_BYTES
from ..models.similar import ATTRIBUTION as SIMILAR_ATTRIBUTION
from ..pipeline import OCCLUSION_PRESETS
from .handlers import (
    CAM_CAPTION,
    CAM_CHOICES,
    OCCLUSION_CAPTION,
    OCCLUSION_CHOICES,
    OUTPUT_RETENTION,
    Handlers,
    example_picker,
    examples_in,
    preview_image,
    user_errors,
)
from .model_tab import build_model_tab

EXAMPLES_DIR = PROJECT_ROOT / "examples"
# The disclaimer is fixed to the top of the viewport (Gradio's containers defeat `sticky`). An
# invisible in-flow copy, laid out at the page's (never wider) width, reserves at least the
# banner's height at every screen width, so the banner never covers the page's first lines.
CSS = """
.disclaimer {margin: 0; padding: 6px 12px;}
.disclaimer p {margin: 0; font-size: 0.85rem; line-height: 1.35;}
#disclaimer {position: fixed; left: 0; right: 0; top: 0; z-index: 90; background: #fff4e5;
             border-bottom: 2px solid #b7791f; color: #4a3000;}
#disclaimer-space {visibility: hidden; border-bottom: 2px solid transparent;}
@media (max-width: 640px) {.disclaimer {padding: 4px 8px;} .disclaimer p {font-size: 0.72rem; line-height: 1.3;}}
#intro h1 {margin: 0 0 2px 0; font-size: 1.5rem;}
#intro p {margin: 0;}
.answer-badge {display: inline-block; color: white; font-weight: 700; border-radius: 999px; padding: 6px 14px;}
.answer-why, .band-help, .band-reasons, .uncertainty, .prob-point {font-size: 0.85em; opacity: 0.85; margin-top: 4px;}
.answer-why, .band-reasons {opacity: 1;}
.prob-row {display: grid; grid-template-columns: 7.5em 1fr 4em; gap: 8px; align-items: center;}
.prob-row meter {width: 100%;}
.prob-title {font-weight: 600; margin-bottom: 4px;}
.map-caption p {margin: 0; font-size: 0.85em;}
/* Examples: a grid that wraps (no hidden side-scroller), captions under each thumbnail in full. */
#examples .grid-wrap, #examples .grid-wrap.fixed-height {overflow: visible !important; height: auto !important;
                                                         max-height: none !important;}
#examples .grid-container {padding-top: 0;}
#examples label[data-testid="block-label"] {position: static; border-radius: 0;}
#display {flex-wrap: wrap;}
#display > * {flex: 1 1 150px !important; min-width: 150px !important;}
#examples .grid-container {grid-template-columns: repeat(4, minmax(0, 1fr)) !important; grid-auto-rows: auto;}
#examples .thumbnail-item {aspect-ratio: auto; height: auto; flex-direction: column; overflow: visible;}
#examples .thumbnail-item img {aspect-ratio: 1 / 1; height: auto; width: 100%; object-fit: cover;}
#examples .caption-label {position: static; max-width: 100%; width: 100%; text-align: center; border-radius: 0;
                          font-size: 0.72rem; padding: 1px 0; white-space: nowrap; overflow: hidden;
                          text-overflow: clip;}
#similar .caption-label {max-width: 100%;}
"""
# Launch settings shared by ``python app.py`` and the tests.
LAUNCH_OPTIONS = dict(
    css=CSS,
    max_file_size=MAX_FILE_BYTES,  # the loader's own limit: larger files get its message, not Gradio's
    allowed_paths=[str(EXAMPLES_DIR)],
    run_history=False,
    footer_links=["api"],
)
OCCLUSION_HELP = ", ".join(
    f"{k}: window {v['window']} px, stride {v['stride']} px" for k, v in OCCLUSION_PRESETS.items()
)


def map_view(caption: str, elem_id: str) -> tuple[gr.Markdown, gr.Image]:
    """One heatmap: its caption above a large image that opens full screen (``#elem_id``)."""
    with gr.Column(min_width=300):
        text = gr.Markdown(caption, elem_classes="map-caption", elem_id=f"{elem_id}-caption")
        image = gr.Image(
            show_label=False, format="jpeg", interactive=False, buttons=["fullscreen", "download"], elem_id=elem_id
        )
    return text, image


def build_analyse_tab(handlers: Handlers) -> None:
    examples = examples_in(EXAMPLES_DIR)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300, elem_id="inputs"):
            upload = gr.File(
                label="Chest radiograph: PNG, JPEG, 16-bit PNG, TIFF, BMP, WebP, GIF or DICOM (any extension)",
                file_count="single", type="filepath", height=120, elem_id="upload",
            )  # fmt: skip
            run = gr.Button("Analyse", variant="primary", elem_id="analyse")
            gallery = gr.Gallery(
                [(path, caption) for path, caption in examples],
                label="Or click an example from the validation split (caption: its ground truth)",
                columns=4, height="auto", allow_preview=False, object_fit="cover", buttons=[], elem_id="examples",
            )  # fmt: skip
            with gr.Accordion("Settings: operating point, CAM method, occlusion (press Analyse to re-run)", open=False):
                operating_point = gr.Radio(
                    handlers.operating_point_choices(), value="balanced", label="Operating point"
                )
                cam_method = gr.Dropdown(CAM_CHOICES, value="gradcam", label="CAM method")
                occlusion = gr.Radio(OCCLUSION_CHOICES, value="fast", label="Occlusion detail", info=OCCLUSION_HELP)
        with gr.Column(scale=3, min_width=300, elem_id="results"):
            with gr.Row(equal_height=False):
                preview = gr.Image(
                    label="The film as the app reads it", format="jpeg", interactive=False, height=240,
                    buttons=["fullscreen"], scale=1, min_width=200, elem_id="preview",
                )  # fmt: skip
                with gr.Column(scale=2, min_width=260):
                    badge = gr.HTML(elem_id="badge")
                    probability = gr.HTML(elem_id="probability")
                    alerts = gr.Markdown(elem_id="alerts")
            with gr.Row(equal_height=False):
                gradcam_caption, gradcam = map_view(CAM_CAPTION, "gradcam")
                occlusion_caption, occlusion_view = map_view(OCCLUSION_CAPTION, "occlusion")
            with gr.Row(equal_height=True, elem_id="display"):
                opacity = gr.Slider(
                    0.0, 1.0, value=0.45, step=0.05, label="Overlay opacity", min_width=200, elem_id="opacity"
                )
                outline = gr.Checkbox(value=True, label="Lung outline", min_width=120, elem_id="outline")
                boxes = gr.Checkbox(
                    value=True, label="Evidence boxes (numbered by strength)", min_width=160, elem_id="boxes"
                )
            agreement = gr.Markdown(elem_id="agreement")
            similar = gr.Gallery(
                label="Most similar training films (caption: similarity · dataset label · file; "
                "the model's feature space)",
                columns=6, height=200, interactive=False, elem_id="similar",
            )  # fmt: skip
            gr.Markdown(SIMILAR_ATTRIBUTION, elem_classes="band-help")
            report = gr.Textbox(label="Report", lines=18, max_lines=40, buttons=["copy"], elem_id="report")
            download = gr.File(label="Whole analysis (JSON)", elem_id="download")
    state = gr.State(None)  # the last Result: the display settings redraw from it
    outputs = [
        badge,
        probability,
        alerts,
        gradcam_caption,
        gradcam,
        occlusion_caption,
        occlusion_view,
        agreement,
        report,
        download,
        similar,
        state,
    ]
    settings = [operating_point, cam_method, occlusion, opacity, outline, boxes]

    def clear(request: gr.Request):
        return handlers.clear(request)

    def stream(path, op, cam, occ, alpha, show_outline, show_boxes, request: gr.Request, progress=gr.Progress()):
        yield from handlers.stream(path, op, cam, occ, alpha, show_outline, show_boxes, progress, request)

    def stream_upload(path, op, cam, occ, alpha, show_outline, show_boxes, request: gr.Request, progress=gr.Progress()):
        yield from handlers.stream_upload(
            path, op, cam, occ, alpha, show_outline, show_boxes, progress=progress, request=request
        )

    def redraw(result, alpha, show_outline, show_boxes, request: gr.Request):
        return handlers.redraw(result, alpha, show_outline, show_boxes, request)

    private = dict(api_visibility="private")
    # A step asked for again while it still runs runs once more afterwards, reading the inputs
    # then (never skipped): the newest upload always gets its analysis. Each clear starts a new
    # generation of the page, and whatever still runs from an older one stops sending (see
    # Handlers), so nothing of an earlier film is ever shown next to another one.
    latest = dict(trigger_mode="always_last")

    # A new film (an upload, or an example put in the upload): clear every result, show the film
    # as the app reads it, then analyse it. An unreadable file stops after the preview's message,
    # with the results already cleared. Started by the user's own actions (upload, example click),
    # never by the upload's change event: on a busy page the change of a removal could read the
    # next file, which then ran (or raised its error) twice.
    def analyse_new_film(event) -> None:
        cleared = event(clear, None, outputs, show_progress="hidden", **latest, **private)
        previewed = cleared.then(user_errors(preview_image), upload, preview, **latest, **private)
        previewed.success(
            user_errors(stream_upload), [upload, *settings], outputs, concurrency_id="model", **latest, **private
        )

    analyse_new_film(upload.upload)
    analyse_new_film(gallery.select(example_picker(examples), None, upload, **private).then)
    # The film removed: every result and the preview cleared, the upload not read (a new file
    # may already be in it, and has its own upload event).
    upload.clear(clear, None, outputs, show_progress="hidden", **latest, **private).then(
        lambda: None, None, preview, show_progress="hidden", **private
    )
    # Analyse re-runs with the current settings (reading the film again first, so that an
    # unreadable one stops with the loader's message there). Undocumented (callable, not
    # advertised) so that benchmarks/app_latency.py can time the first answer.
    reread = run.click(clear, None, outputs, show_progress="hidden", **latest, **private).then(
        user_errors(preview_image), upload, preview, show_progress="hidden", **latest, **private
    )
    reread.success(
        user_errors(stream),
        [upload, *settings],
        outputs,
        api_name="ui_analyze",
        api_visibility="undocumented",
        concurrency_id="model",
        **latest,
    )
    gr.on(
        [opacity.change, outline.change, boxes.change], redraw,
        [state, opacity, outline, boxes], [gradcam, occlusion_view],
        show_progress="hidden", **latest, **private,
    )  # fmt: skip


def build_api(handlers: Handlers) -> None:
    """The public API (/predict, /explain) on hidden components, so that clients can send any
    file and the API page and MCP schema publish the allowed values of every setting."""
    with gr.Group(visible=False):
        api_file = gr.File(label="image")
        api_op = gr.Dropdown(handlers.operating_point_choices(), value="balanced", label="operating_point")
        api_cam = gr.Dropdown(CAM_CHOICES, value="gradcam", label="cam_method")
        api_occ = gr.Dropdown(OCCLUSION_CHOICES, value="fast", label="occlusion")
        api_answer = gr.Textbox(label="answer")
        api_label = gr.Textbox(label="label")
        api_prob = gr.Number(label="probability")
        api_band = gr.Textbox(label="band")
        api_uncertainty = gr.Number(label="uncertainty")
        api_flagged = gr.Checkbox(label="flagged")
        api_band_reasons = gr.JSON(label="band_reasons")
        api_ood_reasons = gr.JSON(label="ood_reasons")
        api_gradcam = gr.Image(label="gradcam", format="png")
        api_occlusion = gr.Image(label="occlusion_map", format="png")
        api_agreement = gr.JSON(label="agreement")
        api_report = gr.Textbox(label="report")
        api_json = gr.JSON(label="analysis")
        predict_button = gr.Button(visible=False)
        explain_button = gr.Button(visible=False)
    predict_button.click(
        user_errors(handlers.predict),
        [api_file, api_op],
        [api_answer, api_label, api_prob, api_band, api_uncertainty, api_flagged, api_band_reasons, api_ood_reasons],
        api_name="predict",
        concurrency_id="model",
    )
    explain_button.click(
        user_errors(handlers.explain),
        [api_file, api_op, api_cam, api_occ],
        [
            api_answer,
            api_label,
            api_prob,
            api_band,
            api_uncertainty,
            api_gradcam,
            api_occlusion,
            api_agreement,
            api_report,
            api_json,
        ],
        api_name="explain",
        concurrency_id="model",
    )


def build_demo(handlers: Handlers) -> gr.Blocks:
    with gr.Blocks(title="Chest X-ray XAI lab", delete_cache=OUTPUT_RETENTION) as demo:
        gr.Markdown(f"**⚕️ {DISCLAIMER}**", elem_id="disclaimer", elem_classes="disclaimer")
        gr.Markdown(f"**⚕️ {DISCLAIMER}**", elem_id="disclaimer-space", elem_classes="disclaimer")
        gr.Markdown(
            "# Chest X-ray pneumonia explainability lab\n"
            "A calibrated probability of pneumonia for a pediatric (1-5 years) AP chest radiograph, explained by two "
            "independent heatmaps checked against each other and against the lungs.",
            elem_id="intro",
        )
        with gr.Tabs():
            with gr.Tab("Analyse"):
                build_analyse_tab(handlers)
            with gr.Tab("Model") as model:
                build_model_tab(model, handlers.card.sha256)  # drawn when first opened
        build_api(handlers)
    return demo.queue(max_size=32, default_concurrency_limit=1)
