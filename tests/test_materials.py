"""Toy appearance v3 (``ovlift/datasets/materials.py``) in rooms, object views and streets."""

import dataclasses
import hashlib

import numpy as np
import torch
from sklearn.neighbors import KNeighborsClassifier

from ovlift.datasets.materials import (
    INDOOR_MATERIALS,
    MATERIALS,
    STREET_MATERIALS,
    TEXTURES,
    hsv_to_rgb,
    surface_uv,
)
from ovlift.datasets.toy import ToyConfig, ToyDataset, _shade, make_toy_scene, object_view
from ovlift.datasets.toy_street import ToyStreetConfig, ToyStreetDataset, make_toy_street
from ovlift.kernels.metrics import confusion_matrix, scores
from ovlift.kernels.raycast import BOX, cast_rays
from ovlift.vocabularies import NUSCENES16, SCANNET20


def digest(*arrays: np.ndarray) -> str:
    d = hashlib.sha256()
    for a in arrays:
        d.update(np.ascontiguousarray(a).tobytes())
    return d.hexdigest()[:16]


def test_class_colour_reproduces_appearance_v2_exactly():
    """Digests of point colours and images computed with the generator before v3 (main at
    0bffd2f): rooms, an object view and a street's six cameras."""
    small = {"num_frames": 2, "image_height": 24, "image_width": 32, "vertex_spacing_m": 0.2}
    src = ToyDataset(ToyConfig(**small, appearance="class-colour")).load("toy_0001")
    assert digest(src.colors, src.read_frame(0).color, src.read_frame(1).color) == "8fb805a6d00302ef"
    view = object_view("chair", (3, 1), 24, 32, appearance="class-colour").render(0)
    assert digest(view.color) == "5500b864b02a0f40"
    config = ToyStreetConfig(
        num_scenes=1, num_sweeps=0, azimuth_steps=16, image_height=16, image_width=24, appearance="class-colour"
    )
    street = ToyStreetDataset(config).build("toy_street_0000")
    assert digest(*[street.render(i).color for i in range(6)]) == "791f5f0901f12085"
    # and v3 is another look of the same layout
    new = ToyDataset(ToyConfig(**small)).load("toy_0001")
    assert not np.array_equal(new.colors, src.colors)
    np.testing.assert_array_equal(new.points, src.points)
    np.testing.assert_array_equal(new.labels, src.labels)


def test_appearance_is_deterministic_from_seed_and_index_alone():
    """Scene i looks the same whatever the number of scenes, and different from scene j or
    another seed; the layout under it is the same as under the old look."""
    small = {"num_frames": 1, "image_height": 24, "image_width": 32, "vertex_spacing_m": 0.2}
    a = make_toy_scene(ToyConfig(num_scenes=2, **small), 1)
    b = make_toy_scene(ToyConfig(num_scenes=7, **small), 1)
    np.testing.assert_array_equal(a.point_albedo, b.point_albedo)
    np.testing.assert_array_equal(a.render(0).color, b.render(0).color)
    other_scene = make_toy_scene(ToyConfig(num_scenes=2, **small), 0)
    other_seed = make_toy_scene(ToyConfig(num_scenes=2, seed=1, **small), 1)
    for other in (other_scene, other_seed):
        assert not np.array_equal(a.looks.looks[0].colors, other.looks.looks[0].colors)
    street = {"num_sweeps": 0, "azimuth_steps": 16, "image_height": 16, "image_width": 24}
    s1 = make_toy_street(ToyStreetConfig(num_scenes=2, **street), 1).render(2)
    s2 = make_toy_street(ToyStreetConfig(num_scenes=5, **street), 1).render(2)
    np.testing.assert_array_equal(s1.color, s2.color)


def test_the_material_table_shares_materials_across_classes():
    """Every class draws from at least two materials (most from three or more), every
    material serves at least three classes, and every texture named exists."""
    tables = {"indoor": INDOOR_MATERIALS, "street": STREET_MATERIALS}
    assert set(INDOOR_MATERIALS) == {*SCANNET20.classes, "ceiling"}
    assert set(STREET_MATERIALS) == set(NUSCENES16.classes)
    served: dict[str, set[str]] = {m: set() for m in MATERIALS}
    for where, table in tables.items():
        for name, entry in table.items():
            materials = set(entry.body) | set(entry.trim)
            assert len(materials) >= 2, f"{where} class {name} draws from {materials}"
            for m in materials:
                served[m].add(f"{where}/{name}")
        many = sum(len(set(e.body) | set(e.trim)) >= 3 for e in table.values())
        assert many >= 0.8 * len(table), f"{where}: only {many} of {len(table)} classes have 3+ materials"
    assert all(len(classes) >= 3 for classes in served.values()), {m: c for m, c in served.items() if len(c) < 3}
    for m in MATERIALS.values():
        assert set(m.textures) <= set(TEXTURES)


def test_hsv_to_rgb_matches_the_standard_conversion():
    import colorsys

    rng = np.random.default_rng(0)
    hsv = rng.uniform([0, 0, 0], [360, 1, 1], (50, 3))
    expected = np.array([colorsys.hsv_to_rgb(h / 360, s, v) for h, s, v in hsv]) * 255
    np.testing.assert_allclose(hsv_to_rgb(hsv), expected, atol=1e-9)


def test_surface_uv_is_metres_across_the_normal_and_around_a_cylinder():
    position = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.5, 1.0, 0.7]])
    normal = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, 1.0], [0, 1.0, 0]])
    lo = np.array([[0.0, 0, 0], [0.0, 0, 0], [0.5, 0.5, 0.5], [1.0, 0.0, 0.5]])
    # the last point: on the +y side of a vertical cylinder of radius 0.5 centred at (1.5, 0.5),
    # three quarters of a turn (1.5 pi r) from the seam on its -x side, 0.2 m above its bottom
    uv = surface_uv(position, normal, lo, np.array([BOX, BOX, BOX, 2]), np.array([0, 0, 0, 0.5]))
    np.testing.assert_allclose(uv, [[2.0, 3.0], [1.0, 3.0], [0.5, 1.5], [1.5 * np.pi * 0.5, 0.2]])


def test_a_vertex_and_the_pixel_that_sees_it_share_the_material_colour():
    """Rays from a camera through the mesh's vertices, cast by the renderer: where the
    vertex is the first hit, on the part it belongs to, and the surface is flat there (not
    an edge), the renderer's colour of the hit equals the vertex's material colour times
    the same shading. (Where two parts meet, a vertex wears one part's look and the ray
    may hit the other: a seam, as between two boards.)"""
    config = ToyConfig(
        num_frames=2,
        vertex_spacing_m=0.1,
        surface_noise_m=0,
        floor_classes=("table", "sofa", "otherfurniture"),
        num_floor_objects=8,
    )
    compared = on_cylinders = 0
    for index in range(3):
        scene = make_toy_scene(config, index)
        eye = scene.cam_to_world[0, :3, 3]
        origins = np.broadcast_to(eye, scene.points.shape).astype(np.float64)
        directions = scene.points.astype(np.float64) - origins
        t, hit, normal = (
            x.numpy() for x in cast_rays(*map(torch.from_numpy, (origins, directions)), *scene._solids(torch.float64))
        )
        color, instance = scene.surface_colors(origins, directions, t, hit, normal)
        flat = np.abs(np.sum(normal * scene.normals, axis=1)) > 0.9999  # not on an edge
        part = np.where(hit < len(scene.part_min), hit, -1)
        same = (instance == scene.point_instance) & (part == scene.point_part)  # not where parts meet
        seen = (np.abs(t - 1) < 1e-6) & flat & same  # points are float32: off the solids by ~1e-7 m
        assert seen.sum() > 0.2 * len(seen)
        point_color = scene.point_albedo[seen] * _shade(scene.normals[seen].astype(np.float64))[:, None]
        np.testing.assert_allclose(color[seen], point_color, atol=2e-3)
        compared += seen.sum()
        on_cylinders += (scene.part_axis[hit[seen & (hit < len(scene.part_min))]] != BOX).sum()
    assert on_cylinders > 200 and compared > 20000


def test_exposure_differs_between_frames_and_labels_do_not():
    """Two frames from one pose: the labels are equal; the colours differ by each frame's
    gain, one factor per channel. Point colours carry no gain."""
    scene = make_toy_scene(ToyConfig(num_frames=2, image_height=48, image_width=64, depth_noise=0), 3)
    scene.cam_to_world[1] = scene.cam_to_world[0]
    first, second = scene.render(0), scene.render(1)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert not np.array_equal(first.color, second.color)
    ratio = scene.looks.camera_gain(1) / scene.looks.camera_gain(0)
    bright = np.all((first.color > 60) & (first.color < 200) & (second.color < 250), axis=-1)
    measured = second.color[bright].astype(float) / first.color[bright]
    np.testing.assert_allclose(np.median(measured, axis=0), ratio, rtol=0.01)
    assert np.abs(ratio - 1).max() > 0.02
    street = make_toy_street(ToyStreetConfig(num_scenes=1, num_sweeps=0, image_height=32, image_width=48), 0)
    again = dataclasses.replace(street, looks=dataclasses.replace(street.looks, camera_seed=(9, 9)))
    a, b = street.render(0), again.render(0)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.color, b.color)


def test_colour_alone_no_longer_names_the_class():
    """A 5-NN on point colour, fitted on four rooms and scored on two others: appearance
    v2 gives the class away, v3 does not (``benchmarks/colour_bound.py`` at full size)."""
    result = {}
    for appearance in ("class-colour", "materials"):
        config = ToyConfig(num_scenes=6, num_frames=1, vertex_spacing_m=0.12, appearance=appearance)
        dataset = ToyDataset(config)
        sources = [dataset.load(s) for s in dataset.scene_ids()]
        data = [(s.colors[s.labels >= 0] / 255.0, s.labels[s.labels >= 0]) for s in sources]
        train = [np.concatenate(x) for x in zip(*data[:4])]
        test = [np.concatenate(x) for x in zip(*data[4:])]
        predicted = KNeighborsClassifier(n_neighbors=5).fit(*train).predict(test[0])
        result[appearance] = scores(confusion_matrix(test[1], predicted, len(SCANNET20.classes))).miou
    assert result["class-colour"] > 0.6 and result["materials"] < 0.25, result
