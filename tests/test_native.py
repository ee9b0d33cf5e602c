"""The fusion and projection kernels (C++ CPU loops and the torch ops) against slow loops:
exactly the float32 sums a view-by-view loop computes, and the same pairs in the same order."""

import numpy as np
import pytest
import torch
from test_projection import as_tuples, random_scene, reference_visibility

from ovlift.kernels import native
from ovlift.kernels.fusion import DenseFeatures, FeatureFusion, MaskFeatures
from ovlift.kernels.projection import DepthCamera, VisibilityRule, rigid_inverse, visible_correspondences

FRAMES, HW = 3, (5, 7)


def random_views(rng, num_points, count):
    """``count`` views of some of the points, in no order: several views of a point in one
    frame, the same (point, frame, pixel) twice, points never seen."""
    point = rng.integers(0, num_points - 5, count)  # the last five points: no views
    point[: count // 4] = point[count // 4 : 2 * (count // 4)]  # repeats
    frame = rng.integers(0, FRAMES, count)
    pixel = np.stack([rng.integers(0, HW[0], count), rng.integers(0, HW[1], count)], 1)
    twice = rng.choice(count, count // 10, replace=False)
    return [np.concatenate([a, a[twice]]) for a in (point, frame, pixel)]


def random_source(rng, kind, channels):
    """A batch's features and the (FRAMES, h, w, C) float32 values a loop reads, None where no feature."""
    if kind == "masks":
        ids = rng.integers(-1, 6, (FRAMES, *HW, 2)).astype(np.int32)
        weights = (rng.random((FRAMES, *HW, 2)) * (rng.random((FRAMES, *HW, 2)) > 0.2)).astype(np.float16)
        emb = rng.normal(size=(6, channels)).astype(np.float16)
        source = MaskFeatures(torch.from_numpy(ids), torch.from_numpy(weights), torch.from_numpy(emb))
        values, has = source.decode().numpy(), ((weights > 0) & (ids >= 0)).any(-1)
    else:
        maps = torch.from_numpy(rng.normal(size=(FRAMES, *HW, channels)) * 10).to(getattr(torch, kind))
        has = rng.random((FRAMES, *HW)) > 0.2
        source = DenseFeatures(maps, torch.from_numpy(has))
        values = maps.float().numpy()  # what the kernel reads (float64 maps: rounded to float32 first)
    return source, np.where(has[..., None], values, np.nan)


def float32_loop(num_points, channels, batches, reduce):
    """View by view in the order given, in float32 as the kernels add: (sums or maxima, counts)."""
    acc = np.full((num_points, channels), 0.0 if reduce == "mean" else -np.inf, np.float32)
    count = np.zeros(num_points, np.int64)
    for values, (point, frame, pixel) in batches:
        for p, f, (r, c) in zip(point, frame, pixel):
            x = values[f, r, c]
            if np.isnan(x).any():
                continue
            acc[p] = acc[p] + x if reduce == "mean" else np.where(x > acc[p], x, acc[p])
            count[p] += 1
    return acc, count


@pytest.mark.parametrize("reduce", ["mean", "max"])
@pytest.mark.parametrize("kind", ["float16", "bfloat16", "float32", "float64", "masks"])
@pytest.mark.parametrize("channels", [7, 130])  # 130: two 64-channel blocks and a tail
def test_fusion_adds_each_points_views_in_order_as_a_float32_loop(reduce, kind, channels, kernel_backend):
    rng = np.random.default_rng(channels)
    num_points = 40
    fusion = FeatureFusion(num_points, channels, reduce)
    batches = []
    for size in (60, 0, 90):  # several batches, one empty
        source, values = random_source(rng, kind, channels)
        point, frame, pixel = random_views(rng, num_points, size)
        fusion.add(source, torch.from_numpy(frame), torch.from_numpy(pixel), torch.from_numpy(point))
        batches.append((values, (point, frame, pixel)))
    expected, expected_count = float32_loop(num_points, channels, batches, reduce)
    np.testing.assert_array_equal(fusion.accumulator.numpy(), expected)  # bit for bit, before the division
    fused, count = fusion.result()
    np.testing.assert_array_equal(count.numpy(), expected_count)
    assert (expected_count == 0).sum() >= 5 and (expected_count > 3).any()
    if reduce == "mean":
        np.testing.assert_array_equal(
            fused.numpy(), expected / np.maximum(expected_count, 1)[:, None].astype(np.float32)
        )
        mean64 = float64_mean(num_points, channels, batches)
        np.testing.assert_allclose(fused.numpy(), mean64, rtol=1e-3, atol=1e-3)  # within float16 output rounding
    else:
        np.testing.assert_array_equal(fused.numpy(), np.where(expected_count[:, None] > 0, expected, 0))


def float64_mean(num_points, channels, batches):
    total, count = np.zeros((num_points, channels)), np.zeros(num_points)
    for values, (point, frame, pixel) in batches:
        for p, f, (r, c) in zip(point, frame, pixel):
            if not np.isnan(values[f, r, c]).any():
                total[p] += values[f, r, c]
                count[p] += 1
    return total / np.maximum(count, 1)[:, None]


def test_fold_refuses_unsorted_or_out_of_range_indices(kernel_backend):
    if kernel_backend == "torch":
        pytest.skip("the C++ kernel's own checks")
    acc, table = torch.zeros(4, 8), torch.ones(3, 8, dtype=torch.float16)
    native.fold_rows(acc, table, torch.tensor([0, 0, 2]), torch.tensor([2, 1, 0]), "mean")
    assert acc[:, 0].tolist() == [2, 0, 1, 0]
    for point, row in [([2, 0], [0, 0]), ([0, 4], [0, 0]), ([0, 1], [0, 3]), ([-1, 0], [0, 0])]:
        with pytest.raises(RuntimeError):
            native.fold_rows(acc, table, torch.tensor(point), torch.tensor(row), "mean")


def pairs(c):
    return torch.stack([c.point_index, c.frame_index, c.pixel[:, 0], c.pixel[:, 1]], 1)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("variant", ["depth", "depth camera", "zbuffer", "no depth"])
def test_both_projection_paths_give_the_same_pairs_in_point_order(seed, variant, monkeypatch):
    if not native.available("cpu"):
        pytest.skip("the C++ kernels are switched off")
    points, w2c, k, depth, valid, hw = random_scene(seed, n=3000, hw=(48, 64))
    rule = VisibilityRule(0.25, "relative", 2, zbuffer_px=1 if variant == "zbuffer" else None)
    kw = {"depth": torch.from_numpy(depth) if variant in ("depth", "depth camera") else None}
    if variant == "depth camera":
        kw["depth_camera"] = DepthCamera(
            rigid_inverse(rigid_inverse(w2c) @ torch.eye(4, dtype=torch.float64)), torch.from_numpy(k) * 0.9
        )
    args = (torch.from_numpy(points), w2c, torch.from_numpy(k), hw, rule)
    got = [visible_correspondences(*args, pose_valid=torch.from_numpy(valid), **kw)]
    monkeypatch.setattr(native, "available", lambda device: False)
    got.append(visible_correspondences(*args, pose_valid=torch.from_numpy(valid), **kw))
    assert len(got[0]) > 500 and torch.equal(pairs(got[0]), pairs(got[1]))
    order = got[0].point_index * len(w2c) + got[0].frame_index
    assert bool((order[1:] > order[:-1]).all())  # by point, frames ascending within a point


def test_half_pixels_round_to_even_at_the_borders(kernel_backend):
    """Points projecting exactly onto x.5 at each border: torch.round's (and Python's) half to even."""
    height, width, cut = 10, 12, 2
    xs = np.array([-0.5, 0.5, 1.49, 1.5, 2.5, 8.5, 9.5, 9.51, 10.5, 11.5, 12.5])  # cols 2 and 8 inside
    ys = np.array([1.49, 1.5, 2.5, 3.5, 6.5, 7.49, 7.5, 8.5, np.nan])  # rows 2, 4, 6 and 7 inside (NaN: never)
    points = np.stack([np.repeat(xs, len(ys)), np.tile(ys, len(xs)), np.full(len(xs) * len(ys), 2.0)], 1)
    w2c = torch.eye(4, dtype=torch.float64)[None]
    k = np.array([[[2.0, 0, 0], [0, 2.0, 0], [0, 0, 1]]])  # pixel = 2 * p / 2: exactly p
    rule = VisibilityRule(cut_bound=cut)
    got = visible_correspondences(torch.from_numpy(points), w2c, torch.from_numpy(k), (height, width), rule)
    expected = reference_visibility(points, w2c.numpy(), k, (height, width), rule)
    assert as_tuples(got) == expected and 0 < len(expected) < len(points)
    assert {c for _, _, _, c in expected} == {2, 8} and {r for _, _, r, _ in expected} == {2, 4, 6, 7}


def test_the_cpu_loops_give_the_same_results_on_one_thread_or_several():
    """Workers split the views (and the points) between them: a point's views must stay one worker's."""
    if not native.available("cpu"):
        pytest.skip("the C++ kernels are switched off")
    rng = np.random.default_rng(5)
    point = torch.from_numpy(np.sort(rng.integers(0, 300, 40_000)))  # ~130 views a point: segments cross chunks
    row = torch.from_numpy(rng.integers(0, 500, 40_000))
    table = torch.from_numpy(rng.normal(size=(500, 70))).half()
    points, w2c, k, depth, _, hw = random_scene(4, n=20_000, hw=(48, 64))
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            acc = torch.zeros(300, 70)
            native.fold_rows(acc, table, point, row, "mean")
            rule = VisibilityRule(0.25, "relative", 1)
            pairs_ = pairs(
                visible_correspondences(
                    torch.from_numpy(points), w2c, torch.from_numpy(k), hw, rule, torch.from_numpy(depth)
                )
            )
            results.append((acc, pairs_))
    finally:
        torch.set_num_threads(threads)
    for acc, pairs_ in results[1:]:
        assert torch.equal(acc, results[0][0]) and torch.equal(pairs_, results[0][1])
    assert len(results[0][1]) > 5000
