"""torch's own scatter reductions (used on CUDA when torch-scatter has no CUDA kernels)
against torch-scatter's, on random inputs."""

import pytest
import torch
import torch_scatter

from ovlift.kernels import scatter


@pytest.mark.parametrize("seed", range(3))
def test_torch_fallbacks_equal_torch_scatter(seed):
    g = torch.Generator().manual_seed(seed)
    n, groups = 500, 37
    index = torch.randint(0, groups, (n,), generator=g)
    src = torch.randn(n, 5, generator=g)
    start = torch.randn(groups + 3, 5, generator=g)  # empty groups and rows past the last index

    torch.testing.assert_close(
        scatter.torch_scatter_add(src, index, start.clone()), torch_scatter.scatter_add(src, index, 0, start.clone())
    )
    torch.testing.assert_close(
        scatter.torch_scatter_add(src, index, dim_size=groups + 3),
        torch_scatter.scatter_add(src, index, 0, dim_size=groups + 3),
    )
    torch.testing.assert_close(
        scatter.torch_scatter_max(src, index, start.clone()), torch_scatter.scatter_max(src, index, 0, start.clone())[0]
    )
    counts = torch.ones(n, dtype=torch.int32)
    torch.testing.assert_close(
        scatter.torch_scatter_add(counts, index, dim_size=groups),
        torch_scatter.scatter_add(counts, index, 0, dim_size=groups),
    )
    flat = src[:, 0] * 30  # large logits: the per-group maximum must be subtracted
    torch.testing.assert_close(
        scatter.torch_scatter_softmax(flat, index, groups),
        torch_scatter.scatter_softmax(flat, index, 0, dim_size=groups),
    )


def test_cpu_tensors_always_use_torch_scatter():
    assert scatter.backend("cpu") == "torch-scatter"
    assert scatter.backend("cuda") == ("torch-scatter" if scatter.TORCH_SCATTER_CUDA else "torch")
