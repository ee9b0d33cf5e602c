"""What the store's checksums cost and how fast ``ovlift verify`` reads (issue 28).

Runs the demo plan into a fresh store (timed), then measures, on that store:

* ``verify`` throughput: every reusable version's manifest and every chunk's decode, MiB/s;
* the checksums' share of the run: the manifests (publish reads each new version back and
  CRCs it: redone here for every version) plus the chunk codecs' checksums (every array
  encoded with ``CHUNK_CODECS`` and with zstd alone, into memory: the difference), over the
  run's time.

    .venv/bin/python benchmarks/store_integrity.py [--quick]

``--quick`` runs the demo's seconds-long version (a smoke test of this script, not the figure).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec
from zarr.storage import MemoryStore

from ovlift.cache_schema import Store, iter_arrays
from ovlift.cache_schema.integrity import CHUNK_CODECS, manifest_bytes
from ovlift.demo import PLANS, demo_plan
from ovlift.pipeline.plan import plan_from_dict
from ovlift.pipeline.runner import Runner
from ovlift.pipeline.verify import selected_groups, verify


def versions(store: Store) -> list[tuple[str, str]]:
    return [(p, v) for p in selected_groups(store, None, None) for v in store.reusable_versions(p)]


def manifest_seconds(store: Store) -> float:
    start = time.perf_counter()
    for path, version in versions(store):
        files = store.version_files(path, version)
        manifest_bytes((rel, store.read_bytes(f"{path}/{version}/{rel}") or b"") for rel in files)
    return time.perf_counter() - start


def encode_seconds(store: Store, compressors) -> float:
    """Time to write every array of the store into memory through ``compressors``."""
    total = 0.0
    for path, version in versions(store):
        group = store.open_version(path, version)
        assert group is not None
        for name, array in iter_arrays(group):
            data = np.asarray(array[...])
            target = zarr.open_group(MemoryStore(), mode="w")
            start = time.perf_counter()
            out = target.create_array(
                name.replace("/", "_"),
                shape=data.shape,
                dtype=data.dtype,
                chunks=array.chunks,
                fill_value=0,
                compressors=compressors,
            )
            if data.size:
                out[...] = data
            total += time.perf_counter() - start
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the demo's seconds-long version")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plan = plan_from_dict(demo_plan(Path(tmp), quick=args.quick), PLANS)
        report = Runner(plan).run(fail_fast=True)
        store = Store(plan.store)
        checked = verify(store)
        assert not checked.damage, checked.damage
        manifests = manifest_seconds(store)
        with_checksums = min(encode_seconds(store, CHUNK_CODECS) for _ in range(2))
        zstd_only = min(encode_seconds(store, (ZstdCodec(level=0, checksum=False),)) for _ in range(2))
        codecs = max(with_checksums - zstd_only, 0.0)
        mib = checked.nbytes / 2**20
        print(f"demo{' --quick' if args.quick else ''}: run {report.seconds:.1f} s, store {mib:.0f} MiB")
        print(
            f"verify: {checked.versions} versions, {mib:.0f} MiB in {checked.seconds:.2f} s "
            f"= {mib / checked.seconds:.0f} MiB/s"
        )
        print(
            f"checksums: manifests {manifests:.2f} s + chunk CRCs {codecs:.2f} s "
            f"(encode {with_checksums:.2f} s with, {zstd_only:.2f} s zstd alone) = "
            f"{(manifests + codecs) / report.seconds:.2%} of the run (goal: under 3 %)"
        )


if __name__ == "__main__":
    main()
