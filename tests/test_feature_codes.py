"""The compact codes of feature maps (``kernels.feature_codes``) against slow, plain references,
and the stage's compact encodings against its dense one on a teacher whose exact cases are known."""

import numpy as np
import pytest
import torch
from conftest import toy_plan_dict

from ovlift.cache_schema.groups.extract2d import TeacherFeatures
from ovlift.kernels.feature_codes import PCABasis, dequantize_int8, fit_pca, quantize_int8
from ovlift.pipeline.plan import plan_from_dict
from ovlift.pipeline.runner import Runner


def int8_reference(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel by pixel: scale = max |x| / 127 in float16, codes = x / scale rounded half to even."""
    flat = features.reshape(-1, features.shape[-1])
    codes, scales = np.zeros(flat.shape, np.int8), np.zeros(len(flat), np.float16)
    for i, pixel in enumerate(flat):
        scales[i] = np.float16(np.abs(pixel).max() / np.float32(127))
        if scales[i] > 0:
            codes[i] = np.clip(np.round(pixel / np.float32(scales[i])), -127, 127)
    return codes.reshape(features.shape), scales.reshape(features.shape[:-1])


def test_int8_codes_are_the_per_pixel_reference_and_decode_within_half_a_step():
    rng = np.random.default_rng(0)
    features = (rng.normal(size=(3, 5, 7, 16)) * rng.lognormal(size=(3, 5, 7, 1)) * 10).astype(np.float32)
    features[0, 0, 0] = 0  # no scale: codes 0
    features[1, 2, 3, 4] = 1e4  # one channel dominates its pixel
    codes, scale = quantize_int8(torch.from_numpy(features))
    expected_codes, expected_scale = int8_reference(features)
    assert codes.dtype == torch.int8 and scale.dtype == torch.float16
    np.testing.assert_array_equal(codes.numpy(), expected_codes)
    np.testing.assert_array_equal(scale.numpy(), expected_scale)
    decoded = dequantize_int8(codes, scale).float().numpy()
    step = expected_scale.astype(np.float32)[..., None]
    assert (np.abs(decoded - features) <= step / 2 + np.abs(features) * 2**-11 + 1e-12).all()
    assert np.abs(codes.numpy()).max(-1).min() == 0 and (np.abs(codes.numpy()).max(-1)[scale.numpy() > 0] >= 126).all()


def pca_reference(samples: np.ndarray, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """The leading right singular vectors of the centred samples (float64 SVD)."""
    mean = samples.mean(0)
    _, _, vt = np.linalg.svd(samples - mean, full_matrices=False)
    return vt[:channels], mean


def test_pca_spans_the_reference_subspace_with_positive_peaks():
    rng = np.random.default_rng(1)
    samples = rng.normal(size=(2000, 24)) * np.geomspace(10, 0.1, 24) + rng.normal(size=24)
    basis = fit_pca(torch.from_numpy(samples.astype(np.float32)), 6)
    components, mean = pca_reference(samples.astype(np.float32).astype(np.float64), 6)
    got = basis.components.double().numpy()
    assert got.shape == (6, 24)
    np.testing.assert_allclose(got @ got.T, np.eye(6), atol=1e-6)
    np.testing.assert_allclose(np.abs(got @ components.T), np.eye(6), atol=1e-4)  # the same axes, in order
    np.testing.assert_allclose(basis.mean.numpy(), mean, atol=1e-5)
    peaks = got[np.arange(6), np.abs(got).argmax(1)]
    assert (peaks > 0).all()
    assert fit_pca(torch.from_numpy(samples.astype(np.float32)), 99).components.shape == (24, 24)  # at most C


@pytest.mark.parametrize("rank", [1, 5, 8])
def test_features_of_rank_at_most_p_reconstruct_to_float16_rounding(rank):
    rng = np.random.default_rng(rank)
    maps = (rng.normal(size=(4, 6, 9, rank)) @ rng.normal(size=(rank, 32)) + rng.normal(size=32)).astype(np.float32)
    features = torch.from_numpy(maps)
    basis = fit_pca(features.reshape(-1, 32), 8)
    decoded = basis.decode(basis.encode(features)).double().numpy()
    # coefficients and the decoded features are rounded to float16: a few units of 2^-11 relative
    scale = np.abs(maps - maps.reshape(-1, 32).mean(0)).max() + np.abs(maps).max()
    np.testing.assert_allclose(decoded, maps, atol=4 * 2**-11 * scale)
    if rank > 1:  # a component fewer than the rank loses a direction: the tolerance is tight enough to see it
        short = fit_pca(features.reshape(-1, 32), rank - 1)
        assert np.abs(short.decode(short.encode(features)).double().numpy() - maps).max() > 100 * 2**-11 * scale


def test_pca_basis_round_trips_a_known_basis_exactly():
    components = torch.eye(4, 6)[[2, 0]]  # two axes of six
    basis = PCABasis(components, torch.arange(6.0))
    features = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [1.5, 1.0, 4.0, 3.0, 4.0, 5.0]])
    np.testing.assert_array_equal(basis.encode(features).float().numpy(), [[0, 0], [2, 1.5]])
    np.testing.assert_array_equal(basis.decode(basis.encode(features)).float().numpy(), features.numpy())


def test_compact_encodings_decode_to_the_dense_maps_within_their_error(tmp_path):
    """The synthetic teacher without noise gives each pixel a class's text embedding (or a mix of
    them at bleeding borders): rank at most the scene's classes, so PCA at 64 components is exact
    to float16 rounding; int8 is within half a step of each pixel."""
    data = toy_plan_dict(tmp_path / "s.zarr", num_scenes=1, num_frames=5, image_height=48, image_width=64)
    teacher = {"implementation": "synthetic", "feature_height": 24, "feature_width": 32, "bleed_px": 2}
    data["stages"]["extract2d"] = {
        "dense": teacher,
        "int8": {**teacher, "encoding": "dense-int8"},
        "pca": {**teacher, "encoding": "dense-pca"},  # fitted on all 5 frames (16 at most)
        "pca4": {**teacher, "encoding": "dense-pca", "pca_channels": 4},
    }
    runner = Runner(plan_from_dict(data))
    runner.run(fail_fast=True)
    read = {
        name: TeacherFeatures(runner.store.read(f"scenes/toy_0000/extract2d/{name}")).read(np.arange(5))
        for name in ("dense", "int8", "pca", "pca4")
    }
    dense = read["dense"].images.double().numpy()
    for name in ("int8", "pca", "pca4"):
        assert torch.equal(read[name].valid, read["dense"].valid)
    group = runner.store.read("scenes/toy_0000/extract2d/int8")
    step = group.load("feature_scale").astype(np.float64)[..., None]
    assert group.load("feature_codes").dtype == np.int8
    assert (np.abs(read["int8"].images.double().numpy() - dense) <= step / 2 + 2**-10 * np.abs(dense) + 1e-6).all()
    assert runner.store.read("scenes/toy_0000/extract2d/pca").load("pca_coefficients").shape == (5, 24, 32, 64)
    valid = read["dense"].valid.numpy()  # the basis is fitted on pixels with a feature; the others have none
    np.testing.assert_allclose(read["pca"].images.double().numpy()[valid], dense[valid], atol=4 * 2**-11)
    assert np.abs(read["pca4"].images.double().numpy()[valid] - dense[valid]).max() > 0.05  # 4 components lose classes
