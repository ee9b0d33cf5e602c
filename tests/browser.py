"""Headless Chromium for the viewer's browser test and benchmark: Debian's ``chromium``
(apt-get install chromium; .ci/run installs it) driven by Playwright, whose own browser
download does not work here. WebGL runs on SwiftShader (software); the flags ask for it
outright, since Chromium stops falling back to it by itself, and keep the browser from
calling home (this network refuses it, and a test should not)."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",  # root in CI
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1200, "height": 800}
LOCAL = ("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:", "file:", "about:")
"""URLs a page may ask for: the viewer's own server, and nothing beyond this machine."""


def chromium_path() -> str | None:
    """``$OVLIFT_CHROMIUM`` or the first Chromium on the PATH."""
    found = os.environ.get("OVLIFT_CHROMIUM") or next(
        (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None
    )
    return found


def launch(playwright):
    return playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_viewer(store: Path, scene: str, timeout: float = 300) -> tuple[subprocess.Popen, str, list[str]]:
    """``ovlift view STORE --scene SCENE`` on a free port, once it serves (the command line
    imports torch and more: tens of seconds on two busy cores), and what it says."""
    ovlift = Path(sys.executable).parent / "ovlift"
    process = subprocess.Popen(
        [str(ovlift), "view", str(store), "--scene", scene, "--port", str(free_port())],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    said: list[str] = []
    serving = threading.Event()

    def read() -> None:  # to the end, so that the server never blocks on a full pipe
        assert process.stdout is not None
        for line in process.stdout:
            said.append(line)
            if line.startswith("ovlift view: http"):
                serving.set()
        serving.set()

    threading.Thread(target=read, daemon=True).start()
    serving.wait(timeout)
    urls = [line.split()[2] for line in said if line.startswith("ovlift view: http")]
    if not urls:
        process.kill()
        raise AssertionError(f"ovlift view did not start; it said: {''.join(said)}")
    return process, urls[0], said


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


def pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def yellow(image: np.ndarray) -> np.ndarray:
    """Pixels at viridis's bright end (the most similar points)."""
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return (r > 180) & (g > 170) & (b < 120)


def dark_purple(image: np.ndarray) -> np.ndarray:
    """Pixels at viridis's dark end (the least similar points)."""
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return (r < 110) & (g < 90) & (b > 50) & (b > g)
