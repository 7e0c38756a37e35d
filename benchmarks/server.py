"""Launch the app in a subprocess on loopback for the benchmarks, and read its memory."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from gradio_client import Client

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_app(timeout_s: float = 120.0):
    """Yield ``(url, process)`` of ``python app.py`` on a free loopback port; stop it afterwards."""
    port = free_port()
    env = {**os.environ, "CPU_CORES": os.environ.get("CPU_CORES", "2"), "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen(
        [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + timeout_s
    try:
        while True:
            try:
                Client(url, verbose=False)
                break
            except Exception as error:
                if process.poll() is not None or time.time() > deadline:
                    raise RuntimeError("the app did not start") from error
                time.sleep(0.5)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=30)


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a live process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# Offline-safe: without these flags Chromium keeps trying its own background services, so a
# page never reaches "networkidle".
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run"]


@contextlib.contextmanager
def browser_page(url: str, width: int = 1400, height: int = 900):
    """Yield a headless Chromium page on the app at ``url``, its upload box shown."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or None, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url, wait_until="load")
            page.locator("#upload").wait_for()
            yield page
        finally:
            browser.close()


def upload_and_wait(page, path: Path) -> None:
    """Upload ``path`` on the page and wait until the analysis it starts by itself is whole
    (its JSON download, named after the upload, is shown)."""
    preview = page.evaluate("() => document.querySelector('#preview img')?.src ?? ''")
    clear = page.locator("#upload button[aria-label='Clear']")
    if clear.count():
        clear.click()
    page.locator("#upload input[type=file]").set_input_files(str(path))
    page.wait_for_function(  # the app's own preview of this upload is shown
        "(before) => { const img = document.querySelector('#preview img'); "
        "return img && img.src !== before && img.complete; }",
        arg=preview,
        timeout=60_000,
    )
    page.locator(f"#download a[download='{path.stem}_analysis.json']").wait_for(timeout=120_000)
