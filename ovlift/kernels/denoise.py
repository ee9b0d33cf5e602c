"""CUS3D's 3D object-level voting filter (Sec. 2.1.2), streamed over (point, view) pairs.

Every view of a point that has a teacher feature is labelled by cosine to the
class text embeddings. Each object's label is the mode of the labels of all its
(point, view) pairs (every observation votes, as the released code counts them;
a tie goes to the lowest class index). A point of an object keeps the mean of its
views that agree with the object's label; a point with no agreeing view (or no
view at all: the paper's rule, which also completes unseen parts of an object)
takes the mean of its object's kept point features. Points outside objects are
not touched here (the stage keeps their fused feature).

Two passes over the views, because the object labels are known only after the
last view voted: ``vote`` then ``keep``. Memory is (N, C) float64 plus one chunk;
float64 accumulation makes the result independent of the order views arrive in,
so it equals a per-point loop exactly (tests/test_denoise.py).
"""

from __future__ import annotations

import torch

from ovlift.kernels.fusion import vote_counts
from ovlift.kernels.scatter import scatter_add


class ObjectDenoiser:
    """Accumulates one scene's two passes; see the module docstring."""

    def __init__(self, objects: torch.Tensor, num_classes: int, channels: int) -> None:
        """``objects`` (N,) int: object id of each point, -1 for none."""
        self.objects = objects.to(torch.int64)
        self.num_objects = int(self.objects.max()) + 1 if len(self.objects) else 0
        self.num_classes = num_classes
        self.votes = torch.zeros(self.num_objects, num_classes, dtype=torch.int64, device=objects.device)
        self.sums = torch.zeros(len(objects), channels, dtype=torch.float64, device=objects.device)
        self.kept = torch.zeros(len(objects), dtype=torch.int64, device=objects.device)
        self._point_label: torch.Tensor | None = None

    def vote(self, point_index: torch.Tensor, labels: torch.Tensor) -> None:
        """Pass 1: the labels of some views (any order, any chunking)."""
        obj = self.objects[point_index]
        inside = obj >= 0
        self.votes += vote_counts(obj[inside], labels[inside], self.num_objects, self.num_classes)

    def object_labels(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(O,) label (-1: no votes), (O,) share of the votes it won, (O,) votes cast.

        ``argmax`` returns the first maximum, so a tie goes to the lowest class index."""
        total = self.votes.sum(1)
        won, label = self.votes.max(1) if self.num_objects else (total, total)
        label = torch.where(total > 0, label, torch.full_like(label, -1))
        share = won.to(torch.float64) / total.clamp(min=1)
        return label, share, total

    def point_labels(self) -> torch.Tensor:
        """(N,) the label of each point's object (-1: none, or an object without votes)."""
        if self._point_label is None:
            label = self.object_labels()[0]
            self._point_label = torch.where(self.objects >= 0, label[self.objects.clamp(min=0)], -1)
        return self._point_label

    def agrees(self, point_index: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(n,) bool: which of these views agree with their point's object label (after pass 1)."""
        target = self.point_labels()[point_index]
        return (target >= 0) & (labels == target)

    def keep(self, point_index: torch.Tensor, features: torch.Tensor) -> None:
        """Pass 2: the features of agreeing views (select them with ``agrees``)."""
        scatter_add(features.to(torch.float64), point_index, dim=0, out=self.sums)
        self.kept.index_add_(0, point_index, torch.ones_like(point_index))

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, C) float64 denoised features of object points, (N,) bool where set, (N,) kept views.

        A point outside objects, or in an object no view voted for, is not set."""
        kept = self.kept
        features = self.sums / kept.clamp(min=1)[:, None].to(torch.float64)
        has_own = kept > 0
        obj = self.objects
        contributes = has_own & (obj >= 0)
        object_sum = torch.zeros(self.num_objects, features.shape[1], dtype=torch.float64, device=obj.device)
        scatter_add(features[contributes], obj[contributes], dim=0, out=object_sum)
        object_count = torch.bincount(obj[contributes], minlength=self.num_objects)
        object_mean = object_sum / object_count.clamp(min=1)[:, None].to(torch.float64)
        fill = (obj >= 0) & ~has_own
        fill &= object_count[obj.clamp(min=0)] > 0
        features[fill] = object_mean[obj[fill]]
        return features, has_own | fill, kept
