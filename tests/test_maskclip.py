"""The ``maskclip`` teacher's options: per-pixel normalisation, MaskCLIP's key smoothing and
prompt denoising (against slow per-patch references, on random tensors and on a tiny
random CLIP loaded through the real path), and CLIP2Scene's text sets."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import toy_plan_dict
from tiny_models import clip_folder

from ovlift.kernels.classify import classify
from ovlift.models.clip import normalize
from ovlift.models.teachers.base import TeacherInput
from ovlift.models.teachers.maskclip import REMOVED_LOGIT, MaskCLIPConfig, MaskCLIPTeacher, refine_patches
from ovlift.models.text import load_text_encoder
from ovlift.pipeline.plan import PlanError, plan_from_dict
from ovlift.pipeline.runner import Runner
from ovlift.vocabularies import NUSCENES16, get_vocabulary


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return str(clip_folder(tmp_path_factory.mktemp("models") / "clip"))


def embed(encoder, names):
    return load_text_encoder(encoder).embed_names(list(names))


def teacher(clip, **fields) -> MaskCLIPTeacher:
    config = MaskCLIPConfig(clip_path=clip, templates="single", feature_height=12, feature_width=20, **fields)
    return MaskCLIPTeacher(config, torch.device("cpu"), embed, "teacher 't'")


def frames(seed=0, n=2, hw=(48, 80)) -> TeacherInput:
    color = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, *hw, 3), dtype=np.uint8))
    return TeacherInput("s", np.arange(n), color, (12, 20))


def reference_scores(features, keys, prompts, prompt_class, num_classes, pd=None, ks=None, scale=100.0):
    """One image's refined class scores, patch by patch and class by class: MaskCLIP's
    refine_output as written, with cosine key weights and removed classes kept out."""
    n = len(features)
    logits = torch.full((n, num_classes), -math.inf, dtype=torch.float64)
    for i in range(n):
        for p in range(len(prompts)):
            c = int(prompt_class[p])
            cosine = float(features[i] @ prompts[p]) / float(features[i].norm())
            logits[i, c] = max(float(logits[i, c]), cosine)
    if pd is not None:
        confidence = [max(float(torch.softmax(scale * logits[i], 0)[c]) for i in range(n)) for c in range(num_classes)]
        best = int(np.argmax(confidence))
        for c in range(num_classes):
            if confidence[c] < pd and c != best:
                logits[:, c] = REMOVED_LOGIT
    if ks is None:
        return logits
    # float32 probabilities, as the teacher's: whether a sure patch's top one is exactly 1 depends on it
    probabilities = [torch.softmax(scale * logits[i].float(), 0).double() for i in range(n)]
    scores = torch.zeros(n, num_classes, dtype=torch.float64)
    for i in range(n):
        if float(probabilities[i].max()) < ks:
            for j in range(n):
                weight = float(keys[i] @ keys[j]) / float(keys[i].norm() * keys[j].norm())
                scores[i] += weight * probabilities[j]
        else:
            scores[i] = probabilities[i]
    return scores.masked_fill(logits <= REMOVED_LOGIT, -math.inf)


def random_case(seed, b=2, n=40, c=16, d=8):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(b, n, c, generator=g)
    keys = torch.randn(b, n, d, generator=g) + 0.5  # keys share a direction, as real ones do
    prompts = F.normalize(torch.randn(9, c, generator=g), dim=-1)
    prompt_class = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 4])
    return features, keys, prompts, prompt_class, 5


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ks", [1.0, 0.99])
def test_key_smoothing_matches_a_per_patch_reference_on_random_tensors(seed, ks):
    features, keys, prompts, prompt_class, k = random_case(seed)
    scale = 10.0  # softer than CLIP's 100: a mix of sure and unsure patches
    _, scores = refine_patches(
        features, prompts, prompt_class, k, keys=keys, key_smoothing_threshold=ks, confidence_scale=scale
    )
    for b in range(len(features)):
        expected = reference_scores(
            features[b].double(), keys[b].double(), prompts.double(), prompt_class, k, ks=ks, scale=scale
        )
        torch.testing.assert_close(scores[b].double(), expected, rtol=1e-4, atol=1e-5)


def test_key_smoothing_and_denoising_match_the_reference_on_a_tiny_clip_with_its_own_keys(clip):
    """The keys are the last block's k_proj of each layer-normed patch token, computed here
    token by token; the teacher's refined scores are the per-patch reference's."""
    t = teacher(clip, key_smoothing=True, prompt_denoising=True, vocabulary="cityscapes19", input_short_side=48)
    batch = frames()
    dense, keys = t.patch_features(batch.color)
    assert dense.shape[2:] == keys.shape[2:] == (6, 10)

    model = t.clip.model
    images = F.interpolate(
        batch.color.permute(0, 3, 1, 2).float(), size=(48, 80), mode="bilinear", align_corners=False, antialias=True
    )
    pixels = normalize(images, torch.device("cpu"))
    with torch.no_grad():
        vision = model.vision_model
        hidden = vision(pixel_values=pixels, interpolate_pos_encoding=True, output_hidden_states=True).hidden_states[-2]
        block = vision.encoder.layers[-1]
        hand_keys = torch.stack(
            [torch.stack([block.self_attn.k_proj(block.layer_norm1(token)) for token in image[1:]]) for image in hidden]
        )
    torch.testing.assert_close(keys.flatten(2).transpose(1, 2), hand_keys, rtol=1e-4, atol=1e-5)

    vocab = get_vocabulary("cityscapes19")
    prompts = embed(t.text_encoder, vocab.prompts)
    _, scores = t.refine(dense, keys)
    assert (scores == -math.inf).all(3).all(2).any()  # some classes were denoised away
    for b in range(len(dense)):
        expected = reference_scores(
            dense[b].flatten(1).T.double(),
            hand_keys[b].double(),
            prompts.double(),
            torch.tensor(vocab.prompt_class),
            len(vocab.classes),
            pd=0.5,
            ks=1.0,
        )
        torch.testing.assert_close(scores[b].flatten(1).T.double(), expected, rtol=1e-4, atol=1e-4)


def unit(cosines, c=4):
    """A unit feature with the given cosines to the first basis vectors."""
    x = torch.zeros(c)
    x[: len(cosines)] = torch.tensor(cosines)
    x[len(cosines)] = math.sqrt(1 - sum(v * v for v in cosines))
    return x


def test_prompt_denoising_removes_a_class_below_the_threshold_everywhere_and_keeps_one_above():
    prompts = torch.eye(4)[:3]  # one prompt per class, along the first three axes
    features = (
        torch.stack(
            [
                unit([0.9, 0.1, 0.1]),  # class 0, sure
                unit([0.55, 0.6, 0.1]),  # class 1: softmax(100 x cosine) ~ 0.99
                unit([0.5, 0.1, 0.49]),  # class 2 at 0.27
                unit([0.5, 0.5, 0.505]),  # class 2 is the argmax here, but at 0.45 only
            ]
        )[None]
        * 3.0
    )  # unnormalised: replaced features keep the norm
    prompt_class = torch.arange(3)
    refined, scores = refine_patches(features, prompts, prompt_class, 3, prompt_denoising_threshold=0.5)
    assert (scores[0, :, 2] == REMOVED_LOGIT).all()
    assert (scores[0, :, :2] > REMOVED_LOGIT).all()  # class 1 reached 0.99 at one patch: kept
    assert scores[0].argmax(-1).tolist() == [0, 1, 0, 0]  # the tie at patch 3 goes to the first class
    torch.testing.assert_close(refined[0, :3], features[0, :3])  # labels unchanged: own features
    torch.testing.assert_close(refined[0, 3], 3.0 * prompts[0])  # relabelled: the class's text, same norm
    assert classify(refined[0], prompts, prompt_class)[1].tolist() == [0, 1, 0, 0]

    _, kept = refine_patches(features, prompts, prompt_class, 3, prompt_denoising_threshold=0.4)
    assert (kept > REMOVED_LOGIT).all()  # 0.45 is above 0.4: nothing removed
    assert kept[0].argmax(-1).tolist() == [0, 1, 0, 2]


def test_prompt_denoising_never_removes_every_class_of_an_image():
    prompts = torch.eye(4)[:3]
    features = torch.stack([unit([0.5, 0.5, 0.505]), unit([0.5, 0.5, 0.502])])[None]  # all below 0.5
    _, scores = refine_patches(features, prompts, torch.arange(3), 3, prompt_denoising_threshold=0.5)
    assert (scores[0, :, 2] > REMOVED_LOGIT).all() and (scores[0, :, :2] == REMOVED_LOGIT).all()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("refinements", ["denoising", "smoothing", "both"])
def test_every_refined_feature_classifies_as_its_refined_class(seed, refinements):
    features, keys, prompts, prompt_class, k = random_case(seed)
    pd = 0.5 if refinements != "smoothing" else None
    ks = 1.0 if refinements != "denoising" else None
    refined, scores = refine_patches(
        features,
        prompts,
        prompt_class,
        k,
        keys=keys,
        key_smoothing_threshold=ks,
        prompt_denoising_threshold=pd,
        confidence_scale=10.0,
    )
    labels = classify(refined.flatten(0, 1), prompts, prompt_class)[1]
    assert labels.tolist() == scores.argmax(-1).flatten().tolist()
    raw = classify(features.flatten(0, 1), prompts, prompt_class)[1]
    kept = (refined == features).all(-1).flatten()
    assert kept.tolist() == (raw == labels).tolist()  # own feature exactly where the label is unchanged
    if refinements == "both":
        assert kept.any() and not kept.all()
    norms = refined.norm(dim=-1)
    torch.testing.assert_close(norms, features.norm(dim=-1))


def test_refined_teacher_features_classify_as_the_refined_classes_on_a_tiny_clip(clip):
    t = teacher(clip, key_smoothing=True, prompt_denoising=True, vocabulary="clip2scene-nuscenes16")
    dense, keys = t.patch_features(frames(1).color)
    refined, scores = t.refine(dense, keys)
    prompts = embed(t.text_encoder, t.vocabulary.prompts)
    labels = classify(refined.permute(0, 2, 3, 1).reshape(-1, refined.shape[1]), prompts, torch.arange(16))[1]
    assert labels.tolist() == scores.argmax(1).flatten().tolist()
    torch.testing.assert_close(refined.norm(dim=1), torch.ones(refined.shape[0], *refined.shape[2:]))


def test_without_refinements_the_output_is_the_old_path_normalised_per_pixel(clip):
    batch = frames(2)
    raw = teacher(clip, normalize=False)(batch).images
    normalised = teacher(clip)(batch).images
    t = teacher(clip)
    images = F.interpolate(
        batch.color.permute(0, 3, 1, 2).float(), size=(32, 56), mode="bilinear", align_corners=False, antialias=True
    )
    dense = t.clip.dense_features(images)  # the version-1 teacher's path
    old = F.interpolate(dense, size=(12, 20), mode="bilinear", align_corners=False)
    torch.testing.assert_close(raw, old.permute(0, 2, 3, 1).to(torch.float16))
    # normalised per patch (CLIP2Scene's cls_seg, so its argmax labels), upsampled, and per pixel again
    upsampled = F.interpolate(F.normalize(dense, dim=1), size=(12, 20), mode="bilinear", align_corners=False)
    torch.testing.assert_close(normalised, F.normalize(upsampled, dim=1).permute(0, 2, 3, 1).to(torch.float16))
    assert torch.allclose(normalised.float().norm(dim=-1), torch.ones(()), atol=2e-3)


def test_refinements_run_through_the_stage_and_need_a_vocabulary(clip, tmp_path):
    """The stage stores what the refined teacher (checked against the per-patch references above)
    gives on the scene's frames, which is not what the plain one gives."""
    data = toy_plan_dict(tmp_path / "s.zarr", num_scenes=1, num_frames=2, image_height=48, image_width=64)
    entry = {"clip_path": clip, "feature_height": 24, "feature_width": 32, "templates": "single"}
    refined = {**entry, "key_smoothing": True, "prompt_denoising": True}
    data["stages"]["extract2d"] = {"t": {"implementation": "maskclip", **refined}}
    with pytest.raises(PlanError, match="set 'vocabulary' \\(e.g. 'clip2scene-nuscenes16'\\)"):
        plan_from_dict(data)
    refined["vocabulary"] = "semantickitti19"
    data["stages"]["extract2d"]["t"] = {"implementation": "maskclip", **refined}
    runner = Runner(plan_from_dict(data))
    assert runner.run(fail_fast=True).counts() == {"ran": 2}
    features = torch.from_numpy(runner.store.read("scenes/toy_0000/extract2d/t").load("features"))
    color = torch.from_numpy(runner.store.read("scenes/toy_0000/input").load("frames/color"))
    batch = TeacherInput("toy_0000", np.arange(2), color, (24, 32))
    direct = {
        name: MaskCLIPTeacher(MaskCLIPConfig(**c), torch.device("cpu"), embed, "t")(batch).images
        for name, c in (("refined", refined), ("plain", entry))
    }
    torch.testing.assert_close(features, direct["refined"], atol=2e-3, rtol=0)
    assert (features.float() - direct["plain"].float()).norm(dim=-1).amax() > 0.1
    np.testing.assert_allclose(np.linalg.norm(features.numpy().astype(np.float32), axis=-1), 1, atol=2e-3)


def test_clip2scene_text_sets():
    c2s = get_vocabulary("clip2scene-nuscenes16")
    assert c2s.classes == NUSCENES16.classes and c2s.prompt_class == tuple(range(16))
    spelled = dict(zip(c2s.classes, c2s.prompts))
    assert spelled["traffic cone"] == "traffic_cone" and spelled["other flat"] == "other_flat"
    assert spelled["drivable surface"] == "driveable surface" and spelled["manmade"] == "manmade"
    assert spelled["person"] == "pedestrian"
    cityscapes, kitti = get_vocabulary("cityscapes19"), get_vocabulary("semantickitti19")
    assert len(cityscapes.classes) == len(set(cityscapes.classes)) == 19
    assert len(kitti.classes) == len(set(kitti.classes)) == 19
    assert cityscapes.classes[0] == "road" and cityscapes.classes[-1] == "bicycle"
    assert kitti.classes[0] == "car" and kitti.classes[-1] == "traffic sign"
