"""``caption-aligned``: a segmenter's masks, described in words (SAS's model alignment).

Teachers with different embedding spaces meet in one text space: a captioner (BLIP,
transformers) describes each mask's crop, the caption and the mask's label (from the
segmenter's own label set) make one text, and the shared text encoder embeds it. A pixel
takes the embedding of its most probable mask.

The text, by ``caption_mode``; both read the caption's part-of-speech tags from nltk's
averaged perceptron tagger (Penn Treebank tags), loaded from ``tagger_path``:

- ``adjectives`` (SAS's released code, the default): the caption's adjectives (tags JJ,
  JJR, JJS, in caption order, repeats kept) joined with " and ", in the template
  "a {adjectives} {label} in a scene": "a black leather couch in the living room" with
  label sofa -> "a black sofa in a scene"; without adjectives "a sofa in a scene".
- ``replace-noun`` (SAS's paper, "a wooden bench" -> "a wooden table"): the head of the
  caption's first noun phrase is replaced by the label. The head is the last word of the
  first run of nouns (NN, NNS, NNP, NNPS) and the whole run is replaced, compound
  modifiers included ("a wooden park bench next to a tree" -> "a wooden table next to a
  tree"); adjectives, determiners and the rest of the caption stay. A run that only frames
  or measures what follows "of" ("a close up of", "a picture of", "a pair of", "the top
  of") is skipped for the next one ("a close up of a bed" -> "a close up of a chair"),
  unless no noun follows. An "a"/"an" right before the replaced run is made to agree with
  the label's first letter. Number is not: "two chairs" with label table -> "two table".
  A caption without a noun gives "a {label}".

Matching is by whole words (tokens from nltk's Treebank tokenizer, which needs no data),
never by substring: "a bedroom with a bed and a lamp" with label bed has the head noun
"bedroom" and becomes "a bed with a bed and a lamp".
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from ovlift.config import ModelPath
from ovlift.kernels.fusion import MaskFeatures
from ovlift.models.loading import load_pretrained
from ovlift.models.pos_tagger import load_tagger
from ovlift.models.segmenter import load_segmenter, mask_crops
from ovlift.models.teachers.base import Teacher, TeacherConfig, TeacherInput, top_k_masks
from ovlift.models.text import TextEncoderConfig, encoder_folder, load_text_encoder

CAPTIONER_EXPECTED = "a Hugging Face BLIP captioning model with its processor, saved with save_pretrained"
CaptionMode = Literal["adjectives", "replace-noun"]
ADJECTIVES = frozenset({"JJ", "JJR", "JJS"})
NOUNS = frozenset({"NN", "NNS", "NNP", "NNPS"})
FRAMES = frozenset(
    # the picture ("a close up of a bed"), a quantity ("a pair of shoes"), a part ("the top of a table")
    {"close", "up", "closeup", "close-up", "picture", "photo", "photograph", "image", "view", "shot"}
    | {"pair", "group", "couple", "bunch", "pile", "stack", "set", "row", "piece", "lot", "number"}
    | {"side", "top", "bottom", "back", "corner", "edge", "part"}
)
SAS_TEMPLATE = "a {adjectives} {label} in a scene"


class CaptionAlignedConfig(TeacherConfig):
    segmenter_path: ModelPath
    """Local MaskFormer or Mask2Former folder; its id2label names the masks."""
    captioner_path: ModelPath
    """Local BLIP captioning folder (model + processor)."""
    tagger_path: ModelPath
    """Local nltk part-of-speech tagger: the ``averaged_perceptron_tagger_eng`` data package's
    folder (its three JSON files), the folder holding it, or an nltk_data folder."""
    caption_mode: CaptionMode = "adjectives"
    """Text embedded per mask: ``adjectives`` (SAS's code: the caption's adjectives and the label
    in ``caption_template``) or ``replace-noun`` (SAS's paper: the caption, its head noun replaced
    by the label)."""
    caption_template: str = SAS_TEMPLATE
    """The ``adjectives`` mode's text, with ``{adjectives}`` (joined with " and "; empty when
    there are none) and ``{label}``."""
    text: TextEncoderConfig = TextEncoderConfig()
    """The shared text space the captions are embedded in."""
    mask_threshold: float = Field(0.5, gt=0, lt=1)
    """A pixel belongs to a mask where its probability exceeds this."""
    max_masks: int = Field(16, ge=1)
    """Most confident proposals kept per frame."""
    caption_tokens: int = Field(20, ge=1)
    """Longest caption, in tokens."""
    segmenter_short_side: int = Field(384, ge=32)
    """Short side of the segmenter's input."""

    @field_validator("caption_template")
    @classmethod
    def _template_fields(cls, value: str) -> str:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        if "label" not in fields or not fields <= {"adjectives", "label"}:
            raise ValueError(f"'{value}' must name {{label}} and may name {{adjectives}}, nothing else")
        return value


@dataclass(frozen=True)
class Token:
    text: str
    start: int
    end: int
    tag: str


def tag_caption(caption: str, tagger: Any) -> list[Token]:
    """The caption's words with their character spans and part-of-speech tags."""
    spans = list(_tokenizer().span_tokenize(caption))
    words = [caption[s:e] for s, e in spans]
    return [Token(w, s, e, t) for w, (s, e), (_, t) in zip(words, spans, tagger.tag(words))]


@lru_cache(maxsize=1)
def _tokenizer() -> Any:
    from nltk.tokenize import NLTKWordTokenizer  # word_tokenize's, without its sentence splitter's data

    return NLTKWordTokenizer()


def adjectives_text(tokens: list[Token], label: str, template: str = SAS_TEMPLATE) -> str:
    """SAS's code: "a {adjectives} {label} in a scene"."""
    adjectives = " and ".join(t.text for t in tokens if t.tag in ADJECTIVES)
    return " ".join(template.format(adjectives=adjectives, label=label).split())


def replace_head_noun(caption: str, tokens: list[Token], label: str) -> str:
    """SAS's paper: the caption with the first noun phrase's head (its run of nouns) replaced by ``label``."""
    runs, i = [], 0
    while i < len(tokens):
        if tokens[i].tag in NOUNS:
            j = i
            while j + 1 < len(tokens) and tokens[j + 1].tag in NOUNS:
                j += 1
            runs.append((i, j))
            i = j
        i += 1
    if not runs:
        return f"a {label}"
    start, end = next((r for r in runs if not _frames(tokens, *r)), runs[0])
    text = caption[: tokens[start].start] + label + caption[tokens[end].end :]
    if start > 0 and tokens[start - 1].text.lower() in ("a", "an"):
        article = tokens[start - 1]
        agreed = "an" if label[:1].lower() in "aeiou" else "a"
        agreed = agreed.capitalize() if article.text[0].isupper() else agreed
        text = text[: article.start] + agreed + text[article.end :]
    return text


def _frames(tokens: list[Token], start: int, end: int) -> bool:
    """Whether the noun run ``start..end`` frames what follows "of": "a close up of", "a pair of"."""
    after = end + 1
    if after < len(tokens) and tokens[after].text.lower() == "up":
        after += 1
    return (
        tokens[end].text.lower() in FRAMES
        and after + 1 < len(tokens)
        and tokens[after].text.lower() == "of"
        and any(t.tag in NOUNS for t in tokens[after + 1 :])
    )


def caption_text(
    caption: str, label: str, tagger: Any, mode: CaptionMode = "adjectives", template: str = SAS_TEMPLATE
) -> str:
    """The text embedded for a mask with this ``caption`` and segmenter ``label``."""
    tokens = tag_caption(caption.strip(), tagger)
    if mode == "adjectives":
        return adjectives_text(tokens, label, template)
    return replace_head_noun(caption.strip(), tokens, label)


class CaptionAlignedTeacher(Teacher[CaptionAlignedConfig]):
    name = "caption-aligned"
    version = "2"  # 2: SAS's texts from a part-of-speech tagger (was a word heuristic)
    produces_masks = True

    def __init__(self, config: CaptionAlignedConfig, device: torch.device, text, what: str) -> None:
        super().__init__(config, device, text, what)
        self.segmenter = load_segmenter(config.segmenter_path, what, device)
        self.captioner, self.processor = _load_captioner(config.captioner_path, what, str(device))
        self.tagger = load_tagger(config.tagger_path, what)
        self.encoder = load_text_encoder(config.text, str(device))

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @classmethod
    def model_folders(cls, config: CaptionAlignedConfig) -> dict[str, str]:
        return {
            "segmenter_path": config.segmenter_path,
            "captioner_path": config.captioner_path,
            "tagger_path": config.tagger_path,
            "text": encoder_folder(config.text),
        }

    @property
    def text_encoder(self) -> TextEncoderConfig:
        return self.config.text

    @torch.no_grad()
    def captions(self, crops: torch.Tensor) -> list[str]:
        if len(crops) == 0:
            return []
        images = [c.permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy() for c in crops]
        inputs = self.processor(images=images, return_tensors="pt").to(self.device)
        out = self.captioner.generate(**inputs, max_new_tokens=self.config.caption_tokens)
        return self.processor.batch_decode(out, skip_special_tokens=True)

    def text_for(self, caption: str, label: str) -> str:
        """What is embedded for a mask with this caption and label."""
        return caption_text(caption, label, self.tagger, self.config.caption_mode, self.config.caption_template)

    def __call__(self, batch: TeacherInput) -> MaskFeatures:
        cfg = self.config
        id2label = self.segmenter.id2label
        proposals = self.segmenter.propose(batch.color, batch.feature_hw, cfg.segmenter_short_side)
        ids, weights, embeddings, offset = [], [], [], 0
        for b, prop in enumerate(proposals):
            keep = prop.scores.topk(min(cfg.max_masks, len(prop.scores))).indices
            probs = prop.probs[keep]
            masks = probs > cfg.mask_threshold
            present = masks.flatten(1).any(1)
            keep, probs, masks = keep[present], probs[present], masks[present]
            crops = mask_crops(batch.color[b], masks, 384)
            texts = [self.text_for(c, id2label[int(k)]) for c, k in zip(self.captions(crops), prop.classes[keep])]
            emb = self.encoder.encode(texts) if texts else torch.zeros(0, self.dim)
            frame_ids, frame_w = top_k_masks(probs * masks, 1)  # the most probable mask wins
            ids.append(torch.where(frame_ids >= 0, frame_ids + offset, -1))
            weights.append(frame_w)
            embeddings.append(emb)
            offset += len(emb)
        return MaskFeatures(torch.stack(ids), torch.stack(weights), torch.cat(embeddings).to(torch.float16))


@lru_cache(maxsize=2)
def _load_captioner(path: str, what: str, device: str) -> tuple[Any, Any]:
    from transformers import AutoProcessor, BlipForConditionalGeneration

    model = load_pretrained(BlipForConditionalGeneration, path, what, CAPTIONER_EXPECTED).eval().to(device)
    processor = load_pretrained(AutoProcessor, path, what, CAPTIONER_EXPECTED)
    return model, processor
