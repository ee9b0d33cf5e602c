"""Pictures people would rather look at than read: training curves, confusion
matrices, point clouds coloured by a query (matplotlib, headless)."""

from __future__ import annotations

import zlib
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ovlift.datasets.furniture import CLASS_COLORS

LOSS_NAMES = {
    "cosine_loss": "1 - cos",
    "label_loss": "label CE",
    "superpoint_loss": "superpoint 1 - cos",
    "tesd_loss": "TESD CE",
    "semantic_loss": "semantic consistency",
    "ssr_loss": "spatial-temporal consistency",
}
"""Legend names of the training log's loss columns (others: the column name)."""


def training_curves(rows: list[dict], path: Path) -> Path:
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(10, 3.5))
    steps = [r["step"] for r in rows]
    ax_loss.plot(steps, [r["loss"] for r in rows], label="total")
    for key in (k for k in rows[0] if k.endswith("_loss") and k != "val_loss") if rows else ():
        if any(r.get(key) for r in rows):
            name = LOSS_NAMES.get(key, key.removesuffix("_loss").replace("_", " "))
            ax_loss.plot(steps, [r.get(key) or 0.0 for r in rows], label=name, alpha=0.7)
    validated = [r for r in rows if r.get("val_loss") is not None]
    if validated:  # once an epoch, on its last step
        ax_loss.plot([r["step"] for r in validated], [r["val_loss"] for r in validated], "k.-", label="validation")
    ax_loss.set(xlabel="step", ylabel="loss", title="distillation loss")
    ax_loss.legend()
    ax_lr.plot(steps, [r["lr"] for r in rows])
    ax_lr.set(xlabel="step", ylabel="learning rate", title="schedule")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion(matrix: np.ndarray, classes: list[str], path: Path, title: str) -> Path:
    """Row-normalised confusion (rows: truth) of the classes present in the truth."""
    k = len(classes)
    rows = np.flatnonzero(matrix.sum(1) > 0)
    cols = sorted(set(rows) | set(np.flatnonzero(matrix[:, :k].sum(0) > 0)))
    sub = matrix[np.ix_(rows, cols)].astype(np.float64)
    norm = sub / np.maximum(matrix[rows].sum(1, keepdims=True), 1)
    size = max(4.0, 0.45 * len(cols) + 2)
    fig, ax = plt.subplots(figsize=(size, max(3.5, 0.45 * len(rows) + 1.5)))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), [classes[c] for c in cols], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [classes[r] for r in rows], fontsize=8)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if norm[i, j] >= 0.005:
                ax.text(
                    j,
                    i,
                    f"{norm[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def query_views(
    points: np.ndarray, values: np.ndarray, path: Path, title: str, camera: tuple[np.ndarray, np.ndarray] | None = None
) -> Path:
    """A top view (a section below the ceiling) and, given (cam_to_world, intrinsics),
    the first camera's view of points coloured by ``values`` (NaN at the minimum)."""
    panels = 2 if camera is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 5))
    axes = np.atleast_1d(axes)
    finite = np.isfinite(values)
    shown = np.where(finite, values, values[finite].min() if finite.any() else 0.0)
    below = points[:, 2] < points[:, 2].max() - 0.3  # cut the ceiling off to see inside
    order = np.flatnonzero(below)[np.argsort(points[below, 2])]  # higher points drawn last
    sc = axes[0].scatter(
        points[order, 0], points[order, 1], c=shown[order], s=2, cmap="viridis", vmin=shown.min(), vmax=shown.max()
    )
    axes[0].set(aspect="equal", title="top view (section below the ceiling)", xlabel="x (m)", ylabel="y (m)")
    if camera is not None:
        cam_to_world, k = camera
        world_to_cam = np.linalg.inv(cam_to_world)
        cam = points @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
        front = np.flatnonzero(cam[:, 2] > 0.05)
        front = front[np.argsort(-cam[front, 2])]  # far first: near points overdraw them
        z = cam[front, 2]
        u = k[0, 0] * cam[front, 0] / z + k[0, 2]
        v = k[1, 1] * cam[front, 1] / z + k[1, 2]
        axes[1].scatter(
            u, v, c=shown[front], s=np.clip((12 / z) ** 2, 1, 60), cmap="viridis", vmin=shown.min(), vmax=shown.max()
        )
        axes[1].set(xlim=(0, 2 * k[0, 2]), ylim=(2 * k[1, 2], 0), aspect="equal", title="first camera")
    fig.colorbar(sc, ax=axes.tolist(), fraction=0.03, label="similarity")
    fig.suptitle(title)
    fig.savefig(path, dpi=100, metadata={"Title": title})  # readable without looking at the picture
    plt.close(fig)
    return path


def colormap(values: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 viridis colours of values scaled to [0, 1] over their finite range; NaN grey."""
    finite = np.isfinite(values)
    lo, hi = (values[finite].min(), values[finite].max()) if finite.any() else (0.0, 1.0)
    scaled = np.clip((np.nan_to_num(values, nan=lo) - lo) / max(hi - lo, 1e-9), 0, 1)
    colors = (matplotlib.colormaps["viridis"](scaled)[:, :3] * 255).round().astype(np.uint8)
    colors[~finite] = 128
    return colors


def class_palette(names: list[str]) -> np.ndarray:
    """(K, 3) uint8 colour per class name: ScanNet's benchmark colours where the name is one of
    them, else a tab20 colour chosen by the name, so that a class keeps its colour across
    label sets and scenes."""
    tab20 = (matplotlib.colormaps["tab20"](np.arange(20))[:, :3] * 255).round().astype(np.uint8)
    return np.array([CLASS_COLORS.get(n) or tab20[zlib.crc32(n.encode()) % 20] for n in names], dtype=np.uint8).reshape(
        -1, 3
    )


def ablation_bars(rows: list[dict], path: Path, title: str) -> Path:
    """Grouped bars per ablation row: the 2D teacher's and the student's mIoU (%); where every
    row has ``val`` metrics (an ablation study's), a lighter, hatched bar marked "val" beside each."""
    with_val = all("val" in r for r in rows)
    bars = [
        (key, label + suffix, colour, val)
        for key, label, colour in (("fused_miou", "2D teacher (lifted)", "C0"), ("student_miou", "3D student", "C1"))
        for suffix, val in ((("", False), (", val", True)) if with_val else (("", False),))
    ]
    width = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(max(6, (1.3 + 0.6 * with_val) * len(rows)), 4))
    x = np.arange(len(rows))
    top = 1.0
    for i, (key, label, colour, val) in enumerate(bars):
        values = [(r["val"] if val else r)[key] for r in rows]
        heights = [0 if v is None else 100 * v for v in values]
        top = max(top, *heights)
        style = {"alpha": 0.45, "hatch": "//"} if val else {}
        drawn = ax.bar(x + (i - (len(bars) - 1) / 2) * width, heights, width, label=label, color=colour, **style)
        ax.bar_label(drawn, labels=[f"{h:.1f}" if v is not None else "" for h, v in zip(heights, values)], fontsize=6)
    ax.set_xticks(x, [r["name"] for r in rows], rotation=20, ha="right", fontsize=8)
    headroom = 1.35 if with_val else 1.25  # the legend clears the bars
    ax.set(ylabel="mIoU (%)", title=title, ylim=(0, headroom * top))
    ax.legend(loc="upper left", ncol=2, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def contact_sheet(images, teacher_masks: dict, ious: dict, path: Path, max_rows: int = 6) -> Path:
    """One generated class at a glance: per image (rows, at most ``max_rows``) the image, the
    coarse mask with its prompt points (when the generator has them), the pseudo mask and
    each teacher's mask with its IoU. ``images`` is a ``GeneratedImages``."""
    rows = min(max_rows, len(images.images))
    has_coarse = images.coarse_masks is not None
    columns = ["image", *(["coarse mask + points"] if has_coarse else []), "pseudo mask", *teacher_masks]
    fig, axes = plt.subplots(rows, len(columns), figsize=(2.2 * len(columns), 1.8 * rows + 0.4), squeeze=False)

    def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        tinted = image.astype(np.float32)
        tinted[mask] = 0.45 * tinted[mask] + 0.55 * np.array([230, 30, 30])
        return tinted.round().astype(np.uint8)

    for r in range(rows):
        image = images.images[r].numpy()
        panels = [(image, columns[0])]
        if has_coarse:
            panels.append((overlay(image, images.coarse_masks[r].numpy()), columns[1]))
        panels.append((overlay(image, images.pseudo_masks[r].numpy()), "pseudo mask"))
        for name, masks in teacher_masks.items():
            iou = ious[name][r]
            panels.append((overlay(image, masks[r].numpy()), f"{name}: IoU {'-' if np.isnan(iou) else f'{iou:.2f}'}"))
        for c, (picture, title) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(picture)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
            if has_coarse and c == 1 and images.points is not None:
                points = images.points[r].numpy()
                ax.scatter(points[:, 0], points[:, 1], s=14, c="yellow", edgecolors="black", linewidths=0.5)
    fig.suptitle(f"capability images of '{images.class_name}' ({len(images.images)} drawn, {rows} shown)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
