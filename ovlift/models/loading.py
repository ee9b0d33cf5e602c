"""Loading models from local directories only, with one clear error when it fails.

Every model here loads from a folder in Hugging Face layout (``config.json`` +
weights, as ``save_pretrained`` writes; a diffusers pipeline: ``model_index.json``
and one subfolder per component) or a checkpoint file; nothing is downloaded at
run time (``HF_HUB_OFFLINE`` is forced on).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ovlift.content_hash import folder_digests

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


class ModelLoadError(ValueError):
    """A model directory is missing or malformed; names the path and what was expected."""


def require_model_dir(
    path: str | os.PathLike[str],
    what: str,
    expected: str,
    weights: bool = True,
    config_file: str = "config.json",
    subfolders: tuple[str, ...] = (),
) -> Path:
    """The directory, after checking it holds a config, weights and the named subfolders.

    ``what`` says who needs it (e.g. "teacher 'clip-a'"), ``expected`` what kind of
    model (e.g. "a Hugging Face CLIP model saved with save_pretrained"). A diffusers
    pipeline has ``config_file="model_index.json"`` and its components as ``subfolders``.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ModelLoadError(f"{what}: model directory '{folder}' does not exist (expected {expected})")
    if not (folder / config_file).is_file():
        raise ModelLoadError(f"{what}: '{folder}' has no {config_file} (expected {expected})")
    if weights and not any((folder / w).is_file() for w in WEIGHT_FILES):
        raise ModelLoadError(
            f"{what}: '{folder}' has no weights ({' or '.join(WEIGHT_FILES[:2])}) (expected {expected})"
        )
    missing = [name for name in subfolders if not (folder / name).is_dir()]
    if missing:
        raise ModelLoadError(f"{what}: '{folder}' has no {', '.join(missing)} subfolder(s) (expected {expected})")
    return folder


def load_pretrained(
    cls: Any,
    path: str | os.PathLike[str],
    what: str,
    expected: str,
    model_type: str | None = None,
    config_file: str = "config.json",
    subfolders: tuple[str, ...] = (),
    **kwargs: Any,
) -> Any:
    """``cls.from_pretrained`` on a checked local folder, errors rewritten to name it."""
    folder = require_model_dir(
        path, what, expected, hasattr(cls, "base_model_prefix"), config_file=config_file, subfolders=subfolders
    )
    if model_type is not None:
        import json

        try:
            found = json.loads((folder / config_file).read_text()).get("model_type")
        except ValueError as err:
            raise ModelLoadError(f"{what}: '{folder}/{config_file}' is not valid JSON ({err})") from None
        if found != model_type:
            raise ModelLoadError(
                f"{what}: '{folder}' holds a '{found}' model, expected model_type '{model_type}' ({expected})"
            )
    try:
        return cls.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except Exception as err:  # noqa: BLE001 - safetensors, tokenizers and torch raise their own types
        raise ModelLoadError(f"{what}: cannot load '{folder}' as {expected}: {type(err).__name__}: {err}") from None


def model_inputs(folders: Mapping[str, str | os.PathLike[str]]) -> dict[str, str]:
    """External-input entries for model folders (or files) by content: ``model:<name>/<file>``
    -> digest, one per file, so that ``ovlift status`` names the file that changed."""
    found = {}
    for name, folder in folders.items():
        if not Path(folder).exists():  # loading the model says what was expected there
            found[f"model:{name}"] = "missing"
            continue
        for file, digest in folder_digests(folder).items():
            found[f"model:{name}/{file}".rstrip("/")] = digest
    return found
