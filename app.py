"""Chest X-ray pneumonia explainability lab: the Gradio Space.

Wiring only: every value shown is computed in ``xray_xai`` (see ``xray_xai/space.py``).
Run ``python app.py`` (add ``--mcp`` or set ``XRAY_XAI_MCP=1`` to also serve Gradio's MCP server).
"""

from __future__ import annotations

import argparse
import os
import threading
from pathlib import Path

import gradio as gr
import torch

from xray_xai import DISCLAIMER
from xray_xai.cam import CAM_METHODS
from xray_xai.pipeline import OCCLUSION_PRESETS, Pipeline
from xray_xai.results import BAND_EXPLANATION
from xray_xai.similar import ATTRIBUTION as SIMILAR_ATTRIBUTION
from xray_xai.space import Handlers, user_errors

torch.set_num_threads(int(os.environ.get("CPU_CORES", "2")))

EXAMPLES_DIR = Path(__file__).parent / "examples"
OPERATING_POINTS = [("Balanced (Youden's J)", "balanced"), ("Screening (sensitivity >= 95%)", "screening"), ("Rule-in (specificity >= 90%)", "rule_in")]
CSS = """
.disclaimer {position: sticky; top: 0; z-index: 100; background: #fff4e5; border: 2px solid #b7791f;
             border-radius: 8px; padding: 8px 12px; color: #4a3000;}
.band-badge {display: inline-block; color: white; font-weight: 700; border-radius: 999px; padding: 6px 14px;}
.band-help {font-size: 0.85em; opacity: 0.8; margin-top: 4px;}
"""


def build_demo(handlers: Handlers) -> gr.Blocks:
    examples = sorted(EXAMPLES_DIR.glob("*/*.jpeg"))
    with gr.Blocks(title="Chest X-ray XAI lab", delete_cache=(600, 900)) as demo:
        gr.Markdown(f"**⚕️ {DISCLAIMER}**", elem_classes="disclaimer", elem_id="disclaimer")
        gr.Markdown(
            "# Chest X-ray pneumonia explainability lab\n"
            "A ResNet trained from scratch on pediatric (1-5 years) AP chest radiographs gives a calibrated "
            "probability of pneumonia, and two independent explanations show *why*: Grad-CAM and "
            "occlusion sensitivity, checked against each other and against the lung fields."
        )
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="filepath", image_mode=None, label="Drop a chest radiograph (PNG / JPEG)", sources=["upload", "clipboard"], format="png", height=320)
                file = gr.File(label="...or any file: DICOM (.dcm or no extension), 16-bit PNG, TIFF", file_count="single", type="filepath")
                with gr.Accordion("Settings", open=True):
                    operating_point = gr.Radio(OPERATING_POINTS, value="balanced", label="Operating point")
                    cam_method = gr.Dropdown(list(CAM_METHODS), value="gradcam", label="CAM method")
                    occlusion = gr.Radio(list(OCCLUSION_PRESETS), value="fast", label="Occlusion detail", info=", ".join(f"{k}: window {v['window']} px, stride {v['stride']} px" for k, v in OCCLUSION_PRESETS.items()))
                    opacity = gr.Slider(0.0, 1.0, value=0.45, step=0.05, label="Overlay opacity")
                    outline = gr.Checkbox(value=True, label="Show lung outline")
                    boxes = gr.Checkbox(value=True, label="Show evidence boxes (strongest regions of each map)")
                run = gr.Button("Analyse", variant="primary")
            with gr.Column(scale=2):
                badge = gr.HTML(f'<div class="band-help">{BAND_EXPLANATION}</div>')
                label = gr.Label(label="Calibrated probability", num_top_classes=2)
                alerts = gr.Markdown()
                with gr.Row(equal_height=True):
                    original = gr.Image(label="Radiograph", format="png", interactive=False)
                    gradcam = gr.Image(label="Grad-CAM", format="png", interactive=False)
                    occlusion_view = gr.Image(label="Occlusion sensitivity", format="png", interactive=False)
                similar = gr.Gallery(label="Most similar training films (the model's feature space; dataset labels)", columns=6, height=180, interactive=False)
                gr.Markdown(SIMILAR_ATTRIBUTION, elem_classes="band-help")
                legend = gr.Markdown()
                agreement = gr.Markdown()
                report = gr.Textbox(label="Report", lines=18, max_lines=40, buttons=["copy"], elem_id="report")
                download = gr.File(label="Whole analysis (JSON)")
        outputs = [badge, label, original, gradcam, occlusion_view, agreement, legend, alerts, report, download, similar]
        gr.Examples(
            examples=[[str(p)] for p in examples],
            example_labels=[f"{p.parent.name} (ground truth) · {p.stem}" for p in examples],
            inputs=[image],
            outputs=outputs,
            fn=user_errors(handlers.example),
            cache_examples=True,
            cache_mode="lazy",
            label="Examples from the official validation split (click one)",
            examples_per_page=16,
        )
        settings = [operating_point, cam_method, occlusion, opacity, outline, boxes]

        def stream(image_path, file_path, op, cam, occ, alpha, show_outline, show_boxes, progress=gr.Progress()):
            yield from handlers.stream(image_path, file_path, op, cam, occ, alpha, show_outline, show_boxes, progress)

        # Undocumented (callable, not advertised) so that benchmarks/app_latency.py can time the first answer.
        run.click(user_errors(stream), [image, file, *settings], outputs, api_name="ui_analyze", api_visibility="undocumented", concurrency_id="model")

        # Public API: hidden components so that clients can send any file and read typed outputs.
        with gr.Group(visible=False):
            api_file = gr.File(label="image")
            api_op = gr.Textbox(value="balanced", label="operating_point")
            api_cam = gr.Textbox(value="gradcam", label="cam_method")
            api_occ = gr.Textbox(value="fast", label="occlusion")
            api_label = gr.Textbox(label="label")
            api_prob = gr.Number(label="probability")
            api_band = gr.Textbox(label="band")
            api_gradcam = gr.Image(label="gradcam", format="png")
            api_occlusion = gr.Image(label="occlusion_map", format="png")
            api_agreement = gr.JSON(label="agreement")
            api_report = gr.Textbox(label="report")
            api_json = gr.JSON(label="analysis")
            predict_button = gr.Button(visible=False)
            explain_button = gr.Button(visible=False)
        predict_button.click(user_errors(handlers.predict), [api_file, api_op], [api_label, api_prob, api_band], api_name="predict", concurrency_id="model")
        explain_button.click(
            user_errors(handlers.explain),
            [api_file, api_op, api_cam, api_occ],
            [api_label, api_prob, api_band, api_gradcam, api_occlusion, api_agreement, api_report, api_json],
            api_name="explain",
            concurrency_id="model",
        )
    return demo


def main() -> None:
    parser = argparse.ArgumentParser(description="Launch the chest X-ray explainability Space.")
    parser.add_argument("--mcp", action="store_true", help="also serve Gradio's MCP server (or set XRAY_XAI_MCP=1)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    args = parser.parse_args()
    pipeline = Pipeline.load()
    demo = build_demo(Handlers(pipeline))
    demo.queue(max_size=32, default_concurrency_limit=1)
    demo.launch(
        prevent_thread_lock=True,
        server_name=args.host,
        server_port=args.port,
        max_file_size="50mb",
        run_history=False,
        mcp_server=args.mcp or os.environ.get("XRAY_XAI_MCP") == "1",
        css=CSS,
        footer_links=["api"],
    )
    # Serve first, then pay for lazy imports and first-call set-up before the first user does.
    threading.Thread(target=pipeline.warm_up, name="warm-up", daemon=True).start()
    demo.block_thread()


if __name__ == "__main__":
    main()
