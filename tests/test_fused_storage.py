"""Fused features stored deduplicated (``write_fused`` / ``fused_features``): lossless, byte for byte."""

import numpy as np
from test_clip2scene import street_plan

import ovlift.cache_schema.groups.project as project_group
from ovlift.cache_schema.groups.project import fused_features, write_fused
from ovlift.pipeline.plan import plan_from_dict
from ovlift.pipeline.runner import Runner


class Arrays(dict):
    """What write_fused writes, read back as a group is (``in``, ``load``)."""

    def write(self, name, value):
        self[name] = np.array(value)

    def load(self, name):
        return self[name]


def test_repeated_rows_are_stored_once_and_read_back_bit_for_bit():
    rng = np.random.default_rng(0)
    palette = rng.standard_normal((5, 8)).astype(np.float16)
    palette[1] = 0.0
    palette[2] = -0.0  # equal to 0.0 as a float, not as bytes: must come back negative
    palette[3, 0] = np.nan
    features = palette[rng.integers(0, 5, 100)]
    seen = rng.random(100) < 0.5
    out = Arrays()
    write_fused(out, "t", features, seen)
    assert "fused/t/features" not in out and out["fused/t/distinct"].shape == (5, 8)
    back = fused_features(out, "t")
    assert back.dtype == np.float16 and back.tobytes() == features.tobytes()
    np.testing.assert_array_equal(out["fused/t/seen"], seen)


def test_mostly_distinct_rows_stay_one_array():
    features = np.random.default_rng(1).standard_normal((100, 8)).astype(np.float16)
    features[:40] = features[0]  # 61 distinct rows of 100: not worth an index
    out = Arrays()
    write_fused(out, "t", features, np.ones(100, bool))
    assert set(out) == {"fused/t/features", "fused/t/seen"}
    assert fused_features(out, "t").tobytes() == features.tobytes()


def test_lidar_sweeps_are_stored_deduplicated_with_the_same_features(tmp_path, monkeypatch):
    """Points of several sweeps see the same pixels of the key frame's cameras: project stores the
    distinct rows, which read back exactly as the plain array a run that never deduplicates writes."""
    plans = {}
    for name, below in (("plain", 0.0), ("deduplicated", project_group.DEDUPLICATE_BELOW)):
        monkeypatch.setattr(project_group, "DEDUPLICATE_BELOW", below)
        data = street_plan(tmp_path / f"{name}.zarr")
        data["stages"] = {k: data["stages"][k] for k in ("input", "extract2d", "project")}
        runner = Runner(plan_from_dict(data))
        assert not runner.run(fail_fast=True).failed
        plans[name] = runner.store.read("scenes/toy_street_0000/project")
    plain, dedup = plans["plain"], plans["deduplicated"]
    assert "fused/maskclip/features" in plain and "fused/maskclip/features" not in dedup
    distinct = dedup.load("fused/maskclip/distinct")
    assert len(distinct) < 0.5 * dedup.dims["N"]
    assert fused_features(dedup, "maskclip").tobytes() == fused_features(plain, "maskclip").tobytes()
