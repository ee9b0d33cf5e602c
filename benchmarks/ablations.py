"""A method's ablation table on controlled toy data, from its committed plan.

    .venv/bin/python benchmarks/ablations.py cus3d --out work/ablations [--epochs N] [--set KEY=VALUE ...]
        [--rows NAME ...] [--store PATH]

Every row is the method's plan with a few fields changed; all rows share one store,
so what rows share (scenes, teacher features, projections) is computed once.
``--set`` overrides the plan for every row as ``ovlift run --set`` does (another
generator seed: ``--set dataset.seed=7``).

Writes ``OUT/<method>.json``, ``OUT/<method>.md`` and ``OUT/<method>.png``. Metrics
are under ScanNet's rule on the plan's ``test`` scenes (``"split": "test"``), each
row's metrics on its ``val`` scenes beside (``"val"``: where choices are made) and on
its ``train`` scenes (``"train"``: a student's fit, for diagnoses). Per
row and column (``fused``: the 2D teacher lifted to 3D; ``student``), ``class_iou`` is
the IoU of each of ``classes`` (None: neither true nor predicted there), ``coverage`` is
the share of the evaluated test points that have a prediction (a point no view saw
has none, and counts as a miss), and ``matched_miou`` the mIoU on only the test
points that every row of the study predicts in that column (every student row for
``student``): a filter that fills unseen points then does not look like one that
corrects seen ones. A row built on an oracle says so in its name, and its
evaluation report's title says it too.

cus3d (paper Tab. 4 and 3): the 2D teacher lifted to 3D and the student without
filters, with CUS3D's 2D pixel vote, with its 3D object vote, with both; both
with ground-truth objects (the oracle its released code silently uses); and the
student's losses: feature only, label only, both.

sas (paper Tab. 3): each teacher alone, their sum, linear (confidence) weights and
capability fusion (2D rows: the student is not trained, its column is empty); then
the students: pixel-point distillation, + superpoints, + TESD. Also
``capability_spearman``: the rank correlation, over (teacher, class) pairs, between the
capability measured on single rendered objects and each teacher's true per-class IoU
on the test scenes' frames against their pixel labels (on the val scenes' in ``val``).

clip2scene (paper Tab. 1, annotation-free nuScenes val): the baseline (semantic
consistency only), + spatial-temporal consistency, + switchable self-training (the
full method), each term removed, self-training alone, all at 3 sweeps; then the full
method at 1 and 5 sweeps and with 3 sweeps merged into one input, and pretraining on
another label set's prompts (Cityscapes), always evaluated with nuScenes-16's, on
toy streets.

Students: each row's student is the plan's (CUS3D: xyz + RGB; SAS, CLIP2Scene: xyz);
rows marked ``other_student`` train it again with the other input (a row of its own,
named so). Training and validation loss curves of every student row go to
``OUT/curves/<row>/``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ovlift.cache_schema import IGNORE_LABEL, StageGroup
from ovlift.kernels.metrics import scores
from ovlift.pipeline.plan import apply_overrides, plan_from_dict
from ovlift.pipeline.runner import Runner
from ovlift.pipeline.status import expected_fingerprints
from ovlift.plots import ablation_bars
from ovlift.stages.evaluate import confusions, scored_truth

PLANS = Path(__file__).resolve().parents[1] / "plans"


@dataclass(frozen=True)
class Row:
    name: str
    detail: str
    """The method's own column (CUS3D: where the objects came from, "-" without a 3D filter)."""
    changes: dict = field(default_factory=dict)
    """Dotted plan path under ``stages`` -> value; None removes the entry."""
    paper: tuple[float | None, float | None] = (None, None)
    """The paper's ScanNet val mIoU (teacher, student) for this row, if it reports one."""
    student: bool = True
    """Whether the row reports a student (2D-only rows train it for one epoch and leave it out)."""
    other_student: bool = False
    """Whether the row also trains the student with the other input (``STUDENT_INPUTS``)."""


STUDENT_INPUTS = {False: "xyz", True: "xyz+RGB"}
"""``distill.student.use_color`` -> the student's input as the tables name it: geometry only (SAS's
and CLIP2Scene's setting) or with colour (CUS3D's). CLIP2Scene's loop feeds LiDAR points, which
carry no colour: its study has geometry-only students."""


def with_other_student(row: Row, plan: dict) -> list[Row]:
    """The row as the plan trains it and, with ``other_student``, again with the other input."""
    if not row.other_student:
        return [row]
    other = not plan["stages"]["distill"].get("student", {}).get("use_color", False)
    name = f"{row.name}, {STUDENT_INPUTS[other]} student"
    return [row, Row(name, row.detail, {**row.changes, "distill.student.use_color": other}, (None, None))]


WITHOUT_3D = {"distill.source": "project", "segment": None, "objects": None, "denoise": None}
ALL_MASKS = {"extract2d.ovseg.overlap": "all"}

SINGLE = {"fuse": None, "distill.source": "project", "distill.superpoints": "none", "distill.tesd_start": None}
PIXEL_POINT = {"distill.superpoints": "none", "distill.superpoint_targets": False, "distill.superpoint_weight": 0.0}

PAPER_BENCHMARK = {"cus3d": "ScanNet val", "sas": "ScanNet val", "clip2scene": "nuScenes val, annotation-free"}
"""Where each paper's numbers come from (the toy rows show the direction only)."""

NO_SWITCH = {"distill.self_training_p": 0.0}  # never a coin's head (None would drop the field: the plan's 10)
C2S_BASELINE = {"distill.ssr_weight": 0.0, **NO_SWITCH}
"""Semantic consistency only, at the plan's 3 sweeps as every main row (the sweeps are rows of their own)."""

METHODS: dict[str, tuple[str, str, list[Row]]] = {
    "cus3d": (
        "cus3d-toy.yaml",
        "objects",
        [
            Row("none", "-", {**ALL_MASKS, **WITHOUT_3D}, (28.2, 31.3), other_student=True),
            Row("2D filter", "-", WITHOUT_3D, (31.8, 38.6)),
            Row("3D filter", "label-free", ALL_MASKS, (47.3, 51.4)),
            Row("both", "label-free", {}, (52.7, 57.4), other_student=True),
            Row("both, ORACLE objects", "ground truth (oracle)", {"objects.source": "ground-truth"}),
            Row("both, feature loss only", "label-free", {"distill.label_weight": 0.0}, (None, 53.3)),
            Row("both, label loss only", "label-free", {"distill.cosine_weight": 0.0}, (None, 8.0)),
        ],
    ),
    "clip2scene": (
        "clip2scene-toy.yaml",
        "sweeps",
        [
            Row("baseline (semantic only)", "3", C2S_BASELINE, (None, 15.1)),
            Row("+ spatial-temporal", "3", NO_SWITCH, (None, 18.8)),
            Row("+ switchable self-training (full)", "3", {}, (None, 20.8)),
            Row("w/o spatial-temporal", "3", {"distill.ssr_weight": 0.0}, (None, 19.8)),
            Row("self-training only", "3", {"distill.self_training_p": 1.0}, (None, 10.1)),
            Row("full, 1 sweep", "1", {"distill.sweeps": 1}, (None, 18.7)),
            Row("full, 5 sweeps", "5", {"distill.sweeps": 5}, (None, 20.6)),
            Row("full, 3 sweeps merged", "3 merged", {"distill.sweep_input": "merged"}, (None, 18.6)),
            Row("full, Cityscapes prompts", "3", {"distill.vocabulary": "cityscapes19"}, (None, 11.3)),
        ],
    ),
    "sas": (
        "sas-toy.yaml",
        "2D features",
        [
            Row("LSeg stand-in alone", "lseg", {**SINGLE, "distill.teacher": "lseg"}, (51.2, None), False),
            Row("SEEM stand-in alone", "seem", {**SINGLE, "distill.teacher": "seem"}, (47.3, None), False),
            Row("add", "lseg + seem", {"fuse.method": "add"}, (48.6, None), False),
            Row("linear", "confidence-weighted", {"fuse.method": "linear"}, (49.9, None), False),
            Row("capability fusion", "capability-weighted", {}, (55.5, None), False),
            Row(
                "pixel-point distillation",
                "capability-weighted",
                {**PIXEL_POINT, "distill.tesd_start": None},
                (None, 56.7),
            ),
            Row("+ superpoints", "capability-weighted", {"distill.tesd_start": None}, (None, 59.2)),
            Row("+ TESD", "capability-weighted", {}, (None, 61.9), other_student=True),
        ],
    ),
}


def row_plan(base: dict, row: Row, store: Path, epochs: int | None) -> dict:
    """The method's plan with the row's changes (2D-only rows: a one-epoch student)."""
    plan = copy.deepcopy(base)
    plan["store"] = str(store)
    for path, value in row.changes.items():
        *parents, leaf = path.split(".")
        node = plan["stages"]
        for key in parents:
            node = node[key]
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    if epochs is not None:
        plan["stages"]["distill"]["epochs"] = epochs
    if not row.student:
        plan["stages"]["distill"]["epochs"] = 1
    return plan


SPLITS = ("test", "val", "train")
"""The split reported, the one beside it (where choices are made), and the training scenes (how
far a student is from fitting what it trained on: a diagnosis, never a choice)."""
COLUMNS = {"fused": "2d", "student": "3d"}
"""A row's column -> the ``predict`` labels it scores (``labels_<key>``)."""


@dataclass
class RowRun:
    """One row's run: its result so far and its ``input`` and ``predict`` groups per split."""

    row: Row
    result: dict
    groups: dict[str, dict[str, dict[str, StageGroup]]]
    """split -> scene -> {"input": ..., "predict": ...}, as ``evaluate.confusions`` reads them."""


def run_rows(
    method: str,
    out: Path,
    epochs: int | None,
    overrides: Sequence[str] = (),
    only: Sequence[str] = (),
    store: Path | None = None,
) -> tuple[list[RowRun], Runner]:
    """Every row of the method's study (``only``: those named) run into one store (``overrides``
    applied to the plan first)."""
    plan_file, _, rows = METHODS[method]
    unknown = sorted(set(only) - {r.name for r in rows})
    if unknown:
        raise SystemExit(f"{method} has no rows {unknown}; its rows: {[r.name for r in rows]}")
    rows = [r for r in rows if not only or r.name in only]
    source = str(PLANS / plan_file)
    base = apply_overrides(yaml.safe_load((PLANS / plan_file).read_text()), overrides, source)
    runs = []
    for row in (r for given in rows for r in with_other_student(given, base)):
        start = time.perf_counter()
        store_path = (store or out / "store.zarr").resolve()
        runner = Runner(plan_from_dict(row_plan(base, row, store_path, epochs), PLANS, source))
        report = runner.run()
        if report.failed:
            raise SystemExit(f"{method} row '{row.name}': " + "; ".join(str(o.error) for o in report.failed))
        written = Written(runner)
        evaluate = written.group("evaluate", None)
        distill = written.group("distill", None)
        result = {
            "name": row.name,
            "detail": row.detail,
            "student_input": STUDENT_INPUTS[bool(distill.info["student"]["use_color"])] if row.student else None,
            "validation": distill.info.get("validation") if row.student else None,
            "reads_ground_truth": list(evaluate.oracles),
            "paper_fused_miou": row.paper[0],
            "paper_student_miou": row.paper[1],
            "seconds": round(time.perf_counter() - start, 1),
        }
        runs.append(RowRun(row, result, {split: written.split_groups(split) for split in SPLITS}))
        if row.student:
            keep_curves(distill, out / "curves" / slug(row.name))
        fused = 100 * evaluate.info["metrics"]["2d"]["miou"]
        print(
            f"{method} | {row.name:<26} | {row.detail:<22} | test 2D {fused:5.1f} | {result['seconds']:.0f} s",
            flush=True,
        )
    return runs, runner


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def keep_curves(distill: StageGroup, folder: Path) -> None:
    """The row's training log and curves (training and validation loss) into the study's folder."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    files = Path(distill.info["checkpoints"])
    for name in ("training_log.csv", "training_curves.png"):
        shutil.copy(files / name, folder / name)


class Written:
    """The groups a row's runner wrote (read by fingerprint: rows share the store's paths)."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.expected = expected_fingerprints(runner.plan, runner.store)

    def group(self, key: str, scene: str | None) -> StageGroup:
        path = self.runner.plan.stages[key].group_path(scene)
        group = self.runner.store.read(path, self.expected[path].fingerprint)
        if group is None:
            raise SystemExit(f"{path}: the row's group is missing from the store")
        return group

    def split_groups(self, split: str) -> dict[str, dict[str, StageGroup]]:
        """scene -> its ``input`` and ``predict`` groups, for the scenes of the plan's ``split``."""
        return {s: {k: self.group(k, s) for k in ("input", "predict")} for s in self.runner.plan.splits[split]}


def score_rows(runs: list[RowRun], runner: Runner) -> dict:
    """Each row's metrics on every split of ``SPLITS`` (the first at the row's top level, the
    others under their name), with coverage and matched mIoU; returns the matched points' counts."""
    evaluate = runner.plan.stages["evaluate"].stage
    first = next(iter(runs[0].groups["test"].values()))["predict"]
    classes = first.info["classes"]
    valid = evaluate.valid_mask(classes)
    matched_points = {}
    for split in SPLITS:
        truth = {s: scored_truth(g["input"], classes, valid) for s, g in runs[0].groups[split].items()}
        predicted = {r.row.name: predicted_points(r, split, truth) for r in runs}
        matched = {c: matched_mask(runs, predicted, c) for c in COLUMNS}
        matched_points[split] = {"evaluated": int(sum((t >= 0).sum() for t in truth.values()))}
        matched_points[split].update({c: int(sum(m.sum() for m in matched[c].values())) for c in COLUMNS})
        for run in runs:
            scored = split_scores(run, split, classes, valid, truth, predicted[run.row.name], matched)
            if split == SPLITS[0]:  # after the row's name, before its paper numbers and time
                name = {k: run.result.pop(k) for k in ("name", "detail")}
                run.result = {**name, **scored, **run.result}
            else:
                run.result[split] = scored
    return matched_points


def predicted_points(run: RowRun, split: str, truth: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """column -> scene -> whether each evaluated point has a prediction in that column."""
    return {
        column: {
            scene: (truth[scene] >= 0) & (groups["predict"].load(f"labels_{key}") != IGNORE_LABEL)
            for scene, groups in run.groups[split].items()
        }
        for column, key in COLUMNS.items()
    }


def matched_mask(runs: list[RowRun], predicted: dict, column: str) -> dict[str, np.ndarray]:
    """scene -> the evaluated points that every row reporting ``column`` predicts there."""
    reporting = [r.row.name for r in runs if column == "fused" or r.row.student]
    scenes = predicted[runs[0].row.name][column]
    return {s: np.logical_and.reduce([predicted[r][column][s] for r in reporting]) for s in scenes}


def split_scores(
    run: RowRun, split: str, classes: list[str], valid: np.ndarray, truth: dict, predicted: dict, matched: dict
) -> dict:
    """One row's metrics on one split: mIoU and mAcc per column, coverage and matched mIoU."""
    groups = run.groups[split]
    everywhere = {p: scores(m, valid) for p, m in confusions(groups, classes, valid).items()}
    result: dict = {"coverage": {}, "matched_miou": {}, "class_iou": {}}
    evaluated = sum((t >= 0).sum() for t in truth.values())
    for column, key in COLUMNS.items():
        if column == "student" and not run.row.student:
            result[f"{column}_miou"] = result[f"{column}_macc"] = None
            result["coverage"][column] = result["matched_miou"][column] = result["class_iou"][column] = None
            continue
        on_matched = scores(confusions(groups, classes, valid, keep=matched[column])[key], valid)
        covered = sum(predicted[column][s].sum() for s in groups)
        result[f"{column}_miou"] = num(everywhere[key].miou)
        result[f"{column}_macc"] = num(everywhere[key].macc)
        result["coverage"][column] = round(float(covered / evaluated), 6)
        result["matched_miou"][column] = num(on_matched.miou)
        result["class_iou"][column] = [num(x) for x in everywhere[key].iou]  # None: not scored
    return result


def num(x: float) -> float | None:
    return None if np.isnan(x) else round(float(x), 6)


def capability_spearman(runner: Runner, split: str = "test") -> dict:
    """Capability (single rendered objects) against each teacher's true per-class IoU on the
    frames of the ``split`` scenes, pooled over (teacher, class) pairs that have both."""
    from scipy.stats import spearmanr

    group = runner.store.read(runner.plan.stages["capability"].group_path(None))
    teachers, classes = group.info["teachers"], group.info["classes"]
    capability, counts = group.load("capability"), group.load("image_count")
    truth = teacher_pixel_iou(runner, teachers, classes, runner.plan.splits[split])
    pairs = np.isfinite(truth) & (counts > 0)[None]
    rho = float(spearmanr(capability[pairs], truth[pairs]).statistic)
    return {
        "capability_spearman": rho,
        "pairs": int(pairs.sum()),
        "teachers": teachers,
        "classes": classes,
        "capability": capability.round(4).tolist(),
        "true_iou": np.where(np.isfinite(truth), truth, -1).round(4).tolist(),
    }


def teacher_pixel_iou(runner: Runner, teachers: list[str], classes: list[str], scenes: list[str]) -> np.ndarray:
    """(T, K) each teacher's per-class IoU over the frames of ``scenes`` against their pixel
    labels, its pixels labelled as the capability stage labels them (NaN: class absent from the frames)."""
    import torch

    from ovlift.cache_schema.groups.extract2d import TeacherFeatures
    from ovlift.kernels.classify import classify
    from ovlift.kernels.fusion import FeatureBuffers
    from ovlift.kernels.metrics import confusion_matrix, scores
    from ovlift.models.teachers.base import resize_nearest
    from ovlift.models.text import TextEncoderConfig
    from ovlift.vocabularies import get_vocabulary

    config = runner.plan.stages["capability"].config
    vocab = get_vocabulary(config.vocabulary)
    result = np.full((len(teachers), len(classes)), np.nan)
    for t, name in enumerate(teachers):
        confusion = np.zeros((len(classes), len(classes) + 1), np.int64)
        for scene in scenes:
            group = runner.store.read(runner.plan.stages[f"extract2d/{name}"].group_path(scene))
            scene_input = runner.store.read(runner.plan.stages["input"].group_path(scene))
            to_class = np.array([classes.index(c) if c in classes else -1 for c in scene_input.info["class_names"]])
            text = TextEncoderConfig(**{**group.info["text_encoder"], "templates": config.templates})
            prompts, prompt_class = runner.text(text, list(vocab.prompts)), torch.tensor(vocab.prompt_class)
            features = TeacherFeatures(group)
            h, w = features.feature_hw
            buffers = FeatureBuffers(features.channels, h * w, torch.device("cpu"))
            for local, frame in enumerate(features.frames):
                source = features.read(np.array([local]))
                label = classify(source.rows(torch.arange(h * w), buffers), prompts, prompt_class)[1]
                label = torch.where(source.coverage()[0].reshape(-1), label, -1).numpy()
                truth = torch.from_numpy(scene_input.array("frames/labels")[int(frame)][None].astype(np.int64))
                truth = resize_nearest(truth, (h, w))[0].numpy().ravel()
                confusion += confusion_matrix(np.where(truth >= 0, to_class[truth], -1), label, len(classes))
        score = scores(confusion)
        # a class absent from the scenes has IoU 0 when predicted (ScanNet's rule), which says
        # nothing about how well the teacher recognises it: such pairs are left out
        result[t] = np.where(score.without_ground_truth, np.nan, score.iou)
    return result


def markdown(method: str, rows: list[dict], plan_file: str) -> str:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}"

    def paper(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    def epochs(validation: dict | None) -> str:
        if not validation:
            return "-"
        return f"{validation['epochs_run']} ({validation['best_epoch'] + 1})"

    column = METHODS[method][1]
    lines = [
        f"{method} ablation on toy scenes (plan `plans/{plan_file}`, mIoU % under ScanNet's rule on the `test` "
        'scenes; "val": on the `val` scenes, where choices are made; "matched": on the test points that '
        'every row predicts; "coverage": % of the test points with a prediction); '
        f"paper: {PAPER_BENCHMARK[method]}, for the direction only",
        "",
        f"| row | {column} | 2D teacher | 2D val | 2D matched | 2D coverage | student input | student "
        "| student val | student matched | epochs (best) | paper teacher | paper student |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['name']} | {r['detail']} | {pct(r['fused_miou'])} | {pct(r['val']['fused_miou'])} "
        f"| {pct(r['matched_miou']['fused'])} | {pct(r['coverage']['fused'])} | {r['student_input'] or '-'} "
        f"| {pct(r['student_miou'])} | {pct(r['val']['student_miou'])} | {pct(r['matched_miou']['student'])} "
        f"| {epochs(r['validation'])} | {paper(r['paper_fused_miou'])} | {paper(r['paper_student_miou'])} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def class_tables(rows: list[dict], classes: list[str]) -> str:
    """Per-class test IoU %, one table per column, one column per row that reports it."""

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}"

    parts = []
    for column, title in (("fused", "2D teacher lifted to 3D"), ("student", "student")):
        shown = [r for r in rows if r["class_iou"][column] is not None]
        if column == "fused":  # rows sharing a teacher show it once, under the first one's name
            firsts: dict[tuple, dict] = {}
            for r in shown:
                firsts.setdefault(tuple(r["class_iou"]["fused"]), r)
            shown = list(firsts.values())
        lines = [
            f"Per class, test, {title} (IoU %; -: neither true nor predicted):",
            "",
            "| class | " + " | ".join(r["name"] for r in shown) + " |",
            "|---|" + "---:|" * len(shown),
        ]
        lines += [
            f"| {c} | " + " | ".join(pct(r["class_iou"][column][k]) for r in shown) + " |"
            for k, c in enumerate(classes)
        ]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def study(
    method: str,
    out: Path,
    epochs: int | None = None,
    overrides: Sequence[str] = (),
    only: Sequence[str] = (),
    store: Path | None = None,
) -> dict:
    """Run the method's rows into ``out``, write ``out/<method>.json``, ``.md`` and ``.png``
    and return the JSON."""
    out.mkdir(parents=True, exist_ok=True)
    runs, runner = run_rows(method, out, epochs, overrides, only, store)
    matched_points = score_rows(runs, runner)
    plan_file = METHODS[method][0]
    rows = [run.result for run in runs]
    result: dict = {
        "plan": plan_file,
        "overrides": list(overrides),
        "split": SPLITS[0],
        "scenes": {split: list(runner.plan.splits[split]) for split in SPLITS},
        "classes": next(iter(runs[0].groups["test"].values()))["predict"].info["classes"],
        "matched_points": matched_points,
        "rows": rows,
    }
    if method == "sas":
        result.update(capability_spearman(runner, "test"))
        result["val"] = {"capability_spearman": capability_spearman(runner, "val")["capability_spearman"]}
        print(
            f"capability Spearman (rendered objects vs true IoU in the test scenes): "
            f"{result['capability_spearman']:.3f} over {result['pairs']} (teacher, class) pairs "
            f"(val: {result['val']['capability_spearman']:.3f})"
        )
    (out / f"{method}.json").write_text(json.dumps(result, indent=1))
    (out / f"{method}.md").write_text(markdown(method, rows, plan_file) + "\n" + class_tables(rows, result["classes"]))
    ablation_bars(rows, out / f"{method}.png", f"{method} ablation, toy test scenes (val beside)")
    print(markdown(method, rows, plan_file))
    print(f"wrote {out / method}.json, .md and .png")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method", choices=sorted(METHODS))
    parser.add_argument("--out", type=Path, required=True, help="folder for the store, JSON, table and chart")
    parser.add_argument("--epochs", type=int, default=None, help="override the plan's epochs (quick looks only)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a plan key for every row, as `ovlift run --set` (dataset.seed=7); repeat",
    )
    parser.add_argument(
        "--rows", nargs="+", default=[], metavar="NAME", help="only these rows (a second seed's main rows)"
    )
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help="the rows' store (default OUT/store.zarr): another study's, never while it runs",
    )
    args = parser.parse_args()
    study(args.method, args.out, args.epochs, args.overrides, args.rows, args.store)


if __name__ == "__main__":
    main()
