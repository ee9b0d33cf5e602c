"""A tiny nuScenes (devkit table layout, ``v1.0-mini``) built from the one real sample in
``../shared/data/nuscenes-demo``: one scene, one sample, its six cameras and LIDAR_TOP.

The image and lidar files are symlinked, not copied. The demo's ``sample.json``
(mmdet3d's info format) has no per-camera ego pose; it is derived from ``lidar2cam``,
which includes the ego motion between the camera's exposure and the lidar key frame:
``ego2global_cam = ego2global_lidar @ lidar2ego @ inv(lidar2cam) @ inv(cam2ego)``.
Its boxes (lidar frame, x, y, z centre, dx, dy, dz, yaw) become sample annotations in
the global frame. Optionally: lidarseg labels chosen by the caller, and synthetic
earlier sweeps (the key-frame points again, recorded from a moved ego pose).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ovlift.datasets.nuscenes import LIDARSEG_TO_NUSCENES16

VERSION = "v1.0-mini"
SCENE = "scene-0061"
LOG = "n015-2018-07-24-11-22-45+0800"
LIDARSEG_NAMES = tuple(LIDARSEG_TO_NUSCENES16)
"""The 32 general classes in nuScenes-lidarseg's index order (0 = noise ... 31 = vehicle.ego)."""
BOX_CATEGORY = {
    "car": "vehicle.car",
    "truck": "vehicle.truck",
    "trailer": "vehicle.trailer",
    "bus": "vehicle.bus.rigid",
    "construction_vehicle": "vehicle.construction",
    "bicycle": "vehicle.bicycle",
    "motorcycle": "vehicle.motorcycle",
    "pedestrian": "human.pedestrian.adult",
    "traffic_cone": "movable_object.trafficcone",
    "barrier": "movable_object.barrier",
}
OTHER_OBJECT = "movable_object.pushable_pullable"
"""Category given to the demo's box of label -1 (an object outside the 10 detection classes)."""


def token(*parts: object) -> str:
    """A stable 32-hex token, as nuScenes tokens look."""
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def quaternion(matrix: np.ndarray) -> list[float]:
    """(w, x, y, z) of the nearest rotation to a 3x3 matrix."""
    u, _, vt = np.linalg.svd(matrix)
    r = u @ np.diag([1, 1, np.linalg.det(u @ vt)]) @ vt
    k = np.array(
        [
            [r[0, 0] - r[1, 1] - r[2, 2], r[1, 0] + r[0, 1], r[2, 0] + r[0, 2], r[2, 1] - r[1, 2]],
            [r[1, 0] + r[0, 1], r[1, 1] - r[0, 0] - r[2, 2], r[2, 1] + r[1, 2], r[0, 2] - r[2, 0]],
            [r[2, 0] + r[0, 2], r[2, 1] + r[1, 2], r[2, 2] - r[0, 0] - r[1, 1], r[1, 0] - r[0, 1]],
            [r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1], r[0, 0] + r[1, 1] + r[2, 2]],
        ]
    )
    x, y, z, w = np.linalg.eigh(k)[1][:, -1]  # Bar-Itzhack: the eigenvector of the largest eigenvalue
    return [float(v) for v in (np.sign(w or 1) * np.array([w, x, y, z]))]


def rotation_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def load_demo(demo: Path) -> dict:
    return json.loads((demo / "sample.json").read_text())


def write_tiny_nuscenes(
    root: Path,
    demo: Path,
    lidarseg: np.ndarray | None = None,
    earlier_sweeps: tuple[np.ndarray, ...] = (),
) -> Path:
    """Write the tables and links under ``root`` (the dataroot) and return it.

    ``lidarseg``: (N,) uint8 general-class labels of the key-frame points, written as
    nuScenes-lidarseg (the category table then carries the 32 lidarseg indices).
    ``earlier_sweeps``: per earlier sweep (newest first) a 4x4 ego motion M; that sweep
    is the key-frame point file again, recorded 0.05 s earlier per step with ego pose
    ``ego2global_key @ M``.
    """
    data = load_demo(demo)
    sample = data["sample"]
    timestamp = round(sample["timestamp"] * 1e6)
    sample_token = sample["token"]
    scene_token, log_token, map_token = token("scene", SCENE), token("log", LOG), token("map", LOG)
    tables: dict[str, list[dict]] = {name: [] for name in ("sensor", "calibrated_sensor", "ego_pose", "sample_data")}

    def add_sample_data(channel, modality, calibration, ego2global, filename, time, key, sd_token, **extra):
        if not any(s["channel"] == channel for s in tables["sensor"]):
            tables["sensor"].append({"token": token("sensor", channel), "channel": channel, "modality": modality})
        calibration_token = token("calibrated_sensor", channel)
        if not any(c["token"] == calibration_token for c in tables["calibrated_sensor"]):
            tables["calibrated_sensor"].append(
                {
                    "token": calibration_token,
                    "sensor_token": token("sensor", channel),
                    "translation": [float(v) for v in calibration[:3, 3]],
                    "rotation": quaternion(calibration[:3, :3]),
                    "camera_intrinsic": extra.pop("intrinsic", []),
                }
            )
        ego_token = token("ego_pose", sd_token)
        tables["ego_pose"].append(
            {
                "token": ego_token,
                "timestamp": time,
                "rotation": quaternion(ego2global[:3, :3]),
                "translation": [float(v) for v in ego2global[:3, 3]],
            }
        )
        record = {
            "token": sd_token,
            "sample_token": sample_token,
            "ego_pose_token": ego_token,
            "calibrated_sensor_token": calibration_token,
            "timestamp": time,
            "fileformat": filename.rsplit(".", 1)[-1],
            "is_key_frame": key,
            "height": extra.get("height", 0),
            "width": extra.get("width", 0),
            "filename": filename,
            "prev": "",
            "next": "",
        }
        tables["sample_data"].append(record)
        return record

    def link(folder: str, name: str) -> str:
        (root / folder).mkdir(parents=True, exist_ok=True)
        target = root / folder / name
        if not target.exists():
            target.symlink_to((demo / name).resolve())
        return f"{folder}/{name}"

    lidar2ego = np.asarray(sample["lidar_points"]["lidar2ego"], np.float64)
    ego2global = np.asarray(sample["ego2global"], np.float64)
    lidar_name = sample["lidar_points"]["lidar_path"]
    lidar = add_sample_data(
        "LIDAR_TOP",
        "lidar",
        lidar2ego,
        ego2global,
        link("samples/LIDAR_TOP", lidar_name),
        timestamp,
        True,
        token("sample_data", lidar_name),
    )
    newer = lidar
    for k, motion in enumerate(earlier_sweeps, start=1):
        sweep = add_sample_data(
            "LIDAR_TOP",
            "lidar",
            lidar2ego,
            ego2global @ motion,
            link("sweeps/LIDAR_TOP", lidar_name),
            timestamp - 50_000 * k,
            False,
            token("sweep", lidar_name, k),
        )
        newer["prev"], sweep["next"], newer = sweep["token"], newer["token"], sweep
    for channel, camera in sample["images"].items():
        cam2ego = np.asarray(camera["cam2ego"], np.float64)
        lidar2cam = np.asarray(camera["lidar2cam"], np.float64)
        ego2global_camera = ego2global @ lidar2ego @ np.linalg.inv(lidar2cam) @ np.linalg.inv(cam2ego)
        add_sample_data(
            channel,
            "camera",
            cam2ego,
            ego2global_camera,
            link(f"samples/{channel}", camera["img_path"]),
            round(camera["timestamp"] * 1e6),
            True,
            camera["sample_data_token"],
            intrinsic=camera["cam2img"],
            height=900,
            width=1600,
        )

    categories = [
        {"token": token("category", name), "name": name, "description": name}
        | ({"index": index} if lidarseg is not None else {})
        for index, name in enumerate(LIDARSEG_NAMES)
    ]
    class_names = {index: name for name, index in data["categories"].items()}
    tables["instance"], tables["sample_annotation"] = [], []
    global_from_lidar = ego2global @ lidar2ego
    for i, box in enumerate(sample["instances"]):
        x, y, z, dx, dy, dz, yaw = box["bbox_3d"]
        instance_token, annotation_token = token("instance", i), token("sample_annotation", i)
        category = BOX_CATEGORY.get(class_names.get(box["bbox_label_3d"]), OTHER_OBJECT)
        tables["instance"].append(
            {
                "token": instance_token,
                "category_token": token("category", category),
                "nbr_annotations": 1,
                "first_annotation_token": annotation_token,
                "last_annotation_token": annotation_token,
            }
        )
        tables["sample_annotation"].append(
            {
                "token": annotation_token,
                "sample_token": sample_token,
                "instance_token": instance_token,
                "visibility_token": "4",
                "attribute_tokens": [],
                "translation": [float(v) for v in global_from_lidar[:3, :3] @ [x, y, z] + global_from_lidar[:3, 3]],
                "size": [dy, dx, dz],  # nuScenes: width, length, height
                "rotation": quaternion(global_from_lidar[:3, :3] @ rotation_z(yaw)),
                "prev": "",
                "next": "",
                "num_lidar_pts": box["num_lidar_pts"],
                "num_radar_pts": box["num_radar_pts"],
            }
        )
    map_file = "maps/tiny.png"
    (root / "maps").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / map_file)
    tables |= {
        "category": categories,
        "attribute": [],
        "visibility": [
            {"token": str(v), "level": level, "description": level}
            for v, level in enumerate(("v0-40", "v40-60", "v60-80", "v80-100"), start=1)
        ],
        "log": [
            {
                "token": log_token,
                "logfile": LOG,
                "vehicle": "n015",
                "date_captured": "2018-07-24",
                "location": "singapore-onenorth",
            }
        ],
        "map": [{"token": map_token, "category": "semantic_prior", "filename": map_file, "log_tokens": [log_token]}],
        "scene": [
            {
                "token": scene_token,
                "log_token": log_token,
                "nbr_samples": 1,
                "first_sample_token": sample_token,
                "last_sample_token": sample_token,
                "name": SCENE,
                "description": "tiny: the one nuscenes-demo sample",
            }
        ],
        "sample": [{"token": sample_token, "timestamp": timestamp, "prev": "", "next": "", "scene_token": scene_token}],
    }
    if lidarseg is not None:
        filename = f"lidarseg/{VERSION}/{lidar['token']}_lidarseg.bin"
        (root / filename).parent.mkdir(parents=True, exist_ok=True)
        np.asarray(lidarseg, np.uint8).tofile(root / filename)
        tables["lidarseg"] = [{"token": lidar["token"], "sample_data_token": lidar["token"], "filename": filename}]
    (root / VERSION).mkdir(parents=True, exist_ok=True)
    for name, records in tables.items():
        (root / VERSION / f"{name}.json").write_text(json.dumps(records, indent=0))
    return root
