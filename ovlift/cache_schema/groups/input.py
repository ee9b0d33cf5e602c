"""``scenes/<scene_id>/input``: a scene in canonical form."""

from __future__ import annotations

from ovlift.cache_schema.specs import IGNORE_LABEL, ArraySpec, GroupSpec

POINT_CHUNK = 1 << 18
COLOR_BYTES_CHUNK = 1 << 20


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
        ArraySpec(
            "frames/color",
            "uint8",
            ("T", "H", "W", 3),
            (1, None, None, None),
            "RGB image, one frame per chunk; absent where frames/color_bytes holds the frames as image files",
            required=False,
        ),
        ArraySpec(
            "frames/color_bytes",
            "uint8",
            ("B_color",),
            (COLOR_BYTES_CHUNK,),
            "each frame's colour image file (JPEG or PNG; as the dataset published it, or re-encoded: "
            "color_codec) back to back; decodes (Pillow, RGB; bilinear resize to H x W where the file is of "
            "another size) to (T, H, W, 3) uint8 (read with cache_schema.groups.frames.FrameImages)",
            required=False,
        ),
        ArraySpec(
            "frames/color_extent",
            "int64",
            ("T", 2),
            (None, None),
            "[start, stop) of each frame's file in frames/color_bytes (present with it)",
            required=False,
        ),
        ArraySpec(
            "frames/color_checksum",
            "uint32",
            ("T",),
            (None,),
            "CRC-32C of each frame's decoded RGB pixels as ingested (present with frames/color_bytes)",
            required=False,
        ),
        ArraySpec(
            "frames/depth",
            "float32",
            ("T", "H_depth", "W_depth"),
            (1, None, None),
            "z-depth of the depth camera, metres, 0 = invalid; the colour image's size unless "
            "frames/depth_intrinsics is present; absent for LiDAR-camera data and where frames/depth_raw holds it",
            required=False,
        ),
        ArraySpec(
            "frames/depth_raw",
            "uint16",
            ("T", "H_depth", "W_depth"),
            (1, None, None),
            "frames/depth in the sensor's integer units (info depth_units_per_m), 0 = invalid; "
            "metres = raw.astype(float32) / float32(depth_units_per_m), exactly; byte-shuffled, then zstd",
            required=False,
            codec="shuffled-zstd",
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
        "depth_units_per_m": "units per metre of frames/depth_raw (absent without it)",
    },
)
