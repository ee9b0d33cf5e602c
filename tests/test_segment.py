"""Superpoints of toy rooms (welded, curved, noisy meshes) respect their objects' faces."""

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ovlift.datasets.toy import ToyConfig, ToyDataset
from ovlift.kernels.superpoints import mesh_edges, superpoints


def purity(segments: np.ndarray, instances: np.ndarray) -> float:
    """Share of points whose segment's majority instance is their own."""
    hits = 0
    for s in np.unique(segments):
        hits += np.bincount(instances[segments == s]).max()
    return hits / len(segments)


@pytest.mark.parametrize("graph", ["mesh", "knn"])
def test_toy_room_superpoints_respect_faces(graph):
    config = ToyConfig(num_frames=1, vertex_spacing_m=0.08, image_height=8, image_width=8)
    for scene in ("toy_0000", "toy_0001"):
        source = ToyDataset(config).load(scene)
        faces = source.faces if graph == "mesh" else None
        ids = superpoints(source.points.astype(np.float64), faces)
        instances = source.instances
        # the mesh is connected (walls, floor and furniture join), so separating them is real work
        graph_edges = mesh_edges(source.faces)
        adjacency = coo_matrix((np.ones(len(graph_edges)), graph_edges.T), shape=(len(ids), len(ids)))
        assert connected_components(adjacency, directed=False)[0] < len(np.unique(instances)) / 2
        assert len(np.unique(ids)) > len(np.unique(instances))
        assert purity(ids, instances) >= (0.95 if graph == "mesh" else 0.9), scene
