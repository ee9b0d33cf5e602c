"""Re-fingerprinting an unchanged RGB-D scene: content digests are remembered.

The real 7-Scenes kitchen (500 frames, colour JPEG + depth PNG each) is
fingerprinted three ways in one run: with an empty digest cache (every image
read and hashed), again with the cache filled (only stat calls and one SQLite
query), and, as the baseline the old rule cost, by file names and sizes alone.

    .venv/bin/python benchmarks/fingerprint_rerun.py
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

from ovlift.datasets.rgbd_folder import RGBDFolderConfig, RGBDFolderDataset

REPO = Path(__file__).resolve().parents[1]
SEVEN_SCENES = REPO.parent / "shared" / "data" / "7scenes-redkitchen"


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["OVLIFT_HASH_CACHE"] = str(Path(tmp) / "digests.sqlite")
        dataset = RGBDFolderDataset(RGBDFolderConfig(paths=(str(SEVEN_SCENES),)))
        scene = dataset.scene_ids()[0]
        frames = len(list(SEVEN_SCENES.glob("frame-*.pose.txt")))
        images = sorted(SEVEN_SCENES.glob("frame-*.*.*g"))

        def by_size() -> str:
            return hashlib.sha256(";".join(f"{p.name}:{p.stat().st_size}" for p in images).encode()).hexdigest()

        cold, first = timed(lambda: dataset.fingerprint(scene))
        warm, second = timed(lambda: dataset.fingerprint(scene))
        sizes, _ = timed(by_size)
        assert first == second
        megabytes = sum(p.stat().st_size for p in images) / 2**20
        print(f"{scene}: {frames} frames, {len(images)} images, {megabytes:.0f} MiB")
        print(f"  first fingerprint (reads and hashes every image): {cold:.3f} s")
        print(f"  unchanged rerun (digests remembered):             {warm:.3f} s  ({cold / warm:.0f}x faster)")
        print(f"  names and sizes only (the old rule, baseline):    {sizes:.3f} s")


if __name__ == "__main__":
    main()
