"""``evaluate`` (global): metrics of the fused 2D, distilled 3D and 2D-3D ensemble
predictions on the scenes of a split, with a JSON report, a Markdown table and
confusion-matrix pictures beside the store.

Ground-truth labels are matched to the prediction vocabulary by class name
(labels whose name the vocabulary lacks are ignored). Rules: ``ovlift.kernels.metrics``.
"""

from __future__ import annotations

import json
import math

import numpy as np

from ovlift.cache_schema import GroupWriter
from ovlift.cache_schema.groups.evaluate import EVALUATE_SPEC, PREDICTORS
from ovlift.config import FrozenConfig
from ovlift.errors import StageInputError
from ovlift.kernels.metrics import Scores, confusion_matrix, scores
from ovlift.plots import confusion as plot_confusion
from ovlift.stages.base import Stage, StageContext


class EvaluateConfig(FrozenConfig):
    split: str = "val"
    """Plan split of the evaluated scenes (``all``: every scene)."""
    valid_classes: tuple[str, ...] | None = None
    """Classes evaluated (ScanNet's benchmark subset, say); None: every vocabulary class."""
    unseen_classes: tuple[str, ...] = ()
    """Classes held out as unseen, for seen/unseen mIoU and hIoU."""


def scores_json(result: Scores, classes: list[str]) -> dict:
    def num(x: float) -> float | None:
        return None if math.isnan(x) else round(float(x), 6)

    return {
        "miou": num(result.miou),
        "macc": num(result.macc),
        "overall_accuracy": num(result.overall_accuracy),
        "seen_miou": num(result.seen_miou),
        "unseen_miou": num(result.unseen_miou),
        "hiou": num(result.hiou),
        "per_class_iou": {c: num(v) for c, v in zip(classes, result.iou) if not math.isnan(v)},
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def markdown_table(metrics: dict, classes: list[str]) -> str:
    present = [c for c in classes if any(c in m["per_class_iou"] for m in metrics.values())]
    lines = ["| predictor | mIoU | mAcc | OA | hIoU |", "|---|---|---|---|---|"]
    lines += [
        f"| {PREDICTORS[p]} | " + " | ".join(_pct(m[k]) for k in ("miou", "macc", "overall_accuracy", "hiou")) + " |"
        for p, m in metrics.items()
    ]
    lines += ["", "| class | " + " | ".join(PREDICTORS[p] for p in metrics) + " |", "|---|" + "---|" * len(metrics)]
    lines += [
        f"| {c} | " + " | ".join(_pct(m["per_class_iou"].get(c)) for m in metrics.values()) + " |" for c in present
    ]
    return "\n".join(lines) + "\n"


class EvaluateStage(Stage[EvaluateConfig]):
    implementation = "scannet"
    version = "1"
    spec = EVALUATE_SPEC
    reads = ("input", "predict")
    writes_files = True

    def run(self, ctx: StageContext, out: GroupWriter) -> None:
        cfg = self.config
        if not ctx.scene_inputs:
            raise StageInputError(f"{ctx.where()}: split '{cfg.split}' has no scenes to evaluate")
        classes = ctx.scene_inputs[min(ctx.scene_inputs)]["predict"].info["classes"]  # one plan, one vocabulary
        valid = self.valid_mask(classes)
        matrices: dict[str, np.ndarray] = {}
        for scene_id, groups in sorted(ctx.scene_inputs.items()):
            predict, scene = groups["predict"], groups["input"]
            names = scene.info.get("class_names")
            if "labels" not in scene or names is None:
                raise StageInputError(f"scene '{scene_id}': array 'labels': evaluation needs ground-truth labels")
            to_vocab = np.array([classes.index(n) if n in classes else -1 for n in names] + [-1])
            truth = to_vocab[scene.load("labels").astype(np.int64)]  # -1 stays -1 (the extra entry)
            for p in PREDICTORS:
                m = confusion_matrix(truth, predict.load(f"labels_{p}"), len(classes), valid=valid)
                matrices[p] = matrices.get(p, 0) + m
        unseen = np.array([c in cfg.unseen_classes for c in classes])
        metrics = {p: scores_json(scores(m, valid, unseen), classes) for p, m in matrices.items()}
        assert ctx.files is not None
        ctx.files.mkdir(parents=True, exist_ok=True)
        report = {"scenes": sorted(ctx.scene_inputs), "classes": classes, "metrics": metrics}
        (ctx.files / "report.json").write_text(json.dumps(report, indent=1))
        (ctx.files / "metrics.md").write_text(markdown_table(metrics, classes))
        for p, m in matrices.items():
            out.write(f"confusion_{p}", m)
            plot_confusion(m, classes, ctx.files / f"confusion_{p}.png", f"{PREDICTORS[p]}: confusion (row-normalised)")
        out.set_info(classes=classes, metrics=metrics, scenes=sorted(ctx.scene_inputs), report=str(ctx.files))

    def valid_mask(self, classes: list[str]) -> np.ndarray:
        if self.config.valid_classes is None:
            return np.ones(len(classes), bool)
        unknown = sorted(set(self.config.valid_classes) - set(classes))
        if unknown:
            raise StageInputError(f"evaluate: valid_classes {unknown} are not in the vocabulary {classes}")
        return np.array([c in self.config.valid_classes for c in classes])
