"""``objects``' label-free region growing, against a slow reference written with sets and loops."""

import numpy as np
import pytest

from ovlift.stages.objects import ObjectsConfig, grow_regions, superpoint_contacts


def reference_contacts(points, superpoints, radius, k):
    """{(a, b): contacts}: every point against its k nearest others within ``radius``, by brute force."""
    found = {}
    distance = np.linalg.norm(points[:, None] - points[None], axis=2)
    for i in range(len(points)):
        order = np.argsort(distance[i], kind="stable")[: k + 1]  # itself first
        for j in order:
            if distance[i, j] >= radius or superpoints[i] < 0 or superpoints[j] < 0 or superpoints[i] == superpoints[j]:
                continue
            pair = tuple(sorted((int(superpoints[i]), int(superpoints[j]))))
            found[pair] = found.get(pair, 0) + 1
    return found


def reference_regions(points, superpoints, features, seen, cfg):
    """Regions as sets of superpoints: merge touching seen regions, most similar pair (by the
    superpoints' own mean features) first, while the regions' mean unit features agree; then
    unseen superpoints join the seen region they touch most."""
    count = int(superpoints.max()) + 1
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    total = {s: sum(unit[p] for p in range(len(points)) if superpoints[p] == s and seen[p]) for s in range(count)}
    has = {s: any(superpoints[p] == s and seen[p] for p in range(len(points))) for s in range(count)}
    region = {s: frozenset([s]) for s in range(count)}

    def cos(a, b):
        return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))

    def region_sum(r):
        return sum((total[s] for s in r if has[s]), np.zeros(features.shape[1]))

    def join(a, b):
        merged = region[a] | region[b]
        for s in merged:
            region[s] = merged

    contacts = reference_contacts(points, superpoints, cfg.adjacency_m, cfg.neighbours)
    seen_pairs = sorted(p for p in contacts if has[p[0]] and has[p[1]])
    similarity = {p: cos(total[p[0]], total[p[1]]) for p in seen_pairs}
    for a, b in sorted(seen_pairs, key=lambda p: -similarity[p]):
        if region[a] != region[b] and cos(region_sum(region[a]), region_sum(region[b])) >= cfg.feature_similarity:
            join(a, b)
    unseen_pairs = sorted(p for p in contacts if not (has[p[0]] and has[p[1]]))
    for a, b in sorted(unseen_pairs, key=lambda p: -contacts[p]):
        seen_a, seen_b = (any(has[s] for s in region[x]) for x in (a, b))
        if region[a] != region[b] and seen_a != seen_b:
            join(a, b)
    return region


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_region_growing_groups_superpoints_as_the_slow_reference_does(seed):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 2, (12, 3))  # superpoints: blobs of points
    superpoints = rng.integers(0, 12, 240)
    points = centres[superpoints] + rng.normal(0, 0.12, (240, 3))
    superpoints[rng.uniform(size=240) < 0.05] = -1  # points in no superpoint
    objects = rng.integers(0, 3, 12)  # three underlying objects with their own feature direction
    directions = rng.normal(size=(3, 16))
    features = directions[objects[superpoints.clip(min=0)]] + rng.normal(0, 0.4, (240, 16))
    seen = rng.uniform(size=240) < 0.8
    seen[np.isin(superpoints, [3, 7])] = False  # two superpoints no view saw
    cfg = ObjectsConfig(feature_similarity=0.8, adjacency_m=0.3, neighbours=6)

    contacts = superpoint_contacts(points, superpoints, cfg.adjacency_m, cfg.neighbours)
    expected = reference_contacts(points, superpoints, cfg.adjacency_m, cfg.neighbours)
    assert {(int(a), int(b)): int(c) for a, b, c in contacts} == expected

    grown = grow_regions(points, superpoints, features.astype(np.float32), seen, cfg)
    region = reference_regions(points, superpoints, features.astype(np.float32).astype(np.float64), seen, cfg)
    assert (grown[superpoints < 0] == -1).all()
    for s in range(12):  # same partition of the superpoints (region ids may differ)
        members = set(np.unique(superpoints[(grown == grown[superpoints == s][0]) & (superpoints >= 0)]).tolist())
        assert members == set(region[s]), (s, members, set(region[s]))
    assert 1 < len({region[s] for s in range(12)}) < 12  # merged some, not everything


@pytest.mark.parametrize("threshold, merged", [(0.6, 1), (0.8, 2)])
def test_regions_compare_their_mean_features_as_they_grow(threshold, merged):
    """Three superpoints in a row with features at 0, 30 and 60 degrees: neighbours agree at
    cos 0.87; once two of them merge, their mean meets the third at cos 0.71, so a threshold
    of 0.6 joins all three and one of 0.8 stops at two regions."""
    superpoints = np.repeat([0, 1, 2], 4)
    points = np.stack([np.arange(12) * 0.05, np.zeros(12), np.zeros(12)], 1)
    angle = np.radians([0, 30, 60])[superpoints]
    features = np.stack([np.cos(angle), np.sin(angle)], 1).astype(np.float32)
    cfg = ObjectsConfig(feature_similarity=threshold, adjacency_m=0.06, neighbours=2)
    grown = grow_regions(points, superpoints, features, np.ones(12, bool), cfg)
    assert len(np.unique(grown)) == merged
