"""The trained teachers' held-out tables, SAS's complementarity and the regions teacher's quality.

    .venv/bin/python benchmarks/trained_teachers.py plans/teachers-toy.yaml \\
        [--pair sas-lseg sas-seem] [--regions demo] [--margin 10]

Reads each teacher's ``training.json`` (train them first: ``ovlift train-teachers SPEC``)
and prints Markdown: one column of held-out per-class IoU per teacher; for ``--pair``,
the classes where each beats the other by ``--margin`` IoU points or more (the issue asks
for 3 or more each way); for ``--regions NAME``, the ``trained-regions`` teacher (default
config) on that teacher's folder, scored like the dense one: its masks voted by CUS3D's 2D
filter, decoded per pixel and classified, on the same held-out frames (a pixel no mask
covers counts as a miss).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ovlift.kernels.classify import classify
from ovlift.kernels.metrics import confusion_matrix, scores
from ovlift.models.teacher_training import read_labelled
from ovlift.models.teachers.base import TeacherInput
from ovlift.models.teachers.regions import RegionsConfig, RegionsTeacher
from ovlift.models.text import load_text_encoder
from ovlift.pipeline.train_teachers import entry_datasets, load_teacher_spec
from ovlift.vocabularies import get_vocabulary


def records(spec: Path) -> dict[str, dict]:
    found = {}
    for name, entry in load_teacher_spec(spec).teachers.items():
        path = Path(entry.folder) / "training.json"
        if path.is_file():
            found[name] = json.loads(path.read_text())
        else:
            print(f"<!-- {name}: no {path}; train it with ovlift train-teachers -->")
    return found


def tables(found: dict[str, dict]) -> None:
    """Per-class IoU, one column per teacher, grouped by label set."""
    by_classes: dict[tuple, list[str]] = {}
    for name, record in found.items():
        by_classes.setdefault(tuple(record["held_out"]["iou"]), []).append(name)
    for classes, names in by_classes.items():
        print("| class | " + " | ".join(names) + " |")
        print("|---|" + "---:|" * len(names))
        for c in classes:
            cells = [found[n]["held_out"]["iou"][c] for n in names]
            print(f"| {c} | " + " | ".join("-" if v is None else f"{100 * v:.1f}" for v in cells) + " |")
        print("| **mIoU** | " + " | ".join(f"**{100 * found[n]['held_out']['miou']:.1f}**" for n in names) + " |")
        print("| seconds | " + " | ".join(f"{found[n]['seconds']:.0f}" for n in names) + " |\n")


def complementarity(found: dict[str, dict], a: str, b: str, margin: float) -> None:
    iou_a, iou_b = found[a]["held_out"]["iou"], found[b]["held_out"]["iou"]
    both = [c for c in iou_a if iou_a[c] is not None and iou_b[c] is not None]
    a_wins = [c for c in both if 100 * (iou_a[c] - iou_b[c]) >= margin]
    b_wins = [c for c in both if 100 * (iou_b[c] - iou_a[c]) >= margin]
    for winner, loser, wins in ((a, b, a_wins), (b, a, b_wins)):
        detail = ", ".join(
            f"{c} ({100 * found[winner]['held_out']['iou'][c]:.1f} vs {100 * found[loser]['held_out']['iou'][c]:.1f})"
            for c in wins
        )
        print(f"- `{winner}` beats `{loser}` by {margin:g}+ IoU points on {len(wins)} classes: {detail or 'none'}")
    print()


def regions_quality(spec: Path, name: str) -> None:
    entry = load_teacher_spec(spec).teachers[name]
    _, validation = entry_datasets(entry, name)
    vocabulary = get_vocabulary(entry.vocabulary)
    frames = read_labelled([validation], vocabulary, name)
    teacher = RegionsTeacher(
        RegionsConfig(model_path=entry.folder),
        torch.device("cpu"),
        lambda encoder, names: load_text_encoder(encoder).embed_names(names),
        f"teacher '{name}-regions'",
    )
    prompts = load_text_encoder(entry.text).embed_names(vocabulary.prompts)
    k = len(vocabulary.classes)
    confusion = np.zeros((k, k + 1), dtype=np.int64)
    hw = tuple(frames.color.shape[1:3])
    for start in range(0, len(frames), 4):
        part = slice(start, start + 4)
        depth = None if frames.depth is None else frames.depth[part]
        batch = TeacherInput(name, np.arange(start, start + len(frames.color[part])), frames.color[part], hw, depth)
        masks = teacher(batch)
        dense = masks.decode()
        _, predicted = classify(dense.reshape(-1, dense.shape[-1]), prompts, torch.tensor(vocabulary.prompt_class))
        predicted[~masks.coverage().reshape(-1)] = -1
        confusion += confusion_matrix(frames.labels[part].numpy(), predicted.numpy(), k)
    result = scores(confusion)
    print(f"`trained-regions` on `{name}`'s folder (default config), held out: mIoU {100 * result.miou:.1f}")
    print("| class | IoU % |\n|---|---:|")
    for c, v in zip(vocabulary.classes, result.iou, strict=True):
        print(f"| {c} | {'-' if np.isnan(v) else f'{100 * v:.1f}'} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", type=Path)
    parser.add_argument("--pair", nargs=2, metavar=("A", "B"))
    parser.add_argument("--regions", metavar="NAME")
    parser.add_argument("--margin", type=float, default=10.0)
    args = parser.parse_args()
    found = records(args.spec)
    tables(found)
    if args.pair:
        complementarity(found, *args.pair, args.margin)
    if args.regions:
        regions_quality(args.spec, args.regions)


if __name__ == "__main__":
    main()
