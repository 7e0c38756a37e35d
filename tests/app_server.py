"""The real Blocks app served on a free localhost port for end-to-end tests (client, MCP, browser)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from xray_xai.pipeline import Pipeline
from xray_xai.ui.handlers import Handlers
from xray_xai.ui.layout import LAUNCH_OPTIONS, build_demo


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def served(pipeline: Pipeline, **launch) -> Iterator[str]:
    """The app on ``pipeline``, launched with the app's own settings (plus ``launch``); yields its URL."""
    demo = build_demo(Handlers(pipeline))
    port = free_port()
    demo.launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **{**LAUNCH_OPTIONS, **launch}
    )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
