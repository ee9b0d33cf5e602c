"""A small store for the viewer's tests and benchmark, written directly (no stages run).

Scene ``room``: a chair cluster left (x < 0) and a table cluster right (x > 0), both grey,
seen from four cameras in front (-y); the student's features are MiniLM's embeddings of
"chair" and "table" (the default text encoder, as a query embeds them), so a query for
"chair" lights up the left cluster only. The fused teacher ``t`` sees the chair only.
Scene ``bare`` has points and frames but no features or labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from store_groups import publish_group

from ovlift.cache_schema import Store
from ovlift.cache_schema.groups.input import INPUT_SPEC
from ovlift.cache_schema.groups.predict import PREDICT_SPEC
from ovlift.cache_schema.groups.project import PROJECT_SPEC
from ovlift.models.text import TextEncoderConfig, load_text_encoder

CLASSES = ["chair", "table"]
CENTRES = np.array([[-1.0, 0.0, 0.4], [1.0, 0.0, 0.4]], np.float32)


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """4x4 camera-to-world, OpenCV axes (z forward, y down), z up in the world."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, np.cross(forward, right), forward], axis=1)
    pose[:3, 3] = eye
    return pose


def _input(store: Store, scene_id: str, points: np.ndarray, labels: np.ndarray | None) -> None:
    frames = 4
    eyes = np.stack([[x, -3.0, 1.5] for x in np.linspace(-1.5, 1.5, frames)])
    intrinsics = np.tile(np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]], np.float32), (frames, 1, 1))
    arrays = {
        "points": points,
        "colors": np.full((len(points), 3), 128, np.uint8),
        "frames/color": np.zeros((frames, 48, 64, 3), np.uint8),
        "frames/intrinsics": intrinsics,
        "frames/cam_to_world": np.stack([_look_at(e, np.array([0.0, 0.0, 0.4])) for e in eyes]),
        "frames/pose_valid": np.ones(frames, bool),
    }
    if labels is not None:
        arrays["labels"] = labels.astype(np.int16)
    info = {"dataset": "viewer-test", "class_names": CLASSES if labels is not None else None, "ignore_label": -1}
    publish_group(store, INPUT_SPEC, scene_id, arrays, {**info, "frame_names": [f"f{i}" for i in range(frames)]})


def write_viewer_store(path: Path, points_per_cluster: int = 3000, seed: int = 0) -> Store:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(2), points_per_cluster)
    points = (CENTRES[labels] + rng.uniform(-0.35, 0.35, (len(labels), 3))).astype(np.float32)
    store = Store(path)
    _input(store, "room", points, labels)
    _input(store, "bare", points[::7], None)
    encoder = TextEncoderConfig()
    embeddings = load_text_encoder(encoder).embed_names(CLASSES).numpy()
    features = embeddings[labels] + rng.normal(0, 0.01, (len(labels), embeddings.shape[1]))
    n, encoder_info = len(labels), encoder.normalised()
    publish_group(
        store,
        PREDICT_SPEC,
        "room",
        {
            "features_3d": features.astype(np.float16),
            "similarity_3d": np.ones(n, np.float16),
            "labels_3d": labels.astype(np.int16),
            "similarity_2d": np.ones(n, np.float16),
            "labels_2d": np.where(labels == 0, 0, -1).astype(np.int16),
            "labels_ensemble": labels.astype(np.int16),
            "ensemble_from_2d": np.zeros(n, bool),
        },
        {"classes": CLASSES, "teacher": "t", "source": "project", "text_encoder": encoder_info},
    )
    seen = labels == 0
    publish_group(
        store,
        PROJECT_SPEC,
        "room",
        {
            "point_index": np.zeros(1, np.int32),
            "frame_index": np.zeros(1, np.int32),
            "pixel": np.zeros((1, 2), np.int16),
            "view_count": seen.astype(np.int32),
            "fused/t/features": np.where(seen[:, None], features, 0).astype(np.float16),
            "fused/t/seen": seen,
        },
        {
            "feature_size": [48, 64],
            "frames": [0, 1, 2, 3],
            "teachers": {"t": {"channels": features.shape[1], "text_encoder": encoder_info}},
        },
    )
    return store
