"""``global/distill``: the distilled 3D student."""

from __future__ import annotations

import io

import numpy as np

from ovlift.cache_schema.specs import ArraySpec, GroupSpec, Scope
from ovlift.cache_schema.store import GroupWriter

DISTILL_SPEC = GroupSpec(
    stage="distill",
    scope=Scope.GLOBAL,
    doc="The distilled 3D student: final weights and its training curve.",
    arrays=(
        ArraySpec("weights", "uint8", ("B",), (1 << 22,), "torch.save bytes of the student's state_dict"),
        ArraySpec("epoch_loss", "float32", ("E",), (None,), "mean training loss of each epoch"),
        ArraySpec("epoch_lr", "float32", ("E",), (None,), "learning rate at the end of each epoch"),
        ArraySpec("epoch_val_loss", "float32", ("E",), (None,), "validation loss after each epoch (NaN: none)"),
    ),
    info={
        "teacher": "the teacher distilled",
        "source": "the stage its features came from: project (fused), denoise (CUS3D) or fuse (SAS)",
        "channels": "output channels (the teacher's)",
        "text_encoder": "text encoder of the teacher's space",
        "student": "the student's config",
        "train_scenes": "scenes trained on",
        "checkpoints": "folder of the per-epoch checkpoints (with SAS's TESD bank), the training log CSV and curve PNG",
        "superpoints": "SAS's superpoints: segment (the segment stage's) or none (every point its own)",
        "tesd": "SAS's TESD: its vocabulary (key), classes and first epoch (0-based); null when off",
        "sweep_input": "LiDAR sweeps the student saw at once: separate (one sample per sweep, CLIP2Scene) or "
        "merged (absent: the whole cloud)",
        "sweeps": "K, the sweeps drawn per scene per step (CLIP2Scene)",
        "clip2scene": "CLIP2Scene's text set (vocabulary key, classes) and the fraction of points paired with a pixel",
        "validation": "val_split, its scenes, patience, epochs run, best and published epoch (0-based), best "
        "validation loss; null without val_split",
    },
)


def write_student(out: GroupWriter, state_dict: dict, rows: list[dict]) -> None:
    """The student's weights (``torch.save`` bytes, on the CPU) and its per-epoch loss and learning
    rate from the training log rows (``epoch``, ``loss``, ``lr``)."""
    import torch

    buffer = io.BytesIO()
    torch.save({k: v.cpu() for k, v in state_dict.items()}, buffer)
    out.write("weights", np.frombuffer(buffer.getvalue(), dtype=np.uint8))
    epochs = sorted({r["epoch"] for r in rows})
    out.write(
        "epoch_loss", np.array([np.mean([r["loss"] for r in rows if r["epoch"] == e]) for e in epochs], np.float32)
    )
    out.write("epoch_lr", np.array([[r["lr"] for r in rows if r["epoch"] == e][-1] for e in epochs], np.float32))
    last = [[r for r in rows if r["epoch"] == e][-1] for e in epochs]
    out.write("epoch_val_loss", np.array([r.get("val_loss", np.nan) for r in last], np.float32))
