"""``diffusion-sam``: SAS's synthetic images, with the class's mask from diffusion attention refined by SAM.

For class X, image i is Stable Diffusion's answer to ``prompt`` ("a good photo of a X
in a room") from the noise seeded by i. While it denoises, the cross-attention of the
image to the name's tokens is recorded (``CrossAttentionRecorder``); averaged, it is a
heat map of where X is drawn. Thresholded, it is the coarse mask; three points
farthest from its edge prompt SAM, whose mask is the pseudo mask the teachers are
scored against (SAS, Sec. 3.2 and Suppl. 6.1; ``METHODS.md`` 2.2).

What is recorded: softmax(QK^T / sqrt(d)) of the conditional sample only (SAS's
``LOW_RESOURCE``), in the cross-attention layers of the UNet's down and up blocks
whose latent feature map has a side in ``attention_resolutions`` (the middle block
is left out, as SAS's ``from_where=("up", "down")``), averaged over heads, summed
over denoising steps (every UNet evaluation), for the name's token positions only.
The attention output itself is computed by the layer's own processor, untouched:
images are the same with and without recording.

Coarse mask, ``aggregation``:

- ``code`` (SAS's released code, prompt-to-prompt style): per resolution, the
  mean over its layers and steps, resized bicubically to the image and divided by its
  max; the mean over resolutions, then over the name's tokens; min-max scaled;
  ``> threshold``.
- ``paper`` (Eq. 2; the default): every layer's map at every step divided by its max; the mean over
  steps, each layer resized bicubically to the image, the mean over layers (all
  resolutions alike), then over the name's tokens; min-max scaled; ``> threshold``.

Where SAS's code differs and is not followed: it draws in float32 (``dtype``), saves
images as JPEG before SAM and gives SAM the image in BGR order; here SAM sees the
RGB image as drawn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator

from ovlift.config import ModelPath
from ovlift.kernels.prompt_points import PointRule, sam_prompt_points
from ovlift.models.generators.base import GeneratedImages, GeneratorConfig, ImageGenerator
from ovlift.models.loading import load_pretrained
from ovlift.models.sam import SamModelType, load_sam
from ovlift.progress import progress

DIFFUSION_EXPECTED = "a Stable Diffusion pipeline in diffusers layout (StableDiffusionPipeline.save_pretrained)"
DIFFUSION_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
SOFA_QUIRK_NAMES = frozenset({"sofa", "train", "tvmonitor"})
"""Names that SAS's code (from DiffuMask's VOC script) maps from the 8x8 attention alone."""
SOFA_QUIRK_RESOLUTION = 8


class DiffusionSAMConfig(GeneratorConfig):
    diffusion_path: ModelPath
    """Local Stable Diffusion folder in diffusers layout (SAS: SD v1.5)."""
    sam_path: ModelPath
    """SAM: a released checkpoint file (SAS: sam_vit_h_4b8939.pth) or a folder written by save_sam."""
    sam_model_type: SamModelType = "auto"
    """Architecture of a SAM checkpoint file (auto: from its weights); folders describe their own."""
    prompt: str = "a good photo of a {name} in a room"
    """Text prompt; {name} is the class name (SAS's code; outdoor vocabularies set their own)."""
    steps: int = Field(50, ge=1)
    """Denoising steps."""
    guidance: float = Field(7.0, ge=0)
    """Classifier-free guidance scale (SAS passes 7; 1 or less: no guidance)."""
    image_size: int = Field(512, ge=64, multiple_of=8)
    """Side of the square images, pixels."""
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    """Weights and activations of Stable Diffusion (SAS: float32; use float32 on a CPU). SAM runs in float32."""
    attention_resolutions: tuple[int, ...] = Field((16, 32, 64), min_length=1)
    """Sides of the latent feature maps whose cross-attention is used (SD at 512 px: 64, 32, 16, 8)."""
    aggregation: Literal["code", "paper"] = "paper"
    """Attention maps to coarse mask: SAS's code (max-normalised per resolution) or Eq. 2 (per map)."""
    sofa_quirk: bool = False
    """SAS's code: sofa, train and tvmonitor use only the 8x8 maps (down, middle and up blocks)."""
    threshold: float = Field(0.7, gt=0, lt=1)
    """Coarse mask: min-max scaled attention above this."""
    border_px: int = Field(70, ge=0)
    """Frame cleared from the coarse mask before points are picked (SAS: 70 of 512 px)."""
    points: int = Field(3, ge=1)
    """Positive point prompts given to SAM."""
    point_rule: PointRule = "sas"
    """Further points in one component: next to the first (sas) or outside its inscribed disc (spread)."""

    @field_validator("prompt")
    @classmethod
    def _one_name_field(cls, prompt: str) -> str:
        try:
            filled = prompt.format(name="X")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"prompt '{prompt}' may hold only the field {{name}} ({err})") from None
        if filled == prompt.replace("{{", "{").replace("}}", "}"):
            raise ValueError(f"prompt '{prompt}' has no {{name}} field")
        return prompt

    @model_validator(mode="after")
    def _border_inside(self) -> DiffusionSAMConfig:
        if 2 * self.border_px >= self.image_size:
            raise ValueError(f"border_px {self.border_px} leaves nothing of a {self.image_size} px image")
        return self


# --- the name's tokens -------------------------------------------------------------------------


def class_token_positions(tokenizer: Any, template: str, name: str) -> list[int]:
    """Positions of ``name``'s tokens in the tokenised prompt ``template.format(name=name)``
    (start token included), one span per ``{name}`` field; multi-token names give several."""
    name_ids = tokenizer(name, add_special_tokens=False).input_ids
    prompt_ids = tokenizer(template.format(name=name)).input_ids
    leading = 1 if prompt_ids and prompt_ids[0] == tokenizer.bos_token_id else 0
    pieces = template.split("{name}")
    positions = []
    for k in range(1, len(pieces)):
        before = "{name}".join(pieces[:k]).format(name=name)
        start = leading + len(tokenizer(before, add_special_tokens=False).input_ids)
        if not name_ids or prompt_ids[start : start + len(name_ids)] != name_ids:
            raise ValueError(
                f"the tokens of '{name}' are not where {{name}} is in the prompt '{template}' "
                "(a name must tokenise on its own: put spaces around {name})"
            )
        positions.extend(range(start, start + len(name_ids)))
    limit = getattr(tokenizer, "model_max_length", len(prompt_ids))
    if max(positions) >= limit - 1:
        raise ValueError(f"the prompt '{template.format(name=name)}' is longer than the text encoder's {limit} tokens")
    return positions


# --- recording cross-attention -----------------------------------------------------------------


@dataclass
class LayerAttention:
    """One cross-attention layer's maps of the name's tokens, summed over denoising steps."""

    place: Literal["down", "mid", "up"]
    resolution: int
    """Side of the latent feature map the layer sees."""
    total: torch.Tensor
    """(T, r, r) float32: sum over steps of the head-averaged attention of each name token."""
    steps: int
    """UNet evaluations summed."""

    def mean(self) -> torch.Tensor:
        return self.total / self.steps


class CrossAttentionRecorder:
    """Receives every cross-attention call of a UNet (through ``RecordingProcessor``) and, inside
    ``capture``, keeps the maps of the wanted layers: module name -> ``LayerAttention``."""

    def __init__(self) -> None:
        self.layers: dict[str, LayerAttention] = {}
        self.seen: set[tuple[str, int]] = set()
        """(place, resolution) of every cross-attention layer called while capturing."""
        self.active = False
        self._tokens: list[int] = []
        self._wanted: Callable[[str, int], bool] = lambda place, resolution: False
        self._conditional_from = 0
        self._per_map_max = False

    @contextmanager
    def capture(
        self, tokens: list[int], wanted: Callable[[str, int], bool], conditional_from: int, per_map_max: bool
    ) -> Iterator[CrossAttentionRecorder]:
        """Record, from fresh, the ``tokens`` columns of the layers ``wanted(place, resolution)`` for the
        batch rows from ``conditional_from`` on (1 under classifier-free guidance: [unconditional,
        conditional]); ``per_map_max`` divides each step's map by its max first (Eq. 2)."""
        self.layers, self.seen = {}, set()
        self._tokens, self._wanted = list(tokens), wanted
        self._conditional_from, self._per_map_max = conditional_from, per_map_max
        self.active = True
        try:
            yield self
        finally:
            self.active = False

    @torch.no_grad()
    def record(
        self,
        name: str,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        temb: torch.Tensor | None,
    ) -> None:
        place = {"down_blocks": "down", "mid_block": "mid", "up_blocks": "up"}.get(name.split(".")[0], "other")
        pixels = (
            hidden_states.shape[-2] * hidden_states.shape[-1] if hidden_states.ndim == 4 else hidden_states.shape[1]
        )
        resolution = math.isqrt(pixels)
        if resolution * resolution != pixels:
            raise ValueError(f"cross-attention layer '{name}' sees {pixels} positions, not a square feature map")
        self.seen.add((place, resolution))
        if not self._wanted(place, resolution):
            return
        if attention_mask is not None:
            raise ValueError(f"cross-attention layer '{name}' has an attention mask; recording does not apply it")
        # The layer's own preprocessing (diffusers' AttnProcessor), on the conditional rows.
        x = hidden_states[self._conditional_from :]
        context = encoder_hidden_states[self._conditional_from :]
        if attn.spatial_norm is not None:
            x = attn.spatial_norm(x, temb[self._conditional_from :])
        if x.ndim == 4:
            x = x.flatten(2).transpose(1, 2)
        if attn.group_norm is not None:
            x = attn.group_norm(x.transpose(1, 2)).transpose(1, 2)
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        b = x.shape[0]
        if b != 1:
            raise ValueError(
                f"cross-attention layer '{name}': {b} conditional rows, recording expects one image per call"
            )
        query = attn.to_q(x).float().view(b, pixels, attn.heads, -1).transpose(1, 2)
        key = attn.to_k(context).float().view(b, context.shape[1], attn.heads, -1).transpose(1, 2)
        probs = (query @ key.transpose(-1, -2) * attn.scale).softmax(-1)  # (b, heads, pixels, 77)
        maps = probs[0].mean(0)[:, self._tokens].T.reshape(len(self._tokens), resolution, resolution)
        if self._per_map_max:
            maps = maps / maps.amax((1, 2), keepdim=True).clamp_min(1e-12)
        layer = self.layers.get(name)
        if layer is None:
            self.layers[name] = LayerAttention(place, resolution, maps, 1)  # type: ignore[arg-type]
        else:
            layer.total += maps
            layer.steps += 1


class RecordingProcessor:
    """A layer's attention processor, unchanged, that also shows each call to the recorder."""

    def __init__(self, inner: Any, recorder: CrossAttentionRecorder, name: str) -> None:
        self.inner = inner
        self.recorder = recorder
        self.name = name

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        if self.recorder.active and encoder_hidden_states is not None:
            self.recorder.record(self.name, attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)


def install_recorder(unet: Any) -> CrossAttentionRecorder:
    """A recorder wrapped (``unet.set_attn_processor``) around the processor of every cross-attention
    layer (``attn2``) of ``unet``; self-attention layers keep theirs as they are."""
    recorder = CrossAttentionRecorder()
    processors = {}
    for key, processor in unet.attn_processors.items():
        name = key.removesuffix(".processor")
        if unet.get_submodule(name).is_cross_attention:
            processor = RecordingProcessor(processor, recorder, name)
        processors[key] = processor
    unet.set_attn_processor(processors)
    return recorder


# --- attention to coarse mask ------------------------------------------------------------------


def _resize(maps: torch.Tensor, size: int) -> torch.Tensor:
    """(T, r, r) -> (T, size, size), bicubic (SAS: cv2.INTER_CUBIC)."""
    return F.interpolate(maps[None].float(), size=(size, size), mode="bicubic", align_corners=False)[0]


def coarse_mask(
    layers: list[LayerAttention], image_size: int, threshold: float, aggregation: Literal["code", "paper"]
) -> torch.Tensor:
    """(image_size, image_size) bool: where the name's averaged attention, min-max scaled, exceeds ``threshold``.

    ``code`` expects plain maps and normalises per resolution, ``paper`` expects maps already
    divided by their max at every step (``per_map_max``) and averages the layers.
    """
    if aggregation == "code":
        resolutions = sorted({layer.resolution for layer in layers})
        per_resolution = []
        for r in resolutions:
            mean = torch.stack([layer.mean() for layer in layers if layer.resolution == r]).mean(0)
            resized = _resize(mean, image_size)
            per_resolution.append(resized / resized.amax((1, 2), keepdim=True).clamp_min(1e-12))
        heat = torch.stack(per_resolution).mean(0)
    else:
        heat = torch.stack([_resize(layer.mean(), image_size) for layer in layers]).mean(0)
    heat = heat.mean(0)
    heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp_min(1e-12)
    return heat > threshold


# --- drawing -----------------------------------------------------------------------------------


def load_diffusion(path: str, what: str, device: torch.device | str, dtype: str = "float32") -> Any:
    """The ``StableDiffusionPipeline`` in a local diffusers folder (no safety checker), on ``device``."""
    from diffusers import StableDiffusionPipeline

    pipe = load_pretrained(
        StableDiffusionPipeline,
        path,
        what,
        DIFFUSION_EXPECTED,
        config_file="model_index.json",
        subfolders=DIFFUSION_PARTS,
        safety_checker=None,
        requires_safety_checker=False,
        dtype=getattr(torch, dtype),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def guided(pipe: Any, guidance: float) -> bool:
    """Whether the pipeline runs classifier-free guidance (its batch then is [unconditional, conditional])."""
    return guidance > 1 and pipe.unet.config.time_cond_proj_dim is None


@torch.no_grad()
def draw_image(pipe: Any, prompt: str, seed: int, steps: int, guidance: float, image_size: int) -> torch.Tensor:
    """(image_size, image_size, 3) uint8: the image of ``prompt`` from the noise of CPU generator ``seed``
    (as SAS's ``torch.Generator().manual_seed(i)``: the same noise on every device and dtype)."""
    generator = torch.Generator().manual_seed(seed)
    side = image_size // pipe.vae_scale_factor
    shape = (1, pipe.unet.config.in_channels, side, side)
    latents = torch.randn(shape, generator=generator, dtype=torch.float32).to(pipe.device, pipe.unet.dtype)
    out = pipe(
        prompt,
        height=image_size,
        width=image_size,
        num_inference_steps=steps,
        guidance_scale=guidance,
        latents=latents,
        generator=generator,
        output_type="np",
    )
    return torch.from_numpy((out.images[0] * 255).round().astype(np.uint8))


# --- the generator -----------------------------------------------------------------------------


class DiffusionSAMGenerator(ImageGenerator[DiffusionSAMConfig]):
    name = "diffusion-sam"
    version = "1"

    def __init__(self, config: DiffusionSAMConfig, device: torch.device, what: str) -> None:
        from segment_anything import SamPredictor

        super().__init__(config, device, what)
        self.pipe = load_diffusion(config.diffusion_path, what, device, config.dtype)
        self.recorder = install_recorder(self.pipe.unet)
        self.sam = SamPredictor(load_sam(config.sam_path, what, config.sam_model_type).to(device))

    @classmethod
    def model_folders(cls, config: DiffusionSAMConfig) -> dict[str, str]:
        return {"diffusion_path": config.diffusion_path, "sam_path": config.sam_path}

    def resolutions(self, class_name: str) -> set[int]:
        """Latent sides of the cross-attention layers the coarse mask of ``class_name`` uses."""
        if self.config.sofa_quirk and class_name in SOFA_QUIRK_NAMES:
            return {SOFA_QUIRK_RESOLUTION}
        return set(self.config.attention_resolutions)

    def wanted(self, class_name: str) -> Callable[[str, int], bool]:
        """Whether a cross-attention layer (place, resolution) is recorded for ``class_name``: down and
        up blocks (SAS's ``from_where``); with the sofa quirk, the 8x8 layers of every place."""
        resolutions = self.resolutions(class_name)
        if self.config.sofa_quirk and class_name in SOFA_QUIRK_NAMES:
            return lambda place, resolution: resolution in resolutions
        return lambda place, resolution: place in ("down", "up") and resolution in resolutions

    def _check_layers(self, class_name: str) -> None:
        found = {layer.resolution for layer in self.recorder.layers.values()}
        missing = sorted(self.resolutions(class_name) - found)
        if missing:
            seen = ", ".join(f"{place} {r}" for place, r in sorted(self.recorder.seen))
            raise ValueError(
                f"{self.what}: no cross-attention layer of latent side {missing} to record for '{class_name}' at "
                f"image_size {self.config.image_size} (the UNet's layers: {seen}); set attention_resolutions"
            )

    def draw(self, class_name: str, seed: int) -> tuple[torch.Tensor, list[LayerAttention]]:
        """Image ``seed`` of ``class_name`` and the recorded attention of the name's tokens."""
        cfg = self.config
        tokens = class_token_positions(self.pipe.tokenizer, cfg.prompt, class_name)
        conditional_from = 1 if guided(self.pipe, cfg.guidance) else 0
        with self.recorder.capture(tokens, self.wanted(class_name), conditional_from, cfg.aggregation == "paper"):
            image = draw_image(
                self.pipe, cfg.prompt.format(name=class_name), seed, cfg.steps, cfg.guidance, cfg.image_size
            )
        self._check_layers(class_name)
        return image, [
            LayerAttention(a.place, a.resolution, a.total.cpu(), a.steps) for a in self.recorder.layers.values()
        ]

    @torch.no_grad()
    def segment(self, image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """(H, W) bool: SAM's single mask for the positive ``points`` (x, y) on the (H, W, 3) uint8 image."""
        self.sam.set_image(image.numpy())
        masks, _, _ = self.sam.predict(
            point_coords=points.numpy().astype(np.float32),
            point_labels=np.ones(len(points), dtype=np.int64),
            multimask_output=False,
        )
        return torch.from_numpy(masks[0])

    def generate(self, class_name: str) -> GeneratedImages:
        cfg = self.config
        images, coarse, points, pseudo = [], [], [], []
        for i in progress(range(cfg.images_per_class), f"{self.what}: {class_name}", unit="image"):
            image, layers = self.draw(class_name, seed=i)
            mask = coarse_mask(layers, cfg.image_size, cfg.threshold, cfg.aggregation)
            prompts = sam_prompt_points(mask, cfg.border_px, cfg.points, cfg.point_rule)
            images.append(image)
            coarse.append(mask)
            points.append(prompts)
            pseudo.append(self.segment(image, prompts))
        return GeneratedImages(
            class_name=class_name,
            images=torch.stack(images),
            pseudo_masks=torch.stack(pseudo),
            coarse_masks=torch.stack(coarse),
            points=torch.stack(points),
        )
