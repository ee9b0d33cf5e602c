"""Store bytes per frame (colour and depth) in each stored form, and the time to read one back.

    .venv/bin/python benchmarks/frame_bytes.py [--frames 50] [--scannet-frames 20] [--dir /tmp]

Ingests with the ``input`` stage (default ``color_codec: auto``, and ``jpeg`` where it
re-encodes) and measures the chunk files of each frame array:

* 7-Scenes redkitchen (``../shared/data``: real Kinect v1 frames, 640x480 JPEG colour, uint16
  millimetre depth PNGs), ``--frames`` of its 500 evenly strided: the files as published,
  and the same pixels re-encoded as JPEG q95 (what ``color_codec: jpeg`` writes for frames
  without a JPEG, e.g. ScanNet's resized to 640x480), with the error that costs;
* a ScanNet-sized scene written by ``benchmarks/scannet_ingest.py`` (1296x968 JPEG colour,
  640x480 zlib depth in a ``.sens``; synthetic: smooth shading plus noise), stored at full
  size and at 640x480 as the plans store it.

Each row is compared with the layout before compact frames (the pixels and float32 metres,
written here through the store's own codecs, ``integrity.CHUNK_CODECS``, one frame a chunk),
in bytes and in milliseconds to read a frame (``FrameImages``: decoding the JPEG, resizing
it where stored smaller). Timings are noisy on a shared machine; sizes are not.

Last, the uint16 depth of both scenes under candidate codecs: why ``frames/depth_raw`` is
byte-shuffled before zstd (``integrity.SHUFFLED_CODECS``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

ROOT = Path(__file__).resolve().parents[1]
SEVEN_SCENES = ROOT.parent / "shared" / "data" / "7scenes-redkitchen"


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def ingest(store: Path, dataset: dict, **input_config) -> object:
    from ovlift.pipeline.plan import plan_from_dict
    from ovlift.pipeline.runner import Runner

    plan = plan_from_dict({"store": str(store), "dataset": dataset, "stages": {"input": input_config}})
    runner = Runner(plan)
    runner.run(fail_fast=True)
    return runner.store.read(f"scenes/{plan.dataset.scene_ids()[0]}/input")


def stored(group) -> tuple[float, float]:
    """(colour, depth) bytes per frame of a group as the store holds it."""
    folder = Path(group.store_url) / group.path / group.version / "frames"
    colour = sum(folder_bytes(folder / a) for a in ("color", "color_bytes", "color_extent", "color_checksum"))
    depth = sum(folder_bytes(folder / a) for a in ("depth", "depth_raw"))
    return colour / group.dims["T"], depth / group.dims["T"]


def read_ms(images, frames: np.ndarray) -> float:
    start = time.perf_counter()
    for i in frames:
        images.color([i])
    return (time.perf_counter() - start) / len(frames) * 1e3


def before(images, folder: Path) -> tuple[float, float, float]:
    """(colour, depth) bytes per frame and ms to read a frame's colour in the layout before
    compact frames: the pixels and float32 metres, one frame a chunk, the store's codecs."""
    from ovlift.cache_schema.integrity import CHUNK_CODECS

    frames = np.arange(images.group.dims["T"])
    arrays = {}
    for name, value in (("color", images.color(frames)), ("depth", images.depth(frames))):
        arrays[name] = zarr.create_array(
            zarr.storage.LocalStore(folder / name),
            shape=value.shape,
            dtype=value.dtype,
            chunks=(1, *value.shape[1:]),
            compressors=CHUNK_CODECS,
        )
        arrays[name][...] = value
    start = time.perf_counter()
    for i in frames:
        arrays["color"][i]
    ms = (time.perf_counter() - start) / len(frames) * 1e3
    return folder_bytes(folder / "color") / len(frames), folder_bytes(folder / "depth") / len(frames), ms


def row(name: str, colour: float, depth: float, ms: float, base: tuple[float, float, float], note: str = "") -> None:
    total, base_total = colour + depth, base[0] + base[1]
    print(
        f"| {name} | {colour / 1e3:.0f} kB | {depth / 1e3:.0f} kB | {total / 1e6:.3f} MB | "
        f"{base_total / total:.1f}x smaller | {ms:.1f} ms ({ms / base[2]:.1f}x) | {note} |",
        flush=True,
    )


def seven_scenes(work: Path, frames: int) -> np.ndarray:
    """The rows of 7-Scenes; returns its uint16 depth."""
    from ovlift.cache_schema.groups.frames import FrameImages, decode_color, encode_color

    stride = max(1, 500 // frames)
    dataset = {"name": "rgbd-folder", "paths": [str(SEVEN_SCENES)], "frame_stride": stride, "cloud_frame_stride": 50}
    group = ingest(work / "7s.zarr", dataset)
    images = FrameImages(group)
    every = np.arange(group.dims["T"])
    base = before(images, work / "7s-before")
    row("7-Scenes, before (pixels, float32 metres)", base[0], base[1], base[2], base)
    colour, depth = stored(group)
    row("7-Scenes, auto (published JPEG, uint16 mm)", colour, depth, read_ms(images, every), base)
    pixels = images.color(every)
    files = [encode_color(p, "JPEG", 95) for p in pixels]
    start = time.perf_counter()
    back = np.stack([decode_color(f) for f in files]).astype(np.float64)
    ms = (time.perf_counter() - start) / len(files) * 1e3
    error = back - pixels
    psnr = 10 * np.log10(255**2 / (error**2).mean())
    note = f"mean error {np.abs(error).mean():.2f} levels, PSNR {psnr:.1f} dB vs the published JPEG's pixels"
    row("7-Scenes, pixels re-encoded JPEG q95", np.mean([len(f) for f in files]), depth, ms, base, note)
    return group.load("frames/depth_raw")


def scannet_like(work: Path, frames: int) -> np.ndarray:
    """The rows of the ScanNet-like scene; returns its uint16 depth."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from scannet_ingest import SCENE, write_scene

    from ovlift.cache_schema.groups.frames import FrameImages

    folder = work / "scannet" / SCENE
    write_scene(folder, frames)
    for size in (None, (480, 640)):
        dataset = {"name": "scannet", "paths": [str(folder.parent)], "frame_stride": 1}
        if size:
            dataset.update(image_height=size[0], image_width=size[1])
        where = "full size" if size is None else "at 640x480"
        for codec in ("auto", "jpeg") if size else ("auto",):
            tag = f"{where.replace(' ', '')}-{codec}"
            group = ingest(work / f"{tag}.zarr", dataset, color_codec=codec)
            images = FrameImages(group)
            if codec == "auto":
                base = before(images, work / f"{tag}-before")
                row(f"ScanNet-like {where}, before", base[0], base[1], base[2], base)
            colour, depth = stored(group)
            label = {
                "auto": "auto (.sens JPEG" + (", resized on reading)" if size else ")"),
                "jpeg": "jpeg (re-encoded q95 at 640x480)",
            }[codec]
            row(f"ScanNet-like {where}, {label}", colour, depth, read_ms(images, np.arange(frames)), base)
    return group.load("frames/depth_raw")


def depth_codecs(depth: dict[str, np.ndarray]) -> None:
    """Bytes per frame and ms to write and read one of uint16 depth under each candidate codec
    (with the store's CRC-32C after it), best of three."""
    import io

    from PIL import Image
    from zarr.codecs import BloscCodec, ZstdCodec

    from ovlift.cache_schema.integrity import CHUNK_CODECS, SHUFFLED_CODECS

    crc = CHUNK_CODECS[-1]
    candidates = {
        "zstd (the store's other arrays)": CHUNK_CODECS,
        "byte shuffle + zstd 3 (chosen)": SHUFFLED_CODECS,
        "zstd 9": (ZstdCodec(level=9, checksum=True), crc),
        "bit shuffle + zstd 5": (BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"), crc),
    }
    print("\n| uint16 depth codec | " + " | ".join(f"{name}: kB, write, read ms" for name in depth) + " |")
    print("|---|" + "---|" * len(depth))

    def timed(write, read, frames):
        best = [np.inf, np.inf]
        for _ in range(3):
            start = time.perf_counter()
            size = write()
            best[0] = min(best[0], time.perf_counter() - start)
            start = time.perf_counter()
            read()
            best[1] = min(best[1], time.perf_counter() - start)
        return f"{size / frames / 1e3:.0f}, {best[0] / frames * 1e3:.1f}, {best[1] / frames * 1e3:.1f}"

    for name, codecs in candidates.items():
        cells = []
        for raw in depth.values():
            store = zarr.storage.MemoryStore()
            array = zarr.create_array(
                store, shape=raw.shape, dtype=raw.dtype, chunks=(1, *raw.shape[1:]), compressors=codecs
            )

            def write(array=array, raw=raw, store=store):
                array[...] = raw
                return sum(len(v.to_bytes()) for k, v in store._store_dict.items() if k.startswith("c/"))

            cells.append(timed(write, lambda array=array: array[...], len(raw)))
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    cells = []
    for raw in depth.values():
        files: list[bytes] = []

        def write(raw=raw, files=files):
            files.clear()
            for image in raw:
                out = io.BytesIO()
                Image.fromarray(image).save(out, format="PNG")
                files.append(out.getvalue())
            return sum(map(len, files))

        cells.append(timed(write, lambda files=files: [np.array(Image.open(io.BytesIO(f))) for f in files], len(raw)))
    print("| PNG (Pillow, level 6: what 7-Scenes publishes) | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50, help="7-Scenes frames (of 500)")
    parser.add_argument("--scannet-frames", type=int, default=20)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="frame-bytes-", dir=args.dir))
    print("| frames | colour / frame | depth / frame | total / frame | vs before | read a frame | |")
    print("|---|---|---|---|---|---|---|")
    try:
        depth = {}
        if SEVEN_SCENES.is_dir():
            depth["7-Scenes (real Kinect)"] = seven_scenes(work, args.frames)
        else:
            print(f"(7-Scenes not found at {SEVEN_SCENES}: skipped)")
        depth["ScanNet-like (4 mm noise)"] = scannet_like(work, args.scannet_frames)
        depth_codecs(depth)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
