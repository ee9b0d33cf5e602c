"""Projection + occlusion kernels against a slow per-point loop, and against the
toy renderer's ray-cast ground truth."""

import numpy as np
import pytest
import torch

from ovlift.datasets.toy import ToyConfig, ToyDataset
from ovlift.kernels.fusion import (
    DenseFeatures,
    FeatureFusion,
    FrameBatch,
    MaskFeatures,
    TeacherBatch,
    project_and_fuse,
    vote_counts,
)
from ovlift.kernels.projection import (
    Correspondences,
    DepthCamera,
    VisibilityRule,
    project_points,
    resize_depth,
    rigid_inverse,
    scale_intrinsics,
    visible_correspondences,
)


def reference_pixel(m, k, p):
    """Camera z and rounded (row, col) of point p, in Python floats."""
    px, py, pz = p
    cx = m[0][0] * px + m[0][1] * py + m[0][2] * pz + m[0][3]
    cy = m[1][0] * px + m[1][1] * py + m[1][2] * pz + m[1][3]
    z = m[2][0] * px + m[2][1] * py + m[2][2] * pz + m[2][3]
    if not z > 0:
        return z, -1, -1
    return z, round(k[1][1] * cy / z + k[1][2]), round(k[0][0] * cx / z + k[0][2])  # half to even, like torch


def reference_visibility(points, world_to_cam, intrinsics, hw, rule, depth=None, pose_valid=None, depth_camera=None):
    """The obvious loop: every frame, every point, the rules written out in Python floats.
    ``depth_camera``: (world_to_depth, depth intrinsics) of a depth image at its own size."""
    height, width = hw
    found = []
    for f in range(len(world_to_cam)):
        if pose_valid is not None and not pose_valid[f]:
            continue
        m, k = world_to_cam[f].tolist(), intrinsics[f].tolist()
        for i, p in enumerate(points.tolist()):
            z, row, col = reference_pixel(m, k, p)
            if not z > 0:
                continue
            cut = rule.cut_bound
            if not (cut <= col < width - cut and cut <= row < height - cut):
                continue
            if depth is not None and depth_camera is not None:
                md, kd = depth_camera[0][f].tolist(), depth_camera[1][f].tolist()
                z, row_d, col_d = reference_pixel(md, kd, p)
                inside = z > 0 and 0 <= row_d < depth.shape[1] and 0 <= col_d < depth.shape[2]
                d = float(depth[f, row_d, col_d]) if inside else 0.0
            elif depth is not None:
                d = float(depth[f, row, col])
            if depth is not None:
                tol = rule.depth_tolerance * d if rule.tolerance_kind == "relative" else rule.depth_tolerance
                if not (d > 0 and abs(d - z) <= tol):
                    continue
            found.append((i, f, row, col))
    return sorted(found)


def as_tuples(c: Correspondences):
    return sorted(zip(c.point_index.tolist(), c.frame_index.tolist(), c.pixel[:, 0].tolist(), c.pixel[:, 1].tolist()))


def look_at(eye, target):
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, np.cross(forward, right), forward, eye
    return pose


def random_scene(seed, frames=6, n=400, hw=(24, 32)):
    """Points in a box, cameras around it (some inside the cloud: points behind them),
    depth from a z-buffer with noise, holes (0) and clutter in front, two invalid poses."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-1, 1, size=(n, 3))
    poses = np.stack(
        [look_at(rng.uniform(-2.5, 2.5, 3) * [1, 1, 0.4], rng.uniform(-0.3, 0.3, 3)) for _ in range(frames)]
    )
    poses[1] = look_at(np.array([0.1, 0.0, 0.0]), np.array([1.0, 0.3, 0.1]))  # inside the cloud
    pose_valid = np.ones(frames, bool)
    poses[2], pose_valid[2] = np.nan, False
    poses[4, :3, :3] = 0.0  # finite but not invertible
    pose_valid[4] = False
    k = np.array([[20.0, 0, 15.5], [0, 20.0, 11.5], [0, 0, 1]])
    intrinsics = np.repeat(k[None], frames, 0)
    w2c = rigid_inverse(torch.from_numpy(np.where(pose_valid[:, None, None], poses, np.eye(4))))
    depth = noisy_depth(points, w2c, intrinsics, hw, rng)
    return points, w2c, intrinsics, depth, pose_valid, hw


def noisy_depth(points, w2c, intrinsics, hw, rng):
    """Depth images of the points (z-buffer) with noise, holes (0) and clutter."""
    z, x, y = project_points(torch.from_numpy(points), w2c, torch.from_numpy(intrinsics))
    depth = np.zeros((len(w2c), *hw))
    for f in range(len(w2c)):
        zbuf = np.full(hw, np.inf)
        for zi, xi, yi in zip(z[f].numpy(), x[f].numpy(), y[f].numpy()):
            r, c = int(np.round(yi)), int(np.round(xi))
            if zi > 0 and 0 <= r < hw[0] and 0 <= c < hw[1]:
                zbuf[r, c] = min(zbuf[r, c], zi)
        filled = np.isfinite(zbuf)
        depth[f][filled] = zbuf[filled] * rng.uniform(0.9, 1.1, filled.sum())
        depth[f][~filled] = rng.uniform(0.5, 4, (~filled).sum())
        depth[f][rng.uniform(size=hw) < 0.15] = 0.0  # invalid depth
    return depth


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "rule",
    [
        VisibilityRule(0.25, "relative", 2),
        VisibilityRule(0.05, "relative", 0),
        VisibilityRule(0.2, "absolute", 3),
        VisibilityRule(0.02, "absolute", 0),
    ],
)
def test_kernel_matches_the_reference_loop_exactly_with_depth(seed, rule, kernel_backend):
    points, w2c, k, depth, pose_valid, hw = random_scene(seed)
    args = (torch.from_numpy(points), w2c, torch.from_numpy(k), hw, rule)
    got = visible_correspondences(*args, depth=torch.from_numpy(depth), pose_valid=torch.from_numpy(pose_valid))
    expected = reference_visibility(points, w2c.numpy(), k, hw, rule, depth, pose_valid)
    assert len(expected) > 50  # the scene really exercises visibility
    assert as_tuples(got) == expected
    assert not set(got.frame_index.tolist()) & {2, 4}  # invalid poses skipped


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("rule", [VisibilityRule(0.25, "relative", 2), VisibilityRule(0.1, "absolute", 0)])
def test_kernel_matches_the_reference_loop_with_a_separate_depth_camera(seed, rule, kernel_backend):
    """ScanNet-like: the depth image has its own size, intrinsics and a small offset from the
    colour camera; pixels come from colour, the depth test from the depth camera."""
    points, w2c, k, _, pose_valid, hw = random_scene(seed)
    rng = np.random.default_rng(100 + seed)
    depth_hw = (15, 21)
    kd = np.repeat(np.array([[11.0, 0, 10.2], [0, 12.0, 7.1], [0, 0, 1]])[None], len(k), 0)
    depth_to_color = np.eye(4)
    depth_to_color[:3, :3] = (
        look_at(np.zeros(3), np.array([0.05, 1.0, 0.02]))[:3, :3]
        @ look_at(np.zeros(3), np.array([0.0, 1.0, 0.0]))[:3, :3].T
    )  # a small rotation
    depth_to_color[:3, 3] = rng.normal(0, 0.05, 3)
    w2d = rigid_inverse(rigid_inverse(w2c) @ torch.from_numpy(depth_to_color))
    depth = noisy_depth(points, w2d, kd, depth_hw, rng)
    camera = DepthCamera(w2d, torch.from_numpy(kd))
    got = visible_correspondences(
        torch.from_numpy(points),
        w2c,
        torch.from_numpy(k),
        hw,
        rule,
        depth=torch.from_numpy(depth),
        pose_valid=torch.from_numpy(pose_valid),
        depth_camera=camera,
    )
    expected = reference_visibility(points, w2c.numpy(), k, hw, rule, depth, pose_valid, (w2d.numpy(), kd))
    registered = reference_visibility(points, w2c.numpy(), k, hw, rule, None, pose_valid)
    assert 30 < len(expected) < len(registered)  # the depth camera's test really removes pairs
    assert as_tuples(got) == expected


def reference_zbuffer(points, world_to_cam, intrinsics, hw, radius):
    """The obvious z-buffer: every point splats its z over its square, the least wins, 0 = empty."""
    height, width = hw
    zbuf = np.full((len(world_to_cam), height, width), np.inf)
    for f in range(len(world_to_cam)):
        m, k = world_to_cam[f].tolist(), intrinsics[f].tolist()
        for px, py, pz in points.tolist():
            cx = m[0][0] * px + m[0][1] * py + m[0][2] * pz + m[0][3]
            cy = m[1][0] * px + m[1][1] * py + m[1][2] * pz + m[1][3]
            z = m[2][0] * px + m[2][1] * py + m[2][2] * pz + m[2][3]
            if not z > 0:
                continue
            col, row = round(k[0][0] * cx / z + k[0][2]), round(k[1][1] * cy / z + k[1][2])
            if 0 <= col < width and 0 <= row < height:
                r0, r1, c0, c1 = max(row - radius, 0), row + radius + 1, max(col - radius, 0), col + radius + 1
                zbuf[f, r0:r1, c0:c1] = np.minimum(zbuf[f, r0:r1, c0:c1], z)
    return np.where(np.isfinite(zbuf), zbuf, 0.0)


@pytest.mark.parametrize("seed", [5, 6])
@pytest.mark.parametrize("radius", [0, 1, 2])
def test_lidar_zbuffer_equals_the_depth_test_against_the_points_own_depth_image(seed, radius, kernel_backend):
    points, w2c, k, _, _, hw = random_scene(seed)
    valid = torch.ones(len(w2c), dtype=torch.bool)
    valid[[2, 4]] = False  # invalid poses: their rows of w2c are identity stand-ins
    rule = VisibilityRule(0.1, "relative", 1, zbuffer_px=radius)
    got = visible_correspondences(torch.from_numpy(points), w2c, torch.from_numpy(k), hw, rule, None, valid)
    zbuf = reference_zbuffer(points, w2c.numpy(), k, hw, radius)
    expected = reference_visibility(points, w2c.numpy(), k, hw, rule, zbuf, valid.numpy())
    without = reference_visibility(points, w2c.numpy(), k, hw, rule, None, valid.numpy())
    assert as_tuples(got) == expected
    assert 50 < len(expected) < len(without)  # the test removes occluded points, and only those


@pytest.mark.parametrize("seed", [3, 4])
def test_kernel_matches_the_reference_loop_exactly_without_depth(seed, kernel_backend):
    points, w2c, k, _, pose_valid, hw = random_scene(seed)
    rule = VisibilityRule(cut_bound=1)
    got = visible_correspondences(
        torch.from_numpy(points), w2c, torch.from_numpy(k), hw, rule, None, torch.from_numpy(pose_valid)
    )
    expected = reference_visibility(points, w2c.numpy(), k, hw, rule, None, pose_valid)
    assert len(expected) > 50
    assert as_tuples(got) == expected


def test_float32_points_give_the_same_correspondences_as_float64():
    points, w2c, k, depth, pose_valid, hw = random_scene(5)
    points32 = points.astype(np.float32)
    rule = VisibilityRule(0.25, "relative", 1)
    got = visible_correspondences(
        torch.from_numpy(points32), w2c, torch.from_numpy(k), hw, rule, torch.from_numpy(depth)
    )
    assert as_tuples(got) == reference_visibility(points32.astype(np.float64), w2c.numpy(), k, hw, rule, depth)


def test_scaled_intrinsics_follow_the_half_pixel_convention():
    k = torch.tensor([[585.0, 0, 320.0], [0, 585.0, 240.0], [0, 0, 1]], dtype=torch.float64)
    small = scale_intrinsics(k, (480, 640), (240, 320))
    assert small[0, 0] == 292.5 and small[1, 1] == 292.5
    assert small[0, 2] == (320 + 0.5) / 2 - 0.5 and small[1, 2] == (240 + 0.5) / 2 - 0.5
    # a point projects to x in the big image and to (x + 0.5) s - 0.5 in the small one
    p = torch.tensor([[0.3, -0.2, 2.0]], dtype=torch.float64)
    eye = torch.eye(4, dtype=torch.float64)[None]
    _, xb, yb = project_points(p, eye, k[None])
    _, xs, ys = project_points(p, eye, small[None])
    assert torch.allclose(xs, (xb + 0.5) / 2 - 0.5) and torch.allclose(ys, (yb + 0.5) / 2 - 0.5)
    # and the pixel centres of a 2x area-downsampled image line up with it
    image = torch.arange(480 * 640, dtype=torch.float64).reshape(1, 1, 480, 640)
    pooled = torch.nn.functional.interpolate(image, size=(240, 320), mode="area")
    assert pooled[0, 0, 10, 20] == image[0, 0, 20:22, 40:42].mean()  # centre (10, 20) <-> (20.5, 40.5)
    assert scale_intrinsics(k, (480, 640), (480, 640)).equal(k)


def test_depth_resize_takes_the_nearest_pixel_centre():
    depth = torch.arange(16.0).reshape(1, 4, 4)
    small = resize_depth(depth, (2, 2))
    # pixel centre 0 of the small image is at 0.5 of the big one: rows/cols 1 and 3
    assert small[0].tolist() == [[5.0, 7.0], [13.0, 15.0]]


def reference_fusion(num_points, corr, features, has, reduce):
    out = np.zeros((num_points, features.shape[-1]), np.float64)
    count = np.zeros(num_points, np.int64)
    for p, f, (r, c) in zip(corr.point_index.tolist(), corr.frame_index.tolist(), corr.pixel.tolist()):
        if not has[f, r, c]:  # no feature at that pixel: not a view
            continue
        value = features[f, r, c].astype(np.float64)
        if reduce == "mean":
            out[p] += value
        else:
            out[p] = value if count[p] == 0 else np.maximum(out[p], value)
        count[p] += 1
    if reduce == "mean":
        out = out / np.maximum(count, 1)[:, None]
    return out, count


def random_features(shape, encoding, rng):
    """Features of some kind with pixels that have none, and the (T, h, w, C) maps and
    (T, h, w) "has a feature" a loop reads."""
    t, h, w, c = shape
    if encoding == "dense":
        maps = rng.normal(size=shape).astype(np.float16)
        has = rng.random((t, h, w)) > 0.3
        return lambda sel: DenseFeatures(torch.from_numpy(maps[sel]), torch.from_numpy(has[sel])), maps, has
    k, q = 2, 9
    ids = rng.integers(-1, q, (t, h, w, k)).astype(np.int32)
    weights = rng.random((t, h, w, k)).astype(np.float16) * (rng.random((t, h, w, k)) > 0.3)
    emb = rng.normal(size=(q, c)).astype(np.float16)
    maps = MaskFeatures(torch.from_numpy(ids), torch.from_numpy(weights), torch.from_numpy(emb)).decode().numpy()
    has = ((weights > 0) & (ids >= 0)).any(-1)
    return (
        lambda sel: MaskFeatures(torch.from_numpy(ids[sel]), torch.from_numpy(weights[sel]), torch.from_numpy(emb)),
        maps,
        has,
    )


@pytest.mark.parametrize("encoding", ["dense", "masks"])
@pytest.mark.parametrize("reduce", ["mean", "max"])
def test_streamed_fusion_matches_a_loop_over_correspondences(reduce, encoding, kernel_backend):
    points, w2c, k, depth, pose_valid, hw = random_scene(6)
    valid = np.flatnonzero(pose_valid)
    rng = np.random.default_rng(0)
    source, features, has = random_features((len(w2c), *hw, 7), encoding, rng)
    rule = VisibilityRule(0.25, "relative", 0)
    fusion = FeatureFusion(len(points), 7, reduce)
    batches = [  # two batches of the valid frames
        FrameBatch(
            torch.from_numpy(sel),
            w2c[sel],
            torch.from_numpy(k[sel]),
            torch.from_numpy(depth[sel]),
            {"t": TeacherBatch(source(sel), torch.arange(len(sel)))},
        )
        for sel in np.array_split(valid, 2)
    ]
    corr, views = project_and_fuse(torch.from_numpy(points), batches, hw, rule, {"t": fusion})
    assert as_tuples(corr) == reference_visibility(points, w2c.numpy(), k, hw, rule, depth, pose_valid)
    assert corr.point_index.tolist() == sorted(corr.point_index.tolist())
    fused, count = fusion.result()
    expected, expected_count = reference_fusion(len(points), corr, features, has, reduce)
    assert (expected_count > 0).sum() > 50
    assert ((views > 0) & (count == 0)).any()  # points seen only where the teacher has no feature
    np.testing.assert_array_equal(count.numpy(), expected_count)
    np.testing.assert_allclose(fused.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_vote_counts_match_a_loop():
    rng = np.random.default_rng(1)
    point_index = torch.from_numpy(rng.integers(0, 30, 500))
    labels = torch.from_numpy(rng.integers(-1, 5, 500))
    votes = vote_counts(point_index, labels, 30, 5)
    expected = np.zeros((30, 5), np.int32)
    for p, lab in zip(point_index.tolist(), labels.tolist()):
        if lab >= 0:
            expected[p, lab] += 1
    np.testing.assert_array_equal(votes.numpy(), expected)


def test_merge_by_point_equals_a_stable_sort_of_the_concatenation(kernel_backend):
    rng = np.random.default_rng(2)
    parts, frame = [], 0
    for size in (0, 50, 200, 1, 120):  # frame-ordered parts, as batches produce them
        frames = np.sort(rng.integers(frame, frame + 4, size))
        frame += 4
        parts.append(
            Correspondences(
                torch.from_numpy(rng.integers(0, 40, size).astype(np.int32)),
                torch.from_numpy(frames.astype(np.int32)),
                torch.from_numpy(rng.integers(0, 99, (size, 2)).astype(np.int16)),
            )
        )
    point = np.concatenate([p.point_index.numpy() for p in parts])
    frames = np.concatenate([p.frame_index.numpy() for p in parts])
    pixel = np.concatenate([p.pixel.numpy() for p in parts])
    order = np.argsort(point, kind="stable")
    merged, counts = Correspondences.merge_by_point(parts, 45)
    assert parts == []  # consumed as placed
    np.testing.assert_array_equal(merged.point_index.numpy(), point[order])
    np.testing.assert_array_equal(merged.frame_index.numpy(), frames[order])
    np.testing.assert_array_equal(merged.pixel.numpy(), pixel[order])
    np.testing.assert_array_equal(counts.numpy(), np.bincount(point, minlength=45))
    assert merged.frame_index.dtype == torch.int32 and merged.pixel.dtype == torch.int16


@pytest.mark.slow
def test_visibility_agrees_with_ray_cast_ground_truth_on_toy_scenes():
    """A point is visible exactly when the ray from the camera reaches it. The kernel's
    rule (nearest pixel, depth within 2 cm) agrees on >= 99% of point-frame pairs.
    Without noise: the ground truth asks whether a point lies exactly on the surface hit."""
    ds = ToyDataset(ToyConfig(num_frames=8, image_height=480, image_width=640, surface_noise_m=0, depth_noise=0))
    agree_all, agree_frustum, total, in_frustum = 0, 0, 0, 0
    for scene_id in ("toy_0000", "toy_0001"):
        scene = ds.build(scene_id)
        frames = [scene.render(i) for i in range(len(scene.cam_to_world))]
        points = torch.from_numpy(scene.points)
        w2c = rigid_inverse(torch.from_numpy(scene.cam_to_world))
        k = torch.from_numpy(np.stack([f.intrinsics for f in frames]))
        depth = torch.from_numpy(np.stack([f.depth for f in frames]))
        hw = (480, 640)
        z, x, y = project_points(points, w2c, k)
        frustum = (
            (z > 0)
            & (torch.round(x) >= 0)
            & (torch.round(y) >= 0)
            & (torch.round(x) < hw[1])
            & (torch.round(y) < hw[0])
        )
        truth = torch.zeros_like(frustum)
        for f in range(len(frames)):
            idx = torch.nonzero(frustum[f], as_tuple=True)[0]
            t = scene.first_hit_distance(scene.cam_to_world[f, :3, 3], scene.points[idx.numpy()].astype(np.float64))
            truth[f, idx] = torch.from_numpy(t >= 1 - 1e-6)
        c = visible_correspondences(points, w2c, k, hw, VisibilityRule(0.02, "absolute", 0), depth)
        seen = torch.zeros_like(frustum)
        seen[c.frame_index, c.point_index] = True
        agree_all += int((seen == truth).sum())
        agree_frustum += int((seen == truth)[frustum].sum())
        total += truth.numel()
        in_frustum += int(frustum.sum())
    print(
        f"toy visibility vs ray cast: {agree_all / total:.2%} of all point-frame pairs, "
        f"{agree_frustum / in_frustum:.2%} of pairs inside the image"
    )
    assert agree_all / total >= 0.99
    assert agree_frustum / in_frustum >= 0.96


def random_masks(rng, b, h, w, k, q, c):
    ids = rng.integers(-1, q, (b, h, w, k))
    weights = rng.uniform(0, 1, (b, h, w, k)).astype(np.float16)
    emb = rng.normal(size=(q, c)).astype(np.float16)
    return MaskFeatures(torch.from_numpy(ids.astype(np.int32)), torch.from_numpy(weights), torch.from_numpy(emb))


def test_mask_features_decode_to_the_weighted_sum_of_their_masks():
    rng = np.random.default_rng(3)
    masks = random_masks(rng, 2, 5, 6, 3, 7, 4)
    dense = masks.decode().numpy()
    ids, weights, emb = masks.ids.numpy(), masks.weights.numpy().astype(np.float64), masks.embeddings.numpy()
    for b, r, c in [(0, 0, 0), (1, 4, 5), (0, 2, 3), (1, 1, 1)]:
        expected = sum(
            weights[b, r, c, j] * emb[ids[b, r, c, j]].astype(np.float64) for j in range(3) if ids[b, r, c, j] >= 0
        )
        np.testing.assert_allclose(dense[b, r, c], expected if np.ndim(expected) else np.zeros(4), rtol=1e-5, atol=1e-5)


def test_fusing_masks_equals_fusing_their_decoded_maps_and_skips_frames_a_teacher_lacks(kernel_backend):
    points, w2c, k, depth, pose_valid, hw = random_scene(7)
    valid = np.flatnonzero(pose_valid)
    rng = np.random.default_rng(4)
    rule = VisibilityRule(0.25, "relative", 0)
    masks = random_masks(rng, len(valid), *hw, 2, 11, 5)
    dense = DenseFeatures(masks.decode(), masks.coverage())  # as extract2d stores masks densely
    has = np.array([0, 2, 3])  # the teacher has features for 3 of the 4 valid frames
    results = []
    for source in (masks, dense):
        sub = (
            MaskFeatures(source.ids[has], source.weights[has], source.embeddings)
            if isinstance(source, MaskFeatures)
            else DenseFeatures(source.images[has], source.valid[has])
        )
        fusion = FeatureFusion(len(points), 5)
        batch = FrameBatch(
            torch.from_numpy(valid),
            w2c[valid],
            torch.from_numpy(k[valid]),
            torch.from_numpy(depth[valid]),
            {"t": TeacherBatch(sub, torch.from_numpy(has))},
        )
        corr, views = project_and_fuse(torch.from_numpy(points), [batch], hw, rule, {"t": fusion})
        results.append(fusion.result())
    (fm, cm), (fd, cd) = results
    np.testing.assert_allclose(fm.numpy(), fd.numpy(), rtol=1e-5, atol=1e-5)
    assert cm.equal(cd)
    frames = corr.frame_index.numpy()
    lacking = valid[1]
    assert (frames == lacking).any()  # the projection saw that frame ...
    pixel = corr.pixel.numpy().astype(int)
    covered = masks.coverage().numpy()[np.searchsorted(valid, frames), pixel[:, 0], pixel[:, 1]]
    expected = np.bincount(corr.point_index.numpy()[(frames != lacking) & covered], minlength=len(points))
    np.testing.assert_array_equal(cm.numpy(), expected)  # ... the teacher's fusion did not, nor maskless pixels
