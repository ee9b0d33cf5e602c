"""Compact codes of per-pixel feature maps: 8-bit quantisation and a per-scene PCA basis.

Both decode to float16 maps, as the ``dense`` encoding stores them, so a reader fuses
them exactly as it fuses dense maps. What they cost in accuracy on real frames is
measured by ``benchmarks/feature_encodings.py`` (``docs/stages/extract2d.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

INT8_MAX = 127


def quantize_int8(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., C) float features -> (..., C) int8 codes and (...,) float16 scales: symmetric per
    pixel, scale = max |x| / 127 (rounded to float16 first, so that decoding multiplies by the
    scale the codes were made with). A zero pixel has scale 0 and codes 0."""
    scale = (features.abs().amax(-1) / INT8_MAX).to(torch.float16)
    divisor = scale.float()[..., None]
    codes = torch.where(divisor > 0, features.float() / divisor.clamp(min=torch.finfo(torch.float32).tiny), 0.0)
    return codes.round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8), scale


def dequantize_int8(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float16 features of ``quantize_int8``'s codes (code x scale is exact in float32)."""
    return (codes.float() * scale.float()[..., None]).to(torch.float16)


@dataclass
class PCABasis:
    """A scene's principal components: features ~ mean + coefficients @ components."""

    components: torch.Tensor
    """(P, C) float32 orthonormal rows, by decreasing variance."""
    mean: torch.Tensor
    """(C,) float32."""

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """(..., C) features -> (..., P) float16 coefficients."""
        centred = features.float() - self.mean.to(features.device)
        return (centred @ self.components.to(features.device).T).to(torch.float16)

    def decode(self, coefficients: torch.Tensor) -> torch.Tensor:
        """(..., P) coefficients -> (..., C) float16 features."""
        device = coefficients.device
        return (coefficients.float() @ self.components.to(device) + self.mean.to(device)).to(torch.float16)


def fit_pca(samples: torch.Tensor, channels: int) -> PCABasis:
    """The ``channels`` (at most C) leading principal components of (M, C) samples, from the
    float64 covariance; each component's largest-magnitude entry is made positive, so the
    basis is a function of the samples alone."""
    x = samples.double()
    mean = x.mean(0)
    centred = x - mean
    _, vectors = torch.linalg.eigh(centred.T @ centred)  # eigenvalues ascending
    components = vectors.flip(-1)[:, : min(channels, x.shape[1])].T
    peak = components.gather(1, components.abs().argmax(1, keepdim=True))
    components = components * torch.where(peak < 0, -1.0, 1.0).to(components.dtype)
    return PCABasis(components.float().contiguous(), mean.float())
