"""`ovlift view` on a 200,000-point scene, measured in headless Chromium: first paint (page
opened -> the points drawn) and a text query's round trip (Query pressed -> the new colours
drawn), for new texts (embedded by the server's text encoder) and for a repeated one.
Goals on 2 cores: first paint under 3 s, a query under 0.5 s.

    .venv/bin/python benchmarks/viewer.py [--points 200000] [--store DIR]

"Drawn" is timed inside the page: a wrapper around WebGL's drawArrays notes when a draw of
all the points has finished (a one-pixel readPixels waits for it), and one around
bufferData notes when new colours reach the GPU; no screenshot is in the numbers. WebGL is
software here (SwiftShader), as on a machine without a GPU. Needs Debian's chromium.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import VIEWPORT, chromium_path, launch, pixels, start_viewer, stop, yellow
from viewer_store import write_viewer_store

HOOK = """(() => {
  const n = __N__, ov = (window.__ov = { uploads: [], draws: [], click: null });
  for (const C of [WebGLRenderingContext, WebGL2RenderingContext]) {
    for (const name of ["bufferData", "bufferSubData"]) {
      const original = C.prototype[name];
      C.prototype[name] = function (...args) {
        const data = args.find((a) => a && a.byteLength !== undefined);
        if (data && data.byteLength >= 3 * n) ov.uploads.push(performance.now());
        return original.apply(this, args);
      };
    }
    const draw = C.prototype.drawArrays;
    C.prototype.drawArrays = function (mode, first, count) {
      const result = draw.call(this, mode, first, count);
      if (count >= n) {
        this.readPixels(0, 0, 1, 1, this.RGBA, this.UNSIGNED_BYTE, new Uint8Array(4));
        ov.draws.push(performance.now());
      }
      return result;
    };
  }
  document.addEventListener("pointerdown", () => { ov.click = performance.now(); }, true);
})();"""
"""Page-side clocks: uploads of at least a colour per point, finished draws of every point, the last press."""
DRAWN_AFTER_UPLOAD = """() => {
  const ov = window.__ov, upload = ov.uploads.find((t) => t > ov.click);
  const draw = upload === undefined ? undefined : ov.draws.find((t) => t > upload);
  return draw === undefined ? null : [(draw - ov.click) / 1000, (upload - ov.click) / 1000];
}"""
"""Seconds from the press to the new colours drawn, and to their upload (the server's part and
the transfer; the rest is drawing)."""
RENDERER = """() => {
  const gl = document.createElement("canvas").getContext("webgl2");
  return gl.getParameter(gl.getExtension("WEBGL_debug_renderer_info").UNMASKED_RENDERER_WEBGL);
}"""
TEXTS = ["chair", "table", "a seat", "a desk", "an armchair"]


def query(page, text: str) -> tuple[float, float]:
    """Seconds from pressing Query to the new colours drawn, and to their upload."""
    page.locator("xpath=//*[normalize-space(text())='text']/following::input[1]").fill(text)
    time.sleep(0.3)  # viser's 50 ms widget throttle: a click right after the text would replace it
    page.get_by_role("button", name="Query").click()
    page.wait_for_function(DRAWN_AFTER_UPLOAD, timeout=120_000, polling=20)
    return page.evaluate(DRAWN_AFTER_UPLOAD)


def server_part(store: Path) -> tuple[float, float]:
    """Seconds the server spends on a query (similarity and colours) for a text new to the
    process and the store, and for one it has embedded: timed in this process, no browser."""
    from ovlift.cache_schema import Store
    from ovlift.viewer.session import Library, Session

    session = Session(Library(Store(store)), "room")
    session.query("a lamp")  # loads the source's features and the text encoder
    times = []
    for text in ("a sofa", "a sofa"):
        start = time.perf_counter()
        session.query(text)
        session.colours()
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def in_browser(url: str, points: int) -> dict:
    """First paint and query round trips, timed in the page."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport=VIEWPORT)
        page.add_init_script(HOOK.replace("__N__", str(points)))
        page.goto(url)
        page.wait_for_function("window.__ov.draws.length > 0", timeout=120_000, polling=20)
        # since the navigation started: the points drawn, and uploaded
        paint = page.evaluate("[window.__ov.draws[0] / 1000, window.__ov.uploads[0] / 1000]")
        page.get_by_text(f"room: {points:,} points").wait_for()
        fresh = [query(page, text) for text in TEXTS]
        repeated = query(page, TEXTS[1])  # embedded before: a dict look-up
        assert yellow(pixels(page.screenshot())).sum() > 1000, "the last query lit up a cluster"
        found = {"paint": paint, "fresh": fresh, "repeated": repeated, "version": browser.version}
        found["renderer"] = page.evaluate(RENDERER)
        browser.close()
    return found


def measure(store: Path, points: int) -> tuple[dict, float, float]:
    write_viewer_store(store, points_per_cluster=points // 2)
    started = time.monotonic()
    process, url, _ = start_viewer(store, "room")
    print(f"ovlift view serving after {time.monotonic() - started:.1f} s (imports, scene, encoder)")
    time.sleep(5)  # the text encoder loads in the background after the server starts
    try:
        found = in_browser(url, points)
    finally:
        stop(process)
    return found, *server_part(store)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--store", type=Path, help="where to write the store (default: a temporary folder)")
    args = parser.parse_args()
    if chromium_path() is None:
        sys.exit("no Chromium: apt-get install chromium (or set OVLIFT_CHROMIUM)")
    with tempfile.TemporaryDirectory(prefix="ovlift-viewer-bench-") as scratch:  # 200 MB of features
        store = (args.store or Path(scratch)) / "store.zarr"
        found, new, known = measure(store, args.points)
    print(f"{args.points:,} points, Chromium {found['version']}, {found['renderer']}, {os.cpu_count()} cores")
    print(f"first paint: {found['paint'][0]:.2f} s (goal < 3 s); points on the GPU after {found['paint'][1]:.2f} s")
    fresh = found["fresh"]
    median, uploaded = (statistics.median(t[i] for t in fresh) for i in (0, 1))
    each = ", ".join(f"{t:.2f}" for t, _ in fresh)
    print(f"query round trip, new texts: median {median:.2f} s (goal < 0.5 s); each: {each}")
    print(f"  of which press -> new colours on the GPU: median {uploaded:.2f} s (the rest: one frame drawn)")
    repeated = found["repeated"]
    print(f"query round trip, a repeated text: {repeated[0]:.2f} s ({repeated[1]:.2f} s to the GPU)")
    print(f"the server's part of a query (similarity, colours): new text {new:.3f} s, repeated {known:.3f} s")
    print(f"load average during the run: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
