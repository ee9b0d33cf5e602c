"""The 3D student: a MinkUNet18A-style sparse-convolution U-Net on spconv.

Residual basic blocks, four stride-2 levels down and four transposed
convolutions up with skip concatenation (MinkowskiEngine's MinkUNet18A layout:
planes 32-64-128-256 | 128-128-96-96, two blocks per level), and a projection
head into the teacher's embedding space (a linear layer as OpenScene and SAS, or
three MLP layers as CUS3D). On the CPU every sparse convolution uses spconv's
native algorithm (its default needs CUDA); on CUDA spconv's default.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from ovlift.kernels.voxel import voxelize
from ovlift.models.student_config import StudentConfig

# Before spconv's import: its torch.cuda.amp decorators warn when it is imported.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"spconv\.")
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)  # spconv probes is_fx_tracing
import spconv.pytorch as spconv  # noqa: E402
from spconv.core import ConvAlgo  # noqa: E402


def _algo(device: torch.device) -> ConvAlgo | None:
    return ConvAlgo.Native if device.type == "cpu" else None


class _Conv:
    """Factory of spconv layers with the algorithm the device needs."""

    def __init__(self, device: torch.device) -> None:
        algo = _algo(device)
        self.kw = {"algo": algo} if algo is not None else {}

    def subm(self, cin: int, cout: int, k: int, key: str) -> nn.Module:
        return spconv.SubMConv3d(cin, cout, k, padding=k // 2, bias=False, indice_key=key, **self.kw)

    def down(self, cin: int, cout: int, key: str) -> nn.Module:
        return spconv.SparseConv3d(cin, cout, 2, stride=2, bias=False, indice_key=key, **self.kw)

    def up(self, cin: int, cout: int, key: str) -> nn.Module:
        return spconv.SparseInverseConv3d(cin, cout, 2, bias=False, indice_key=key, **self.kw)


class BasicBlock(spconv.SparseModule):
    def __init__(self, conv: _Conv, cin: int, cout: int, key: str) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv.subm(cin, cout, 3, key), nn.BatchNorm1d(cout)
        self.conv2, self.bn2 = conv.subm(cout, cout, 3, key), nn.BatchNorm1d(cout)
        self.shortcut = None
        if cin != cout:
            self.shortcut = spconv.SparseSequential(conv.subm(cin, cout, 1, key + "_1x1"), nn.BatchNorm1d(cout))

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        out = self.conv1(x)
        out = out.replace_feature(torch.relu(self.bn1(out.features)))
        out = self.conv2(out)
        identity = x.features if self.shortcut is None else self.shortcut(x).features
        return out.replace_feature(torch.relu(self.bn2(out.features) + identity))


def _norm_relu(layer: nn.Module, channels: int) -> spconv.SparseSequential:
    return spconv.SparseSequential(layer, nn.BatchNorm1d(channels), nn.ReLU())


class MinkUNet(nn.Module):
    def __init__(self, config: StudentConfig, out_channels: int, device: torch.device | str = "cpu") -> None:
        super().__init__()
        conv = _Conv(torch.device(device))
        p, n = config.planes, config.layers
        self.config = config
        self.stem = _norm_relu(
            conv.subm(config.in_channels, config.init_dim, config.stem_kernel, "stem"), config.init_dim
        )
        self.downs, self.down_blocks = nn.ModuleList(), nn.ModuleList()
        skips, channels = [config.init_dim], config.init_dim
        for i in range(4):
            self.downs.append(_norm_relu(conv.down(channels, channels, f"down{i}"), channels))
            blocks = [BasicBlock(conv, channels if j == 0 else p[i], p[i], f"subm{i + 1}") for j in range(n[i])]
            self.down_blocks.append(spconv.SparseSequential(*blocks))
            channels = p[i]
            skips.append(channels)
        self.ups, self.up_blocks = nn.ModuleList(), nn.ModuleList()
        for j in range(4):
            level = 3 - j
            self.ups.append(_norm_relu(conv.up(channels, p[4 + j], f"down{level}"), p[4 + j]))
            cin = p[4 + j] + skips[level]
            blocks = [BasicBlock(conv, cin if b == 0 else p[4 + j], p[4 + j], f"subm{level}") for b in range(n[4 + j])]
            self.up_blocks.append(spconv.SparseSequential(*blocks))
            channels = p[4 + j]
        if config.head == "linear":
            self.head = nn.Linear(channels, out_channels)
        else:
            self.head = nn.Sequential(
                nn.Linear(channels, channels),
                nn.BatchNorm1d(channels),
                nn.ReLU(),
                nn.Linear(channels, channels),
                nn.BatchNorm1d(channels),
                nn.ReLU(),
                nn.Linear(channels, out_channels),
            )

    @property
    def trunk_channels(self) -> int:
        """Channels of ``trunk``'s features (the last decoder level's)."""
        return self.config.planes[-1]

    def forward(self, x: spconv.SparseConvTensor) -> torch.Tensor:
        """(V, D) features of the input voxels, in the input's order."""
        return self.head(self.trunk(x))

    def trunk(self, x: spconv.SparseConvTensor) -> torch.Tensor:
        """(V, trunk_channels) decoder features before the head (CLIP2Scene puts a second head there)."""
        out = self.stem(x)
        skips = [out]
        for down, blocks in zip(self.downs, self.down_blocks):
            out = blocks(down(out))
            skips.append(out)
        for j, (up, blocks) in enumerate(zip(self.ups, self.up_blocks)):
            out = up(out)
            out = out.replace_feature(torch.cat([out.features, skips[3 - j].features], dim=1))
            out = blocks(out)
        return out.features


def sparse_input(
    scenes: list[tuple[torch.Tensor, torch.Tensor | None]], config: StudentConfig, device: torch.device
) -> tuple[spconv.SparseConvTensor, list[torch.Tensor]]:
    """Voxelise a batch of (points, colors-or-None) scenes into one sparse tensor.

    Returns it and, per scene, the map from its points to rows of the batch's voxels.
    """
    coords, feats, maps, offset = [], [], [], 0
    for b, (points, colors) in enumerate(scenes):
        voxel, point_to_voxel = voxelize(points, config.voxel_size_m)
        coords.append(torch.cat([torch.full((len(voxel), 1), b, dtype=torch.int64), voxel], 1))
        if config.use_color:
            assert colors is not None, "use_color needs point colours"
            summed = torch.zeros(len(voxel), 3).index_add_(0, point_to_voxel, colors.float() / 255.0 - 0.5)
            counts = torch.bincount(point_to_voxel, minlength=len(voxel)).clamp(min=1)[:, None]
            feats.append(summed / counts)
        else:
            feats.append(torch.ones(len(voxel), 1))
        maps.append((point_to_voxel + offset).to(device))
        offset += len(voxel)
    indices = torch.cat(coords)
    spatial = (indices[:, 1:].max(0).values + 1).tolist()
    tensor = spconv.SparseConvTensor(torch.cat(feats).to(device), indices.int().to(device), spatial, len(scenes))
    return tensor, maps
