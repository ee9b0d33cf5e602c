"""CUS3D's 2D filter (``kernels.mask_vote``) against a per-pixel loop, as the
released code computes it."""

import pytest
import torch

from ovlift.kernels.mask_vote import mask_weights


def reference(probs, labels, threshold, overlap, num_classes, fallback, max_masks):
    """The obvious per-pixel loop."""
    q, h, w = probs.shape
    out = torch.zeros(q + (fallback == "image-mean"), h, w)
    area = [(probs[j] > threshold).sum().item() for j in range(q)]
    for y in range(h):
        for x in range(w):
            cands = [j for j in range(q) if probs[j, y, x] > threshold]
            if not cands:
                if fallback == "image-mean":
                    out[q, y, x] = 1
                continue
            if overlap == "all":
                kept = cands
            elif overlap == "largest":
                kept = [max(cands, key=lambda j: (area[j], -j))]
            else:
                count = [sum(1 for j in cands if labels[j] == c) for c in range(num_classes)]
                mass = [sum(probs[j, y, x].item() for j in cands if labels[j] == c) for c in range(num_classes)]
                if overlap == "vote":  # most votes, then most probability, then lowest class
                    winner = min(range(num_classes), key=lambda c: (-count[c], -mass[c], c))
                else:  # most probability, then lowest class
                    winner = min(range(num_classes), key=lambda c: (-mass[c], c))
                kept = [j for j in cands if labels[j] == winner]
            if max_masks is not None:
                kept = sorted(kept, key=lambda j: (-probs[j, y, x].item(), j))[:max_masks]
            for j in kept:
                out[j, y, x] = 1 / len(kept)
    return out


@pytest.mark.parametrize("overlap", ["vote", "weighted", "all", "largest"])
@pytest.mark.parametrize("fallback", ["none", "image-mean"])
def test_the_kernel_matches_a_per_pixel_loop_ties_included(overlap, fallback):
    """Probabilities on a grid of eighths (exact sums), few classes and many masks:
    count ties, probability ties and equal areas all happen."""
    gen = torch.Generator().manual_seed(0)
    for trial in range(12):
        q, k = [0, 1, 3, 6, 9, 12][trial % 6], [1, 2, 3][trial % 3]
        probs = torch.randint(0, 9, (q, 5, 7), generator=gen).float() / 8
        probs *= torch.rand(q, 5, 7, generator=gen) < 0.6  # masks cover part of the image
        labels = torch.randint(0, k, (q,), generator=gen)
        max_masks = [None, 2][trial % 2]
        got = mask_weights(probs, labels, 0.35, overlap, k, fallback, max_masks)
        want = reference(probs, labels, 0.35, overlap, k, fallback, max_masks)
        torch.testing.assert_close(got, want, msg=f"trial {trial}: q={q}, k={k}, max_masks={max_masks}")


def test_vote_and_weighted_differ_where_the_paper_and_the_code_do():
    """Two low-probability masks of class 0 against one confident mask of class 1:
    the paper's count vote keeps class 0, the code's probability vote class 1,
    ``all`` keeps all three, ``largest`` the biggest alone."""
    probs = torch.zeros(3, 1, 2)
    probs[:, 0, 0] = torch.tensor([0.4, 0.4, 0.95])
    probs[0, 0, 1] = 0.9  # mask 0 is the largest
    labels = torch.tensor([0, 0, 1])
    pixel = {rule: mask_weights(probs, labels, 0.35, rule, 2)[:, 0, 0].tolist() for rule in ["vote", "weighted", "all"]}
    assert pixel == {"vote": [0.5, 0.5, 0], "weighted": [0, 0, 1], "all": pytest.approx([1 / 3] * 3)}
    assert mask_weights(probs, labels, 0.35, "largest", 2)[:, 0, 0].tolist() == [1, 0, 0]
    assert mask_weights(probs, labels, 0.35, "all", 2, max_masks=1)[:, 0, 0].tolist() == [0, 0, 1]
    fallback = mask_weights(probs, labels, 0.5, "vote", 2, "image-mean")
    assert fallback[:, 0, 0].tolist() == [0, 0, 1, 0] and fallback[:, 0, 1].tolist() == [1, 0, 0, 0]
    assert mask_weights(probs, labels, 0.95, "vote", 2, "image-mean")[:, 0].tolist() == [[0, 0]] * 3 + [[1, 1]]
