"""GPU readiness in one command (``make gpu-check``): whoever gets a GPU for an hour runs this.

1. The extensions on this GPU: torch's CUDA, torch-scatter's CUDA kernels (built only
   where ``nvcc`` was found; without them ovlift scatters with torch's ``scatter_reduce``
   on CUDA tensors, ``ovlift.kernels.scatter``), spconv's own CUDA 12 runtime beside
   torch's (a sparse convolution with spconv's default algorithm).
2. The tests marked ``gpu`` (``tests/test_gpu.py``): projection and fusion on CUDA equal
   their CPU results, spconv's default algorithm equals the native one (forward and
   backward), a distill step under mixed precision, DDP on NCCL with one process, the
   diffusion attention capture on CUDA.
3. The projection and training benchmarks with ``--device cuda`` (their last lines).

Prints one table with the GPU model. Without a CUDA device it says so and exits 0.

    .venv/bin/python benchmarks/gpu_check.py [--skip-benchmarks] [--timeout 900]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def extensions() -> list[tuple[str, str, str]]:
    """(check, result, detail) of the compiled extensions on the GPU."""
    rows = []
    import torch_scatter

    from ovlift.kernels import scatter

    version = int(torch.ops.torch_scatter.cuda_version())
    rows.append(
        (
            "torch-scatter CUDA kernels",
            "yes" if version != -1 else "no",
            f"torch-scatter {torch_scatter.__version__}, cuda_version() {version}; "
            f"ovlift scatters on CUDA with {scatter.backend('cuda')}",
        )
    )
    try:
        import spconv
        import spconv.pytorch as spconv_torch

        x = spconv_torch.SparseConvTensor(
            torch.randn(64, 8, device="cuda"),
            torch.cat([torch.zeros(64, 1), torch.randint(0, 16, (64, 3))], 1).int().cuda(),
            [16, 16, 16],
            1,
        )
        conv = spconv_torch.SubMConv3d(8, 8, 3, indice_key="check").cuda()  # default algorithm
        out = conv(x).features
        torch.cuda.synchronize()
        rows.append(("spconv default algorithm on CUDA", "ok", f"spconv {spconv.__version__}, {tuple(out.shape)}"))
    except Exception as err:  # noqa: BLE001  # any failure is the finding: report it
        rows.append(("spconv default algorithm on CUDA", "FAILED", f"{type(err).__name__}: {err}"))
    return rows


def gpu_tests(timeout: int) -> list[tuple[str, str, str]]:
    report = Path(tempfile.mkdtemp()) / "gpu.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/test_gpu.py", f"--junitxml={report}"]
    try:
        subprocess.run(cmd, cwd=ROOT, timeout=timeout, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return [("tests marked gpu", "TIMED OUT", f"after {timeout} s")]
    if not report.exists():
        return [("tests marked gpu", "FAILED", "pytest wrote no report")]
    rows = []
    for case in ET.parse(report).getroot().iter("testcase"):
        failure = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        if failure is None:
            rows.append((case.get("name"), "passed", f"{float(case.get('time', 0)):.1f} s"))
        else:
            result = {"skipped": "skipped"}.get(failure.tag, "FAILED")
            rows.append((case.get("name"), result, (failure.get("message") or "").splitlines()[0][:160]))
    return rows


def benchmark(name: str, args: list[str], timeout: int) -> tuple[str, str, str]:
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, f"benchmarks/{name}", *args], cwd=ROOT, timeout=timeout, capture_output=True, text=True
        )
    except subprocess.TimeoutExpired:
        return (f"{name} {' '.join(args)}", "TIMED OUT", f"after {timeout} s")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    result = "ok" if done.returncode == 0 else "FAILED"
    detail = " / ".join(lines[-3:]) if done.returncode == 0 else (done.stderr.strip().splitlines() or [""])[-1]
    return (f"{name} {' '.join(args)} ({time.perf_counter() - start:.0f} s)", result, detail[:300])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-benchmarks", action="store_true")
    parser.add_argument("--timeout", type=int, default=900, help="seconds for the tests, and for each benchmark")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(f"no CUDA device (torch {torch.__version__}, built for CUDA {torch.version.cuda}): nothing to check")
        return 0
    props = torch.cuda.get_device_properties(0)
    title = (
        f"{torch.cuda.get_device_name(0)} ({props.total_memory / 2**30:.0f} GiB, compute {props.major}.{props.minor}), "
        f"{torch.cuda.device_count()} device(s); torch {torch.__version__} (CUDA {torch.version.cuda})"
    )
    print(title, flush=True)
    rows = extensions()
    rows += gpu_tests(args.timeout)
    if not args.skip_benchmarks:
        rows.append(
            benchmark("project_fuse.py", ["--device", "cuda", "--frame-stride", "5", "--skip-toy"], args.timeout)
        )
        rows.append(benchmark("train_throughput.py", ["--device", "cuda", "--steps", "5"], args.timeout))
    print(f"\nGPU check on {title}\n\n| check | result | detail |\n|---|---|---|")
    for check, result, detail in rows:
        print(f"| {check} | {result} | {detail.replace('|', '/')} |")
    failed = [r for r in rows if r[1] in ("FAILED", "TIMED OUT")]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} checks ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
