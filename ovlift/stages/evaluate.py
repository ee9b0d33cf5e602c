"""``evaluate`` (global): metrics of the fused 2D, distilled 3D and 2D-3D ensemble
predictions on the scenes of a split, with a JSON report, a Markdown table and
confusion-matrix pictures beside the store.

Ground-truth labels are matched to the prediction vocabulary by class name
(labels whose name the vocabulary lacks are ignored). Rules: ``ovlift.kernels.metrics``.
A LiDAR scene is scored on its key-frame points only (``sweep`` 0), as nuScenes
lidarseg labels them and CLIP2Scene evaluates; its earlier sweeps are context.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np

from ovlift.cache_schema import GroupWriter, StageGroup, oracles_of
from ovlift.cache_schema.groups.evaluate import EVALUATE_SPEC, PREDICTORS, predictor_names
from ovlift.config import FrozenConfig
from ovlift.errors import StageInputError
from ovlift.kernels.metrics import Scores, confusion_matrix, scores, subset_miou
from ovlift.plots import confusion as plot_confusion
from ovlift.stages.base import Stage, StageContext
from ovlift.vocabularies import class_splits


class EvaluateConfig(FrozenConfig):
    split: str = "val"
    """Plan split of the evaluated scenes (``all``: every scene)."""
    valid_classes: tuple[str, ...] | None = None
    """Classes evaluated (ScanNet's benchmark subset, say); None: every vocabulary class."""
    unseen_classes: tuple[str, ...] = ()
    """Classes held out as unseen, for seen/unseen mIoU and hIoU."""


def scores_json(result: Scores, classes: list[str], splits: dict[str, tuple[str, ...]] | None = None) -> dict:
    """The scores as JSON; with ``splits`` (ScanNet-200's head/common/tail) also each split's
    mIoU, the mean IoU of its counted classes as ScanNet-200's benchmark script reports it."""

    def num(x: float) -> float | None:
        return None if math.isnan(x) else round(float(x), 6)

    out = {
        "miou": num(result.miou),
        "macc": num(result.macc),
        "overall_accuracy": num(result.overall_accuracy),
        "seen_miou": num(result.seen_miou),
        "unseen_miou": num(result.unseen_miou),
        "hiou": num(result.hiou),
        "per_class_iou": {c: num(v) for c, v in zip(classes, result.iou) if not math.isnan(v)},
    }
    if splits:
        out["split_miou"] = {
            name: num(subset_miou(result, [c in members for c in classes])) for name, members in splits.items()
        }
    return out


RULE = (
    "ScanNet's rule (evaluate_semantic_label.py): IoU = tp / (tp + fp + fn); a class predicted but absent "
    "from the ground truth has IoU 0 and counts in the mIoU; a class neither present nor predicted is left out"
)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def report_title(oracles: tuple[str, ...] | list[str]) -> str:
    """The report's title; one whose plan reads ground truth anywhere says so first."""
    if oracles:
        return f"Evaluation - ORACLE, reads ground truth: {'; '.join(oracles)} (not label-free)"
    return "Evaluation (label-free)"


def markdown_table(
    metrics: dict, classes: list[str], without_ground_truth: list[str], oracles: tuple[str, ...], names: dict
) -> str:
    present = [c for c in classes if any(c in m["per_class_iou"] for m in metrics.values())]
    missing = ", ".join(without_ground_truth) or "none"
    lines = [f"# {report_title(oracles)}", "", f"Metric: {RULE}.", "", f"Classes without ground truth: {missing}.", ""]
    lines += ["| predictor | mIoU | mAcc | OA | hIoU |", "|---|---|---|---|---|"]
    lines += [
        f"| {names[p]} | " + " | ".join(_pct(m[k]) for k in ("miou", "macc", "overall_accuracy", "hiou")) + " |"
        for p, m in metrics.items()
    ]
    splits = list(next(iter(metrics.values())).get("split_miou", {})) if metrics else []
    if splits:
        lines += ["", "| predictor | " + " | ".join(f"{s} mIoU" for s in splits) + " |", "|---|" + "---|" * len(splits)]
        lines += [
            f"| {names[p]} | " + " | ".join(_pct(m["split_miou"][s]) for s in splits) + " |" for p, m in metrics.items()
        ]
    lines += ["", "| class | " + " | ".join(names[p] for p in metrics) + " |", "|---|" + "---|" * len(metrics)]
    lines += [
        f"| {c} | " + " | ".join(_pct(m["per_class_iou"].get(c)) for m in metrics.values()) + " |" for c in present
    ]
    return "\n".join(lines) + "\n"


class EvaluateStage(Stage[EvaluateConfig]):
    implementation = "scannet"
    version = "2"  # 2: ScanNet's rule, predicted-but-absent classes count with IoU 0
    spec = EVALUATE_SPEC
    reads = ("input", "predict")
    writes_files = True

    def run(self, ctx: StageContext, out: GroupWriter) -> None:
        cfg = self.config
        if not ctx.scene_inputs:
            raise StageInputError(f"{ctx.where()}: split '{cfg.split}' has no scenes to evaluate")
        first = ctx.scene_inputs[min(ctx.scene_inputs)]["predict"]
        classes = first.info["classes"]  # one plan, one vocabulary
        valid = self.valid_mask(classes)
        matrices = confusions(ctx.scene_inputs, classes, valid)
        unseen = class_mask(cfg.unseen_classes, classes, "unseen_classes")
        results = {p: scores(m, valid, unseen) for p, m in matrices.items()}
        splits = class_splits(classes)
        metrics = {p: scores_json(r, classes, splits) for p, r in results.items()}
        absent = [c for c, a in zip(classes, next(iter(results.values())).without_ground_truth) if a]
        oracles = oracles_of(g["predict"] for g in ctx.scene_inputs.values())
        source = first.info.get("source", "project")
        report = {
            "title": report_title(oracles),
            "reads_ground_truth": list(oracles),
            "rule": RULE,
            "scenes": sorted(ctx.scene_inputs),
            "classes": classes,
            "classes_without_ground_truth": absent,
            "metrics": metrics,
        }
        self._write_report(ctx, report, matrices, predictor_names(source))
        for p, m in matrices.items():
            out.write(f"confusion_{p}", m)
        out.set_info(
            classes=classes,
            metrics=metrics,
            scenes=sorted(ctx.scene_inputs),
            report=ctx.files_url,
            rule=RULE,
            classes_without_ground_truth=absent,
            source=source,
        )

    def _write_report(
        self, ctx: StageContext, report: dict, matrices: dict[str, np.ndarray], names: dict[str, str]
    ) -> None:
        """report.json, metrics.md and a confusion plot per predictor, beside the store."""
        assert ctx.files is not None
        ctx.files.mkdir(parents=True, exist_ok=True)
        oracles, classes = report["reads_ground_truth"], report["classes"]
        absent = report["classes_without_ground_truth"]
        (ctx.files / "report.json").write_text(json.dumps(report, indent=1))
        (ctx.files / "metrics.md").write_text(markdown_table(report["metrics"], classes, absent, oracles, names))
        oracle_note = "ORACLE " if oracles else ""
        for p, m in matrices.items():
            title = f"{oracle_note}{names[p]}: confusion (row-normalised)"
            plot_confusion(m, classes, ctx.files / f"confusion_{p}.png", title)

    def valid_mask(self, classes: list[str]) -> np.ndarray:
        if self.config.valid_classes is None:
            return np.ones(len(classes), bool)
        return class_mask(self.config.valid_classes, classes, "valid_classes")


def class_mask(names: tuple[str, ...], classes: list[str], field: str) -> np.ndarray:
    """Which of ``classes`` are ``names``; a name not among them (a typo) is an error."""
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise StageInputError(f"evaluate: {field} {unknown} are not in the vocabulary {classes}")
    return np.array([c in names for c in classes], dtype=bool)


def scored_truth(scene: StageGroup, classes: list[str], valid: np.ndarray | None = None) -> np.ndarray:
    """A scene's (its ``input`` group's) ground truth as indices into ``classes``, matched by
    class name; -1 on every point not scored: unlabelled, of a class the vocabulary lacks or
    outside ``valid``, or (LiDAR) of a sweep before the key frame."""
    names = scene.info.get("class_names")
    if "labels" not in scene or names is None:
        raise StageInputError(f"group '{scene.path}': array 'labels': evaluation needs ground-truth labels")
    to_vocab = np.array([classes.index(n) if n in classes else -1 for n in names] + [-1])
    truth = to_vocab[scene.load("labels").astype(np.int64)]  # -1 stays -1 (the extra entry)
    if "sweep" in scene:
        truth[scene.load("sweep") != 0] = -1
    if valid is not None:
        scored = truth >= 0
        scored[scored] = np.asarray(valid, bool)[truth[scored]]
        truth[~scored] = -1
    return truth


def confusions(
    scene_inputs: Mapping[str, Mapping[str, StageGroup]],
    classes: list[str],
    valid: np.ndarray,
    keep: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Per predictor, the confusion matrix summed over the scenes (ground truth from
    ``scored_truth``). With ``keep`` (scene -> bool per point), only the kept points count:
    a study compares predictors on the points they all predict."""
    matrices: dict[str, np.ndarray] = {}
    for scene_id, groups in sorted(scene_inputs.items()):
        predict = groups["predict"]
        truth = scored_truth(groups["input"], classes)
        if keep is not None:
            truth = np.where(keep[scene_id], truth, -1)
        for p in PREDICTORS:
            if f"labels_{p}" in predict:
                m = confusion_matrix(truth, predict.load(f"labels_{p}"), len(classes), valid=valid)
                matrices[p] = matrices.get(p, 0) + m
    return matrices
