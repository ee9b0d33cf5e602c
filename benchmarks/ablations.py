"""A method's ablation table on controlled toy data, from its committed plan.

    .venv/bin/python benchmarks/ablations.py cus3d --out work/ablations [--epochs N]

Every row is the method's plan with a few fields changed; all rows share one store,
so what rows share (scenes, teacher features, projections) is computed once.
Writes ``OUT/<method>.json`` (``{"rows": [{"name", "objects", "fused_miou",
"student_miou", ...}]}``), ``OUT/<method>.md`` and ``OUT/<method>.png``. Metrics are
on the plan's held-out ``val`` scenes, under ScanNet's rule. A row built on an
oracle says so in its name, and its evaluation report's title says it too.

cus3d (paper Tab. 4 and 3): the 2D teacher lifted to 3D and the student without
filters, with CUS3D's 2D pixel vote, with its 3D object vote, with both; both
with ground-truth objects (the oracle its released code silently uses); and the
student's losses: feature only, label only, both.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ovlift.pipeline.plan import plan_from_dict
from ovlift.pipeline.runner import Runner
from ovlift.plots import ablation_bars

PLANS = Path(__file__).resolve().parents[1] / "plans"


@dataclass(frozen=True)
class Row:
    name: str
    objects: str
    """What the 3D filter's objects came from ("-" when there is no 3D filter)."""
    changes: dict = field(default_factory=dict)
    """Dotted plan path under ``stages`` -> value; None removes the entry."""
    paper: tuple[float | None, float | None] = (None, None)
    """The paper's ScanNet val mIoU (teacher, student) for this row, if it reports one."""


WITHOUT_3D = {"distill.source": "project", "segment": None, "objects": None, "denoise": None}
ALL_MASKS = {"extract2d.ovseg.overlap": "all"}

METHODS: dict[str, tuple[str, list[Row]]] = {
    "cus3d": (
        "cus3d-toy.yaml",
        [
            Row("none", "-", {**ALL_MASKS, **WITHOUT_3D}, (28.2, 31.3)),
            Row("2D filter", "-", WITHOUT_3D, (31.8, 38.6)),
            Row("3D filter", "label-free", ALL_MASKS, (47.3, 51.4)),
            Row("both", "label-free", {}, (52.7, 57.4)),
            Row("both, ORACLE objects", "ground truth (oracle)", {"objects.source": "ground-truth"}),
            Row("both, feature loss only", "label-free", {"distill.label_weight": 0.0}, (None, 53.3)),
            Row("both, label loss only", "label-free", {"distill.cosine_weight": 0.0}, (None, 8.0)),
        ],
    ),
}


def row_plan(base: dict, row: Row, store: Path, epochs: int | None) -> dict:
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
    return plan


def run_rows(method: str, out: Path, epochs: int | None) -> list[dict]:
    plan_file, rows = METHODS[method]
    base = yaml.safe_load((PLANS / plan_file).read_text())
    results = []
    for row in rows:
        start = time.perf_counter()
        runner = Runner(plan_from_dict(row_plan(base, row, out / "store.zarr", epochs), PLANS, str(PLANS / plan_file)))
        report = runner.run()
        if report.failed:
            raise SystemExit(f"{method} row '{row.name}': " + "; ".join(str(o.error) for o in report.failed))
        evaluate = runner.store.read(runner.plan.stages["evaluate"].group_path(None))
        metrics = evaluate.info["metrics"]
        result = {
            "name": row.name,
            "objects": row.objects,
            "fused_miou": metrics["2d"]["miou"],
            "student_miou": metrics["3d"]["miou"],
            "fused_macc": metrics["2d"]["macc"],
            "student_macc": metrics["3d"]["macc"],
            "oracles": list(evaluate.oracles),
            "paper_fused_miou": row.paper[0],
            "paper_student_miou": row.paper[1],
            "seconds": round(time.perf_counter() - start, 1),
        }
        results.append(result)
        print(
            f"{method} | {row.name:<26} | objects {row.objects:<22} | 2D teacher {100 * result['fused_miou']:5.1f} "
            f"| student {100 * result['student_miou']:5.1f} mIoU | {result['seconds']:.0f} s",
            flush=True,
        )
    return results


def markdown(method: str, rows: list[dict], plan_file: str) -> str:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}"

    def paper(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    lines = [
        f"{method} ablation on toy scenes (plan `plans/{plan_file}`, held-out `val` scenes, mIoU %, "
        "ScanNet's rule); paper: ScanNet val, for the direction only",
        "",
        "| row | objects | 2D teacher | student | paper teacher | paper student |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['name']} | {r['objects']} | {pct(r['fused_miou'])} | {pct(r['student_miou'])} "
        f"| {paper(r['paper_fused_miou'])} | {paper(r['paper_student_miou'])} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method", choices=sorted(METHODS))
    parser.add_argument("--out", type=Path, required=True, help="folder for the store, JSON, table and chart")
    parser.add_argument("--epochs", type=int, default=None, help="override the plan's epochs (quick looks only)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run_rows(args.method, args.out, args.epochs)
    plan_file = METHODS[args.method][0]
    (args.out / f"{args.method}.json").write_text(json.dumps({"plan": plan_file, "rows": rows}, indent=1))
    (args.out / f"{args.method}.md").write_text(markdown(args.method, rows, plan_file))
    ablation_bars(rows, args.out / f"{args.method}.png", f"{args.method} ablation, held-out toy scenes")
    print(markdown(args.method, rows, plan_file))
    print(f"wrote {args.out / args.method}.json, .md and .png")


if __name__ == "__main__":
    main()
