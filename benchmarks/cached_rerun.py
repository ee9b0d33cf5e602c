"""A rerun of an unchanged plan: every group a cache hit, at a small fraction of the first run.

20 small toy scenes through ``input`` (ingest: scene generation, rendering, checks)
are run once, then again; the rerun only fingerprints and resolves pointers.

    .venv/bin/python benchmarks/cached_rerun.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ovlift.pipeline.plan import plan_from_dict
from ovlift.pipeline.runner import Runner


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        toy = {"name": "toy", "num_scenes": 20, "num_frames": 4, "image_height": 60, "image_width": 80}
        plan = plan_from_dict({"store": str(Path(tmp) / "s.zarr"), "dataset": toy, "stages": {"input": {}}})
        first = Runner(plan).run()
        second = Runner(plan).run()
        assert second.counts() == {"cached": 20}, second.counts()
        print(
            f"20 toy scenes, input: first run {first.seconds:.2f} s, unchanged rerun {second.seconds:.3f} s "
            f"({second.seconds / first.seconds:.1%} of the first)"
        )


if __name__ == "__main__":
    main()
