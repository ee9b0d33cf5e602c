"""CUS3D's 2D filter: which of the masks covering a pixel its feature averages.

A segmenter gives each mask a probability per pixel; a mask is a *candidate* at a
pixel where that probability exceeds the threshold (CUS3D's code: 0.35), and each
mask carries a label (the class its embedding is closest to). The rules:

* ``vote`` (the paper): the pixel's label is the mode of its candidates' labels,
  one vote per mask; the candidates of that label are averaged, the rest dropped.
  Ties between equally voted labels go to the larger summed probability, then to
  the lowest class index. (A count tie is common: one true mask against one
  spurious mask; a class-index tie-break would make the vote a coin flip there.)
* ``weighted`` (the released code's vote): votes weighted by mask probability;
  ties to the lowest class index; the candidates of the winner are averaged.
* ``all`` (what the released code effectively computes, its vote being unused:
  the ablation row "none"): every candidate. The code sums them; we average,
  because fusion averages unnormalised features across views, and a sum would
  weigh each view of a point by how many masks cover the pixel.
* ``largest``: the candidate with the largest area alone (an ablation).

A pixel without candidates has no feature (``fallback: none``), or, as in the
released code, the mean of all the image's mask embeddings (``image-mean``): an
extra row of weights, 1 exactly at those pixels, that the caller pairs with that
mean embedding, so the masks encoding stores it like any other mask.

Vectorised over pixels (the released code loops over them in Python); tested
against such a loop in ``tests/test_mask_vote.py``.
"""

from __future__ import annotations

from typing import Literal

import torch

Overlap = Literal["vote", "weighted", "all", "largest"]
Fallback = Literal["none", "image-mean"]


def mask_weights(
    probs: torch.Tensor,
    labels: torch.Tensor,
    threshold: float,
    overlap: Overlap,
    num_classes: int,
    fallback: Fallback = "none",
    max_masks: int | None = None,
) -> torch.Tensor:
    """Per-pixel weight of each mask: (Q, h, w), or (Q + 1, h, w) with ``image-mean``.

    ``probs`` (Q, h, w) mask probabilities, ``labels`` (Q,) class of each mask in
    [0, num_classes). At a pixel the kept masks weigh equally and sum to 1; the
    ``image-mean`` row (last) is 1 where no mask is kept, 0 elsewhere. Where more
    than ``max_masks`` masks are kept, the most probable ones are (ties: lower
    mask index), so that an encoding with that many slots stores them exactly.
    """
    if overlap not in ("vote", "weighted", "all", "largest"):
        raise ValueError(f"mask_weights: overlap must be vote, weighted, all or largest, not {overlap!r}")
    if fallback not in ("none", "image-mean"):
        raise ValueError(f"mask_weights: fallback must be none or image-mean, not {fallback!r}")
    probs = probs.float()
    candidate = probs > threshold
    if overlap == "all" or len(probs) == 0 or int(candidate.sum(0).max()) <= 1:
        keep = candidate  # a lone candidate is kept by every rule
    elif overlap == "largest":
        area = candidate.flatten(1).sum(1)
        score = torch.where(candidate, area[:, None, None], -1)
        mask_index = torch.arange(len(probs), device=probs.device)[:, None, None]
        keep = candidate & (mask_index == score.argmax(0))  # argmax: the lowest index among equals
    else:
        onehot = torch.nn.functional.one_hot(labels.long(), num_classes).float()  # (Q, K)
        mass = torch.einsum("qk,qhw->khw", onehot, probs * candidate)
        if overlap == "vote":
            count = torch.einsum("qk,qhw->khw", onehot, candidate.float())
            mass = torch.where(count == count.max(0).values, mass, -1.0)
        winner = mass.argmax(0)  # argmax: the lowest class index among equals
        keep = candidate & (labels.long()[:, None, None] == winner)
    kept = keep.sum(0)
    if max_masks is not None and int(kept.max()) > max_masks:
        order = torch.sort(torch.where(keep, probs, -1.0), dim=0, descending=True, stable=True).indices
        keep = keep & torch.zeros_like(keep).scatter_(0, order[:max_masks], True)
        kept = keep.sum(0)
    weights = keep / kept.clamp(min=1)
    if fallback == "image-mean":
        return torch.cat([weights, (kept == 0)[None].float()])
    return weights
