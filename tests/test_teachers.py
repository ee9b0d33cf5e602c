"""Every teacher kind: a tiny random-weight model saved to a folder, loaded through
the real path, run by the extract2d stage on a toy scene, fused by project."""

import re

import numpy as np
import pytest
import torch
from conftest import toy_plan_dict
from tiny_models import blip_folder, clip_folder, mask2former_folder, maskformer_folder, tagger_folder

from ovlift.cache_schema.groups.project import fused_features
from ovlift.models.pos_tagger import load_tagger
from ovlift.pipeline.plan import PlanError, plan_from_dict
from ovlift.pipeline.runner import Runner

HW = (24, 32)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "clip": str(clip_folder(root / "clip")),
        "mask2former": str(mask2former_folder(root / "mask2former")),
        "maskformer": str(maskformer_folder(root / "maskformer")),
        "blip": str(blip_folder(root / "blip")),
        "tagger": str(tagger_folder(root / "tagger")),
    }


def cached_files(root, scene_ids, frames=3, channels=6, layout="hwc"):
    rng = np.random.default_rng(0)
    for scene in scene_ids:
        for i in range(frames):
            shape = (12, 16, channels) if layout == "hwc" else (channels, 12, 16)
            path = root / scene / f"frame-{i:06d}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, rng.normal(size=shape).astype(np.float32))
    return str(root)


def caption_aligned(models, mode, size):
    return {
        "implementation": "caption-aligned",
        "segmenter_path": models["mask2former"],
        "captioner_path": models["blip"],
        "tagger_path": models["tagger"],
        "caption_mode": mode,
        "encoding": "masks",
        "mask_threshold": 0.3,
        "caption_tokens": 4,
        "segmenter_short_side": 64,
        **size,
    }


def teacher_configs(models, tmp_path):
    size = {"feature_height": HW[0], "feature_width": HW[1]}
    return {
        "synthetic-dense": ({"implementation": "synthetic", **size}, 384, "dense"),
        "synthetic-masks": ({"implementation": "synthetic", "encoding": "masks", "bleed_px": 2, **size}, 384, "masks"),
        "maskclip": ({"implementation": "maskclip", "clip_path": models["clip"], **size}, 24, "dense"),
        "mask-crops-m2f-vote": (
            {
                "implementation": "mask-crops",
                "segmenter_path": models["mask2former"],
                "clip_path": models["clip"],
                "encoding": "masks",
                "mask_threshold": 0.3,
                "segmenter_short_side": 64,
                **size,
            },
            24,
            "masks",
        ),
        "mask-crops-m2f-all-image-mean": (
            {
                "implementation": "mask-crops",
                "segmenter_path": models["mask2former"],
                "clip_path": models["clip"],
                "encoding": "masks",
                "overlap": "all",
                "fallback": "image-mean",
                "top_k": 2,
                "mask_threshold": 0.3,
                "segmenter_short_side": 64,
                **size,
            },
            24,
            "masks",
        ),
        "mask-crops-mf-largest": (
            {
                "implementation": "mask-crops",
                "segmenter_path": models["maskformer"],
                "clip_path": models["clip"],
                "overlap": "largest",
                "mask_threshold": 0.3,
                "segmenter_short_side": 64,
                **size,
            },
            24,
            "dense",
        ),
        "caption-aligned": (caption_aligned(models, "adjectives", size), 384, "masks"),
        "caption-aligned-replace-noun": (caption_aligned(models, "replace-noun", size), 384, "masks"),
        "cached": (
            {"implementation": "cached", "path": cached_files(tmp_path / "feats", ["toy_0000"]), "channels": 6, **size},
            6,
            "dense",
        ),
    }


def bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w, C) -> (height, width, C), pixel centres aligned (align_corners=False), edges clamped; slow and plain."""
    h, w, _ = image.shape

    def taps(i: int, size: int, out: int) -> tuple[int, int, float]:
        x = max((i + 0.5) * size / out - 0.5, 0.0)
        lo = min(int(x), size - 1)
        return lo, min(lo + 1, size - 1), x - lo

    out = np.zeros((height, width, image.shape[2]))
    for i in range(height):
        y0, y1, fy = taps(i, h, height)
        for j in range(width):
            x0, x1, fx = taps(j, w, width)
            top = (1 - fx) * image[y0, x0] + fx * image[y0, x1]
            out[i, j] = (1 - fy) * top + fy * ((1 - fx) * image[y1, x0] + fx * image[y1, x1])
    return out


def pixel_features(group) -> tuple[np.ndarray, np.ndarray]:
    """(T, h, w, C) every pixel's feature and (T, h, w) whether it has one, from either encoding:
    a masks pixel is the weighted sum of its kept masks' embeddings."""
    if group.info["encoding"] == "dense":
        features = group.load("features").astype(np.float64)
        return features, group.load("valid") if "valid" in group else np.ones(features.shape[:3], bool)
    ids, weights, emb = group.load("mask_ids"), group.load("mask_weights"), group.load("mask_embeddings")
    features = np.zeros((*ids.shape[:3], emb.shape[1]))
    for k in range(ids.shape[-1]):
        kept = ids[..., k] >= 0
        features[kept] += weights[..., k][kept, None] * emb[ids[..., k][kept]].astype(np.float64)
    return features, ((ids >= 0) & (weights > 0)).any(-1)


@pytest.mark.parametrize(
    "kind",
    [
        "synthetic-dense",
        "synthetic-masks",
        "maskclip",
        "mask-crops-m2f-vote",
        "mask-crops-m2f-all-image-mean",
        "mask-crops-mf-largest",
        "caption-aligned",
        "caption-aligned-replace-noun",
        "cached",
    ],
)
def test_every_teacher_runs_through_the_stage_and_project_fuses_it(models, tmp_path, kind):
    """Each point's fused feature is the mean of its pixels' features over the views that have one
    (recomputed from the correspondences project stored); a cached teacher's are its files' maps."""
    config, channels, encoding = teacher_configs(models, tmp_path)[kind]
    data = toy_plan_dict(tmp_path / "s.zarr", num_scenes=1, num_frames=3, image_height=48, image_width=64)
    data["stages"]["extract2d"] = {"t": config}
    data["stages"]["project"] = {"cut_bound": 1}
    runner = Runner(plan_from_dict(data))
    report = runner.run(fail_fast=True)
    assert report.counts() == {"ran": 3}
    group = runner.store.read("scenes/toy_0000/extract2d/t")
    assert group.info["encoding"] == encoding and group.info["channels"] == channels
    assert group.load("frames").tolist() == [0, 1, 2]
    if encoding == "dense":
        assert group.array("features").chunks == (1, *HW, channels)
    else:
        ids, weights = group.load("mask_ids"), group.load("mask_weights")
        used = ids >= 0
        assert np.allclose((weights * used).sum(-1)[used.any(-1)], 1, atol=1e-2)  # weights average the kept masks
        if config.get("fallback") == "image-mean":
            assert used.any(-1).all()  # a pixel no mask covers takes the image's mean mask embedding
    features, has = pixel_features(group)
    assert features.shape == (3, *HW, channels) and np.isfinite(features).all()
    if kind == "cached":
        files = [np.load(f"{config['path']}/toy_0000/frame-{i:06d}.npy") for i in range(3)]
        np.testing.assert_allclose(features, [bilinear(f, *HW) for f in files], atol=4e-3, rtol=1e-3)
    project = runner.store.read("scenes/toy_0000/project")
    point, frame = project.load("point_index"), np.array(project.info["frames"])[project.load("frame_index")]
    row, col = project.load("pixel").T
    view = np.flatnonzero(has[frame, row, col])
    # means commute with projections: compare along 8 random directions (all 384 channels cost seconds)
    directions = np.random.default_rng(0).normal(size=(channels, 8)) / np.sqrt(channels)
    along = features @ directions
    total, views = np.zeros((project.dims["N"], 8)), np.bincount(point[view], minlength=project.dims["N"])
    np.add.at(total, point[view], along[frame[view], row[view], col[view]])
    seen = project.load("fused/t/seen")
    assert seen.any() and np.array_equal(seen, views > 0)
    fused = fused_features(project, "t").astype(np.float64) @ directions
    np.testing.assert_allclose(fused[seen], total[seen] / views[seen, None], atol=2e-3 * np.abs(along).max())
    assert project.info["teachers"]["t"]["channels"] == channels
    assert Runner(plan_from_dict(data)).run().counts() == {"cached": 3}


@pytest.mark.parametrize("mode", ["adjectives", "replace-noun"])
def test_caption_aligned_embeds_the_text_its_mode_builds_from_each_caption(models, tmp_path, monkeypatch, mode):
    """The tiny BLIP's captions are random words; whatever the tagger makes of them, the text
    embedded is SAS's template around the mask's label (adjectives) or holds the label (replace-noun)."""
    from ovlift.models.teachers import caption_aligned as module
    from ovlift.stages import extract2d

    made, embedded = [], []
    text_for, load_encoder = module.CaptionAlignedTeacher.text_for, module.load_text_encoder

    def recording_text_for(self, caption, label):
        made.append((caption, label, text_for(self, caption, label)))
        return made[-1][2]

    class Recording:  # the teacher's encoder, remembering what it embeds
        def __init__(self, encoder):
            self.encoder, self.dim = encoder, encoder.dim

        def encode(self, texts):
            embedded.extend(texts)
            return self.encoder.encode(texts)

    monkeypatch.setattr(module.CaptionAlignedTeacher, "text_for", recording_text_for)
    monkeypatch.setattr(module, "load_text_encoder", lambda *args: Recording(load_encoder(*args)))
    monkeypatch.setattr(extract2d, "_TEACHERS", {})  # a teacher loaded now, with the recording encoder
    data = toy_plan_dict(tmp_path / "s.zarr", num_scenes=1, num_frames=2, image_height=48, image_width=64)
    data["stages"]["extract2d"] = {"t": caption_aligned(models, mode, {"feature_height": 24, "feature_width": 32})}
    assert Runner(plan_from_dict(data)).run(fail_fast=True).counts() == {"ran": 2}
    assert made and [text for *_, text in made] == embedded
    labels = {"chair", "table", "sofa", "bed", "wall", "floor"}
    tagger = load_tagger(models["tagger"], "t")
    for caption, label, text in made:
        assert label in labels and text == module.caption_text(caption, label, tagger, mode)
        if mode == "adjectives":
            assert re.fullmatch(rf"a (\S+ and )*(\S+ )?{label} in a scene", text), text
        else:
            assert re.search(rf"(^|\s){label}(\s|$)", text), text


def test_maskclip_is_the_value_path_of_the_last_block(models):
    """Direct computation on a tiny CLIP, and a uniform image: with position embeddings
    zeroed every patch token is the same, so the dense map is constant and equals the
    patch-independent value-path output of that one token."""
    from transformers import CLIPModel

    from ovlift.models.clip import maskclip_dense

    model = CLIPModel.from_pretrained(models["clip"]).eval()
    pixels = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        dense = maskclip_dense(model, pixels)
        vision = model.vision_model
        hidden = vision(pixel_values=pixels, interpolate_pos_encoding=True, output_hidden_states=True).hidden_states[-2]
        block = vision.encoder.layers[-1]
        expected = []
        for token in hidden[0, 1:]:  # one patch at a time, attention bypassed by hand
            y = block.layer_norm1(token)
            v = y @ block.self_attn.v_proj.weight.T + block.self_attn.v_proj.bias
            v = v @ block.self_attn.out_proj.weight.T + block.self_attn.out_proj.bias + token
            v = v + block.mlp(block.layer_norm2(v))
            expected.append(model.visual_projection(vision.post_layernorm(v)))
    assert dense.shape == (2, model.config.projection_dim, 4, 6)
    torch.testing.assert_close(dense[0].flatten(1).T, torch.stack(expected), rtol=1e-4, atol=1e-5)

    with torch.no_grad():
        vision.embeddings.position_embedding.weight.zero_()
        uniform = torch.full((1, 3, 32, 32), 0.3)
        dense = maskclip_dense(model, uniform)[0].flatten(1).T  # (patches, C)
        token = vision(pixel_values=uniform, output_hidden_states=True).hidden_states[-2][0, 1]
        y = block.layer_norm1(token)
        v = block.self_attn.out_proj(block.self_attn.v_proj(y)) + token
        v = v + block.mlp(block.layer_norm2(v))
        single = model.visual_projection(vision.post_layernorm(v))
    torch.testing.assert_close(dense, single.expand_as(dense), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda root, m: str(root / "nowhere"),
            "model directory '.*nowhere' does not exist \\(expected a Hugging Face CLIP",
        ),
        (
            lambda root, m: str((root / "empty").mkdir() or root / "empty"),
            "'.*empty' has no config.json \\(expected a Hugging Face CLIP",
        ),
        (lambda root, m: m["mask2former"], "holds a 'mask2former' model, expected model_type 'clip'"),
        (lambda root, m: _broken_weights(root, m), "cannot load '.*broken' as a Hugging Face CLIP"),
    ],
)
def test_a_missing_or_malformed_model_folder_gives_one_clear_error(models, tmp_path, make, message):
    data = toy_plan_dict(tmp_path / "s.zarr", num_scenes=1, num_frames=2, image_height=48, image_width=64)
    data["stages"]["extract2d"] = {
        "t": {
            "implementation": "maskclip",
            "clip_path": make(tmp_path, models),
            "feature_height": 24,
            "feature_width": 32,
        }
    }
    report = Runner(plan_from_dict(data)).run()
    failed = [o for o in report.outcomes if o.status == "failed"]
    assert len(failed) == 1 and failed[0].stage == "extract2d/t"
    assert "teacher 't'" in failed[0].error
    assert re.search(message, failed[0].error), failed[0].error


def _broken_weights(root, models):
    import shutil

    broken = root / "broken"
    shutil.copytree(models["clip"], broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    return str(broken)


def test_masks_encoding_only_for_mask_teachers(models, tmp_path):
    data = toy_plan_dict(tmp_path / "s.zarr")
    data["stages"]["extract2d"] = {
        "t": {"implementation": "maskclip", "clip_path": models["clip"], "encoding": "masks"}
    }
    with pytest.raises(PlanError, match="produces dense features; encoding 'masks' needs a mask-based teacher"):
        plan_from_dict(data)


def test_cached_features_missing_file_names_scene_frame_and_path(tmp_path):
    data = toy_plan_dict(tmp_path / "s.zarr", num_scenes=1, num_frames=3)
    root = cached_files(tmp_path / "feats", ["toy_0000"], frames=2)  # frame 2 missing
    data["stages"]["extract2d"] = {"t": {"implementation": "cached", "path": root, "channels": 6}}
    report = Runner(plan_from_dict(data)).run()
    error = next(o.error for o in report.outcomes if o.status == "failed")
    assert "scene 'toy_0000', frame 'frame-000002'" in error and "frame-000002.npy' not found" in error


def test_cached_features_rerun_with_their_downstream_when_a_file_changes_but_not_its_size(tmp_path):
    data = toy_plan_dict(tmp_path / "s.zarr", num_scenes=1, num_frames=2)
    root = cached_files(tmp_path / "feats", ["toy_0000"], frames=2, layout="chw")
    data["stages"]["extract2d"] = {"t": {"implementation": "cached", "path": root, "channels": 6, "layout": "chw"}}
    data["stages"]["project"] = {"cut_bound": 1}
    assert Runner(plan_from_dict(data)).run().counts()["ran"] == 3
    assert Runner(plan_from_dict(data)).run().counts() == {"cached": 3}
    path = tmp_path / "feats" / "toy_0000" / "frame-000001.npy"
    size = path.stat().st_size
    np.save(path, np.zeros((6, 12, 16), np.float32))  # recomputed: same shape, other values
    assert path.stat().st_size == size
    counts = Runner(plan_from_dict(data)).run().counts()
    assert counts == {"cached": 1, "ran": 2}
