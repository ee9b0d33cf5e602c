"""CLIP2Scene's terms against obvious loops, and its training on scenes without labels."""

import math

import pytest
import torch
import torch.nn.functional as F

from ovlift.models.clip2scene import choose_sweeps, pack_grids, semantic_eq1, ssr_loss


def test_grids_keep_the_first_points_of_each_cell_up_to_the_limit():
    g = torch.Generator().manual_seed(0)
    points = torch.rand(400, 3, generator=g, dtype=torch.float64) * 0.5
    keep, cell = pack_grids(points, 0.1, 3)
    cells: dict[tuple, list[int]] = {}
    for i, p in enumerate(points.tolist()):
        cells.setdefault(tuple(math.floor(v / 0.1) for v in p), []).append(i)
    expected = sorted(i for members in cells.values() for i in members[:3])
    assert sorted(keep.tolist()) == expected
    assert any(len(m) > 3 for m in cells.values())  # the limit bites
    # one cell id per cell, shared by exactly its kept members
    by_cell: dict[int, set] = {}
    for i, c in zip(keep.tolist(), cell.tolist()):
        by_cell.setdefault(c, set()).add(i)
    assert sorted(map(sorted, by_cell.values())) == sorted(sorted(m[:3]) for m in cells.values())


@pytest.mark.parametrize("with_pixels", [True, False])
def test_spatial_temporal_term_equals_the_per_cell_loop(with_pixels):
    g = torch.Generator().manual_seed(1)
    n, d, cells, lam = 50, 8, 9, 0.7
    point = torch.randn(n, d, generator=g, dtype=torch.float64)
    pixel = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    cell = torch.randint(0, cells, (n,), generator=g)
    cell[:cells] = torch.arange(cells)  # every cell used
    text = F.normalize(torch.randn(cells, d, generator=g, dtype=torch.float64), dim=1)
    got = ssr_loss(point, pixel if with_pixels else None, cell, text, lam)
    total, count = 0.0, 0
    for c in range(cells):
        members = [i for i in range(n) if cell[i] == c]
        t = text[c]
        weights = [math.exp(float(point[i] @ t) / lam) for i in members]
        vectors = [point[i] for i in members]
        if with_pixels:
            weights += [math.exp(float(pixel[i] @ t) / lam) for i in members]
            vectors += [pixel[i] for i in members]
        z = sum(weights)
        centre = sum(w / z * v for w, v in zip(weights, vectors))
        for i in members:
            total += 1 - 1 / (1 + math.exp(-float(point[i] @ centre)))
            count += 1
    assert got.item() == pytest.approx(total / count, rel=1e-9)


def test_paper_semantic_term_equals_its_per_class_sums():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(40, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (40,), generator=g)  # class 4 absent: no term
    got = semantic_eq1(logits, labels)
    terms = []
    for c in sorted(set(labels.tolist())):
        pos = sum(math.exp(logits[i, c]) for i in range(40) if labels[i] == c)
        neg = sum(math.exp(logits[i, c]) for i in range(40) if labels[i] != c)
        terms.append(-math.log(pos / neg))
    assert got.item() == pytest.approx(sum(terms) / len(terms), rel=1e-9)


def test_sweep_draws_keep_the_key_frame_and_draw_distinct_others():
    g = torch.Generator().manual_seed(3)
    draws = [choose_sweeps([0, 1, 2, 3, 4, 5], 3, g) for _ in range(200)]
    assert all(d[0] == 0 and len(set(d)) == 3 and set(d) <= set(range(6)) for d in draws)
    assert len({tuple(d) for d in draws}) == 10  # every pair of the 5 others turns up
    assert choose_sweeps([0, 2], 5, g) == [0, 2] and choose_sweeps([0], 1, g) == [0]
