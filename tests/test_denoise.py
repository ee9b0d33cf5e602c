"""CUS3D's 3D object filter: the streamed kernel against a per-point loop, and the stage."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from ovlift.kernels.denoise import ObjectDenoiser


def denoise_loop(objects, point_index, labels, features, num_classes):
    """The paper's rule written out point by point (float64, lowest class wins a tie)."""
    n, c = len(objects), features.shape[1]
    views = {p: [] for p in range(n)}
    for p, label, f in zip(point_index.tolist(), labels.tolist(), features.double()):
        views[p].append((label, f))
    object_label = {}
    for o in sorted(set(objects.tolist()) - {-1}):
        counts = Counter(label for p in range(n) if objects[p] == o for label, _ in views[p])
        if counts:
            best = max(counts.values())
            object_label[o] = min(k for k, v in counts.items() if v == best)
    out = torch.zeros(n, c, dtype=torch.float64)
    has = torch.zeros(n, dtype=torch.bool)
    kept = torch.zeros(n, dtype=torch.int64)
    for p in range(n):
        o = int(objects[p])
        agreeing = [f for label, f in views[p] if o in object_label and label == object_label[o]]
        if agreeing:
            total = torch.zeros(c, dtype=torch.float64)
            for f in agreeing:
                total += f
            out[p], has[p], kept[p] = total / len(agreeing), True, len(agreeing)
    for p in range(n):
        o = int(objects[p])
        if o >= 0 and not has[p]:
            donors = [q for q in range(n) if objects[q] == o and kept[q] > 0]
            if donors:
                total = torch.zeros(c, dtype=torch.float64)
                for q in donors:
                    total += out[q]
                out[p] = total / len(donors)
                has[p] = True
    labels_out = [object_label.get(o, -1) for o in range(int(objects.max()) + 1)]
    return out, has, kept, labels_out


@pytest.mark.parametrize("seed", range(6))
def test_streamed_denoise_equals_the_per_point_loop(seed):
    g = torch.Generator().manual_seed(seed)
    n, m, k, c = 60, 400, 4 + seed % 3, 8
    objects = torch.randint(-1, 7, (n,), generator=g)
    point_index = torch.randint(0, n - 5, (m,), generator=g)  # the last points are never seen
    labels = torch.randint(0, k, (m,), generator=g)
    labels[:40] = 0  # some objects tie between classes: the lowest index must win
    features = torch.randn(m, c, generator=g).half().float()
    order = torch.randperm(m, generator=g)  # views arrive in any order, in chunks

    denoiser = ObjectDenoiser(objects, k, c)
    for chunk in order.split(37):
        denoiser.vote(point_index[chunk], labels[chunk])
    for chunk in order.split(53):
        agree = denoiser.agrees(point_index[chunk], labels[chunk])
        denoiser.keep(point_index[chunk][agree], features[chunk][agree])
    fast, has, kept = denoiser.result()

    slow, slow_has, slow_kept, slow_labels = denoise_loop(objects, point_index, labels, features, k)
    assert denoiser.object_labels()[0].tolist() == slow_labels
    assert torch.equal(has, slow_has) and torch.equal(kept, slow_kept)
    assert torch.equal(fast[has].float(), slow[slow_has].float())
    assert has[n - 5 :][objects[n - 5 :] >= 0].all()  # unseen points of voted objects get the object mean
    assert not has[objects < 0].any()


def test_object_vote_share_and_tie_rule():
    objects = torch.tensor([0, 0, 1, 1, -1])
    denoiser = ObjectDenoiser(objects, 3, 2)
    denoiser.vote(torch.tensor([0, 0, 1, 2, 3, 4, 4]), torch.tensor([2, 1, 2, 1, 0, 0, 0]))
    label, share, votes = denoiser.object_labels()
    assert label.tolist() == [2, 0] and votes.tolist() == [3, 2]  # object 1: classes 1 and 0 tie, 0 wins
    np.testing.assert_allclose(share.numpy(), [2 / 3, 1 / 2])


def cus3d_plan(path, objects_source="region-growing", num_scenes=3):
    """The tiny whole pipeline with CUS3D's stages: superpoints, objects, the 3D filter,
    a student distilled from the denoised features."""
    import yaml
    from conftest import tiny_pipeline_plan

    data = yaml.safe_load(tiny_pipeline_plan(path, epochs=2, num_scenes=num_scenes).read_text())
    data["stages"]["extract2d"]["t"]["confusion"] = {"chair": {"sofa": 0.4}, "table": {"desk": 0.4}}
    data["stages"].update(
        {"segment": {}, "objects": {"source": objects_source}, "denoise": {}},
    )
    data["stages"]["distill"]["source"] = "denoise"
    path.write_text(yaml.safe_dump(data))
    return path


def run_plan(plan_path, stages=None):
    from ovlift.pipeline.plan import load_plan
    from ovlift.pipeline.runner import Runner

    runner = Runner(load_plan(plan_path))
    report = runner.run(stages=stages)
    return runner, report


def test_cus3d_runs_label_free_and_names_its_oracle(tmp_path):
    """The whole CUS3D pipeline on labelled scenes: objects grown without labels, the filter at
    work. The oracle refuses scenes without instances, and what is built on it says so. (That
    no training path reads a label: tests/test_label_free.py.)"""
    from conftest import plan_without_ground_truth

    from ovlift.pipeline.plan import load_plan
    from ovlift.pipeline.runner import Runner

    labelled, report = run_plan(cus3d_plan(tmp_path / "labelled.yaml"))
    assert not report.failed, [o.error for o in report.failed]
    store = labelled.store
    objects, denoise = store.read("scenes/toy_0000/objects"), store.read("scenes/toy_0000/denoise")
    teacher = ("ground-truth labels and instances of the frames (extract2d 't')",)  # the synthetic stand-in
    assert objects.info["source"] == "region-growing" and denoise.oracles == teacher
    assert denoise.info["filtered_views"] > 0  # the confusions were voted out somewhere
    ids, label = objects.load("objects"), denoise.load("object_label")
    assert (label[ids[ids >= 0]] >= 0).mean() > 0.5  # most object points are in an object with votes
    evaluate = store.read("global/evaluate")
    assert set(evaluate.info["metrics"]) == {"fused_2d", "2d", "3d", "ensemble"} and evaluate.oracles == teacher

    unlabelled = Runner(plan_without_ground_truth(load_plan(cus3d_plan(tmp_path / "oracle.yaml", "ground-truth"))))
    report = unlabelled.run(stages=["objects"])
    assert report.failed and "needs array 'instances'" in report.failed[0].error
    oracle, report = run_plan(cus3d_plan(tmp_path / "oracle-labelled.yaml", "ground-truth"))
    assert not report.failed, [o.error for o in report.failed]
    evaluate = oracle.store.read("global/evaluate")
    assert evaluate.oracles == tuple(sorted(("ground-truth instances", *teacher)))
    title = (Path(evaluate.info["report"]) / "metrics.md").read_text().splitlines()[0]
    assert "ORACLE, reads ground truth: ground-truth instances" in title and "not label-free" in title
    report = json.loads((Path(evaluate.info["report"]) / "report.json").read_text())
    assert report["reads_ground_truth"] == list(evaluate.oracles)
