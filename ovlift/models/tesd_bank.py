"""TESD's bank on disk beside the checkpoints: one file per scene per epoch, never all in memory.

A per-point bank is N x K numbers per scene (about 6 GB over ScanNet's training set in
float16), too much to hold, broadcast or copy into every checkpoint. Generation ``e``
(``tesd_bank/epoch_XXXX/``) holds each scene's entry after epoch ``e``; the switch epoch's
initial bank is written as the generation before it. During epoch ``e`` a scene's entry is
read from ``e - 1`` and written to ``e``: every scene is visited once an epoch, so when the
epoch's checkpoint is saved its generation is whole, the checkpoint names it, and a resumed
run reads it as the uninterrupted one did. Older generations go once a newer checkpoint is
saved; a generation on disk is written whole before anything reads it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ovlift.atomic_files import write_atomically

FOLDER = "tesd_bank"


@dataclass(frozen=True)
class BankFiles:
    """The bank's generations under ``checkpoints/tesd_bank``."""

    checkpoints: Path

    def generation(self, epoch: int) -> Path:
        return self.checkpoints / FOLDER / f"epoch_{epoch:04d}"

    def path(self, epoch: int, scene: int) -> Path:
        return self.generation(epoch) / f"scene_{scene:06d}.pt"

    def read(self, epoch: int, scene: int) -> torch.Tensor:
        return torch.load(self.path(epoch, scene), weights_only=True)

    def write(self, epoch: int, scene: int, entry: torch.Tensor) -> None:
        write_atomically(self.path(epoch, scene), lambda tmp: torch.save(entry, tmp))

    def check(self, epoch: int, scenes: int) -> None:
        """That generation ``epoch`` (named by a checkpoint) holds every scene's entry."""
        missing = [i for i in range(scenes) if not self.path(epoch, i).exists()]
        if missing:
            raise FileNotFoundError(
                f"TESD bank {self.generation(epoch)}: the checkpoint of epoch {epoch} names it, but it lacks "
                f"{len(missing)} of {scenes} scenes (first: {self.path(epoch, missing[0]).name}); "
                "rerun the stage with --force to train from the start"
            )

    def remove_before(self, epoch: int) -> None:
        """Every generation older than ``epoch``'s."""
        for folder in sorted((self.checkpoints / FOLDER).glob("epoch_*")):
            if folder.name < self.generation(epoch).name:
                shutil.rmtree(folder, ignore_errors=True)


def checkpoint_bank(checkpoint: Path) -> list[torch.Tensor] | None:
    """The whole bank that the epoch checkpoint ``checkpoint`` names, one entry per training scene
    (None: no TESD yet); for a look at it, not for training."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    epoch = state.get("tesd_bank_epoch")
    if epoch is None:
        return None
    files = BankFiles(checkpoint.parent)
    return [files.read(epoch, i) for i in range(len(list(files.generation(epoch).glob("scene_*.pt"))))]
