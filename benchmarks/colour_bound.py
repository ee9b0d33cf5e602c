"""How much of the class colour alone gives away in the toy worlds (issue 26).

A 5-nearest-neighbour classifier (scikit-learn) on colour alone is fitted on the
training scenes of a committed plan and scored on its held-out scenes, with ScanNet's
rule (``kernels.metrics``: a class predicted but absent counts with IoU 0), as the
evaluate stage scores:

- indoor: point RGB of ``plans/demo.yaml``'s rooms (its dataset config; 8 train,
  2 held out); the ceiling (ignore) is neither fitted nor scored;
- street: RGB of camera pixels of ``plans/clip2scene-toy.yaml``'s streets (20 train,
  4 test streets, the held-out set its study reports), ``--pixels`` drawn per image
  (seeded) from those that are not sky.

Both for appearance v2 (``class-colour``: each instance its class's colour) and v3
(``materials``). A sanity figure, the same 5-NN on point geometry alone (height above
the floor and the normal, indoor; the same for both generators, whose layouts are the
same), shows that the class is still in the scene, if no longer in its colour. A student
that sees colour could score what colour alone scores without learning anything the
methods are about: the goal of v3 is 25 % mIoU or less.

    .venv/bin/python benchmarks/colour_bound.py     # about a minute on two cores
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.neighbors import KNeighborsClassifier

from ovlift.datasets.toy import ToyDataset
from ovlift.datasets.toy_street import CAMERAS, ToyStreetDataset
from ovlift.kernels.metrics import confusion_matrix, scores
from ovlift.pipeline.plan import Plan, load_plan
from ovlift.vocabularies import NUSCENES16, SCANNET20

REPO = Path(__file__).resolve().parents[1]
APPEARANCES = ("class-colour", "materials")
GEOMETRY_WEIGHT = 0.5
"""The sanity columns' features: the height above the floor in metres times this, and the
normal with its horizontal components' signs dropped."""


def score(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], classes: int) -> tuple[float, ...]:
    """mIoU and overall accuracy of a 5-NN fitted on ``train`` (features, labels) on ``test``."""
    knn = KNeighborsClassifier(n_neighbors=5).fit(*train)
    result = scores(confusion_matrix(test[1], knn.predict(test[0]), classes))
    return result.miou, result.overall_accuracy


def indoor_samples(plan: Plan, appearance: str, scenes: list[str], geometry: bool) -> tuple[np.ndarray, np.ndarray]:
    """Point features (RGB in [0, 1], or with ``geometry`` the scaled height and the normal)
    and labels of
    the ``plan``'s rooms ``scenes`` in ``appearance``, ignore-labelled points left out."""
    dataset = ToyDataset(plan.dataset.config.model_copy(update={"appearance": appearance}))
    features, labels = [], []
    for scene_id in scenes:
        src = dataset.load(scene_id)
        keep = src.labels >= 0
        normal = np.abs(src.normals[keep])
        normal[:, 2] = src.normals[keep, 2]
        geometric = np.concatenate([GEOMETRY_WEIGHT * src.points[keep, 2:3], normal], axis=1)
        features.append(geometric if geometry else src.colors[keep] / 255.0)
        labels.append(src.labels[keep])
    return np.concatenate(features), np.concatenate(labels)


def street_samples(plan: Plan, appearance: str, scenes: list[str], pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB in [0, 1] and labels of ``pixels`` random non-sky pixels per camera image of the
    ``plan``'s streets ``scenes`` in ``appearance``."""
    dataset = ToyStreetDataset(plan.dataset.config.model_copy(update={"appearance": appearance}))
    rng = np.random.default_rng(0)
    features, labels = [], []
    for scene_id in scenes:
        scene = dataset.build(scene_id)
        for camera in range(len(CAMERAS)):
            color, label, _, _ = scene.render_camera(camera)
            valid = np.flatnonzero(label.ravel() >= 0)
            chosen = rng.choice(valid, min(pixels, len(valid)), replace=False)
            features.append(color.reshape(-1, 3)[chosen] / 255.0)
            labels.append(label.ravel()[chosen])
    return np.concatenate(features), np.concatenate(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pixels", type=int, default=2000, help="pixels drawn per street camera image")
    args = parser.parse_args()
    demo = load_plan(REPO / "plans" / "demo.yaml", list_scenes=False)
    streets = load_plan(REPO / "plans" / "clip2scene-toy.yaml", list_scenes=False)
    rows = []
    for appearance in APPEARANCES:
        row = [appearance]
        for geometry in (False, True):
            train = indoor_samples(demo, appearance, list(demo.splits["train"]), geometry)
            test = indoor_samples(demo, appearance, list(demo.splits["test"]), geometry)
            row += score(train, test, len(SCANNET20.classes))
        train = street_samples(streets, appearance, list(streets.splits["train"]), args.pixels)
        test = street_samples(streets, appearance, list(streets.splits["test"]), args.pixels)
        row += score(train, test, len(NUSCENES16.classes))
        rows.append(row)
    print("5-NN fitted on training scenes, scored on held-out ones, ScanNet's rule (mIoU %, overall accuracy %)")
    header = (
        "generator",
        "indoor mIoU",
        "indoor OA",
        "geometry-only mIoU",
        "geometry-only OA",
        "street mIoU",
        "street OA",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, *values in rows:
        print(f"| {name} | " + " | ".join(f"{100 * v:.1f}" for v in values) + " |")


if __name__ == "__main__":
    main()
