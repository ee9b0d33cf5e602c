"""``ovlift view`` without a browser: what a scene shows, the checks on everything a page
sends, one similarity shared with ``ovlift query``, and the one-file export.
(tests/test_viewer_browser.py drives both pages in Chromium.)"""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_cli import words
from typer.testing import CliRunner
from viewer_store import write_viewer_store

from ovlift.network import is_loopback_host as is_loopback
from ovlift.pipeline.cli import app
from ovlift.pipeline.text_cache import TextCache
from ovlift.query import query_scene
from ovlift.viewer import session as session_module
from ovlift.viewer.scene_data import load_scene, overview, point_size
from ovlift.viewer.server import _md, page_url
from ovlift.viewer.session import MAX_TEXT, Library, Session, apply
from ovlift.viewer.static_html import render, write_html

CHAIR, TABLE = slice(0, 3000), slice(3000, 6000)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_viewer_store(tmp_path_factory.mktemp("viewer") / "store.zarr")


@pytest.fixture
def session(store):
    return Session(Library(store), "room")


def test_a_scene_shows_its_points_labels_cameras_and_sources(store):
    scene = load_scene(store, "room")
    assert scene.points.shape == (6000, 3) and scene.keep is None and scene.total == 6000
    assert scene.sources == ["student", "fused/t"] and scene.vocabulary == ["chair", "table"]
    assert list(scene.label_sets) == ["ensemble", "student", "2D", "ground truth"]
    assert (scene.label_sets["2D"].labels[TABLE] == -1).all()  # unseen by 2D: none, drawn grey
    assert (scene.label_sets["2D"].colours()[TABLE] == 150).all()
    assert len(scene.cameras) == 4
    camera = scene.cameras[0]
    assert camera.fov == pytest.approx(2 * np.arctan(24 / 50)) and camera.aspect == pytest.approx(64 / 48)
    assert np.allclose(camera.position, [-1.5, -3.0, 1.5])
    smaller = load_scene(store, "room", max_points=1000)  # a seeded subset, labels alike
    assert len(smaller.points) == 1000 and smaller.total == 6000 and (np.diff(smaller.keep) > 0).all()
    assert np.array_equal(smaller.points, scene.points[smaller.keep])
    assert np.array_equal(smaller.label_sets["student"].labels, scene.label_sets["student"].labels[smaller.keep])
    assert load_scene(store, "bare").sources == [] and load_scene(store, "bare").label_sets == {}


BAD_REQUESTS = [
    ("select_scene", "../room", "not a scene id: '../room'"),
    ("select_scene", "room/../../etc", "not a scene id"),
    ("select_scene", "", "not a scene id: ''"),
    ("select_scene", None, "not a scene id: None"),
    ("select_scene", "x" * 10_000, "(10002 characters)"),
    ("select_scene", "kitchen", "no scene 'kitchen' in the store; scenes: bare, room"),
    ("select_source", "fused/../t", "no source 'fused/../t' here; one of student, fused/t"),
    ("select_source", "denoised/t", "no source 'denoised/t' here"),
    ("select_source", 3, "no source 3 here"),
    ("query", "", "type what to look for first"),
    ("query", " \t ", "type what to look for first"),
    ("query", None, "type what to look for first"),
    ("query", "x" * 10_000, f"the text has 10000 characters; at most {MAX_TEXT}"),
    ("set_colour_by", "<b>pink</b>", "no colouring '<b>pink</b>' here; one of RGB, class, query"),
    ("set_colour_by", "query", "type a text and press Query first"),
    ("set_label_set", "../labels", "no label set '../labels' here"),
    ("show_class", "sofa", "no class 'sofa' here; one of chair, table"),
]


@pytest.mark.parametrize("action, value, message", BAD_REQUESTS)
def test_whatever_a_page_sends_is_checked_and_refused_with_a_line_not_a_traceback(session, action, value, message):
    before = (session.scene.scene_id, session.source, session.colour_by, session.text)
    error = apply(lambda: getattr(session, action)(value, *((False,) if action == "show_class" else ())))
    assert error is not None and message in error and "Traceback" not in error
    assert len(error) < 400  # a 10 kB value is not echoed back
    assert (session.scene.scene_id, session.source, session.colour_by, session.text) == before


def test_a_failure_inside_the_server_is_a_line_in_the_page_and_a_traceback_in_the_log(caplog):
    def broken():
        raise RuntimeError("disk on fire")

    error = apply(broken)
    assert error == "the server failed on this request; its log has the details"
    assert "disk on fire" in caplog.text and "Traceback" in caplog.text


def test_a_query_lights_up_the_class_it_names(session):
    assert apply(lambda: session.query("  a chair ")) is None
    assert session.colour_by == "query" and session.text == "a chair"
    assert session.similarity[CHAIR].min() > session.similarity[TABLE].max()
    brightness = session.colours().astype(float).sum(axis=1)
    assert brightness[CHAIR].mean() > 2 * brightness[TABLE].mean()
    assert "query 'a chair' on student: cosine" in session.status()
    session.select_source("fused/t")  # the teacher saw the chair only
    assert np.isnan(session.similarity[TABLE]).all() and (session.colours()[TABLE] == 128).all()


def test_the_viewer_and_ovlift_query_compute_the_same_similarity(store, session):
    session.query("table")
    expected = query_scene(store, "room", "table", "student").similarity
    assert np.array_equal(session.similarity, expected)


def test_a_text_is_embedded_once_and_a_source_read_once(store, monkeypatch):
    embedded, loaded = [], []
    original_embed, original_load = TextCache.__call__, session_module.source_features

    def embed(self, config, names):
        embedded.append(tuple(names))
        return original_embed(self, config, names)

    def load(*args):
        loaded.append(args[1:])
        return original_load(*args)

    monkeypatch.setattr(TextCache, "__call__", embed)
    monkeypatch.setattr(session_module, "source_features", load)
    page = Session(Library(store), "room")
    for text in ("chair", "table", "chair", "a chair", "chair"):
        page.query(text)
    assert embedded == [("chair",), ("table",)]  # "a chair" embeds as "chair"
    assert loaded == [("room", "student", None)]
    page.select_source("fused/t")
    page.select_source("student")
    assert loaded == [("room", "student", None), ("room", "fused", "t")]


def test_hiding_classes_hides_their_points_in_every_colouring(session):
    assert [row[0] for row in session.legend()] == ["chair", "table"]
    session.show_class("table", False)
    assert session.visible()[CHAIR].all() and not session.visible()[TABLE].any()
    session.set_label_set("2D")  # there the table is unlabelled: "(none)", not "table"
    assert session.visible().all() and [row[0] for row in session.legend()] == ["(none)", "chair"]
    session.show_class("(none)", False)
    assert not session.visible()[TABLE].any()
    session.set_colour_by("class")
    assert (session.colours()[CHAIR] == (188, 189, 34)).all()


def test_a_scene_without_features_says_what_to_run(session):
    session.query("chair")
    assert apply(lambda: session.select_scene("bare")) is None
    assert session.colour_by == "RGB" and session.similarity is None and session.source is None
    assert "run the plan's project or predict stage" in apply(lambda: session.query("chair"))
    assert "has no labels" in apply(lambda: session.set_colour_by("class"))
    session.select_scene("room")  # the text is kept and computed again
    assert session.similarity is not None and session.source == "student"


def test_the_page_opens_on_a_scene_with_features(store):
    assert Session(Library(store)).scene.scene_id == "room"  # "bare" sorts first


def test_the_first_view_fits_the_scene_and_points_are_about_their_spacing(store):
    points = load_scene(store, "room").points
    eye, centre = overview(points)
    assert np.allclose(centre, [0, 0, 0.4], atol=0.1) and eye[1] < centre[1] and eye[2] > centre[2]
    assert point_size(points) == pytest.approx(2.7 / 100, rel=0.05)  # 6,000 points: at the cap, extent / 100
    assert point_size(np.repeat(points, 40, axis=0)) == pytest.approx(2.7 / np.sqrt(240_000), rel=0.05)


def test_the_server_checks_the_scene_before_it_listens_and_never_opens_a_share_tunnel(store):
    import socket

    import viser

    from ovlift.viewer.server import start
    from ovlift.viewer.session import ViewerError

    with pytest.raises(ViewerError, match="not a scene id"):
        start(store, "../room", port=0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = start(store, "room", port=port)
    try:
        assert server.request_share_url() is None  # viser's relay on the internet: never asked
        assert (Path(viser.__file__).parent / "client" / "build" / "index.html").is_file()  # built in the wheel
        with socket.create_connection(("127.0.0.1", server.get_port()), timeout=5):
            pass
    finally:
        server.stop()


def test_only_the_loopback_is_quiet():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "", "::", "192.168.1.20", "example.org"))
    assert page_url("0.0.0.0", 80) == "http://127.0.0.1:80" and page_url("::1", 80) == "http://[::1]:80"


def test_ovlift_view_listens_on_the_loopback_unless_told_and_warns_then(store, monkeypatch):
    started = []

    def start(store_, scene, host, port):
        started.append((scene, host, port))
        return SimpleNamespace(get_port=lambda: port, stop=lambda: started.append("stopped"))

    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr("ovlift.viewer.server.start", start)
    monkeypatch.setattr("time.sleep", interrupt)
    quiet = CliRunner().invoke(app, ["view", str(store.url), "--scene", "room"])
    assert quiet.exit_code == 0 and started[:2] == [("room", "127.0.0.1", 8080), "stopped"]
    assert "warning" not in quiet.output and "http://127.0.0.1:8080" in quiet.output
    loud = CliRunner().invoke(app, ["view", str(store.url), "--host", "0.0.0.0", "--port", "9000"])
    assert loud.exit_code == 0 and started[2] == (None, "0.0.0.0", 9000)
    assert "warning: listening on 0.0.0.0 (as asked): whoever reaches it can read every scene" in words(loud.output)


def test_text_from_outside_cannot_become_html_or_markdown_in_the_page():
    shown = _md("query '<img src=x onerror=alert(1)>' **bold** [link](x)")
    assert "<" not in shown and "\\*\\*bold\\*\\*" in shown and "\\[link\\]\\(x\\)" in shown


def _data(page: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)[1])


def test_the_html_export_is_one_file_that_fetches_nothing(store, tmp_path):
    out = write_html(store, tmp_path / "room.html", "room", max_points=500)
    page = out.read_text()
    assert not re.search(r"https?:|//[a-z]|<link|\bsrc\s*=|@import|url\(", page, re.I)
    data = _data(page)
    assert data["count"] == 500 and data["total"] == 6000 and data["scene"] == "room"
    assert list(data["labelSets"]) == ["ensemble", "student", "2D", "ground truth"]
    assert data["similarity"]["source"] == "student"
    chair = data["similarity"]["classes"][0]
    assert chair["name"] == "chair" and 0.4 < chair["range"][0] < chair["range"][1] <= 1.0
    codes = np.frombuffer(__import__("base64").b64decode(chair["values"]), np.uint8)
    labels = load_scene(store, "room", max_points=500).label_sets["ground truth"].labels
    assert codes[labels == 0].min() > 200 and codes[labels == 1].max() < 50  # 255: unseen
    teacher = _data(write_html(store, tmp_path / "t.html", "room", "fused/t", max_points=500).read_text())
    codes = np.frombuffer(__import__("base64").b64decode(teacher["similarity"]["classes"][0]["values"]), np.uint8)
    assert (codes[labels == 1] == 255).all()


@pytest.mark.parametrize("name", ["</script><script>alert(1)//", "<!--<script>", "__DATA__", "a & b > c"])
def test_a_name_from_the_store_cannot_end_the_export_s_script(name):
    page = render({"scene": "__DATA__", "labelSets": {"x": {"classes": [name]}}})
    assert page.count("</script>") == 2 and page.count("<!--") == 1  # the template's own comment
    assert "<title>ovlift: __DATA__</title>" in page  # a placeholder in a name is never filled
    assert _data(page)["labelSets"]["x"]["classes"] == [name] and _data(page)["scene"] == "__DATA__"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scene", "kitchen"], "no scene 'kitchen' in the store"),
        (["--scene", "../room"], "not a scene id: '../room'"),
        ([], "the store holds 2 scenes: name one with --scene"),
        (["--scene", "room", "--source", "denoised/t"], "no source 'denoised/t' here; one of student, fused/t"),
        (["--scene", "bare", "--source", "student"], "scene 'bare' has no features or no vocabulary"),
    ],
)
def test_ovlift_view_html_refuses_what_the_store_lacks(store, tmp_path, args, message):
    result = CliRunner().invoke(app, ["view", str(store.url), "--html", str(tmp_path / "x.html"), *args])
    assert result.exit_code == 2 and message in words(result.output), result.output
    assert not (tmp_path / "x.html").exists()
