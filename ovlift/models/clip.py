"""CLIP (transformers) from a local folder: text and image embeddings, and MaskCLIP's
dense features."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F

from ovlift.models.loading import load_pretrained

EXPECTED = "a Hugging Face CLIP model (CLIPModel with tokenizer) saved with save_pretrained"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class LoadedCLIP:
    model: Any
    tokenizer: Any
    device: torch.device

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    @property
    def patch_size(self) -> int:
        return int(self.model.config.vision_config.patch_size)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        pooled = self.model.text_model(**tokens).pooler_output
        return self.model.text_projection(pooled)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(n, 3, S, S) uint8 or float [0, 255] crops at the model's size -> (n, C) unit vectors."""
        pooled = self.model.vision_model(pixel_values=normalize(images, self.device)).pooler_output
        return F.normalize(self.model.visual_projection(pooled), dim=-1)

    @torch.no_grad()
    def dense_features(
        self, images: torch.Tensor, with_keys: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """MaskCLIP features (B, C, gh, gw) of (B, 3, H, W) images (H, W multiples of the patch);
        with ``with_keys`` also the last block's keys (B, D, gh, gw) (see ``maskclip_dense``)."""
        return maskclip_dense(self.model, normalize(images, self.device), with_keys)


def normalize(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN, device=device)[:, None, None]
    std = torch.tensor(CLIP_STD, device=device)[:, None, None]
    return (images.to(device, torch.float32) / 255.0 - mean) / std


def maskclip_dense(
    model: Any, pixel_values: torch.Tensor, with_keys: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """MaskCLIP (Zhou et al. 2022): in the last transformer block every patch token
    takes the value path instead of attention -- v_proj and out_proj of its own
    token, with the block's residual and MLP -- then the post-layernorm and the
    visual projection. Returns (B, C, gh, gw).

    With ``with_keys``, returns (features, keys): keys (B, D, gh, gw) are the last
    block's k_proj of the same layer-normed patch tokens (all heads concatenated),
    what MaskCLIP's key smoothing compares patches by."""
    vision = model.vision_model
    hidden = vision(pixel_values=pixel_values, interpolate_pos_encoding=True, output_hidden_states=True).hidden_states
    x = hidden[-2]  # the last block's input
    block = vision.encoder.layers[-1]
    y = block.layer_norm1(x)
    v = block.self_attn.out_proj(block.self_attn.v_proj(y))
    v = v + x
    v = v + block.mlp(block.layer_norm2(v))
    features = model.visual_projection(vision.post_layernorm(v[:, 1:]))
    b, _, h, w = pixel_values.shape
    ps = model.config.vision_config.patch_size
    features = features.transpose(1, 2).reshape(b, -1, h // ps, w // ps)
    if not with_keys:
        return features
    keys = block.self_attn.k_proj(y[:, 1:])
    return features, keys.transpose(1, 2).reshape(b, -1, h // ps, w // ps)


@lru_cache(maxsize=2)
def _load(path: str, what: str, device: str) -> LoadedCLIP:
    from transformers import AutoTokenizer, CLIPModel

    model = load_pretrained(CLIPModel, path, what, EXPECTED, model_type="clip").eval().to(device)
    tokenizer = load_pretrained(AutoTokenizer, path, what, EXPECTED)
    return LoadedCLIP(model, tokenizer, torch.device(device))


def load_clip(path: str, what: str, device: torch.device | str = "cpu") -> LoadedCLIP:
    """A CLIP model, loaded once per (folder, device) per process."""
    return _load(str(path), what, str(device))
