"""Chest X-ray pneumonia explainability lab: the Gradio Space.

Builds ``demo`` from the library (the page is :mod:`xray_xai.ui.layout`). Run ``python app.py``
(add ``--mcp`` or set ``XRAY_XAI_MCP=1`` to also serve Gradio's MCP server), or ``gradio app.py``
for reload mode (it serves the module-level ``demo``).

The page is built from the classifier's card alone and served first; then the models load (in
the main thread, see :class:`~xray_xai.pipeline.PendingPipeline`) and warm up in the background,
and a request that needs them waits until they have loaded. The Model tab is drawn when first
opened, or ahead in the background once the models have warmed up.
"""

# ruff: noqa: E402 (the memory settings come before the imports they concern)
from __future__ import annotations

import argparse
import os
import threading

from xray_xai.memory import limit_malloc_arenas, without_triton

# Before any import starts a thread (which takes an arena of its own) or loads torch (see xray_xai.memory).
limit_malloc_arenas()
without_triton()

from xray_xai.checkpoint import DEFAULT_CHECKPOINT, read_card
from xray_xai.pipeline import PendingPipeline, Pipeline
from xray_xai.ui.handlers import Handlers
from xray_xai.ui.layout import LAUNCH_OPTIONS, build_demo
from xray_xai.ui.model_tab import prerender


def load_models() -> Pipeline:
    import torch  # here, before the models: the page is served without waiting for torch

    torch.set_num_threads(int(os.environ.get("CPU_CORES", "2")))
    return Pipeline.load(DEFAULT_CHECKPOINT)


def warm_up() -> None:
    pipeline.result().warm_up()
    prerender(pipeline.card.sha256)  # the Model tab's figures, so that its first opening is instant


# Loaded by main() once the page is served, or by the first request (reload mode).
pipeline = PendingPipeline(load_models, read_card(DEFAULT_CHECKPOINT))
demo = build_demo(Handlers(pipeline))


def main() -> None:
    parser = argparse.ArgumentParser(description="Launch the chest X-ray explainability Space.")
    parser.add_argument("--mcp", action="store_true", help="also serve Gradio's MCP server (or set XRAY_XAI_MCP=1)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    args = parser.parse_args()
    demo.launch(
        prevent_thread_lock=True,
        server_name=args.host,
        server_port=args.port,
        mcp_server=args.mcp or os.environ.get("XRAY_XAI_MCP") == "1",
        **LAUNCH_OPTIONS,
    )
    # Serve first, then load the models (in this, the main thread), and pay for lazy imports, first-call set-up
    # and the Model tab's figures before the first user does.
    pipeline.result()
    threading.Thread(target=warm_up, name="warm-up", daemon=True).start()
    demo.block_thread()


if __name__ == "__main__":
    main()
