"""The live viewer: a viser server (the browser viewer nerfstudio uses; its web client ships
built inside the wheel, so the page needs no network).

Each page (browser tab) gets a GUI and a 3D scene of its own. A ``Session`` holds the page's
choices and checks every value the page sends; this module only wires viser's widgets to it
and pushes what changed, and shows a refused or failed request as a line in the page.

Exposure: the server listens on 127.0.0.1 unless told otherwise (``--host``; anything
else is warned about, as for ``ovlift flow``'s Dask cluster): whoever reaches the port can
read every scene of the store and have the server embed texts. viser's share tunnel (a relay
on the internet) is off: its button is hidden and a page's request for it is ignored.

Large scenes: the points go to the page once per scene and whenever the hidden classes
change; a new colouring (RGB, class, a query) sends only the colours (3 bytes a point) and a
new point size one number.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Callable

import numpy as np
import viser

from ovlift.cache_schema import Store
from ovlift.viewer.scene_data import SceneData, overview, point_size
from ovlift.viewer.session import COLOUR_BY, MAX_TEXT, Library, Session, apply

LOOPBACK = "127.0.0.1"
FRUSTUM_COLOUR = (90, 90, 110)
NOTHING = "(none)"
"""Dropdown entry where a scene has no sources or no label sets (viser needs one option)."""


def page_url(host: str, port: int) -> str:
    """Where a browser on this machine opens the page (every interface includes the loopback)."""
    if host in ("0.0.0.0", "::", ""):
        host = LOOPBACK
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def start(store: Store, scene_id: str | None = None, host: str = LOOPBACK, port: int = 8080) -> viser.ViserServer:
    """Serve the store's scenes (``scene_id`` first) until the returned server is stopped; a
    bad ``scene_id`` is refused (``ViewerError``) before anything listens."""
    library = Library(store)
    first = Session(library, scene_id).scene.scene_id
    server = viser.ViserServer(host=host, port=port, verbose=False)
    server.request_share_url = lambda *args, **kwargs: None  # type: ignore[method-assign]
    server.gui.configure_theme(show_share_button=False)
    eye, centre = overview(library.scene(first).points)  # where "Reset View" goes
    server.initial_camera.position, server.initial_camera.look_at = eye, centre
    threading.Thread(target=apply, args=(lambda: library.warm(first),), daemon=True).start()

    @server.on_client_connect
    def _(client: viser.ClientHandle) -> None:
        Page(client, Session(library, first))

    return server


def _md(text: str) -> str:
    """``text`` shown as is in a markdown widget (ids, class names and texts come from outside)."""
    escaped = re.sub(r"([\\`*_{}\[\]()#+\-.!|~])", r"\\\1", text)
    return html.escape(escaped, quote=False)  # and no raw HTML: viser renders it unsanitised


class Page:
    """One browser tab: viser's widgets wired to a ``Session``."""

    def __init__(self, client: viser.ClientHandle, session: Session) -> None:
        self.client, self.session = client, session
        self.lock = threading.RLock()
        self.syncing: int | None = None
        """The thread that sets widgets to the session's values (their callbacks come back on it)."""
        self.cloud: viser.PointCloudHandle | None = None
        self.shown: np.ndarray | None = None
        """The points the page holds (a mask of the scene's), so that a new colouring sends only colours."""
        self.shown_scene: SceneData | None = None
        self.shown_legend: tuple[str, str | None] | None = None
        self.frustums: viser.FrameHandle | None = None
        self.class_widgets: list = []
        gui = client.gui
        with gui.add_folder("Query", order=0):
            self.text = gui.add_text(
                "text", "", hint=f"what to look for, e.g. 'a soft chair' (<= {MAX_TEXT} characters)"
            )
            self.go = gui.add_button("Query", icon=viser.Icon.SEARCH)
            self.status = gui.add_markdown("")
        with gui.add_folder("Scene", order=1):
            self.scene = gui.add_dropdown("scene", session.library.scene_ids(), initial_value=session.scene.scene_id)
            self.size = gui.add_slider("point size", 0.2, 5.0, 0.1, 1.0, hint="times the scene's default")
            self.cameras = gui.add_checkbox("cameras", True, hint="the frames' colour cameras")
        with gui.add_folder("Colour", order=2):
            self.colour_by = gui.add_dropdown("colour by", COLOUR_BY, initial_value=session.colour_by)
            self.source = gui.add_dropdown("source", [NOTHING], hint="the features a text is compared with")
            self.label_set = gui.add_dropdown("classes", [NOTHING], hint="which labels 'class' shows")
        self.classes = gui.add_folder("Legend", order=3)
        self._wire()
        self.request(lambda: None)

    def _wire(self) -> None:
        s = self.session
        self.go.on_click(lambda _: self.request(lambda: s.query(self.text.value)))
        self.scene.on_update(lambda _: self.request(lambda: s.select_scene(self.scene.value)))
        self.source.on_update(lambda _: self.request(lambda: s.select_source(self.source.value)))
        self.label_set.on_update(lambda _: self.request(lambda: s.set_label_set(self.label_set.value)))
        self.colour_by.on_update(lambda _: self.request(lambda: s.set_colour_by(self.colour_by.value)))
        self.size.on_update(lambda _: self.request(self._resize))
        self.cameras.on_update(lambda _: self.request(self._show_cameras))

    def request(self, action: Callable[[], object]) -> None:
        """Run a page's request on the session, then bring the widgets and the 3D scene in line
        (a refused request too: a widget may show a value the session did not take)."""
        if self.syncing == threading.get_ident():  # a widget set by _sync calls back: nothing was asked
            return
        with self.lock:
            error = apply(action)
            self.syncing = threading.get_ident()
            try:
                error = error or apply(self._sync)
            finally:
                self.syncing = None
            self._say(error)

    def _sync(self) -> None:
        s = self.session
        _show(self.scene, s.scene.scene_id)
        if self.shown_scene is not s.scene:
            self.source.options = s.scene.sources or [NOTHING]
            self.label_set.options = list(s.scene.label_sets) or [NOTHING]
            self._place_cameras()
            self.shown_scene, self.shown = s.scene, None
        if self.shown_legend != (s.scene.scene_id, s.label_set):
            self._legend()
            self.shown_legend = (s.scene.scene_id, s.label_set)
        _show(self.source, s.source or NOTHING)
        _show(self.label_set, s.label_set or NOTHING)
        _show(self.colour_by, s.colour_by)
        self._push()

    def _push(self) -> None:
        """Send the points only where the shown set changed, else the colours."""
        s, visible = self.session, self.session.visible()
        colours = s.colours()[visible]
        if self.cloud is not None and self.shown is not None and np.array_equal(visible, self.shown):
            self.cloud.colors = colours
            return
        centre = s.scene.points.mean(axis=0) if len(s.scene.points) else np.zeros(3)
        self.cloud = self.client.scene.add_point_cloud(
            "/points",
            s.scene.points[visible] - centre,  # float16 on the wire: precise near the origin
            colours,
            point_size=self._point_size(),
            point_shape="square",
            point_shading="flat",
            position=centre,
        )
        self.shown = visible

    def _point_size(self) -> float:
        return point_size(self.session.scene.points) * self.size.value

    def _resize(self) -> None:
        if self.cloud is not None:
            self.cloud.point_size = self._point_size()

    def _place_cameras(self) -> None:
        scene = self.session.scene
        eye, centre = overview(scene.points)
        self.client.camera.position = eye  # then look_at: a new position moves look_at along
        self.client.camera.look_at = centre
        if self.frustums is not None:
            self.frustums.remove()  # and the last scene's frustums under it
        self.frustums = self.client.scene.add_frame("/cameras", show_axes=False, visible=self.cameras.value)
        scale = float(np.linalg.norm(eye - centre)) * 0.03
        for i, camera in enumerate(scene.cameras):
            self.client.scene.add_camera_frustum(
                f"/cameras/{i}", camera.fov, camera.aspect, scale=scale, thickness=scale * 0.04,
                wxyz=camera.wxyz, position=camera.position, color=FRUSTUM_COLOUR,
            )  # fmt: skip

    def _show_cameras(self) -> None:
        if self.frustums is not None:
            self.frustums.visible = self.cameras.value

    def _legend(self) -> None:
        """The label set's classes (colour, name, points) and a checkbox for each that hides it."""
        for widget in self.class_widgets:
            widget.remove()
        gui, rows = self.client.gui, self.session.legend()
        with self.classes:
            self.class_widgets = [gui.add_html(_legend_html(rows))]
            with gui.add_folder("show", expand_by_default=len(rows) <= 12) as folder:
                for name, _, _ in rows:
                    self._class_box(name)
            self.class_widgets.append(folder)

    def _class_box(self, name: str) -> None:
        box = self.client.gui.add_checkbox(name, name not in self.session.hidden)
        box.on_update(lambda _: self.request(lambda: self.session.show_class(name, box.value)))

    def _say(self, error: str | None) -> None:
        line = _md(self.session.status())
        self.status.content = f"**error:** {_md(error)}\n\n{line}" if error else line
        if error:
            self.client.add_notification("ovlift view", error, color="red", auto_close_seconds=8.0)


def _show(dropdown: viser.GuiDropdownHandle, value: str) -> None:
    """Show the session's choice (viser's types call a dropdown's value read-only; it is not)."""
    dropdown.value = value  # type: ignore[misc]


def _legend_html(rows: list[tuple[str, tuple[int, int, int], int]]) -> str:
    swatch = "display:inline-block;width:0.8em;height:0.8em;margin-right:0.4em;border:1px solid #0003"
    lines = [
        f"<div><span style='{swatch};background:rgb{colour}'></span>{html.escape(name)} ({count:,})</div>"
        for name, colour, count in rows
    ]
    return f"<div style='font-size:0.85em;line-height:1.5'>{''.join(lines)}</div>"
