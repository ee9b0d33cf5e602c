"""SAS's multi-teacher fusion: the kernel against SAS's released formula and slow loops,
the stage on published groups, and the pipeline on toy scenes."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovlift.kernels.teacher_fusion import (
    add_weights,
    capability_weights,
    fuse_teachers,
    linear_weights,
    teacher_predictions,
)

OTHER = 19
"""'other' in SAS's 21-class vocabulary (ScanNet-20 order, then ceiling)."""


def random_teachers(seed, t=2, n=300, k=21, c=16, share=0.3, seen_rate=1.0, prompts=None):
    """Unit prompts (k, c), teacher features near random classes (t, n, c), many of them
    'other', some points where every teacher agrees, seen masks, and a capability table
    quantised to tenths (ties) with 'other' 0, as SAS's released table has it."""
    g = torch.Generator().manual_seed(seed)
    if prompts is None:
        prompts = F.normalize(torch.randn(k, c, generator=g), dim=1)
    truth = torch.randint(0, k, (t, n), generator=g)
    truth[:, torch.rand(n, generator=g) < 0.15] = OTHER
    agree = torch.rand(n, generator=g) < share
    truth[:, agree] = truth[0, agree]
    features = 2.0 * prompts[truth] + 0.4 * torch.randn(t, n, c, generator=g)
    features = features.half().float()  # what project stores
    seen = torch.rand(t, n, generator=g) < seen_rate
    features[~seen] = 0
    capability = torch.randint(1, 11, (t, k), generator=g).double() / 10
    capability[:, OTHER] = 0
    return prompts, features, seen, capability


def released_sas_fusion(feat_l, feat_s, prompts, cap_l, cap_s):
    """``feat_fusion/fusion_scannet.py`` point by point, as METHODS.md 2.3 transcribes it:
    LSeg's 'other' points keep LSeg's feature; elsewhere wL = S_L[pL] + S_L[pS],
    wS = S_S[pS] + S_S[pL], normalised by their sum, softmax over /0.05."""
    out = torch.zeros(feat_l.shape, dtype=torch.float64)
    for i in range(len(feat_l)):
        p_l = int(torch.argmax(feat_l[i].double() @ prompts.double().T))
        p_s = int(torch.argmax(feat_s[i].double() @ prompts.double().T))
        if p_l == OTHER:
            out[i] = feat_l[i].double()
            continue
        w_l = float(cap_l[p_l] + cap_l[p_s])
        w_s = float(cap_s[p_s] + cap_s[p_l])
        w_l, w_s = w_l / (w_l + w_s), w_s / (w_l + w_s)
        e_l, e_s = math.exp(w_l / 0.05), math.exp(w_s / 0.05)
        w_l, w_s = e_l / (e_l + e_s), e_s / (e_l + e_s)
        out[i] = w_l * feat_l[i].double() + w_s * feat_s[i].double()
    return out


def kernel_fusion(features, seen, prompts, capability, **options):
    _, classes = teacher_predictions(features, prompts, torch.arange(len(prompts)))
    weights = capability_weights(classes, seen, capability, **options)
    return (*fuse_teachers(features, seen, weights), weights)


@pytest.mark.parametrize("seed", range(4))
def test_two_teachers_equal_sas_released_formula(seed):
    prompts, features, seen, capability = random_teachers(seed)
    fused, any_seen, winner, weights = kernel_fusion(features, seen, prompts, capability, other_class=OTHER)
    expected = released_sas_fusion(features[0], features[1], prompts, capability[0], capability[1])
    torch.testing.assert_close(fused.double(), expected, rtol=1e-5, atol=1e-5)
    assert any_seen.all() and torch.equal(winner, weights.argmax(dim=1))
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(len(weights), dtype=torch.float64))
    other = (features[0] @ prompts.T).argmax(dim=1) == OTHER
    assert other.any() and (weights[other, 0] == 1).all()  # LSeg's 'other' points keep LSeg's feature


def test_tau_005_on_normalised_scores_is_nearly_a_hard_switch_and_the_paper_halves():
    """METHODS.md's example: LSeg = window (.695), SEEM = picture; w_L = 0.995 (released)."""
    cap = torch.zeros(2, 21, dtype=torch.float64)
    cap[0, 8], cap[0, 10], cap[1, 8], cap[1, 10] = 0.695, 0.677, 0.302, 0.501
    classes, seen = torch.tensor([[8], [10]]), torch.ones(2, 1, dtype=torch.bool)
    w_code = capability_weights(classes, seen, cap, 0.05, "sum", OTHER)[0]
    s = torch.tensor([0.695 + 0.677, 0.302 + 0.501], dtype=torch.float64)
    torch.testing.assert_close(w_code, torch.softmax(s / s.sum() / 0.05, 0))
    assert w_code[0] > 0.99
    w_paper = capability_weights(classes, seen, cap, 0.05, "half", OTHER)[0]
    torch.testing.assert_close(w_paper, torch.softmax(s / 2 / 0.05, 0))  # Eq. 7: divided by 2
    assert w_paper[0] > w_code[0]  # at tau 0.05 the divisor matters


def generalised_loop(features, seen, prompts, capability, tau, normalise, other):
    """METHODS.md 2.3's N-teacher rule, point by point, over the teachers that see each point."""
    t, n, c = features.shape
    out, weights = torch.zeros(n, c, dtype=torch.float64), torch.zeros(n, t, dtype=torch.float64)
    for i in range(n):
        present = [u for u in range(t) if seen[u, i]]
        if not present:
            continue
        pred = {u: int(torch.argmax(features[u, i].double() @ prompts.double().T)) for u in present}
        if other is not None and 0 in present and pred[0] == other:
            weights[i, 0] = 1.0
        else:
            s = {v: sum(float(capability[v, pred[u]]) for u in present) for v in present}
            norm = sum(s.values()) if normalise == "sum" else len(present)
            e = {v: math.exp(s[v] / max(norm, 1e-12) / tau) for v in present}
            for v in present:
                weights[i, v] = e[v] / sum(e.values())
        out[i] = sum(weights[i, v] * features[v, i].double() for v in present)
    return out, weights


@pytest.mark.parametrize("normalise", ["sum", "half"])
@pytest.mark.parametrize("other", [OTHER, None])
def test_three_teachers_with_partial_views_equal_the_generalised_loop(normalise, other):
    prompts, features, seen, capability = random_teachers(7, t=3, n=250, seen_rate=0.7)
    tau = 0.05 if normalise == "sum" else 0.2
    fused, any_seen, winner, weights = kernel_fusion(
        features, seen, prompts, capability, temperature=tau, normalise=normalise, other_class=other
    )
    expected, expected_weights = generalised_loop(features, seen, prompts, capability, tau, normalise, other)
    torch.testing.assert_close(weights, expected_weights, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(fused.double(), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(any_seen, seen.any(dim=0)) and (~any_seen).any()  # some points no teacher sees
    assert (fused[~any_seen] == 0).all() and (weights[~any_seen] == 0).all() and (winner[~any_seen] == -1).all()
    assert (weights[~seen.T] == 0).all()  # an absent teacher has no weight
    top = weights.max(dim=1).values
    assert torch.equal(weights[any_seen, winner[any_seen]], top[any_seen])


def test_zero_scores_share_equally_and_ties_go_to_the_lowest_teacher():
    classes = torch.tensor([[3, 3, 3], [5, 3, 3]])
    seen = torch.tensor([[True, True, False], [True, True, True]])
    w = capability_weights(classes, seen, torch.zeros(2, 21), other_class=None)
    assert not w.isnan().any()
    torch.testing.assert_close(w, torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.0, 1.0]], dtype=torch.float64))
    _, _, winner = fuse_teachers(torch.ones(2, 3, 4), seen, w)
    assert winner.tolist() == [0, 0, 1]


def test_add_and_linear_baselines_equal_their_loops():
    prompts, features, seen, _ = random_teachers(3, t=3, n=200, seen_rate=0.6)
    features[:, 0], seen[:, 0] = 0, True  # seen, but no similarity to share out: equal weights
    similarity, _ = teacher_predictions(features, prompts, torch.arange(len(prompts)))
    add, _, _ = fuse_teachers(features, seen, add_weights(seen))
    torch.testing.assert_close(add, features.sum(dim=0))  # "Add": F_L + F_S (unseen features are 0)
    linear_w = linear_weights(similarity, seen)
    linear, _, _ = fuse_teachers(features, seen, linear_w)
    for i in range(features.shape[1]):
        present = [u for u in range(3) if seen[u, i]]
        sims = {u: max(0.0, float((F.normalize(features[u, i], dim=0) @ prompts.T).max())) for u in present}
        total = sum(sims.values())
        expected = {u: (sims[u] / total if total > 0 else 1 / len(present)) for u in present}
        for u in range(3):
            assert linear_w[i, u].item() == pytest.approx(expected.get(u, 0.0), rel=1e-5, abs=1e-7)
        want = sum((expected[u] * features[u, i] for u in present), torch.zeros(features.shape[2]))
        torch.testing.assert_close(linear[i], want, rtol=1e-5, atol=1e-6)


# ---- the stage on published groups -------------------------------------------------


class FakeText:
    """A text embedder: a fixed random unit vector per class name."""

    def __init__(self, channels):
        self.channels = channels

    def __call__(self, config, names):
        rows = []
        for name in names:
            g = torch.Generator().manual_seed(sum(map(ord, name)) * 7919 + len(name))
            rows.append(torch.randn(self.channels, generator=g))
        return F.normalize(torch.stack(rows), dim=1)


def publish(store, spec, path, arrays, info, fp="fp"):
    from ovlift.cache_schema import GroupMeta

    meta = GroupMeta(spec.stage, "test", "1", {}, {}, fp, {})
    with store.writer(path, spec, meta, path) as out:
        for name, value in arrays.items():
            out.write(name, value)
        out.set_info(**info)
    return store.read(path)


def project_group(store, features, seen, encoders):
    """A project group holding each teacher's fused features (no correspondences)."""
    from ovlift.cache_schema.groups.project import PROJECT_SPEC

    arrays = {
        "point_index": np.zeros(1, np.int32),
        "frame_index": np.zeros(1, np.int32),
        "pixel": np.zeros((1, 2), np.int16),
        "view_count": np.ones(features.shape[1], np.int32),
    }
    teachers = {}
    for name, f, s in zip(encoders, features, seen):
        arrays[f"fused/{name}/features"] = f.half().numpy()
        arrays[f"fused/{name}/seen"] = s.numpy()
        teachers[name] = {"channels": f.shape[1], "text_encoder": encoders[name]}
    info = {"feature_size": [1, 1], "frames": [0], "teachers": teachers}
    return publish(store, PROJECT_SPEC, PROJECT_SPEC.path("s"), arrays, info)


def capability_group(store, teachers, capability, vocab, encoder):
    from ovlift.cache_schema.groups.capability import CAPABILITY_SPEC

    t, k = capability.shape
    arrays = {
        "capability": capability.float().numpy(),
        "image_count": np.full(k, 2, np.int32),
        "per_image_iou": np.repeat(capability.float().numpy()[..., None], 2, axis=2),
    }
    info = {
        "teachers": teachers,
        "classes": list(vocab.classes),
        "vocabulary": vocab.name,
        "text_encoder": encoder,
        "generator": {"name": "test"},
        "iou": "mean",
    }
    return publish(store, CAPABILITY_SPEC, CAPABILITY_SPEC.path(), arrays, info)


def run_fuse(store, inputs, text, **config):
    import logging

    from ovlift.cache_schema import GroupMeta
    from ovlift.stages.base import StageContext
    from ovlift.stages.fuse import FuseConfig, FuseStage

    stage = FuseStage(FuseConfig(**config))
    ctx = StageContext("s", inputs, None, "cpu", logging.getLogger("test"), text=text)
    meta = GroupMeta("fuse", "sas", "1", stage.config.normalised(), {}, "fuse-fp", {})
    with store.writer(stage.path("s"), stage.spec, meta, "fuse") as out:
        stage.run(ctx, out)
    return store.read(stage.path("s"))


ENCODER = {"kind": "minilm", "path": None, "templates": "single"}


def test_stage_reads_the_global_capability_by_teacher_name_and_names_what_disagrees(tmp_path):
    from ovlift.cache_schema import Store
    from ovlift.errors import StageInputError
    from ovlift.vocabularies import SAS_SCANNET21, SCANNET20

    store, text = Store(tmp_path / "s.zarr"), FakeText(16)
    prompts = text(None, SAS_SCANNET21.classes)
    _, features, seen, capability = random_teachers(11, t=2, n=120, seen_rate=0.8, prompts=prompts)
    project = project_group(store, features, seen, {"lseg": ENCODER, "seem": {**ENCODER, "templates": "ensemble"}})
    rows = capability_group(store, ["seem", "extra", "lseg"], capability[[1, 0, 0]], SAS_SCANNET21, ENCODER)

    fuse = run_fuse(store, {"project": project, "capability": rows}, text, points_per_batch=50)
    fused, any_seen, winner, weights = kernel_fusion(features, seen, prompts, capability.float(), other_class=OTHER)
    np.testing.assert_array_equal(fuse.load("features"), fused.half().numpy())
    np.testing.assert_array_equal(fuse.load("weights"), weights.half().numpy())
    np.testing.assert_array_equal(fuse.load("seen"), any_seen.numpy())
    np.testing.assert_array_equal(fuse.load("winner"), winner.to(torch.int8).numpy())
    info = fuse.info
    assert info["teacher"] == "fused:lseg+seem" and info["teachers"] == ["lseg", "seem"]
    assert info["capability_source"] == "global/capability" and info["text_encoder"] == ENCODER
    np.testing.assert_allclose(info["capability"], capability.float().numpy())

    from ovlift.cache_schema.groups.lifted import lifted_features

    lifted = lifted_features({"fuse": fuse}, "fuse", None, "scene 's'")
    assert lifted.teacher == "fused:lseg+seem" and lifted.seen.sum() == any_seen.sum()

    inputs = {"project": project, "capability": rows}
    swapped = run_fuse(store, inputs, text, teachers=("seem", "lseg"), other_class=None)
    assert swapped.info["capability"] == info["capability"][::-1]  # rows follow the teacher names
    unswapped = run_fuse(store, inputs, text, other_class=None)
    np.testing.assert_array_equal(swapped.load("weights")[:, ::-1], unswapped.load("weights"))

    wrong = capability_group(store, ["lseg", "seem"], capability[:, :20], SCANNET20, ENCODER)
    with pytest.raises(StageInputError, match=r"capability's classes \['wall'.*'otherfurniture'\].*'sas-scannet21'"):
        run_fuse(store, {"project": project, "capability": wrong}, text)
    with pytest.raises(StageInputError, match=r"no row for teachers \['seem'\]"):
        run_fuse(store, {"project": project, "capability": rows}, text, capability={"lseg": {"wall": 1.0}})
    with pytest.raises(StageInputError, match="'lseg' in .*'minilm'.*'seem' in .*'clip'"):
        other = project_group(store, features, seen, {"lseg": ENCODER, "seem": {**ENCODER, "kind": "clip"}})
        run_fuse(store, {"project": other}, text, capability={"lseg": {}, "seem": {}})
    with pytest.raises(StageInputError, match="other_class 'other' is not in vocabulary 'scannet20'"):
        run_fuse(store, {"project": project}, text, vocabulary="scannet20", capability={"lseg": {}, "seem": {}})
    with pytest.raises(StageInputError, match=r"teachers \['odise'\], which project did not fuse"):
        run_fuse(store, {"project": project, "capability": rows}, text, teachers=("lseg", "odise"))


def test_config_refuses_denoise_and_out_of_range_capability():
    from pydantic import ValidationError

    from ovlift.stages.fuse import FuseConfig

    with pytest.raises(ValidationError, match="denoise holds one teacher's features"):
        FuseConfig(source="denoise")
    with pytest.raises(ValidationError, match=r"capability\['a'\]: values must lie in \[0, 1\]"):
        FuseConfig(capability={"a": {"chair": 1.5}})


# ---- the pipeline on toy scenes ----------------------------------------------------


CONFUSED = {"a": ("chair", "sofa"), "b": ("table", "desk")}
"""Teacher a sees every chair as a sofa, b every table as a desk (each is right where the other errs).
Confusing chair<->sofa in both directions would make the two teachers predict the same
(sofa, chair) pair on chairs and sofas alike, which no rule on predicted classes can undo."""


def fuse_plan(path, method="capability", distill=True):
    import yaml
    from conftest import tiny_pipeline_plan

    from ovlift.vocabularies import SCANNET20

    data = yaml.safe_load(tiny_pipeline_plan(path, epochs=1, num_scenes=2).read_text())
    base = data["stages"]["extract2d"].pop("t")
    for seed, (name, (true, seen_as)) in enumerate(CONFUSED.items()):
        data["stages"]["extract2d"][name] = {**base, "confusion": {true: {seen_as: 1.0}}, "seed": seed}
    capability = {
        name: {c: 0.2 if c == true else 0.8 for c in SCANNET20.classes} for name, (true, _) in CONFUSED.items()
    }
    data["stages"]["fuse"] = {
        "method": method,
        "capability": capability,
        "vocabulary": "scannet20",
        "other_class": None,
    }
    data["stages"]["distill"].update(source="fuse", label_weight=0.0)
    if not distill:
        for name in ("distill", "predict", "evaluate"):
            del data["stages"][name]
    path.write_text(yaml.safe_dump(data))
    return path


def class_iou(labels, truth, classes):
    """IoU of each named class (unseen points count as misses)."""
    from ovlift.vocabularies import SCANNET20

    ious = []
    for name in classes:
        c, valid = SCANNET20.index(name), truth >= 0
        inter = ((labels == c) & (truth == c) & valid).sum()
        union = (((labels == c) | (truth == c)) & valid).sum()
        ious.append(inter / union)
    return np.array(ious)


def test_capability_fusion_beats_each_teacher_on_their_weak_classes(tmp_path):
    """On toy rooms, fusing two teachers with complementary confusions by an inline
    capability labels chairs and tables better than either teacher, and the pipeline
    distils and predicts from the fused set. (That no training path reads a label:
    tests/test_label_free.py.)"""
    from test_denoise import run_plan

    from ovlift.cache_schema.groups.project import fused_features
    from ovlift.kernels.classify import classify
    from ovlift.models.text import TextEncoderConfig
    from ovlift.vocabularies import SCANNET20

    labelled, report = run_plan(fuse_plan(tmp_path / "labelled.yaml"))
    assert not report.failed, [o.error for o in report.failed]
    store = labelled.store
    prompts = labelled.text(TextEncoderConfig(), list(SCANNET20.classes))
    prompt_class = torch.arange(len(SCANNET20.classes))
    scores = {}
    for what in ("fused:a+b", "a", "b"):
        labels, truth = [], []
        for scene in store.scene_ids():
            if what.startswith("fused"):
                group = store.read(f"scenes/{scene}/fuse")
                features, seen = group.load("features"), group.load("seen")
            else:
                group = store.read(f"scenes/{scene}/project")
                features, seen = fused_features(group, what), group.load(f"fused/{what}/seen")
            label = classify(torch.from_numpy(features), prompts, prompt_class)[1].numpy()
            labels.append(np.where(seen, label, -1))
            truth.append(store.read(f"scenes/{scene}/input").load("labels"))
        scores[what] = class_iou(np.concatenate(labels), np.concatenate(truth), ("chair", "table"))
    fused, a, b = scores["fused:a+b"], scores["a"], scores["b"]  # IoU of chair, table
    assert a[0] < 0.05 and b[1] < 0.05 and a[1] > 0.5 and b[0] > 0.3, scores  # each fails on one class
    assert (fused >= 0.85 * np.maximum(a, b)).all(), scores  # each class keeps most of the better teacher's IoU
    assert fused.mean() > max(a.mean(), b.mean()) + 0.1, scores
    fuse = store.read("scenes/toy_0000/fuse")
    winner, weights = fuse.load("winner"), fuse.load("weights").astype(np.float32)
    assert set(np.unique(winner)) == {-1, 0, 1} and fuse.info["teachers"] == ["a", "b"]
    np.testing.assert_allclose(weights[winner >= 0].sum(axis=1), 1, atol=2e-3)
    predict, evaluate = store.read("scenes/toy_0001/predict"), store.read("global/evaluate")
    assert predict.info["source"] == "fuse" and predict.info["teacher"] == "fused:a+b"
    assert "labels_fused_2d" not in predict and set(evaluate.info["metrics"]) == {"2d", "3d", "ensemble"}


def test_plan_needs_a_capability_table_or_stage_and_reads_it_only_for_the_capability_method(tmp_path):
    import yaml

    from ovlift.pipeline.plan import PlanError, load_plan

    plan = load_plan(fuse_plan(tmp_path / "p.yaml", distill=False))
    assert plan.upstream("fuse") == ["project"]
    data = yaml.safe_load((tmp_path / "p.yaml").read_text())
    del data["stages"]["fuse"]["capability"]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(PlanError, match="needs the global 'capability' stage configured, or an inline capability"):
        load_plan(tmp_path / "p.yaml")
    data["stages"]["fuse"]["method"] = "linear"
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    assert load_plan(tmp_path / "p.yaml").upstream("fuse") == ["project"]
