"""Per-point fusion of T teachers' features into one: SAS's capability weighting
(Sec. 3.3) and the baselines of its Tab. 3.

Every rule gives per-point weights (N, T), and the fused feature of a point is
``sum_t w_t F_t`` (``fuse_teachers``). Teachers are stacked on the first axis of
the inputs: ``features`` (T, N, C), ``seen`` (T, N). A teacher without a feature
at a point (``seen`` False) gets weight 0 there and the others share the weight;
a point no teacher sees gets all weights 0, a zero feature and winner -1.

- ``capability_weights`` (SAS): with P_u the class teacher u predicts at the
  point and S_t teacher t's capability row, ``s_t = sum_u S_t[P_u]``, normalised
  over the teachers, ``w = softmax(s_hat / tau)``. ``normalise="sum"`` divides by
  ``sum_t s_t`` (the released code, ``feat_fusion/fusion_scannet.py``);
  ``"half"`` divides by the number of teachers (the paper's Eq. 7 divides by 2
  for its two teachers; we divide by the N that see the point). With two teachers
  and ``"sum"`` this is exactly the released formula; with ``other_class`` set,
  points where teacher 0 predicts that class keep teacher 0's feature, as the code
  keeps LSeg's where LSeg says 'other'.
- ``add_weights`` ("Add"): weight 1 per teacher, ``F = sum_t F_t``.
- ``linear_weights`` ("Linear"): each teacher's max cosine to the text set,
  divided by their sum (a weighted mean; the scale changes no cosine downstream).
"""

from __future__ import annotations

from typing import Literal

import torch

from ovlift.kernels.classify import classify

Normalise = Literal["sum", "half"]
EPS = 1e-12
"""Guards the division by the summed scores where every score is 0."""


def teacher_predictions(
    features: torch.Tensor, prompts: torch.Tensor, prompt_class: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(max cosine (T, N), class (T, N)) of each teacher's (T, N, C) features, by ``classify``."""
    results = [classify(f, prompts, prompt_class) for f in features]
    return torch.stack([r[0] for r in results]), torch.stack([r[1] for r in results])


def capability_weights(
    classes: torch.Tensor,
    seen: torch.Tensor,
    capability: torch.Tensor,
    temperature: float = 0.05,
    normalise: Normalise = "sum",
    other_class: int | None = None,
) -> torch.Tensor:
    """(N, T) float64 weights from each teacher's class ``classes`` (T, N) and the
    capability table (T, K): SAS's rule (see the module doc)."""
    t = classes.shape[0]
    if capability.shape[0] != t or seen.shape != classes.shape:
        raise ValueError(
            f"capability {tuple(capability.shape)}, classes {tuple(classes.shape)} and seen {tuple(seen.shape)} "
            "must agree on the teachers (T)"
        )
    cap = capability.to(classes.device, torch.float64)
    seen_f = seen.to(torch.float64)
    # score[t, n] = sum over teachers u that see n of cap[t, classes[u, n]]
    score = (cap[:, classes] * seen_f[None]).sum(dim=1) * seen_f
    if normalise == "sum":
        score = score / score.sum(dim=0).clamp_min(EPS)
    elif normalise == "half":
        score = score / seen_f.sum(dim=0).clamp_min(1)
    else:
        raise ValueError(f"normalise must be 'sum' or 'half', got {normalise!r}")
    weights = torch.softmax((score / temperature).masked_fill(~seen, -torch.inf), dim=0)
    weights = torch.where(seen.any(dim=0), weights, 0.0)
    if other_class is not None:
        keep = seen[0] & (classes[0] == other_class)
        weights[:, keep] = 0.0
        weights[0, keep] = 1.0
    return weights.T


def add_weights(seen: torch.Tensor) -> torch.Tensor:
    """(N, T) float64: 1 for each teacher that sees the point ("Add": F = sum_t F_t)."""
    return seen.to(torch.float64).T


def linear_weights(similarity: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """(N, T) float64: each seen teacher's max cosine to the text set (``similarity``
    (T, N), negatives as 0) over their sum; equal weights where all are 0 ("Linear")."""
    seen_f = seen.to(torch.float64)
    score = similarity.to(torch.float64).clamp_min(0) * seen_f
    total = score.sum(dim=0)
    uniform = seen_f / seen_f.sum(dim=0).clamp_min(1)
    return torch.where(total > 0, score / total.clamp_min(EPS), uniform).T


def fuse_teachers(
    features: torch.Tensor, seen: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(fused features (N, C) float32 = sum_t w_t F_t, seen (N,) by any teacher, winner
    (N,) int64: the teacher of the largest weight, the lowest on a tie, -1 unseen)."""
    fused = torch.einsum("tnc,nt->nc", features.float(), weights.float())
    any_seen = seen.any(dim=0)
    winner = torch.where(any_seen, weights.argmax(dim=1), -1)
    return fused, any_seen, winner
