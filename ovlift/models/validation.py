"""Early stopping on a validation loss, shared by both distillation loops.

After every epoch a loop measures its objective on the held-out scenes of its
config's ``val_split``: the model in eval mode on each whole, unaugmented scene,
against the teacher's features there (label-free, as training is; self-produced
targets such as TESD's and self-training's are left out, since they move with the
model). ``Validation`` keeps the curve and the best epoch's weights; with
``patience`` the loop stops once that many epochs have passed without a new best
and publishes the best epoch's weights (without it, every epoch runs and the last
is published, the curve only recorded). The record rides in every epoch checkpoint,
so a resumed run decides exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class Validation:
    split: str
    scenes: list[str]
    patience: int | None
    losses: list[float] = field(default_factory=list)
    """Validation loss after each epoch, from epoch 0."""
    best_epoch: int = -1
    best: dict[str, dict[str, torch.Tensor]] | None = None
    """Module name -> CPU copy of its state dict at ``best_epoch``."""

    def record(self, loss: float, modules: Mapping[str, nn.Module]) -> None:
        """The epoch's loss; a new best (strictly lower) keeps the modules' weights."""
        self.losses.append(loss)
        if self.best_epoch < 0 or loss < self.losses[self.best_epoch]:
            self.best_epoch = len(self.losses) - 1
            self.best = {
                name: {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
                for name, module in modules.items()
            }

    def done(self) -> bool:
        """Whether ``patience`` epochs have passed since the best."""
        return self.patience is not None and len(self.losses) - 1 - self.best_epoch >= self.patience

    def publish(self, modules: Mapping[str, nn.Module]) -> None:
        """With ``patience``, load the best epoch's weights into the modules (else leave the last)."""
        if self.patience is not None and self.best is not None:
            for name, module in modules.items():
                module.load_state_dict(self.best[name])

    def state(self) -> dict:
        """What a checkpoint keeps of it."""
        return {"losses": self.losses, "best_epoch": self.best_epoch, "best": self.best}

    def resume(self, state: dict | None) -> None:
        if state:
            self.losses, self.best_epoch, self.best = list(state["losses"]), state["best_epoch"], state["best"]

    def info(self) -> dict:
        """What the distill group's info records."""
        return {
            "split": self.split,
            "scenes": self.scenes,
            "patience": self.patience,
            "epochs_run": len(self.losses),
            "best_epoch": self.best_epoch,
            "published_epoch": self.best_epoch if self.patience is not None else len(self.losses) - 1,
            "best_loss": self.losses[self.best_epoch] if self.losses else None,
        }
