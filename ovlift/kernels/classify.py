"""Features to classes by cosine to prompt embeddings: the one rule every stage labels with."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classify(
    features: torch.Tensor, prompts: torch.Tensor, prompt_class: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(max cosine similarity, class of that prompt) of each (n, C) feature against (P, C) prompts."""
    similarity, best = (F.normalize(features.float(), dim=1) @ prompts.T.to(features.device).float()).max(dim=1)
    return similarity, prompt_class.to(best.device)[best]
