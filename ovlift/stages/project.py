"""``project``: which point sees which pixel of which frame, and what the teachers saw there.

Streams the scene's frames in batches through the projection kernel and writes
the visible correspondences sorted by point (frames ascending within a point),
plus each point's number of views, and per teacher the per-point reduction (mean
or max) of its features over the views that have them. Pixels are expressed at
the 2D feature size (intrinsics rescaled, depth resized to it), so they index
teacher feature maps directly. A scene whose depth camera is not its colour camera
(``frames/depth_intrinsics``) keeps its depth at its own size and is tested in
the depth camera (``kernels.projection.DepthCamera``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, model_validator

from ovlift.cache_schema import GroupWriter, StageGroup
from ovlift.cache_schema.groups.extract2d import TeacherFeatures, teachers_in
from ovlift.cache_schema.groups.frames import FrameImages
from ovlift.cache_schema.groups.project import PROJECT_SPEC, write_fused
from ovlift.config import FrozenConfig, runtime_field
from ovlift.errors import StageInputError
from ovlift.kernels.fusion import FeatureFusion, FrameBatch, TeacherBatch, project_and_fuse
from ovlift.kernels.projection import DepthCamera, VisibilityRule, resize_depth, rigid_inverse, scale_intrinsics
from ovlift.progress import progress
from ovlift.stages.base import Stage, StageContext, teacher_stages


class ProjectConfig(FrozenConfig):
    tolerance_kind: Literal["relative", "absolute"] = "relative"
    """Visibility test: |depth - z| <= depth_tolerance * depth (relative, OpenScene)
    or <= depth_tolerance metres (absolute, SAS and CUS3D)."""
    depth_tolerance: float = Field(0.25, gt=0)
    """OpenScene: 0.25 relative (ScanNet, Replica), 0.02 relative (Matterport);
    SAS: 0.2 m absolute (ScanNet); CUS3D: 0.05 m absolute."""
    cut_bound: int = Field(10, ge=0)
    """Pixels excluded at each image border (OpenScene: 10; nuScenes: 5)."""
    lidar_zbuffer_px: int | None = Field(None, ge=0)
    """Scenes without depth (LiDAR + cameras): pair a point only if no point of the scene is
    nearer at its pixel (within ``depth_tolerance``), each point covering (2r+1)^2 pixels of
    the feature grid; None: no occlusion test (OpenScene and CLIP2Scene on nuScenes)."""
    frame_stride: int = Field(1, ge=1)
    """Project every k-th frame (SAS and OpenScene on ScanNet: 20)."""
    feature_height: int | None = Field(None, ge=1)
    """Rows of the pixel grid (None: the teachers' feature size, else the image's)."""
    feature_width: int | None = Field(None, ge=1)
    """Columns of the pixel grid (None: the teachers' feature size, else the image's)."""
    teachers: tuple[str, ...] | None = None
    """extract2d teachers to fuse (None: every one the plan configures)."""
    reduce: Literal["mean", "max"] = "mean"
    """Reduction of a point's views (OpenScene: plain mean of unnormalised features)."""
    frames_per_batch: int = runtime_field(8, ge=1)
    """Frames projected at once; bounds memory, does not change results."""
    device: str | None = runtime_field(None)
    """Torch device; None: the plan's device. Does not change results."""

    @model_validator(mode="after")
    def _both_or_neither(self) -> ProjectConfig:
        if (self.feature_height is None) != (self.feature_width is None):
            raise ValueError("set both feature_height and feature_width, or neither")
        return self

    def rule(self) -> VisibilityRule:
        return VisibilityRule(self.depth_tolerance, self.tolerance_kind, self.cut_bound, self.lidar_zbuffer_px)


class ProjectStage(Stage[ProjectConfig]):
    """Occlusion-tested multi-view projection (the OpenScene rule, configurable)."""

    implementation = "openscene"
    version = "2"  # 2: a view counts only where the teacher has a feature
    computes_on_device = True
    memory_gb = 4.0
    spec = PROJECT_SPEC
    reads = ("input",)
    optional_reads = ("extract2d",)

    def __init__(self, config: ProjectConfig, variant: str | None = None) -> None:
        super().__init__(config, variant)
        self.teacher_stages: dict[str, Stage] = {}
        """The plan's extract2d stages by variant: they read their groups (``features``)."""

    def bind(self, stages: Mapping[str, Stage]) -> None:
        self.teacher_stages = teacher_stages(stages)

    def select_inputs(self, name: str, keys: list[str]) -> list[str]:
        if name != "extract2d" or self.config.teachers is None:
            return keys
        return [k for k in keys if k.split("/", 1)[1] in self.config.teachers]

    def check_inputs(self, keys: list[str]) -> None:
        have = {k.split("/", 1)[1] for k in keys if k.startswith("extract2d/")}
        missing = sorted(set(self.config.teachers or ()) - have)
        if missing:
            raise ValueError(f"teachers {missing} are not configured under stages.extract2d")

    def feature_hw(self, ctx: StageContext, teachers: dict[str, TeacherFeatures]) -> tuple[int, int]:
        """The pixel grid: the teachers' feature size (they must agree), else the config's or the image's."""
        sizes = {name: t.feature_hw for name, t in teachers.items()}
        scene = ctx.inputs["input"]
        configured = (self.config.feature_height, self.config.feature_width)
        if len(set(sizes.values())) > 1:
            raise StageInputError(
                f"{ctx.where()}: teachers have different feature sizes {sizes}; project needs one grid"
            )
        if sizes:
            size = next(iter(sizes.values()))
            if configured[0] is not None and configured != size:
                raise StageInputError(
                    f"{ctx.where()}: project feature size {configured} differs from the teachers' {size}"
                )
            return size
        return (configured[0] or scene.dims["H"], configured[1] or scene.dims["W"])

    def run(self, ctx: StageContext, out: GroupWriter) -> None:
        scene = ctx.inputs["input"]
        device = torch.device(self.config.device or ctx.device)
        teachers = {
            name: self.teacher_stages[name].features(group, ctx) for name, group in teachers_in(ctx.inputs).items()
        }
        feature_hw = self.feature_hw(ctx, teachers)
        cameras = self._cameras(scene, feature_hw, device)
        points = torch.from_numpy(scene.load("points")).to(device)
        fusions = {
            name: FeatureFusion(len(points), t.channels, self.config.reduce, device) for name, t in teachers.items()
        }
        batches = self._batches(ctx, cameras, teachers, feature_hw, device)
        corr, view_count = project_and_fuse(points, batches, feature_hw, self.config.rule(), fusions)
        out.write("point_index", corr.point_index.numpy())
        out.write("frame_index", corr.frame_index.numpy())
        out.write("pixel", corr.pixel.numpy())
        out.write("view_count", view_count.to(torch.int32).numpy())
        for name, fusion in fusions.items():
            fused, count = fusion.result()
            write_fused(out, name, fused.to(torch.float16).cpu().numpy(), (count > 0).cpu().numpy())
        out.set_info(
            feature_size=list(feature_hw),
            frames=cameras.frames.tolist(),
            teachers={
                name: {"channels": t.channels, "text_encoder": t.group.info["text_encoder"]}
                for name, t in teachers.items()
            },
        )

    def _cameras(self, scene: StageGroup, feature_hw: tuple[int, int], device: torch.device) -> Cameras:
        """The projected frames (every ``frame_stride``-th with a valid pose) and their cameras."""
        pose_valid = torch.from_numpy(scene.load("frames/pose_valid"))
        frames = torch.arange(0, len(pose_valid), self.config.frame_stride)
        frames = frames[pose_valid[frames]]
        cam_to_world = torch.from_numpy(scene.load("frames/cam_to_world"))[frames]
        image_hw = (scene.dims["H"], scene.dims["W"])
        intrinsics = scale_intrinsics(
            torch.from_numpy(scene.load("frames/intrinsics")).double()[frames], image_hw, feature_hw
        )
        images = FrameImages(scene)
        depth = images if images.depth_array is not None else None
        depth_camera = None
        if depth is not None and "frames/depth_intrinsics" in scene:
            # the depth camera's own (ScanNet: 640x480 beside 1296x968 colour): depth stays at its size
            depth_to_color = torch.from_numpy(scene.load("frames/depth_to_color"))[frames]
            depth_camera = DepthCamera(
                rigid_inverse(cam_to_world @ depth_to_color).to(device),
                torch.from_numpy(scene.load("frames/depth_intrinsics")).double()[frames].to(device),
            )
        return Cameras(frames, rigid_inverse(cam_to_world).to(device), intrinsics.to(device), depth, depth_camera)

    def _batches(
        self,
        ctx: StageContext,
        cameras: Cameras,
        teachers: dict[str, TeacherFeatures],
        feature_hw: tuple[int, int],
        device: torch.device,
    ) -> Iterator[FrameBatch]:
        """The frames in batches: cameras, depth at the pixel grid (or in its own camera) and the
        teachers' features of the frames they have."""
        batch = self.config.frames_per_batch
        for start in progress(range(0, len(cameras.frames), batch), f"{ctx.scene_id}: projecting", unit="batch"):
            sel = cameras.frames[start : start + batch]
            rows = slice(start, start + batch)
            depth = None
            if cameras.depth is not None:
                depth = torch.from_numpy(cameras.depth.depth(sel.numpy()))
                depth = (depth if cameras.depth_camera else resize_depth(depth, feature_hw)).to(device)
            batch_teachers = {}
            for name, features in teachers.items():
                positions, local = features.positions(sel.numpy())
                if len(positions):
                    batch_teachers[name] = TeacherBatch(features.read(local, device), torch.from_numpy(positions))
            depth_camera = cameras.depth_camera.select(rows) if cameras.depth_camera else None
            yield FrameBatch(
                sel, cameras.world_to_cam[rows], cameras.intrinsics[rows], depth, batch_teachers, depth_camera
            )


@dataclass
class Cameras:
    """The frames a scene projects and their cameras, on the stage's device."""

    frames: torch.Tensor
    """(T',) indices of the projected frames."""
    world_to_cam: torch.Tensor
    intrinsics: torch.Tensor
    """(T', 3, 3) at the pixel grid."""
    depth: FrameImages | None
    """The scene's frames, their depth read per batch; None for scenes without depth."""
    depth_camera: DepthCamera | None
    """The depth camera, where it is not the colour camera."""
