"""``maps: stream``: extract2d stores no per-frame maps, and what reads them (``project``,
``denoise``) runs the teacher instead, writing byte for byte what it writes from stored maps."""

import logging

import numpy as np
import pytest
from conftest import toy_plan_dict

from ovlift.cache_schema import iter_arrays
from ovlift.cache_schema.groups.extract2d import TeacherFeatures
from ovlift.errors import StageInputError
from ovlift.kernels.fusion import DenseFeatures, MaskFeatures
from ovlift.pipeline.plan import plan_from_dict
from ovlift.pipeline.runner import Runner
from ovlift.stages.base import StageContext
from ovlift.stages.extract2d import Extract2DStage

FRAMES = 7


class BatchDependent:
    """A teacher whose every output is shifted by the sum of its batch's frame indices: streamed
    and stored agree only where frames are grouped into the same batches. Records each batch."""

    def __init__(self, teacher, calls):
        self.inner, self.calls = teacher, calls

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, batch):
        self.calls.append(batch.frame_index.tolist())
        out, shift = self.inner(batch), 0.01 * float(batch.frame_index.sum())
        if isinstance(out, DenseFeatures):
            return DenseFeatures(out.images + shift, out.valid)
        return MaskFeatures(out.ids, out.weights, out.embeddings + shift)


@pytest.fixture
def calls(monkeypatch):
    """The frame batches the teacher ran, in order."""
    found = []
    load = Extract2DStage.load_teacher
    monkeypatch.setattr(Extract2DStage, "load_teacher", lambda self, ctx: BatchDependent(load(self, ctx), found))
    return found


def plan(store, maps, encoding="dense", teacher_stride=1, project_stride=1, teacher=(), **stages):
    """One toy scene of 7 frames; teacher batches of 3 frames, project batches of 2 (so that
    project's reads span two teacher batches)."""
    data = toy_plan_dict(store, num_scenes=1, num_frames=FRAMES, image_height=48, image_width=64)
    entry = {"implementation": "synthetic", "feature_height": 24, "feature_width": 32, "bleed_px": 2}
    entry |= {"encoding": encoding, "frame_stride": teacher_stride, "frames_per_batch": 3, "maps": maps}
    entry |= {"top_k": 2, "pca_channels": 6, "pca_fit_frames": 2, **dict(teacher)}
    if encoding == "masks":
        entry["spurious_rate"] = 0.5  # overlapping masks, ids renumbered across batches
    project = {"cut_bound": 1, "frame_stride": project_stride, "frames_per_batch": 2}
    data["stages"] |= {"extract2d": {"t": entry}, "project": project, **stages}
    return plan_from_dict(data)


def arrays(runner, stage):
    group = runner.store.read(f"scenes/toy_0000/{stage}")
    return {name: array[...] for name, array in iter_arrays(group.group)}


@pytest.mark.parametrize(
    "encoding, teacher_stride, project_stride",
    [("dense", 1, 1), ("masks", 1, 1), ("masks", 2, 1), ("dense-int8", 1, 3), ("dense-pca", 2, 3), ("dense", 3, 2)],
)
def test_streamed_and_stored_maps_give_identical_project_outputs(
    tmp_path, calls, encoding, teacher_stride, project_stride
):
    stored = Runner(plan(tmp_path / "stored.zarr", "store", encoding, teacher_stride, project_stride))
    stored.run(fail_fast=True)
    calls.clear()
    streamed = Runner(plan(tmp_path / "streamed.zarr", "stream", encoding, teacher_stride, project_stride))
    streamed.run(stages=["extract2d/t"], fail_fast=True)
    extracted = arrays(streamed, "extract2d/t")
    assert set(extracted) == {"frames"} | ({"pca_components", "pca_mean"} if encoding == "dense-pca" else set())
    assert streamed.store.read("scenes/toy_0000/extract2d/t").info["maps"] == "streamed"
    fit = len(calls)  # the PCA's fit pass, the only teacher run extraction makes
    streamed.run(fail_fast=True)

    expected, got = arrays(stored, "project"), arrays(streamed, "project")
    assert expected.keys() == got.keys() and "fused/t/seen" in got  # features plain or deduplicated, alike
    for name in expected:
        assert expected[name].tobytes() == got[name].tobytes(), name
    # each teacher batch holding a frame project reads ran once, grouped as extraction groups
    teacher_frames = np.arange(0, FRAMES, teacher_stride)
    batches = [teacher_frames[i : i + 3].tolist() for i in range(0, len(teacher_frames), 3)]
    read = set(range(0, FRAMES, project_stride))
    assert calls[fit:] == [b for b in batches if read & set(b)]


def test_streamed_and_stored_maps_give_identical_denoised_views(tmp_path, calls):
    """CUS3D's 3D filter re-reads every view's feature (twice: vote, then keep)."""
    stages = {"segment": {}, "objects": {"source": "region-growing"}, "denoise": {"frames_per_batch": 2}}
    confused = {"confusion": {"chair": {"sofa": 0.4}, "table": {"desk": 0.4}}}
    outputs = {}
    for maps in ("store", "stream"):
        runner = Runner(plan(tmp_path / f"{maps}.zarr", maps, "masks", teacher=confused, **stages))
        runner.run(fail_fast=True)
        outputs[maps] = arrays(runner, "denoise")
    assert outputs["store"].keys() == outputs["stream"].keys() and "features" in outputs["store"]
    for name, value in outputs["store"].items():
        assert value.tobytes() == outputs["stream"][name].tobytes(), name
    assert runner.store.read("scenes/toy_0000/denoise").info["filtered_views"] > 0


def test_a_streamed_group_is_a_cache_hit_for_stored_maps_and_force_stores_them(tmp_path, calls):
    runner = Runner(plan(tmp_path / "s.zarr", "stream"))
    runner.run(fail_fast=True)
    project = arrays(runner, "project")
    group = runner.store.read("scenes/toy_0000/extract2d/t")
    with pytest.raises(StageInputError, match="stores no feature maps.*maps: stream"):
        TeacherFeatures(group).read(np.arange(2))

    store = Runner(plan(tmp_path / "s.zarr", "store"))
    assert store.run().counts() == {"cached": 3}  # not fingerprinted: the same results
    report = store.run(force=["extract2d/t"])
    assert report.counts() == {"ran": 2, "cached": 1}  # project reruns on the new version, to the same bytes
    assert "features" in arrays(store, "extract2d/t")
    assert all(value.tobytes() == arrays(store, "project")[name].tobytes() for name, value in project.items())


def test_a_streamed_group_refuses_a_plan_whose_teacher_differs(tmp_path, calls):
    runner = Runner(plan(tmp_path / "s.zarr", "stream"))
    runner.run(fail_fast=True)
    group = runner.store.read("scenes/toy_0000/extract2d/t")
    ctx = StageContext("toy_0000", {}, None, "cpu", logging.getLogger("test"), text=runner.text)
    same = plan(tmp_path / "s.zarr", "stream", teacher={"frames_per_batch": 5}).stages["extract2d/t"].stage
    assert same.features(group, ctx).batch == 3  # runtime fields may differ: batches are the group's
    other = plan(tmp_path / "s.zarr", "stream", teacher_stride=2).stages["extract2d/t"].stage
    with pytest.raises(StageInputError, match="streamed by another config than the plan's extract2d 't'"):
        other.features(group, ctx)
