"""``predict``: per scene, the student's features and labels, the fused 2D labels,
and OpenScene's 2D-3D ensemble.

A label is the vocabulary class whose prompted text embedding is most similar
(cosine) to the point's feature. The ensemble takes, per point, the label of the
source (fused 2D or distilled 3D) with the higher maximum similarity; points no
view saw use the 3D prediction. A student trained on one LiDAR sweep at a time
(CLIP2Scene) predicts each sweep of a scene on its own, as it was trained.
"""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
import torch

from ovlift.cache_schema import IGNORE_LABEL, GroupWriter, StageGroup
from ovlift.cache_schema.groups.lifted import LiftedFeatures, lifted_features
from ovlift.cache_schema.groups.predict import PREDICT_SPEC
from ovlift.config import FrozenConfig, runtime_field
from ovlift.kernels.classify import classify
from ovlift.models.student_config import StudentConfig
from ovlift.models.text import TextEncoderConfig
from ovlift.stages.base import Stage, StageContext
from ovlift.vocabularies import get_vocabulary


class PredictConfig(FrozenConfig):
    split: str | None = None
    """Plan split to predict (None: every scene)."""
    vocabulary: str = "scannet20"
    """Classes to label with."""
    templates: Literal["single", "ensemble"] = "single"
    """Prompt templates of the class embeddings (OpenScene: "a {} in a scene")."""
    device: str | None = runtime_field(None)
    """Torch device; None: the plan's."""


_MODELS: dict[tuple[str, str], torch.nn.Module] = {}


def load_student(distill: StageGroup, device: torch.device) -> torch.nn.Module:
    """The distilled student, once per (distill fingerprint, device) per process."""
    from ovlift.models.student import MinkUNet  # spconv: imported only when needed

    key = (distill.fingerprint, str(device))
    if key not in _MODELS:
        config = StudentConfig(**distill.info["student"])
        model = MinkUNet(config, int(distill.info["channels"]), device)
        state = torch.load(io.BytesIO(distill.load("weights").tobytes()), map_location=device, weights_only=True)
        model.load_state_dict(state)
        _MODELS.clear()
        _MODELS[key] = model.to(device).eval()
    return _MODELS[key]


@torch.no_grad()
def student_features(
    model: torch.nn.Module, points: torch.Tensor, colors: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    from ovlift.models.student import sparse_input

    x, (point_map,) = sparse_input([(points, colors)], model.config, device)
    return model(x)[point_map].cpu()


def student_points(distill_info: dict, sweep: np.ndarray | None, num_points: int) -> torch.Tensor:
    """Indices of the points the student labels: every point of a scene without sweeps or of a
    student trained on whole clouds; else the sweeps it was trained to see at once - the key frame
    alone (``separate``, CLIP2Scene) or the key frame and the K - 1 latest sweeps (``merged``)."""
    mode = distill_info.get("sweep_input")
    if sweep is None or mode is None:
        return torch.arange(num_points)
    k = 1 if mode == "separate" else int(distill_info["sweeps"])
    return torch.from_numpy(np.flatnonzero(sweep < k))


class PredictStage(Stage[PredictConfig]):
    implementation = "openscene"
    version = "1"
    spec = PREDICT_SPEC
    computes_on_device = True
    reads = ("input", "project", "distill")
    optional_reads = ("denoise", "fuse")  # read when configured; used when distill distilled it

    def run(self, ctx: StageContext, out: GroupWriter) -> None:
        cfg = self.config
        device = torch.device(cfg.device or ctx.device)
        distill, scene = ctx.inputs["distill"], ctx.inputs["input"]
        vocab = get_vocabulary(cfg.vocabulary)
        encoder = TextEncoderConfig(**{**distill.info["text_encoder"], "templates": cfg.templates})
        prompts = ctx.text(encoder, list(vocab.prompts))
        prompt_class = torch.tensor(vocab.prompt_class, dtype=torch.int64)

        colors = torch.from_numpy(scene.load("colors")) if "colors" in scene else None
        points, model = torch.from_numpy(scene.load("points")), load_student(distill, device)
        rows = student_points(distill.info, scene.load("sweep") if "sweep" in scene else None, len(points))
        features = torch.zeros((len(points), int(distill.info["channels"])))
        features[rows] = student_features(model, points[rows], colors[rows] if colors is not None else None, device)
        sim_3d, labels_3d = classify(features, prompts, prompt_class)
        predicted = torch.zeros(len(points), dtype=torch.bool)
        predicted[rows] = True
        sim_3d = torch.where(predicted, sim_3d, torch.full_like(sim_3d, -float("inf")))
        labels_3d = torch.where(predicted, labels_3d, torch.full_like(labels_3d, IGNORE_LABEL))

        teacher, source = distill.info["teacher"], distill.info.get("source", "project")
        sim_2d, labels_2d = teacher_labels(
            lifted_features(ctx.inputs, source, teacher, ctx.where()), prompts, prompt_class
        )
        from_2d = sim_2d > sim_3d
        if source == "denoise":  # the same teacher before cleaning (fuse's set has no single one)
            fused = lifted_features(ctx.inputs, "project", teacher, ctx.where())
            out.write("labels_fused_2d", teacher_labels(fused, prompts, prompt_class)[1].to(torch.int16).numpy())

        out.write("features_3d", features.to(torch.float16).numpy())
        out.write("similarity_3d", sim_3d.to(torch.float16).numpy())
        out.write("labels_3d", labels_3d.to(torch.int16).numpy())
        out.write("similarity_2d", sim_2d.to(torch.float16).numpy())
        out.write("labels_2d", labels_2d.to(torch.int16).numpy())
        out.write("labels_ensemble", torch.where(from_2d, labels_2d, labels_3d).to(torch.int16).numpy())
        out.write("ensemble_from_2d", from_2d.numpy())
        out.set_info(
            classes=list(vocab.classes), teacher=teacher, source=source, text_encoder=distill.info["text_encoder"]
        )


def teacher_labels(
    lifted: LiftedFeatures, prompts: torch.Tensor, prompt_class: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarity, label) of lifted 2D features; -inf and the ignore label where unseen."""
    seen = torch.from_numpy(lifted.seen)
    sim, labels = classify(torch.from_numpy(lifted.features), prompts, prompt_class)
    return (
        torch.where(seen, sim, torch.full_like(sim, -float("inf"))),
        torch.where(seen, labels, torch.full_like(labels, IGNORE_LABEL)),
    )
