"""Both viewers in headless Chromium: ``ovlift view`` on a small store, where a typed query
must light up the queried cluster on screen, and the one-file export opened from disk.
Skips only where no Chromium can be had (.ci/run installs Debian's)."""

import base64
import time

import numpy as np
import pytest
from browser import LOCAL, VIEWPORT, chromium_path, dark_purple, launch, pixels, start_viewer, stop, yellow
from viewer_store import write_viewer_store

from ovlift.viewer.session import MAX_TEXT
from ovlift.viewer.static_html import write_html

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        chromium_path() is None,
        reason="no Chromium to drive: apt-get install chromium (as .ci/run does), or set OVLIFT_CHROMIUM",
    ),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
ROWS, LEFT, RIGHT = slice(200, 650), slice(300, 600), slice(600, 860)
"""Where the viewer's first camera shows the test scene's chair cluster (left) and table
cluster (right): clear of the control panel (right), the notice about software WebGL (top
left) and the axes (bottom left)."""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_viewer_store(tmp_path_factory.mktemp("viewer-browser") / "store.zarr")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


def _page(browser, requests: list[str]):
    page = browser.new_page(viewport=VIEWPORT)
    page.on("request", lambda request: requests.append(request.url))
    return page


def _query(page, text: str, wait_for: str) -> float:
    """Type ``text``, press Query, wait for the status line; seconds from the press."""
    page.locator("xpath=//*[normalize-space(text())='text']/following::input[1]").fill(text)
    time.sleep(
        0.3
    )  # viser sends a widget's value and a click through one 50 ms throttle: a click right after would replace it
    start = time.monotonic()
    page.get_by_role("button", name="Query").click()
    page.get_by_text(wait_for).first.wait_for(timeout=60_000)
    return time.monotonic() - start


def _halves(page) -> tuple[np.ndarray, np.ndarray]:
    """The screen where the chair and the table are."""
    screen = pixels(page.screenshot())
    return screen[ROWS, LEFT], screen[ROWS, RIGHT]


def _halves_after(page, before: tuple[np.ndarray, np.ndarray], seconds: float = 15) -> tuple[np.ndarray, np.ndarray]:
    """The screen once it differs from ``before`` (a frame or two after the status line)."""
    deadline = time.monotonic() + seconds
    while True:
        now = _halves(page)
        if not np.array_equal(now[0], before[0]) or time.monotonic() > deadline:
            return now
        time.sleep(0.2)


def test_a_typed_query_lights_up_where_the_queried_class_lies(store, browser):
    process, url, said = start_viewer(store.url, "room")
    requests: list[str] = []
    try:
        page = _page(browser, requests)
        page.goto(url)
        page.get_by_text("room: 6,000 points").wait_for(timeout=60_000)
        time.sleep(1.5)
        before = _halves(page)
        for half in before:
            assert (np.abs(half - 128).max(axis=-1) < 12).sum() > 500, "both clusters drawn grey"
            assert not yellow(half).any()

        _query(page, "chair", "query 'chair' on student")
        left, right = _halves_after(page, before)
        assert yellow(left).sum() > 500, "the chair cluster (left) turned bright"
        assert yellow(right).sum() < yellow(left).sum() / 20, "the table cluster (right) did not"
        assert dark_purple(right).sum() > 500, "the table cluster turned dark"

        _query(page, "x" * 10_000, f"at most {MAX_TEXT}")  # refused in the page; the server lives on
        assert page.get_by_text("error: the text has 10000 characters").first.is_visible()
        _query(page, "table", "query 'table' on student")
        left, right = _halves_after(page, (left, right))
        assert yellow(right).sum() > 500 and yellow(left).sum() < 100
        assert process.poll() is None
    finally:
        stop(process)
    assert "Traceback" not in "".join(said)
    assert requests and all(u.startswith(LOCAL) for u in requests), [u for u in requests if not u.startswith(LOCAL)]


def _canvas(page) -> np.ndarray:
    """The export's canvas alone (no panel over it)."""
    url = page.evaluate("() => document.getElementById('view').toDataURL('image/png')")
    return pixels(base64.b64decode(url.split(",", 1)[1]))


def test_the_html_export_draws_offline_and_recolours_by_class(store, browser, tmp_path):
    out = write_html(store, tmp_path / "room.html", "room")
    requests: list[str] = []
    page = _page(browser, requests)
    page.goto(out.as_uri())
    page.wait_for_function("Number(document.body.dataset.draws) >= 1")
    rgb = _canvas(page)
    assert (np.abs(rgb - 128).max(axis=-1) < 12).sum() > 2000, "points drawn (grey)"
    page.select_option("#colour", label="similarity: chair")
    page.wait_for_function("Number(document.body.dataset.draws) >= 2")
    chair = _canvas(page)
    half = chair.shape[1] // 2
    assert yellow(chair[:, :half]).sum() > 1000 and dark_purple(chair[:, half:]).sum() > 1000  # chair left
    assert yellow(chair[:, half:]).sum() < 50 and not yellow(rgb).any()
    assert page.get_by_text("cosine to 'chair'").is_visible()
    page.select_option("#colour", label="class: ensemble")
    page.get_by_role("checkbox", name="table").uncheck()  # hides the table's points
    page.wait_for_function("Number(document.body.dataset.draws) >= 4")
    assert (np.abs(_canvas(page)[:, half:] - 250).max(axis=-1) > 0).sum() == 0
    assert requests == [out.as_uri()], "the file fetched nothing"
