"""GPU readiness: the CUDA paths against their CPU results (``make gpu-check`` runs these;
without a CUDA device they skip). Each compares like with like: the same inputs on both
devices, tolerances where float reductions may reorder."""

import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_projection import as_tuples, random_features, random_scene

from ovlift.datasets.toy import ToyConfig, ToyDataset
from ovlift.kernels import scatter
from ovlift.kernels.fusion import DenseFeatures, FeatureFusion, FrameBatch, TeacherBatch, project_and_fuse
from ovlift.kernels.projection import VisibilityRule, visible_correspondences
from ovlift.models import student as student_module
from ovlift.models.student import MinkUNet, sparse_input
from ovlift.models.student_config import StudentConfig


def gpu(test):
    """A test of a CUDA path: marked ``gpu`` (``make gpu-check`` selects them), skipped without CUDA."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")(test))


CUDA = torch.device("cuda")
SMALL = StudentConfig(planes=(16, 32, 64, 64, 64, 32, 32, 32), layers=(1,) * 8, init_dim=16, voxel_size_m=0.05)


@gpu
@pytest.mark.parametrize("seed", [0, 1])
def test_projection_on_cuda_equals_cpu(seed):
    points, w2c, k, depth, pose_valid, hw = random_scene(seed, n=4000)
    rule = VisibilityRule(0.25, "relative", 2)
    args = [torch.from_numpy(points), w2c, torch.from_numpy(k)]
    kw = {"depth": torch.from_numpy(depth), "pose_valid": torch.from_numpy(pose_valid)}
    cpu = visible_correspondences(*args, hw, rule, **kw)
    gpu = visible_correspondences(*[a.to(CUDA) for a in args], hw, rule, **{n: v.to(CUDA) for n, v in kw.items()})
    assert len(as_tuples(cpu)) > 1000 and as_tuples(cpu) == as_tuples(gpu)


@gpu
@pytest.mark.parametrize("reduce", ["mean", "max"])
def test_fusion_on_cuda_equals_cpu(reduce):
    points, w2c, k, depth, pose_valid, hw = random_scene(3, n=4000)
    valid = np.flatnonzero(pose_valid)
    source, _, _ = random_features((len(w2c), *hw, 16), "dense", np.random.default_rng(0))
    rule = VisibilityRule(0.25, "relative", 0)
    results = []
    for device in ("cpu", CUDA):
        fusion = FeatureFusion(len(points), 16, reduce, device=torch.device(device))
        features = source(valid)
        dense = DenseFeatures(features.images.to(device), features.valid.to(device))
        teacher = TeacherBatch(dense, torch.arange(len(valid), device=device))
        batch = FrameBatch(
            torch.from_numpy(valid).to(device),
            w2c[valid].to(device),
            torch.from_numpy(k[valid]).to(device),
            torch.from_numpy(depth[valid]).to(device),
            {"t": teacher},
        )
        project_and_fuse(torch.from_numpy(points).to(device), [batch], hw, rule, {"t": fusion})
        fused, count = fusion.result()
        results.append((fused.float().cpu(), count.cpu()))
    torch.testing.assert_close(results[1][1], results[0][1])
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-5)


@gpu
def test_scatter_backend_is_reported():
    """torch-scatter with CUDA kernels, or torch's scatter_reduce in its place (make setup
    builds torch-scatter without CUDA where no nvcc is found)."""
    index = torch.randint(0, 50, (1000,), device=CUDA)
    src = torch.randn(1000, 8, device=CUDA)
    expected = torch.zeros(50, 8).index_add_(0, index.cpu(), src.cpu())
    torch.testing.assert_close(scatter.scatter_add(src, index, dim_size=50).cpu(), expected, rtol=1e-5, atol=1e-5)
    print(f"scatter on CUDA: {scatter.backend(CUDA)}")


def _toy_points(n_scenes=2):
    data = ToyDataset(ToyConfig(num_frames=1, vertex_spacing_m=0.05))
    return [torch.from_numpy(data.load(f"toy_000{i}").points).float() for i in range(n_scenes)]


def _forward_backward(model, scenes, targets):
    x, maps = sparse_input([(p, None) for p in scenes], model.config, CUDA)
    out = model(x)
    loss = (1 - F.cosine_similarity(out[torch.cat(maps)], targets, dim=1)).mean()
    model.zero_grad()
    loss.backward()
    return out.detach(), loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@gpu
def test_spconv_default_algorithm_equals_native_forward_and_backward(monkeypatch):
    scenes = _toy_points()
    torch.manual_seed(0)
    default = MinkUNet(SMALL, 32, CUDA).to(CUDA)
    monkeypatch.setattr(student_module, "_algo", lambda device: student_module.ConvAlgo.Native)
    native = MinkUNet(SMALL, 32, CUDA).to(CUDA)
    native.load_state_dict(default.state_dict())
    targets = torch.randn(sum(len(p) for p in scenes), 32, device=CUDA)
    out_d, loss_d, grad_d = _forward_backward(default, scenes, targets)
    out_n, loss_n, grad_n = _forward_backward(native, scenes, targets)
    torch.testing.assert_close(out_d, out_n, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(loss_d, loss_n, rtol=1e-4, atol=1e-5)
    for name in grad_d:
        torch.testing.assert_close(grad_d[name], grad_n[name], rtol=1e-2, atol=1e-4, msg=name)


@gpu
def test_a_distill_step_under_mixed_precision_matches_float32():
    scenes = _toy_points()
    torch.manual_seed(0)
    model = MinkUNet(SMALL, 32, CUDA).to(CUDA)
    targets = torch.randn(sum(len(p) for p in scenes), 32, device=CUDA)
    _, loss32, grads32 = _forward_backward(model, scenes, targets)
    scaler = torch.amp.GradScaler("cuda")
    x, maps = sparse_input([(p, None) for p in scenes], model.config, CUDA)
    with torch.autocast("cuda", dtype=torch.float16):
        out = model(x)
        loss = (1 - F.cosine_similarity(out[torch.cat(maps)].float(), targets, dim=1)).mean()
    model.zero_grad()
    scaler.scale(loss).backward()
    scaler.unscale_(torch.optim.Adam(model.parameters()))
    assert torch.isfinite(loss) and abs(loss.item() - loss32.item()) < 1e-2
    for name, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), name
        cos = F.cosine_similarity(p.grad.flatten().float(), grads32[name].flatten(), dim=0)
        assert cos > 0.98 or grads32[name].abs().max() < 1e-6, (name, cos.item())


@gpu
def test_ddp_on_nccl_with_one_process_equals_a_plain_step():
    import torch.distributed as dist

    from ovlift.models.training import broadcast_

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        scenes = _toy_points()
        torch.manual_seed(0)
        plain = MinkUNet(SMALL, 32, CUDA).to(CUDA)
        wrapped = MinkUNet(SMALL, 32, CUDA).to(CUDA)
        wrapped.load_state_dict(plain.state_dict())
        ddp = torch.nn.parallel.DistributedDataParallel(wrapped)
        targets = torch.randn(sum(len(p) for p in scenes), 32, device=CUDA)
        _, loss_plain, grads = _forward_backward(plain, scenes, targets)
        x, maps = sparse_input([(p, None) for p in scenes], SMALL, CUDA)
        loss = (1 - F.cosine_similarity(ddp(x)[torch.cat(maps)], targets, dim=1)).mean()
        loss.backward()
        torch.testing.assert_close(loss.detach(), loss_plain, rtol=1e-5, atol=1e-6)
        for name, p in wrapped.named_parameters():
            torch.testing.assert_close(p.grad, grads[name], rtol=1e-4, atol=1e-6, msg=name)
        bank = torch.arange(6, dtype=torch.float32)
        broadcast_(bank, 0, CUDA)  # through the device, as NCCL needs
        assert bank.tolist() == list(range(6))
    finally:
        dist.destroy_process_group()


@gpu
def test_diffusion_attention_capture_on_cuda_matches_cpu(tmp_path):
    from tiny_models import sam_folder, stable_diffusion_folder

    from ovlift.models.generators.diffusion_sam import DiffusionSAMConfig, DiffusionSAMGenerator

    config = DiffusionSAMConfig(
        diffusion_path=str(stable_diffusion_folder(tmp_path / "sd")),
        sam_path=str(sam_folder(tmp_path / "sam")),
        image_size=64,
        steps=2,
        images_per_class=2,
        attention_resolutions=(16, 32),
        border_px=8,
        dtype="float32",
    )
    cpu = DiffusionSAMGenerator(config, torch.device("cpu"), "cpu").generate("chair")
    gpu = DiffusionSAMGenerator(config, CUDA, "cuda").generate("chair")
    assert gpu.images.shape == cpu.images.shape
    assert (gpu.images.int() - cpu.images.int()).abs().float().mean() < 2  # uint8, the same CPU noise
    agree = (gpu.coarse_masks.cpu() == cpu.coarse_masks).float().mean()
    assert agree > 0.95, f"coarse masks from the recorded attention agree on {agree:.1%} of pixels"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path (make gpu-check runs the rest)")
def test_gpu_check_without_cuda_says_so_and_exits_0():
    import subprocess
    import sys

    from conftest import REPO

    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0 and "no CUDA device" in done.stdout
