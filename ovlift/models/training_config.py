"""What every ``distill`` implementation shares: the training scenes, the student, the
optimiser and its schedule, augmentation and seed. Importable without spconv.

Defaults are OpenScene's (and SAS's); an implementation whose paper trains otherwise
states only the differences, ``TrainingConfig.with_defaults(...)`` (CLIP2Scene's SGD
at 0.1, for one), so each field has one type, one bound and one description.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from ovlift.config import FrozenConfig, runtime_field
from ovlift.models.student_config import StudentConfig

if TYPE_CHECKING:
    from ovlift.models.training import Augment, Schedule


class TrainingConfig(FrozenConfig):
    split: str = "train"
    """Plan split of the training scenes (``all``: every scene)."""
    val_split: str | None = None
    """Plan split whose scenes' loss is measured after every epoch (label-free: against the teacher's
    features there); None: no validation. Its scenes must not be training scenes."""
    patience: int | None = Field(None, ge=1)
    """With ``val_split``: stop after this many epochs without a lower validation loss and publish the
    best epoch's weights (``epochs`` is then the most); None: every epoch, the last published."""
    teacher: str | None = None
    """Teacher whose lifted features are distilled (None: the only one; ``fuse``'s set is named
    ``fused:<a>+<b>``)."""
    vocabulary: str = "scannet20"
    """Class texts the objective classifies into (CUS3D's label loss; CLIP2Scene's pixel labels)."""
    templates: Literal["single", "ensemble"] = "single"
    """Prompt templates of those class texts and of TESD's (CLIP2Scene: the 85-template ensemble)."""
    student: StudentConfig = StudentConfig()
    """The 3D network (CLIP2Scene: 0.1 m voxels)."""
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    """Optimiser: Adam (OpenScene, SAS), AdamW, or SGD with momentum 0.9 and dampening 0.1 (CLIP2Scene's code)."""
    lr: float = Field(1e-4, gt=0)
    """Initial learning rate (OpenScene, SAS: 1e-4; CLIP2Scene's code: 0.1)."""
    final_lr: float = Field(1e-5, ge=0)
    """Learning rate at the last step (SAS: linear 1e-4 -> 1e-5; CLIP2Scene: 0)."""
    schedule: Literal["cosine", "linear"] = "cosine"
    """Decay from lr to final_lr."""
    weight_decay: float = Field(0.0, ge=0)
    """Weight decay (CLIP2Scene's code: 1e-4)."""
    epochs: int = Field(100, ge=1)
    """Passes over the training scenes (CLIP2Scene: 20)."""
    batch_size: int = Field(2, ge=1)
    """Scenes (key frames) per step, over all processes (CLIP2Scene's code: 4 per GPU)."""
    rotate_z: bool = True
    """Augment: rotation about z by up to +-pi."""
    flip: bool = True
    """Augment: random flips of x and y."""
    scale: tuple[float, float] = (0.9, 1.1)
    """Augment: uniform scaling range (CLIP2Scene: none, (1, 1))."""
    seed: int = 0
    """Seeds initialisation, scene order and augmentation (and each objective's own draws)."""
    device: str | None = runtime_field(None)
    """Torch device; None: the plan's."""
    prefetch_steps: int = runtime_field(0, ge=0)
    """Steps whose scenes a background thread reads from the store while one trains (0: each step reads
    its own when it starts); memory holds this many steps' scenes more. Results do not depend on it."""

    @model_validator(mode="after")
    def _check_validation(self) -> TrainingConfig:
        if self.patience is not None and self.val_split is None:
            raise ValueError("patience needs val_split: the split whose loss decides when to stop")
        if self.val_split is not None and self.val_split in (self.split, "all"):
            raise ValueError(f"val_split '{self.val_split}' would validate on the training scenes")
        return self

    def optimisation(self) -> Schedule:
        """The optimiser and learning-rate schedule these fields describe."""
        from ovlift.models.training import Schedule

        return Schedule(self.optimizer, self.lr, self.final_lr, self.schedule, self.weight_decay)

    def augmentation(self) -> Augment:
        from ovlift.models.training import Augment

        return Augment(self.rotate_z, self.flip, self.scale)
