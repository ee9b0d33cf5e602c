"""``scenes/<scene_id>/input``: a scene in canonical form."""

from __future__ import annotations

from ovlift.cache_schema.specs import IGNORE_LABEL, ArraySpec, GroupSpec

POINT_CHUNK = 1 << 18


INPUT_SPEC = GroupSpec(
    stage="input",
    doc="A scene in canonical form: points in metres, posed frames, optional labels and mesh.",
    arrays=(
        ArraySpec("points", "float32", ("N", 3), (POINT_CHUNK, None), "point positions, metres, world frame"),
        ArraySpec("colors", "uint8", ("N", 3), (POINT_CHUNK, None), "point RGB", required=False),
        ArraySpec("normals", "float32", ("N", 3), (POINT_CHUNK, None), "unit point normals", required=False),
        ArraySpec(
            "labels",
            "int16",
            ("N",),
            (POINT_CHUNK,),
            f"class index into info.class_names, {IGNORE_LABEL} = ignore",
            required=False,
        ),
        ArraySpec("instances", "int32", ("N",), (POINT_CHUNK,), "ground-truth instance id", required=False),
        ArraySpec(
            "sweep",
            "int16",
            ("N",),
            (POINT_CHUNK,),
            "LiDAR sweep of each point: 0 = key frame, k = k-th earlier sweep (LiDAR data only)",
            required=False,
        ),
        ArraySpec(
            "timestamp",
            "float32",
            ("N",),
            (POINT_CHUNK,),
            "capture time of the point's sweep, seconds relative to the key frame (LiDAR data only)",
            required=False,
        ),
        ArraySpec("faces", "int32", ("F", 3), (POINT_CHUNK, None), "mesh triangles indexing points", required=False),
        ArraySpec("frames/color", "uint8", ("T", "H", "W", 3), (1, None, None, None), "RGB image, one frame per chunk"),
        ArraySpec(
            "frames/depth",
            "float32",
            ("T", "H_depth", "W_depth"),
            (1, None, None),
            "z-depth of the depth camera, metres, 0 = invalid; the colour image's size unless "
            "frames/depth_intrinsics is present; absent for LiDAR-camera data",
            required=False,
        ),
        ArraySpec(
            "frames/intrinsics",
            "float32",
            ("T", 3, 3),
            (None, None, None),
            "colour camera's pinhole intrinsics, pixels",
        ),
        ArraySpec(
            "frames/depth_intrinsics",
            "float32",
            ("T", 3, 3),
            (None, None, None),
            "depth camera's pinhole intrinsics, pixels of frames/depth (absent: depth registered to colour)",
            required=False,
        ),
        ArraySpec(
            "frames/depth_to_color",
            "float64",
            ("T", 4, 4),
            (None, None, None),
            "rigid transform depth-camera -> colour-camera coordinates, metres (present with depth_intrinsics)",
            required=False,
        ),
        ArraySpec(
            "frames/cam_to_world",
            "float64",
            ("T", 4, 4),
            (None, None, None),
            "colour camera-to-world pose (OpenCV axes), metres, exactly rigid; NaN where invalid",
        ),
        ArraySpec(
            "frames/timestamp",
            "float64",
            ("T",),
            (None,),
            "capture time, seconds relative to the key frame (LiDAR-camera data only)",
            required=False,
        ),
        ArraySpec("frames/pose_valid", "bool", ("T",), (None,), "false for frames whose source pose was unusable"),
        ArraySpec(
            "frames/labels",
            "int16",
            ("T", "H", "W"),
            (1, None, None),
            f"ground-truth class per pixel (synthetic data), {IGNORE_LABEL} = ignore",
            required=False,
        ),
        ArraySpec(
            "frames/instances",
            "int32",
            ("T", "H", "W"),
            (1, None, None),
            "ground-truth instance per pixel (synthetic data)",
            required=False,
        ),
    ),
    info={
        "dataset": "name of the dataset reader",
        "class_names": "label set that labels index into (null when unlabelled)",
        "ignore_label": "label value meaning 'no class'",
        "frame_names": "source name of each frame, e.g. 'seq-01/frame-000010'",
    },
)
