"""The Space's page: Gradio Blocks wired to :class:`~xray_xai.ui.handlers.Handlers`.

Wiring only: every value shown is computed by the handlers from the library's results.
"""

from __future__ import annotations


import gradio as gr

from .. import DISCLAIMER
from ..checkpoint import PROJECT_ROOT
from ..imaging import MAX_FILE_BYTES
from ..models.similar import ATTRIBUTION as SIMILAR_ATTRIBUTION
from ..pipeline import OCCLUSION_PRESETS
from ..results import BAND_EXPLANATION
from .handlers import (
    CAM_CHOICES,
    OCCLUSION_CHOICES,
    OPERATING_POINT_CHOICES,
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
.band-badge {display: inline-block; color: white; font-weight: 700; border-radius: 999px; padding: 6px 14px;}
.band-help, .band-reasons, .uncertainty {font-size: 0.85em; opacity: 0.85; margin-top: 4px;}
.prob-row {display: grid; grid-template-columns: 7.5em 1fr 4em; gap: 8px; align-items: center;}
.prob-row meter {width: 100%;}
.prob-title {font-weight: 600; margin-bottom: 4px;}
"""
# Launch settings shared by ``python app.py`` and the tests.
LAUNCH_OPTIONS = dict(
    css=CSS,
    max_file_size=MAX_FILE_BYTES,  # the loader's own limit: larger files get its message, not Gradio's
    allowed_paths=[str(EXAMPLES_DIR)],
    run_history=False,
    footer_links=["api"],
)


def build_analyse_tab(handlers: Handlers) -> None:
    examples = examples_in(EXAMPLES_DIR)
    with gr.Row():
        with gr.Column(scale=1):
            upload = gr.File(label="Chest radiograph: PNG, JPEG, 16-bit PNG, TIFF, BMP, WebP, GIF or DICOM (any extension)", file_count="single", type="filepath", elem_id="upload")
            preview = gr.Image(label="As the app reads it", format="jpeg", interactive=False, height=260, elem_id="preview")
            with gr.Accordion("Settings", open=True):
                operating_point = gr.Radio(OPERATING_POINT_CHOICES, value="balanced", label="Operating point")
                cam_method = gr.Dropdown(CAM_CHOICES, value="gradcam", label="CAM method")
                occlusion = gr.Radio(OCCLUSION_CHOICES, value="fast", label="Occlusion detail", info=", ".join(f"{k}: window {v['window']} px, stride {v['stride']} px" for k, v in OCCLUSION_PRESETS.items()))
                opacity = gr.Slider(0.0, 1.0, value=0.45, step=0.05, label="Overlay opacity")
                outline = gr.Checkbox(value=True, label="Show lung outline")
                boxes = gr.Checkbox(value=True, label="Show evidence boxes (strongest regions of each map)")
            run = gr.Button("Analyse", variant="primary", elem_id="analyse")
        with gr.Column(scale=2):
            badge = gr.HTML(f'<div class="band-help">{BAND_EXPLANATION}</div>', elem_id="badge")
            probability = gr.HTML(elem_id="probability")
            alerts = gr.Markdown()
            with gr.Row(equal_height=True):
                original = gr.Image(label="Radiograph", format="jpeg", interactive=False)
                gradcam = gr.Image(label="Grad-CAM", format="jpeg", interactive=False, elem_id="gradcam")
                occlusion_view = gr.Image(label="Occlusion sensitivity", format="jpeg", interactive=False, elem_id="occlusion")
            similar = gr.Gallery(label="Most similar training films (the model's feature space; dataset labels)", columns=6, height=180, interactive=False, elem_id="similar")
            gr.Markdown(SIMILAR_ATTRIBUTION, elem_classes="band-help")
            legend = gr.Markdown()
            agreement = gr.Markdown(elem_id="agreement")
            report = gr.Textbox(label="Report", lines=18, max_lines=40, buttons=["copy"], elem_id="report")
            download = gr.File(label="Whole analysis (JSON)")
    gallery = gr.Gallery(
        [(path, caption) for path, caption in examples],
        label="Examples from the official validation split (caption: ground truth · file): click one to analyse it with the settings above",
        columns=8,
        allow_preview=False,
        object_fit="cover",
        elem_id="examples",
    )
    outputs = [badge, probability, original, gradcam, occlusion_view, agreement, legend, alerts, report, download, similar]
    settings = [operating_point, cam_method, occlusion, opacity, outline, boxes]

    def stream(path, op, cam, occ, alpha, show_outline, show_boxes, progress=gr.Progress()):
        yield from handlers.stream(path, op, cam, occ, alpha, show_outline, show_boxes, progress)

    upload.change(user_errors(preview_image), upload, preview, api_visibility="private", trigger_mode="always_last")
    # Undocumented (callable, not advertised) so that benchmarks/app_latency.py can time the first answer.
    run.click(user_errors(stream), [upload, *settings], outputs, api_name="ui_analyze", api_visibility="undocumented", concurrency_id="model")
    gallery.select(example_picker(examples), None, upload, api_visibility="private").then(
        user_errors(stream), [upload, *settings], outputs, api_visibility="private", concurrency_id="model"
    )


def build_api(handlers: Handlers) -> None:
    """The public API (/predict, /explain) on hidden components, so that clients can send any
    file and the API page and MCP schema publish the allowed values of every setting."""
    with gr.Group(visible=False):
        api_file = gr.File(label="image")
        api_op = gr.Dropdown(OPERATING_POINT_CHOICES, value="balanced", label="operating_point")
        api_cam = gr.Dropdown(CAM_CHOICES, value="gradcam", label="cam_method")
        api_occ = gr.Dropdown(OCCLUSION_CHOICES, value="fast", label="occlusion")
        api_label = gr.Textbox(label="label")
        api_prob = gr.Number(label="probability")
        api_band = gr.Textbox(label="band")
        api_gradcam = gr.Image(label="gradcam", format="png")
        api_occlusion = gr.Image(label="occlusion_map", format="png")
        api_agreement = gr.JSON(label="agreement")
        api_report = gr.Textbox(label="report")
        api_json = gr.JSON(label="analysis")
        api_uncertainty = gr.Number(label="uncertainty")
        predict_button = gr.Button(visible=False)
        explain_button = gr.Button(visible=False)
    predict_button.click(user_errors(handlers.predict), [api_file, api_op], [api_label, api_prob, api_band, api_uncertainty], api_name="predict", concurrency_id="model")
    explain_button.click(
        user_errors(handlers.explain),
        [api_file, api_op, api_cam, api_occ],
        [api_label, api_prob, api_band, api_gradcam, api_occlusion, api_agreement, api_report, api_json, api_uncertainty],
        api_name="explain",
        concurrency_id="model",
    )


def build_demo(handlers: Handlers) -> gr.Blocks:
    with gr.Blocks(title="Chest X-ray XAI lab", delete_cache=OUTPUT_RETENTION) as demo:
        gr.Markdown(f"**⚕️ {DISCLAIMER}**", elem_id="disclaimer", elem_classes="disclaimer")
        gr.Markdown(f"**⚕️ {DISCLAIMER}**", elem_id="disclaimer-space", elem_classes="disclaimer")
        gr.Markdown(
            "# Chest X-ray pneumonia explainability lab\n"
            "A ResNet trained from scratch on pediatric (1-5 years) AP chest radiographs gives a calibrated "
            "probability of pneumonia, and two independent explanations show *why*: Grad-CAM and "
            "occlusion sensitivity, checked against each other and against the lung fields."
        )
        with gr.Tabs():
            with gr.Tab("Analyse"):
                build_analyse_tab(handlers)
            with gr.Tab("Model"):
                build_model_tab(handlers.pipeline.classifier.card.sha256)
        build_api(handlers)
    return demo.queue(max_size=32, default_concurrency_limit=1)
