"""Class-name embeddings, cached in the store under ``global/text/<key>``.

The key hashes the encoder's identity (kind, model files, templates) and the
names, so a changed model or template set is a miss, never a stale hit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from ovlift.cache_schema import GroupMeta, Store, canonical_json
from ovlift.cache_schema.groups.text import TEXT_SPEC
from ovlift.models.text import TextEncoderConfig, encoder_identity, load_text_encoder


class TextCache:
    def __init__(self, store: Store, device: str = "cpu") -> None:
        self.store = store
        self.device = device
        self._memory: dict[str, torch.Tensor] = {}

    def __call__(self, config: TextEncoderConfig, names: Sequence[str]) -> torch.Tensor:
        """(len(names), D) float32 embeddings, from the store when cached."""
        identity = encoder_identity(config)
        key = hashlib.sha256(canonical_json({"encoder": identity, "names": list(names)}).encode()).hexdigest()
        if key in self._memory:
            return self._memory[key]
        path = TEXT_SPEC.path(variant=key[:16])
        group = self.store.read(path, fingerprint=key)
        if group is not None:
            emb = torch.from_numpy(group.load("embeddings"))
        else:
            emb = load_text_encoder(config, self.device).embed_names(list(names))
            meta = GroupMeta("text", config.kind, "1", config.normalised(), {}, key, {})
            with self.store.writer(path, TEXT_SPEC, meta, f"text embeddings {identity}") as out:
                out.write("embeddings", emb.numpy().astype(np.float32))
                out.set_info(encoder=identity, names=list(names))
        self._memory[key] = emb
        return emb
