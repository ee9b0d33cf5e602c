"""``capability`` (global): how well each 2D teacher recognises each class, without labels (SAS).

For every class of the vocabulary an image generator (``implementation``: see
``ovlift.models.generators.registry``) draws m images with a pseudo mask of the
class; every teacher runs on them exactly as ``extract2d`` runs it on scene frames
(same config, same model), its pixels are labelled by cosine to the vocabulary in
the teachers' shared text space, and its mask of the class is scored against the
pseudo mask. Capability = mean per-image IoU (the paper) or pooled IoU (SAS's code).

The teachers are the plan's ``extract2d`` entries (``teachers`` picks and orders
them). A teacher that imports outputs computed elsewhere (``imports_outputs``, as
``cached``) cannot run on new images: the stage exports them to
``<files>/images/capability-<class>/image-NNNNNN.png`` and reads that teacher's
outputs on them from ``cached_outputs[<teacher>]`` in the teacher's own pattern; run
the stage once to export them (it then fails naming the files it needs).

Per class a contact sheet (``<files>/contact_sheets/<class>.png``) shows the images,
the coarse mask and prompt points (diffusion-sam), the pseudo mask and each
teacher's mask with its IoU, so that a low number can be traced to its cause.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ovlift.cache_schema import GroupWriter, StageGroup, canonical_json
from ovlift.cache_schema.groups.capability import CAPABILITY_SPEC
from ovlift.content_hash import folder_digest
from ovlift.errors import StageInputError
from ovlift.kernels.classify import classify
from ovlift.kernels.fusion import FeatureBuffers
from ovlift.models.generators.base import GeneratedImages, GeneratorConfig, ImageGenerator
from ovlift.models.generators.registry import GENERATORS
from ovlift.models.loading import model_inputs
from ovlift.models.teachers.base import Teacher, TeacherInput, resize_nearest
from ovlift.models.text import TextEncoderConfig, text_space
from ovlift.names import file_part
from ovlift.progress import progress
from ovlift.stages.base import PluginStage, Stage, StageContext, teacher_stages
from ovlift.vocabularies import Vocabulary, get_vocabulary


def capability_scene(class_name: str) -> str:
    """The scene id a class's images have for the teachers (``capability-shower-curtain``)."""
    return "capability-" + file_part("-".join(class_name.split()))  # a vocabulary file's names: never a path


def image_name(index: int) -> str:
    """The frame name of image ``index`` (``image-000003``)."""
    return f"image-{index:06d}"


class CapabilityStage(PluginStage[GeneratorConfig, ImageGenerator]):
    """The teacher-on-generated-images loop around whichever generator the config belongs to."""

    computes_on_device = True
    memory_gb = 16.0  # Stable Diffusion, SAM and the teachers

    spec = CAPABILITY_SPEC
    writes_files = True
    plugins = GENERATORS
    version_prefix = "1."

    def __init__(self, config: GeneratorConfig, variant: str | None = None) -> None:
        super().__init__(config, variant)
        self.teacher_stages: dict[str, Stage] = {}
        """The plan's extract2d stages measured, by variant (each knows its teacher, ``plugin``)."""
        self._plan_teachers: list[str] = []

    def bind(self, stages: Mapping[str, Stage]) -> None:
        found = teacher_stages(stages)
        self._plan_teachers = list(found)
        wanted = self.config.teachers or tuple(found)
        self.teacher_stages = {name: found[name] for name in wanted if name in found}

    def importing(self) -> dict[str, Stage]:
        """The measured teachers that import their outputs (computed elsewhere) instead of running."""
        return {name: stage for name, stage in self.teacher_stages.items() if stage.plugin.imports_outputs}

    def check_inputs(self, keys: list[str]) -> None:
        repeated = sorted({t for t in self.config.teachers if self.config.teachers.count(t) > 1})
        if repeated:
            raise ValueError(f"teachers lists {repeated} more than once")
        unused = sorted(set(self.config.cached_outputs) - set(self.teacher_stages))
        if unused:
            raise ValueError(f"cached_outputs names {unused}, which are not among the measured teachers")
        missing = [t for t in self.config.teachers if t not in self.teacher_stages]
        if missing or not self.teacher_stages:
            raise ValueError(
                f"measures teachers {list(self.config.teachers) or '(all)'}, but the plan's extract2d "
                f"configures {self._plan_teachers or 'none'}"
            )
        for name, stage in self.importing().items():
            if name not in self.config.cached_outputs:
                raise ValueError(
                    f"teacher '{name}' imports outputs computed elsewhere ({stage.implementation}): give "
                    f"cached_outputs.{name}, the folder of its outputs on the exported images"
                )

    def external_inputs(self, scene_id: str | None, inputs: Mapping[str, StageGroup]) -> dict[str, str]:
        """The generator's models, each teacher's config and models, the imported teachers' outputs."""
        found = model_inputs(self.plugin.model_folders(self.config))
        for name, stage in self.teacher_stages.items():
            described = [stage.implementation_id, stage.version, stage.config.fingerprinted()]
            found[f"teacher:{name}"] = hashlib.blake2b(canonical_json(described).encode(), digest_size=16).hexdigest()
            models = model_inputs(stage.plugin.model_folders(stage.config))
            found.update({f"teacher:{name}/{key}": digest for key, digest in models.items()})
        for name, folder in self.config.cached_outputs.items():
            found[f"files:{name}"] = folder_digest(folder) if Path(folder).is_dir() else "missing"
        return found

    def run(self, ctx: StageContext, out: GroupWriter) -> None:
        from ovlift.plots import contact_sheet

        cfg = self.config
        assert ctx.files is not None
        generator = self.plugin(
            cfg, torch.device(cfg.device or ctx.device), f"capability generator '{self.implementation}'"
        )
        teachers = {name: self._teacher(name, stage, ctx) for name, stage in self.teacher_stages.items()}
        text_encoder = shared_text_space({n: t.text_encoder for n, t in teachers.items()}, ctx.where())
        vocab = get_vocabulary(cfg.vocabulary)
        prompts = ctx.text(TextEncoderConfig(**{**text_encoder, "templates": cfg.templates}), list(vocab.prompts))
        scores = Scores(len(teachers), len(vocab.classes), cfg.images_per_class)
        absent: list[str] = []
        for k, class_name in enumerate(progress(vocab.classes, "capability", unit="class")):
            if class_name in cfg.zero_classes:
                continue
            images = generator.generate(class_name)
            scores.counts[k] = len(images.images)
            if scores.counts[k] == 0:
                ctx.log.warning("capability: generator '%s' drew no image of '%s'", self.implementation, class_name)
                continue
            missing = self._export_for_importers(images, teachers, ctx.files / "images")
            if missing:  # export every class first, then say what is needed
                absent += missing
                continue
            masks = self._score(teachers, images, k, scores, (prompts, torch.tensor(vocab.prompt_class)))
            ious = {name: scores.per_image[t, k, : scores.counts[k]] for t, name in enumerate(teachers)}
            sheet = capability_scene(class_name).removeprefix("capability-")
            contact_sheet(images, masks, ious, ctx.files / "contact_sheets" / f"{sheet}.png")
        if absent:
            raise self._missing_outputs_error(ctx, absent)
        self._write(ctx, out, scores, list(teachers), vocab, text_encoder)

    def _export_for_importers(
        self, images: GeneratedImages, teachers: Mapping[str, Teacher], folder: Path
    ) -> list[str]:
        """Export the images when a teacher imports its outputs; the files those outputs still lack."""
        importing = self.importing()
        if not importing:
            return []
        export_images(images, folder)
        return [str(path) for name in importing for path in missing_outputs(teachers[name], images)]

    def _score(
        self,
        teachers: Mapping[str, Teacher],
        images: GeneratedImages,
        k: int,
        scores: Scores,
        text: tuple[torch.Tensor, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Each teacher's mask of class ``k`` in the images, and its IoU with the pseudo masks."""
        masks = {}
        for t, (name, teacher) in enumerate(teachers.items()):
            masks[name] = teacher_masks(teacher, self.teacher_stages[name], images, k, *text)
            inter = (masks[name] & images.pseudo_masks).sum((1, 2)).double()
            union = (masks[name] | images.pseudo_masks).sum((1, 2)).double()
            scores.per_image[t, k, : scores.counts[k]] = torch.where(
                union > 0, inter / union.clamp(min=1), np.nan
            ).numpy()
            scores.pooled[t, k] = float(inter.sum() / union.sum()) if union.sum() > 0 else 0.0
        return masks

    def _missing_outputs_error(self, ctx: StageContext, absent: list[str]) -> StageInputError:
        assert ctx.files is not None
        patterns = []
        for name, stage in self.importing().items():
            config = stage.plugin.importing_from(stage.config, self.config.cached_outputs[name])
            patterns.append(f"'{name}': {stage.plugin.output_files(config, '<scene>', {0: '<frame>'})[0]}")
        return StageInputError(
            f"{ctx.where()}: the imported teachers' outputs on the generated images are missing ({len(absent)} "
            f"files, e.g. '{absent[0]}'): run those teachers on the images exported to "
            f"'{ctx.files / 'images'}' (<scene>/<frame>.png) and write each one's outputs under its "
            f"cached_outputs folder in its own pattern: {', '.join(patterns)}"
        )

    def _write(
        self,
        ctx: StageContext,
        out: GroupWriter,
        scores: Scores,
        teachers: list[str],
        vocab: Vocabulary,
        text_encoder: dict,
    ) -> None:
        cfg = self.config
        capability = scores.capability(cfg.iou)
        out.write("capability", capability.astype(np.float32))
        out.write("image_count", scores.counts)
        out.write("per_image_iou", scores.per_image)
        out.set_info(
            teachers=teachers,
            classes=list(vocab.classes),
            vocabulary=cfg.vocabulary,
            text_encoder=text_encoder,
            generator=self.implementation,
            iou=cfg.iou,
            templates=cfg.templates,
            contact_sheets=f"{ctx.files_url}/contact_sheets",
        )
        for name, row in zip(teachers, capability):
            ctx.log.info("capability of '%s': %s", name, ", ".join(f"{c} {v:.2f}" for c, v in zip(vocab.classes, row)))

    def _teacher(self, name: str, stage: Stage, ctx: StageContext) -> Teacher:
        if not stage.plugin.imports_outputs:
            return stage.load_teacher(ctx)  # the model extract2d runs, loaded once per process
        config = stage.plugin.importing_from(stage.config, self.config.cached_outputs[name])
        device = torch.device(stage.config.device or ctx.device)  # its outputs on the exported images
        return stage.plugin(config, device, ctx.text, f"teacher '{name}'")


class Scores:
    """Per teacher and class, each image's IoU with its pseudo mask, the pooled IoU, and the image counts."""

    def __init__(self, teachers: int, classes: int, images: int) -> None:
        self.per_image = np.full((teachers, classes, images), np.nan, dtype=np.float32)
        self.pooled = np.zeros((teachers, classes), dtype=np.float64)
        self.counts = np.zeros(classes, dtype=np.int32)

    def capability(self, iou: str) -> np.ndarray:
        """Mean per-image IoU (the paper; a class without images: 0) or pooled IoU (SAS's code)."""
        if iou != "mean":
            return self.pooled
        with warnings.catch_warnings():  # classes without an image are all NaN: capability 0
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nan_to_num(np.nanmean(self.per_image, axis=2), nan=0.0)


def shared_text_space(encoders: Mapping[str, TextEncoderConfig], where: str) -> dict:
    """The one text encoder (templates aside) every teacher's features live in, or an error naming them."""
    spaces = {name: text_space(enc.normalised()) for name, enc in encoders.items()}
    if len({json.dumps(s, sort_keys=True) for s in spaces.values()}) > 1:
        raise StageInputError(
            f"{where}: the teachers live in different text spaces ({spaces}); SAS compares and fuses them only "
            "in one: give every teacher the same text encoder, or list those that share one in capability.teachers"
        )
    return next(iter(spaces.values()))


def teacher_masks(
    teacher: Teacher,
    stage: Stage,
    images: GeneratedImages,
    class_index: int,
    prompts: torch.Tensor,
    prompt_class: torch.Tensor,
) -> torch.Tensor:
    """(m, H, W) bool: where the teacher's pixel feature is nearest to class ``class_index``,
    on the image grid (features without a pixel, e.g. unsegmented, are not the class)."""
    cfg = stage.config
    hw = (cfg.feature_height, cfg.feature_width)
    scene_id = capability_scene(images.class_name)
    result = []
    for start in range(0, len(images.images), cfg.frames_per_batch):
        rows = slice(start, start + cfg.frames_per_batch)
        index = np.arange(start, min(start + cfg.frames_per_batch, len(images.images)))
        batch = TeacherInput(
            scene_id=scene_id,
            frame_index=index,
            color=images.images[rows],
            feature_hw=hw,
            depth=None if images.depth is None else images.depth[rows],
            labels=None if images.labels is None else images.labels[rows],
            instances=None if images.instances is None else images.instances[rows],
            class_names=images.label_names,
            frame_names=tuple(image_name(int(i)) for i in index),
        )
        features = teacher(batch)
        on = features.coverage().device  # a cached teacher's features are on the CPU, whatever ``device``
        n = len(index) * hw[0] * hw[1]
        flat = features.rows(torch.arange(n, device=on), FeatureBuffers(features.channels, n, on))
        label = classify(flat, prompts.to(on), prompt_class)[1].reshape(len(index), *hw)
        mask = features.coverage() & (label == class_index)
        result.append(resize_nearest(mask.cpu(), tuple(images.images.shape[1:3])))
    return torch.cat(result)


def missing_outputs(teacher: Teacher, images: GeneratedImages) -> list[Path]:
    """An importing teacher's output files for these images that do not exist yet."""
    frames = {i: image_name(i) for i in range(len(images.images))}
    paths = teacher.output_files(teacher.config, capability_scene(images.class_name), frames)
    return [p for p in paths if not p.is_file()]


def export_images(images: GeneratedImages, folder: Path) -> None:
    """The images as PNG files, named as ``cached`` teachers expect their scenes and frames."""
    target = folder / capability_scene(images.class_name)
    target.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images.images.numpy()):
        Image.fromarray(image).save(target / f"{image_name(i)}.png")
