"""Fingerprints: a stage group's identity is a hash of everything that made it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal configs hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def fingerprint(
    stage: str,
    implementation: str,
    version: str,
    config: Mapping[str, Any],
    inputs: Mapping[str, str],
) -> str:
    """Hash of stage identity + normalised config + fingerprints of what it read.

    ``inputs`` maps what was read (a group path, or ``dataset:<name>/<scene>``) to
    that thing's fingerprint; a change anywhere upstream changes this value.
    """
    payload = {
        "stage": stage,
        "implementation": implementation,
        "version": version,
        "config": dict(config),
        "inputs": dict(inputs),
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def short(fp: str | None) -> str:
    return fp[:12] if fp else "-"
