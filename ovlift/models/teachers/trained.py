"""``trained``: a small dense network trained as LSeg is, on labelled images of toy worlds.

Unlike ``synthetic``, nothing here is painted from the ground truth at run time: the
network sees RGB (or RGB-D) only, and its per-pixel embeddings live in the text space
it was trained against (MiniLM, 384-d), so it is queried, fused and distilled like any
other teacher. ``ovlift train-teachers SPEC`` trains it (``ovlift.models.teacher_training``).

The network (``DenseNet``): frames resized to the network's input size, a U-Net of
3x3 convolutions with GroupNorm and ReLU (level i at 1/2^i of the input, stride-2
convolutions down, bilinear upsampling and a skip concatenation up), a 1x1 projection
to the text space; the maps are upsampled bilinearly to the feature grid and each
pixel L2-normalised. GroupNorm, not BatchNorm: training and inference compute the same
function, whatever the batch.

The model folder, read through the same loading code as every other teacher
(``require_model_dir``):

* ``config.json``: ``model_type`` ``ovlift-dense-teacher`` and ``DenseModelMeta``
  (architecture and input, the text encoder and the vocabulary it was trained against,
  class names, prompts, temperature);
* ``model.safetensors``: float16 weights (training rounds them before its held-out
  evaluation, so the reported quality is the saved model's);
* ``training.json``: the training config, the pool's and validation's scenes and
  seeds, the per-class held-out 2D IoU (ScanNet's rule), code version and fingerprint;
  ``table.md``: that table in Markdown.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, ValidationError
from torch import nn

from ovlift.config import FrozenConfig, ModelPath
from ovlift.errors import StageInputError
from ovlift.kernels.fusion import DenseFeatures
from ovlift.models.loading import ModelLoadError, require_model_dir
from ovlift.models.teachers.base import Teacher, TeacherConfig, TeacherInput
from ovlift.models.text import TextEncoderConfig, encoder_folder

MODEL_TYPE = "ovlift-dense-teacher"
EXPECTED = "a trained teacher folder (config.json, model.safetensors; written by ovlift train-teachers)"


class NetworkConfig(FrozenConfig):
    """The dense network's architecture and input (a calibration knob: capacity, resolution)."""

    widths: tuple[int, ...] = Field((16, 32, 64, 96), min_length=1)
    """Channels per level; level i runs at 1/2^i of the input size."""
    input: Literal["rgb", "rgbd"] = "rgb"
    """What the network sees: colour, or colour and depth (frames without depth cannot be used)."""
    input_height: int = Field(60, ge=8)
    """Rows frames are resized to before the network (its resolution)."""
    input_width: int = Field(80, ge=8)
    """Columns frames are resized to before the network."""
    depth_scale_m: float = Field(5.0, gt=0)
    """Depth enters as metres / this (0 where invalid)."""


class DenseModelMeta(FrozenConfig):
    """What ``config.json`` holds besides ``model_type``."""

    network: NetworkConfig
    dim: int = Field(ge=1)
    """Embedding channels (the text encoder's)."""
    text: TextEncoderConfig
    """The text encoder whose space the embeddings live in."""
    vocabulary: str
    """The vocabulary's name it was trained on (``classes``, ``prompts`` are its content)."""
    classes: tuple[str, ...]
    prompts: tuple[str, ...]
    """Names embedded (through ``text``'s templates); a class scores its best prompt."""
    prompt_class: tuple[int, ...]
    temperature: float = Field(gt=0)
    """Training's logits: cosine / temperature."""


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(4, channels), channels)


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), _norm(c_out), nn.ReLU(inplace=True))


class DenseNet(nn.Module):
    """The U-Net described in the module docstring; ``embed`` is the teacher's output."""

    def __init__(self, network: NetworkConfig, dim: int) -> None:
        super().__init__()
        self.network = network
        widths = network.widths
        c_in = 4 if network.input == "rgbd" else 3
        self.down = nn.ModuleList(
            nn.Sequential(_conv(c, w, 1 if i == 0 else 2), _conv(w, w))
            for i, (c, w) in enumerate(zip((c_in, *widths[:-1]), widths, strict=True))
        )
        self.up = nn.ModuleList(_conv(widths[i + 1] + widths[i], widths[i]) for i in range(len(widths) - 1))
        self.head = nn.Conv2d(widths[0], dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c_in, h, w) prepared input -> (B, dim, h, w) unnormalised embeddings."""
        return self.head(self.trunk(x))

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c_in, h, w) -> (B, widths[0], h, w): the features the 1x1 head projects."""
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        for i in reversed(range(len(self.up))):
            x = F.interpolate(x, size=skips[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.up[i](torch.cat([x, skips[i]], dim=1))
        return x

    def cosines(self, x: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """(B, P, h, w) cosine of each pixel's embedding to each (P, dim) unit prompt, equal to
        ``normalize(self(x)) . prompts`` without the (B, dim, h, w) maps: with f = W t + b,
        p . f = (p W) . t + p . b and |f|^2 = t' W'W t + 2 (W'b) . t + |b|^2 (training's loss
        is a few channels per pixel instead of ``dim``)."""
        t = self.trunk(x)
        weight, bias = self.head.weight[:, :, 0, 0], self.head.bias  # (dim, c), (dim,)
        dots = torch.einsum("pc,bchw->bphw", prompts @ weight, t) + (prompts @ bias)[None, :, None, None]
        gram = weight.T @ weight
        square = torch.einsum("bchw,cd,bdhw->bhw", t, gram, t) + 2 * torch.einsum("c,bchw->bhw", weight.T @ bias, t)
        norm = (square + bias @ bias).clamp(min=1e-12).sqrt()
        return dots / norm[:, None]

    def inputs(self, rgb: torch.Tensor, depth: torch.Tensor | None, where: str) -> torch.Tensor:
        """The network's input from (B, 3, h, w) colour in [0, 1] and (B, 1, h, w) metres."""
        x = (rgb - 0.5) / 0.25
        if self.network.input == "rgb":
            return x
        if depth is None:
            raise StageInputError(f"{where}: the network sees RGB-D (input 'rgbd') but the frames have no depth")
        return torch.cat([x, torch.nan_to_num(depth, nan=0.0) / self.network.depth_scale_m], dim=1)

    def embed(
        self, color: torch.Tensor, depth: torch.Tensor | None, hw: tuple[int, int], where: str = "frames"
    ) -> torch.Tensor:
        """(B, dim, h, w) unit embeddings of (B, H, W, 3) uint8 frames (and (B, H, W) metres)
        at feature size ``hw``."""
        device = next(self.parameters()).device
        size = (self.network.input_height, self.network.input_width)
        rgb, d = resize_frames(color.to(device), None if depth is None else depth.to(device), size)
        out = F.interpolate(self(self.inputs(rgb, d, where)), size=hw, mode="bilinear", align_corners=False)
        return F.normalize(out, dim=1)


def resize_frames(
    color: torch.Tensor, depth: torch.Tensor | None, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, H, W, 3) uint8 and (B, H, W) depth -> (B, 3, h, w) colour in [0, 1] (bilinear,
    antialiased) and (B, 1, h, w) depth (nearest: no depth mixed across edges)."""
    rgb = color.permute(0, 3, 1, 2).float() / 255.0
    rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=True)
    if depth is None:
        return rgb, None
    return rgb, F.interpolate(depth[:, None].float(), size=size, mode="nearest-exact")


def save_dense_model(folder: Path, model: DenseNet, meta: DenseModelMeta) -> None:
    """``config.json`` and float16 ``model.safetensors`` into ``folder`` (created)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": MODEL_TYPE, **meta.normalised()}, indent=2) + "\n")
    weights = {k: v.detach().to(torch.float16).cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(folder / "model.safetensors"))


def read_meta(folder: str | Path, what: str) -> DenseModelMeta:
    """The folder's ``config.json`` as ``DenseModelMeta`` (a ModelLoadError says what is wrong)."""
    path = require_model_dir(folder, what, EXPECTED) / "config.json"
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise ModelLoadError(f"{what}: '{path}' is not valid JSON ({err})") from None
    if data.pop("model_type", None) != MODEL_TYPE:
        raise ModelLoadError(f"{what}: '{path}' is not model_type '{MODEL_TYPE}' (expected {EXPECTED})")
    try:
        return DenseModelMeta.model_validate(data)
    except ValidationError as err:
        raise ModelLoadError(f"{what}: '{path}': {err}") from None


def load_dense_model(folder: str | Path, what: str, device: torch.device) -> tuple[DenseNet, DenseModelMeta]:
    """The model in ``folder``, float32 on ``device`` in eval mode, and its meta."""
    from safetensors.torch import load_file

    meta = read_meta(folder, what)
    model = DenseNet(meta.network, meta.dim)
    try:
        weights = load_file(str(Path(folder) / "model.safetensors"))
        model.load_state_dict({k: v.float() for k, v in weights.items()})
    except Exception as err:  # noqa: BLE001 - safetensors and torch raise their own types
        raise ModelLoadError(f"{what}: cannot load '{folder}/model.safetensors': {type(err).__name__}: {err}") from None
    return model.to(device).eval(), meta


class TrainedConfig(TeacherConfig):
    model_path: ModelPath
    """The model folder ``ovlift train-teachers`` wrote (config.json, model.safetensors, training.json)."""


class TrainedModel:
    """What teachers built on a trained folder share (their config's ``model_path``): the
    model loaded once, its channels, text encoder and folders. ``class X(TrainedModel, Teacher[XConfig])``."""

    config: Any
    model: DenseNet
    meta: DenseModelMeta

    def __init__(self, config: Any, device: torch.device, text, what: str) -> None:
        super().__init__(config, device, text, what)  # type: ignore[call-arg]
        self.model, self.meta = load_dense_model(config.model_path, what, device)

    @property
    def dim(self) -> int:
        return self.meta.dim

    @property
    def text_encoder(self) -> TextEncoderConfig:
        return self.meta.text

    @classmethod
    def model_folders(cls, config: Any) -> dict[str, str]:
        """The folder, and the text encoder's folder when its config names one that exists
        (loading says what is wrong otherwise)."""
        folders = {"model_path": config.model_path}
        try:
            folders["text"] = encoder_folder(read_meta(config.model_path, "trained teacher").text)
        except ModelLoadError:
            pass
        return folders


class TrainedTeacher(TrainedModel, Teacher[TrainedConfig]):
    name = "trained"
    version = "1"

    @torch.no_grad()
    def __call__(self, batch: TeacherInput) -> DenseFeatures:
        where = f"scene '{batch.scene_id}': {self.what}"
        dense = self.model.embed(batch.color, batch.depth, batch.feature_hw, where)
        return DenseFeatures(dense.permute(0, 2, 3, 1).to(torch.float16).cpu())
