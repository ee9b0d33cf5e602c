"""diffusion-sam: tiny random Stable Diffusion and SAM saved to folders, loaded through the real
path; attention recording, coarse masks, point prompts and loading errors."""

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from tiny_models import sam_folder, stable_diffusion_folder

from ovlift.kernels.prompt_points import farthest_points, sam_prompt_points
from ovlift.models.generators.diffusion_sam import (
    DiffusionSAMConfig,
    DiffusionSAMGenerator,
    LayerAttention,
    class_token_positions,
    coarse_mask,
    draw_image,
    load_diffusion,
)
from ovlift.models.loading import ModelLoadError
from ovlift.models.sam import SamArchitecture, _released_type, build_sam, load_sam, save_sam

SIZE = 64
LATENT = 32  # the tiny VAE halves the image
RESOLUTIONS = (16, 32)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models are all per-operation overhead: one thread is faster (10x on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"diffusion": str(stable_diffusion_folder(root / "sd")), "sam": str(sam_folder(root / "sam"))}


@pytest.fixture(scope="module")
def config(models):
    return DiffusionSAMConfig(
        diffusion_path=models["diffusion"],
        sam_path=models["sam"],
        image_size=SIZE,
        steps=2,
        images_per_class=2,
        attention_resolutions=RESOLUTIONS,
        border_px=8,
        dtype="float32",
    )


@pytest.fixture(scope="module")
def generator(config):
    return DiffusionSAMGenerator(config, torch.device("cpu"), "capability 'diffusion-sam'")


@pytest.fixture(scope="module")
def generated(generator):
    return generator.generate("shower curtain")


def variant(generator, **changes):
    """The same loaded models under a changed config."""
    other = copy.copy(generator)
    other.config = generator.config.model_copy(update=changes)
    return other


def test_outputs(generated, config):
    m = config.images_per_class
    assert generated.class_name == "shower curtain"
    assert generated.images.shape == (m, SIZE, SIZE, 3) and generated.images.dtype == torch.uint8
    assert generated.pseudo_masks.shape == (m, SIZE, SIZE) and generated.pseudo_masks.dtype == torch.bool
    assert generated.coarse_masks.shape == (m, SIZE, SIZE) and generated.coarse_masks.dtype == torch.bool
    assert generated.points.shape == (m, 3, 2) and generated.points.dtype == torch.int64
    assert generated.coarse_masks.flatten(1).any(1).all()
    b = config.border_px
    assert ((generated.points >= b) & (generated.points < SIZE - b)).all()
    assert not torch.equal(generated.images[0], generated.images[1])
    assert DiffusionSAMGenerator.model_folders(config) == {
        "diffusion_path": config.diffusion_path,
        "sam_path": config.sam_path,
    }


def test_every_cross_attention_layer_at_the_resolutions_is_recorded(generator, generated):
    """Layers counted from the UNet's structure: down block i sees LATENT / 2**i, up block j mirrors it."""
    unet = generator.pipe.unet
    depth = len(unet.down_blocks)
    expected = {}
    for name, _ in unet.named_modules():
        if not name.endswith("attn2"):
            continue
        block, index = name.split(".")[:2]
        if block == "down_blocks":
            expected[name] = LATENT // 2 ** int(index)
        elif block == "up_blocks":
            expected[name] = LATENT // 2 ** (depth - 1 - int(index))
    expected = {name: r for name, r in expected.items() if r in RESOLUTIONS}
    assert len(expected) == 6  # 1 + 1 down, 2 + 2 up; the middle block (8x8) is left out
    layers = generator.recorder.layers
    assert {name: layer.resolution for name, layer in layers.items()} == expected
    calls = len(generator.pipe.scheduler.timesteps)  # every UNet evaluation (PNDM: steps + 1)
    for layer in layers.values():
        assert layer.steps == calls
        assert layer.total.shape == (2, layer.resolution, layer.resolution)  # "shower", "curtain"
        assert 0 < layer.mean().max() <= 1


def test_images_do_not_depend_on_recording_and_image_i_is_seed_i(generated, config):
    plain = load_diffusion(config.diffusion_path, "test", "cpu", "float32")  # processors untouched
    prompt = config.prompt.format(name="shower curtain")
    assert torch.equal(draw_image(plain, prompt, 1, config.steps, config.guidance, SIZE), generated.images[1])


def test_recording_is_the_standard_attention_of_the_conditional_row(generator):
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
    attn = generator.pipe.unet.get_submodule(name)
    torch.manual_seed(0)
    hidden, context = torch.randn(2, LATENT * LATENT, 16), torch.randn(2, 77, 32)
    with generator.recorder.capture([3, 5], lambda place, r: True, conditional_from=1, per_map_max=False):
        out = attn.processor(attn, hidden, context)
    assert torch.equal(out, attn.processor.inner(attn, hidden, context))
    with torch.no_grad():
        query, key = attn.head_to_batch_dim(attn.to_q(hidden[1:])), attn.head_to_batch_dim(attn.to_k(context[1:]))
        probs = attn.get_attention_scores(query, key)  # (heads, pixels, 77), diffusers' own
    expected = probs.mean(0)[:, [3, 5]].T.reshape(2, LATENT, LATENT)
    torch.testing.assert_close(generator.recorder.layers[name].total, expected)
    with generator.recorder.capture([3, 5], lambda place, r: True, conditional_from=1, per_map_max=True):
        attn.processor(attn, hidden, context)
        attn.processor(attn, hidden, context)
    layer = generator.recorder.layers[name]
    assert layer.steps == 2
    torch.testing.assert_close(layer.mean(), expected / expected.amax((1, 2), keepdim=True))


def test_sofa_quirk_paper_aggregation_and_missing_resolutions(generator):
    quirky = variant(generator, sofa_quirk=True)
    quirky.draw("sofa", 0)
    assert {(a.place, a.resolution) for a in quirky.recorder.layers.values()} == {("mid", 8)}
    assert quirky.resolutions("chair") == set(RESOLUTIONS)

    image, layers = variant(generator, aggregation="paper").draw("chair", 0)
    assert len(layers) == 6 and all(layer.mean().max() <= 1 + 1e-6 for layer in layers)
    assert coarse_mask(layers, SIZE, 0.7, "paper").any()

    with pytest.raises(ValueError, match=r"latent side \[64\].*up 32"):
        variant(generator, attention_resolutions=(32, 64)).draw("chair", 0)


def test_class_token_positions(generator):
    tokenizer = generator.pipe.tokenizer
    template = "a good photo of a {name} in a room"
    assert class_token_positions(tokenizer, template, "chair") == [6]
    assert class_token_positions(tokenizer, template, "shower curtain") == [6, 7]
    ids = tokenizer(template.format(name="armchair")).input_ids
    positions = class_token_positions(tokenizer, template, "armchair")  # not a known word: several pieces
    assert len(positions) > 1 and tokenizer.decode([ids[p] for p in positions]).replace(" ", "") == "armchair"
    assert class_token_positions(tokenizer, "{name} in a {name}", "sofa") == [1, 4]
    with pytest.raises(ValueError, match="spaces around"):
        class_token_positions(tokenizer, "many {name}s", "chair")


def _layer(maps, steps=1, place="up"):
    return LayerAttention(place, maps.shape[-1], maps * steps, steps)


def test_coarse_mask_rules():
    hot = torch.zeros(1, 8, 8)
    hot[0, 2:4, 2:6] = 1.0
    assert torch.equal(coarse_mask([_layer(hot)], 8, 0.7, "code"), hot[0] > 0.5)
    # code: each resolution counts alike after its max; two tokens averaged
    faint = torch.zeros(2, 4, 4)
    faint[:, 0, 0] = torch.tensor([0.01, 0.03])
    strong = torch.zeros(2, 8, 8)
    strong[:, 7, 7] = torch.tensor([0.9, 0.9])
    mask = coarse_mask([_layer(faint), _layer(strong, steps=3)], 8, 0.3, "code")
    assert mask[7, 7] and mask[0, 0] and mask.sum() < 20
    assert not coarse_mask([_layer(torch.zeros(1, 8, 8))], 8, 0.7, "paper").any()


def test_points_one_component():
    bar = torch.zeros(20, 50, dtype=torch.bool)
    bar[5:15, 5:45] = True  # distance 5 from the edge on rows 9-10, columns 9-40
    # SAS: A, then B and C next to it (only the chosen pixel is removed)
    assert farthest_points(bar).tolist() == [[9, 9], [14, 9], [19, 9]]
    # spread: each point's inscribed disc (radius 5) is removed first
    assert farthest_points(bar, rule="spread").tolist() == [[9, 9], [18, 9], [27, 9]]


def test_points_two_and_more_components():
    two = torch.zeros(30, 50, dtype=torch.bool)
    two[5:15, 5:45] = True
    two[20:25, 20:25] = True  # 5x5: its centre (22, 22) is farthest from its edge
    assert farthest_points(two).tolist() == [[9, 9], [14, 9], [22, 22]]

    many = torch.zeros(30, 40, dtype=torch.bool)
    many[1:4, 1:4] = True  # 3x3, first in scan order
    many[10:17, 2:9] = True  # 7x7
    many[20:25, 30:35] = True  # 5x5
    many[1, 30] = True  # 1 px, left out
    assert farthest_points(many).tolist() == [[5, 13], [32, 22], [2, 2]]  # largest first
    assert farthest_points(many, count=1).tolist() == [[5, 13]]


def test_points_of_a_mask_empty_after_the_border():
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[:6, 20:40] = True  # only in the border
    # SAS's four 2x2 seeds at rows/columns 240 and 270 of 512 -> 30 and 34 of 64; each seed's
    # pixels are all 1 from the edge: the top-left wins; three seeds of equal area, in scan order
    assert sam_prompt_points(mask, border_px=8).tolist() == [[30, 30], [34, 30], [30, 34]]
    with pytest.raises(ValueError, match="empty"):
        farthest_points(torch.zeros(8, 8, dtype=torch.bool))


def test_config_validation(models):
    paths = {"diffusion_path": models["diffusion"], "sam_path": models["sam"]}
    with pytest.raises(ValidationError, match="no {name} field"):
        DiffusionSAMConfig(prompt="a photo of a room", **paths)
    with pytest.raises(ValidationError, match="only the field"):
        DiffusionSAMConfig(prompt="a {name} in a {place}", **paths)
    with pytest.raises(ValidationError, match="leaves nothing"):
        DiffusionSAMConfig(image_size=128, border_px=64, **paths)


def test_diffusion_load_errors(models, config, tmp_path):
    what = "capability 'diffusion-sam'"
    with pytest.raises(ModelLoadError, match=f"{what}: model directory '{tmp_path / 'none'}' does not exist"):
        DiffusionSAMGenerator(config.model_copy(update={"diffusion_path": str(tmp_path / "none")}), "cpu", what)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="has no model_index.json .*diffusers layout"):
        load_diffusion(str(tmp_path / "empty"), what, "cpu")
    partial = shutil.copytree(models["diffusion"], tmp_path / "partial")
    shutil.rmtree(partial / "unet")
    with pytest.raises(ModelLoadError, match="has no unet subfolder"):
        load_diffusion(str(partial), what, "cpu")
    broken = shutil.copytree(models["diffusion"], tmp_path / "broken")
    (broken / "model_index.json").write_text("{")
    with pytest.raises(ModelLoadError, match=f"cannot load '{broken}'"):
        load_diffusion(str(broken), what, "cpu")


def test_sam_loading(models, tmp_path):
    model = load_sam(models["sam"], "test")
    state = torch.load(f"{models['sam']}/sam.pth", weights_only=True)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_sam(tmp_path / "none.pth", "test")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="has no sam_config.json"):
        load_sam(tmp_path / "empty", "test")
    with pytest.raises(ModelLoadError, match="set sam_model_type: auto"):
        load_sam(models["sam"], "test", "vit_h")
    bad = shutil.copytree(models["sam"], tmp_path / "bad")
    (bad / "sam_config.json").write_text(json.dumps({"encoder_depth": "deep"}))
    with pytest.raises(ModelLoadError, match="not a SAM architecture"):
        load_sam(bad, "test")
    other = SamArchitecture.model_validate_json(Path(models["sam"], "sam_config.json").read_text())
    mismatched = save_sam(build_sam(other.model_copy(update={"decoder_mlp_dim": 16})), tmp_path / "mis", other)
    with pytest.raises(ModelLoadError, match="does not fit"):
        load_sam(mismatched, "test")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="cannot read"):
        load_sam(tmp_path / "junk.pth", "test")
    assert _released_type({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}, None, "t") == "vit_b"
    with pytest.raises(ModelLoadError, match="set sam_model_type"):
        _released_type({"image_encoder.patch_embed.proj.weight": torch.zeros(32, 3, 16, 16)}, "x.pth", "t")


def pixel_iou(predicted: torch.Tensor, true: torch.Tensor) -> float:
    """IoU of two masks as sets of pixel indices (NaN when both are empty)."""
    a, b = set(np.flatnonzero(predicted.numpy()).tolist()), set(np.flatnonzero(true.numpy()).tolist())
    return len(a & b) / len(a | b) if a | b else float("nan")


def test_capability_stage_runs_diffusion_sam_end_to_end(models, tmp_path, monkeypatch):
    """The whole SAS path on tiny random models, through the plan and the runner: images
    drawn, attention to coarse masks, SAM pseudo masks, a MaskCLIP teacher scored on them.
    What the stage stores is recomputed from the pseudo masks drawn and the teacher's masks
    (watched on their way through): per image IoU, and capability their mean (0 for none)."""
    from tiny_models import clip_folder

    from ovlift.pipeline.plan import plan_from_dict
    from ovlift.pipeline.runner import Runner
    from ovlift.stages import capability as stage
    from tests.conftest import toy_plan_dict

    drawn, scored = {}, {}
    generate, teacher_masks = DiffusionSAMGenerator.generate, stage.teacher_masks
    monkeypatch.setattr(DiffusionSAMGenerator, "generate", lambda g, c: drawn.setdefault(c, generate(g, c)))
    monkeypatch.setattr(
        stage,
        "teacher_masks",
        lambda t, s, images, *a: scored.setdefault(images.class_name, teacher_masks(t, s, images, *a)),
    )
    classes = ["wall", "chair", "shower curtain"]
    vocabulary = tmp_path / "vocab.txt"
    vocabulary.write_text("\n".join(classes) + "\n")
    data = toy_plan_dict(tmp_path / "store.zarr", num_scenes=1)
    size = {"feature_height": 16, "feature_width": 16}
    clip = str(clip_folder(tmp_path / "clip"))
    data["stages"]["extract2d"] = {"m": {"implementation": "maskclip", "clip_path": clip, **size}}
    data["stages"]["capability"] = {
        "implementation": "diffusion-sam",
        "diffusion_path": models["diffusion"],
        "sam_path": models["sam"],
        "image_size": SIZE,
        "steps": 2,
        "images_per_class": 2,
        "attention_resolutions": list(RESOLUTIONS),
        "border_px": 8,
        "dtype": "float32",
        "vocabulary": str(vocabulary),
    }
    runner = Runner(plan_from_dict(data, tmp_path))
    report = runner.run(stages=["capability"])
    assert not report.failed, report.failed[0].error
    group = runner.store.read("global/capability")
    assert sorted(drawn) == sorted(scored) == sorted(classes) and group.info["generator"] == "diffusion-sam"
    assert group.load("image_count").tolist() == [len(drawn[c].images) for c in classes] == [2, 2, 2]
    expected = np.array([[pixel_iou(scored[c][i], drawn[c].pseudo_masks[i]) for i in range(2)] for c in classes])
    np.testing.assert_allclose(group.load("per_image_iou")[0], expected, rtol=1e-6)
    means = [row[~np.isnan(row)].mean() if (~np.isnan(row)).any() else 0.0 for row in expected]
    np.testing.assert_allclose(group.load("capability")[0], means, rtol=1e-6)
    sheets = tmp_path / group.info["contact_sheets"]
    assert sorted(p.name for p in sheets.iterdir()) == ["chair.png", "shower-curtain.png", "wall.png"]
