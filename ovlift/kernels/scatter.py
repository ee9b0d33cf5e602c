"""Scatter reductions along dim 0: torch-scatter's kernels, or torch's own ``scatter_reduce``
for a CUDA tensor when torch-scatter was compiled without CUDA (``make setup`` builds it with
CUDA only where ``nvcc`` exists; without, it reports ``cuda_version() == -1`` and would fail on
CUDA tensors). Both give the same sums and maxima (``tests/test_scatter.py``); torch's are
slower on some shapes, which ``make gpu-check`` reports."""

from __future__ import annotations

import torch
import torch_scatter

TORCH_SCATTER_CUDA = int(torch.ops.torch_scatter.cuda_version()) != -1
"""Whether the installed torch-scatter has CUDA kernels."""


def backend(device: torch.device | str) -> str:
    """Which implementation serves tensors on ``device``: ``torch-scatter`` or ``torch``."""
    return "torch" if torch.device(device).type == "cuda" and not TORCH_SCATTER_CUDA else "torch-scatter"


def _native(t: torch.Tensor) -> bool:
    return backend(t.device) == "torch-scatter"


def _expanded(index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    return index.view(-1, *([1] * (src.dim() - 1))).expand_as(src)


def _output(src: torch.Tensor, index: torch.Tensor, out: torch.Tensor | None, dim_size: int | None) -> torch.Tensor:
    if out is not None:
        return out
    size = dim_size if dim_size is not None else (int(index.max()) + 1 if index.numel() else 0)
    return src.new_zeros((size, *src.shape[1:]))


def torch_scatter_add(src, index, out=None, dim_size=None) -> torch.Tensor:
    """``scatter_add`` by torch alone."""
    return _output(src, index, out, dim_size).scatter_add_(0, _expanded(index, src), src)


def torch_scatter_max(src, index, out=None, dim_size=None) -> torch.Tensor:
    """``scatter_max``'s values by torch alone: ``out``'s values take part, as in torch-scatter."""
    return _output(src, index, out, dim_size).scatter_reduce_(0, _expanded(index, src), src, "amax")


def torch_scatter_softmax(src, index, dim_size=None) -> torch.Tensor:
    """Softmax of ``src`` within each index group, by torch alone."""
    size = dim_size if dim_size is not None else int(index.max()) + 1
    top = src.new_full((size, *src.shape[1:]), float("-inf"))
    top = top.scatter_reduce_(0, _expanded(index, src), src, "amax", include_self=False)
    exp = (src - top[index]).exp()
    return exp / torch_scatter_add(exp, index, dim_size=size)[index]


def scatter_add(src, index, dim=0, out=None, dim_size=None) -> torch.Tensor:
    assert dim == 0, "ovlift scatters along dim 0 only"
    if _native(src):
        return torch_scatter.scatter_add(src, index, dim=0, out=out, dim_size=dim_size)
    return torch_scatter_add(src, index, out, dim_size)


def scatter_max(src, index, dim=0, out=None, dim_size=None) -> torch.Tensor:
    """The maxima only (ovlift never reads torch-scatter's argmax)."""
    assert dim == 0, "ovlift scatters along dim 0 only"
    if _native(src):
        return torch_scatter.scatter_max(src, index, dim=0, out=out, dim_size=dim_size)[0]
    return torch_scatter_max(src, index, out, dim_size)


def scatter_softmax(src, index, dim=0, dim_size=None) -> torch.Tensor:
    assert dim == 0, "ovlift scatters along dim 0 only"
    if _native(src):
        return torch_scatter.scatter_softmax(src, index, dim=0, dim_size=dim_size)
    return torch_scatter_softmax(src, index, dim_size)
