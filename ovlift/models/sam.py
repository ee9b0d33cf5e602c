"""Segment Anything (the ``segment-anything`` package) from a local checkpoint.

Two forms load, by one function:

- a released checkpoint file (``sam_vit_h_4b8939.pth``, ...): its architecture is
  ``vit_h``, ``vit_l`` or ``vit_b``, given or read from the width of its weights;
- a folder written by ``save_sam``: ``sam_config.json`` (a ``SamArchitecture``) and
  ``sam.pth`` (the state dict). Any size, the tiny test models included.

``SamPredictor`` resizes the long side of an image to ``image_size`` whatever it is,
so a small architecture runs on small images through the same code as ViT-H.
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, ValidationError

from ovlift.config import FrozenConfig
from ovlift.models.loading import ModelLoadError

CONFIG_FILE = "sam_config.json"
WEIGHTS_FILE = "sam.pth"
EXPECTED = f"a SAM checkpoint file (sam_vit_h_4b8939.pth, ...) or a folder with {CONFIG_FILE} and {WEIGHTS_FILE}"

SamModelType = Literal["auto", "vit_h", "vit_l", "vit_b"]


class SamArchitecture(FrozenConfig):
    """What ``segment_anything.build_sam`` hard-codes per model type, as fields (its defaults: ViT-H)."""

    encoder_embed_dim: int = Field(1280, ge=1)
    """Width of the ViT image encoder."""
    encoder_depth: int = Field(32, ge=1)
    """Transformer blocks of the image encoder."""
    encoder_num_heads: int = Field(16, ge=1)
    """Attention heads of the image encoder."""
    encoder_global_attn_indexes: tuple[int, ...] = (7, 15, 23, 31)
    """Encoder blocks with global attention (the others attend within windows)."""
    encoder_window_size: int = Field(14, ge=1)
    """Side of the encoder's attention windows, in patches."""
    prompt_embed_dim: int = Field(256, ge=8)
    """Width of the image embedding, prompt tokens and mask decoder (a multiple of 8)."""
    image_size: int = Field(1024, ge=16)
    """Side of the encoder's input; images are resized so their long side is this."""
    vit_patch_size: int = Field(16, ge=1)
    """Patch side of the image encoder, in pixels."""
    mask_in_chans: int = Field(16, ge=1)
    """Channels of the mask-prompt encoder."""
    decoder_depth: int = Field(2, ge=1)
    """Blocks of the two-way transformer of the mask decoder."""
    decoder_mlp_dim: int = Field(2048, ge=1)
    """MLP width of the mask decoder's transformer."""
    decoder_num_heads: int = Field(8, ge=1)
    """Attention heads of the mask decoder's transformer."""
    iou_head_depth: int = Field(3, ge=1)
    """Layers of the mask-quality head."""
    iou_head_hidden_dim: int = Field(256, ge=1)
    """Width of the mask-quality head."""


RELEASED = {
    "vit_h": SamArchitecture(),
    "vit_l": SamArchitecture(
        encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16, encoder_global_attn_indexes=(5, 11, 17, 23)
    ),
    "vit_b": SamArchitecture(
        encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12, encoder_global_attn_indexes=(2, 5, 8, 11)
    ),
}
"""The released architectures (``segment_anything.sam_model_registry``)."""


def build_sam(arch: SamArchitecture):
    """A randomly initialised ``segment_anything.Sam`` of this architecture, in eval mode."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    embedding = arch.image_size // arch.vit_patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.encoder_depth,
            embed_dim=arch.encoder_embed_dim,
            img_size=arch.image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=arch.encoder_num_heads,
            patch_size=arch.vit_patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=arch.encoder_global_attn_indexes,
            window_size=arch.encoder_window_size,
            out_chans=arch.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=arch.prompt_embed_dim,
            image_embedding_size=(embedding, embedding),
            input_image_size=(arch.image_size, arch.image_size),
            mask_in_chans=arch.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=arch.decoder_depth,
                embedding_dim=arch.prompt_embed_dim,
                mlp_dim=arch.decoder_mlp_dim,
                num_heads=arch.decoder_num_heads,
            ),
            transformer_dim=arch.prompt_embed_dim,
            iou_head_depth=arch.iou_head_depth,
            iou_head_hidden_dim=arch.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def save_sam(model: torch.nn.Module, folder: str | os.PathLike[str], arch: SamArchitecture) -> Path:
    """Write ``model`` as a folder that ``load_sam`` reads: its architecture and its weights."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(arch.model_dump_json(indent=2) + "\n")
    torch.save(model.state_dict(), folder / WEIGHTS_FILE)
    return folder


def load_sam(path: str | os.PathLike[str], what: str, model_type: SamModelType = "auto"):
    """The ``Sam`` model at ``path`` (a checkpoint file or a ``save_sam`` folder), on the CPU, in eval mode."""
    path = Path(path)
    if path.is_dir():
        if model_type != "auto":
            raise ModelLoadError(
                f"{what}: sam_model_type '{model_type}' is for checkpoint files; the folder '{path}' "
                f"describes its model in {CONFIG_FILE} (set sam_model_type: auto)"
            )
        if not (path / CONFIG_FILE).is_file():
            raise ModelLoadError(f"{what}: '{path}' has no {CONFIG_FILE} (expected {EXPECTED})")
        try:
            arch = SamArchitecture.model_validate(json.loads((path / CONFIG_FILE).read_text()))
        except (ValueError, ValidationError) as err:
            raise ModelLoadError(f"{what}: '{path / CONFIG_FILE}' is not a SAM architecture: {err}") from None
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise ModelLoadError(f"{what}: '{path}' has no {WEIGHTS_FILE} (expected {EXPECTED})")
    elif path.is_file():
        weights, arch = path, None
    else:
        raise ModelLoadError(f"{what}: SAM checkpoint '{path}' does not exist (expected {EXPECTED})")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle, zip and torch raise their own types
        raise ModelLoadError(
            f"{what}: cannot read '{weights}' as a SAM state dict: {type(err).__name__}: {err}"
        ) from None
    if arch is None:
        arch = RELEASED[_released_type(state, weights, what) if model_type == "auto" else model_type]
    model = build_sam(arch)
    try:
        model.load_state_dict(state)
    except Exception as err:  # noqa: BLE001 - missing keys and shape mismatches, with torch's list of them
        raise ModelLoadError(f"{what}: '{weights}' does not fit the SAM architecture {arch}: {err}") from None
    return model


def _released_type(state: dict, weights: Path, what: str) -> str:
    """vit_h, vit_l or vit_b, from the width of the patch embedding."""
    proj = state.get("image_encoder.patch_embed.proj.weight") if isinstance(state, dict) else None
    widths = {arch.encoder_embed_dim: name for name, arch in RELEASED.items()}
    if proj is None or proj.shape[0] not in widths:
        raise ModelLoadError(
            f"{what}: cannot tell the SAM model type of '{weights}' from its weights (expected {EXPECTED}); "
            "set sam_model_type to vit_h, vit_l or vit_b"
        )
    return widths[proj.shape[0]]
