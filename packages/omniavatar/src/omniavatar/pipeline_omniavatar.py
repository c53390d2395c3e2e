"""Sampling from an OmniAvatar generator: labels from cameras and 3DMM values, the authors' demo settings (spec §5),
paths over cameras and expressions, and the weights folder format.

A weights folder holds ``config.json`` (the whole :class:`~omniavatar.config.OmniAvatarConfig` as a mapping, plus the
authors' ``rendering_kwargs`` when converted) and ``generator.safetensors`` (the generator's state dict, W and the
template SDF included). :meth:`OmniAvatarPipeline.from_pretrained` reads it; nothing is unpickled.

Demo conventions (authors' ``gen_grouped_samples.py``): z from ``numpy.random.RandomState(seed).randn(z_dim)``; the
mapping sees a frontal camera (yaw = pitch = π/2) with the sample's 3DMM values; the rendering camera sits at
(3.14/2 + yaw, 3.14/2 − 0.05 + pitch) on the orbit of ``avg_camera_radius`` around ``avg_camera_pivot`` (the authors
write ``3.14/2`` there, 0.0008 rad from π/2: ``render.orbit_center``); ψ = 0.7, cutoff 14,
``noise_mode="const"``; images in [−1, 1] are written as ``x · 127.5 + 128`` clamped to uint8.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from genblocks.config import merge_config
from genblocks.errors import InputError
from genblocks.render3d.cameras import camera_label, intrinsics_matrix, orbit_cam2world
from genblocks.render3d.mesh import density_grid, marching_cubes_mesh, write_obj
from omniavatar.config import OmniAvatarConfig
from omniavatar.modeling_omniavatar import NoiseMode, OmniAvatarGenerator

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "OmniAvatarOutput",
    "OmniAvatarPipeline",
    "config_from_mapping",
    "config_to_mapping",
    "to_uint8_images",
    "write_obj",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "generator.safetensors"


def config_to_mapping(config: OmniAvatarConfig) -> dict[str, Any]:
    """The config as plain JSON-able data (tuples become lists)."""
    return json.loads(json.dumps(asdict(config)))


def config_from_mapping(data: dict[str, Any], source: str = "config") -> OmniAvatarConfig:
    """An :class:`OmniAvatarConfig` from a mapping (unknown keys are refused by name)."""
    return merge_config(OmniAvatarConfig, (source, data))


@dataclass
class OmniAvatarOutput:
    """What :class:`OmniAvatarPipeline` returns.

    Args:
        images (`torch.Tensor` of shape `(N, 3, R, R)`): final images in about [−1, 1].
        images_raw (`torch.Tensor` of shape `(N, 3, r, r)`): neural renderings.
        depth (`torch.Tensor` of shape `(N, 1, r, r)`): expected depth.
        mask (`torch.Tensor` of shape `(N, 1, r, r)`): accumulated opacity.
        ws (`torch.Tensor` of shape `(N, num_ws, w_dim)`): the styles used.
        labels (`torch.Tensor` of shape `(N, 25 + F)`): the rendering labels used.
    """

    images: Tensor
    images_raw: Tensor
    depth: Tensor
    mask: Tensor
    ws: Tensor
    labels: Tensor


def to_uint8_images(images: Tensor) -> np.ndarray:
    """`(N, C, H, W)` in [−1, 1] -> `(N, H, W, C)` uint8 by ``x · 127.5 + 128`` clamped (the authors' rule)."""
    return (images.detach().float() * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class OmniAvatarPipeline:
    """A generator plus the helpers that make its labels.

    Args:
        generator (`OmniAvatarGenerator`): the network (put in eval mode).
        config (`OmniAvatarConfig`): the config it was built from (cameras, demo settings, layout).
    """

    def __init__(self, generator: OmniAvatarGenerator, config: OmniAvatarConfig) -> None:
        self.generator = generator.eval()
        self.config = config
        self.layout = config.flame

    # ------------------------------------------------------------------ construction and files
    @classmethod
    def from_config(cls, config: OmniAvatarConfig, seed: int | None = None) -> OmniAvatarPipeline:
        """Random weights (seeded by `seed`, default ``model.seed``)."""
        torch.manual_seed(config.model.seed if seed is None else seed)
        return cls(OmniAvatarGenerator(config.generator, config.flame, config.igr), config)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> OmniAvatarPipeline:
        """Load a weights folder (``config.json`` + ``generator.safetensors``), strictly.

        Raises:
            InputError: A missing file, a bad config, or weights that do not fit the config.
        """
        from safetensors.torch import load_file

        folder = Path(folder)
        config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        for path in (config_path, weights_path):
            if not path.is_file():
                raise InputError(
                    f"weights folder {folder}: {path.name} not found (expected {CONFIG_NAME} + {WEIGHTS_NAME})"
                )
        data = json.loads(config_path.read_text(encoding="utf-8"))
        data.pop("rendering_kwargs", None)
        data.pop("conversion", None)
        config = config_from_mapping(data, str(config_path))
        generator = OmniAvatarGenerator(config.generator, config.flame, config.igr)
        state = load_file(str(weights_path))
        own = generator.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        shapes = [k for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
        if missing or unexpected or shapes:
            raise InputError(
                f"{weights_path}: does not fit {config_path}: missing {missing[:3]}, unexpected {unexpected[:3]}, "
                f"other shape {shapes[:3]}"
            )
        generator.load_state_dict(state)
        return cls(generator, config)

    def save_pretrained(self, folder: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """Write ``config.json`` and ``generator.safetensors`` (each atomically); `extra` keys go into the JSON."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        data = {**config_to_mapping(self.config), **(extra or {})}
        _atomic_write_text(folder / CONFIG_NAME, json.dumps(data, indent=2) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in self.generator.state_dict().items()}
        tmp = folder / f".{WEIGHTS_NAME}.tmp"
        save_file(state, str(tmp))
        os.replace(tmp, folder / WEIGHTS_NAME)
        return folder

    # ------------------------------------------------------------------ labels
    def cameras(
        self,
        yaw: Tensor | float,
        pitch: Tensor | float,
        radius: float | None = None,
        center: float | None = None,
    ) -> Tensor:
        """Camera labels `(N, 25)` at orbit angles offset from the frontal view (yaw, pitch in radians).

        Args:
            yaw, pitch: Offsets `(N,)` or scalars from the orbit's centre angle.
            radius: Orbit radius (default ``generator.avg_camera_radius``).
            center: The frontal angle of both axes (default ``render.orbit_center``, the demo's rendering cameras'
                ``3.14/2``; the mapping camera uses π/2).
        """
        g = self.config.generator
        middle = self.config.render.orbit_center if center is None else center
        yaw_t = torch.as_tensor(yaw, dtype=torch.float32).reshape(-1)
        pitch_t = torch.as_tensor(pitch, dtype=torch.float32).reshape(-1).expand_as(yaw_t)
        cam2world = orbit_cam2world(
            middle + yaw_t,
            middle + pitch_t,
            g.avg_camera_radius if radius is None else radius,
            g.avg_camera_pivot,
        )
        return camera_label(cam2world, intrinsics_matrix(g.focal, batch_size=len(yaw_t)))

    def features(
        self,
        batch_size: int = 1,
        shape: Tensor | None = None,
        expression: Tensor | None = None,
        neck: Tensor | None = None,
        jaw: Tensor | None = None,
    ) -> Tensor:
        """3DMM features `(N, F)` from parts (zeros where omitted); each part is `(k,)` or `(N, k)`.

        Raises:
            InputError: a part of the wrong length (the message names the layout).
        """
        layout = self.layout
        parts = {
            "shape": (shape, layout.shape),
            "expression": (expression, layout.expression),
            "neck": (neck, layout.neck),
            "jaw": (jaw, layout.jaw),
        }
        columns = []
        for name, (value, size) in parts.items():
            if value is None:
                columns.append(torch.zeros(batch_size, size))
                continue
            value = torch.as_tensor(value, dtype=torch.float32)
            if value.dim() == 1:
                value = value[None].expand(batch_size, -1)
            if value.dim() != 2 or value.shape != (batch_size, size):
                raise InputError(
                    f"{name}: expected {size} values (layout {layout.describe()}), got shape {tuple(value.shape)}"
                )
            columns.append(value)
        return torch.cat(columns, dim=1)

    def labels(self, cameras: Tensor, features: Tensor) -> Tensor:
        """Full labels `(N, 25 + F)`."""
        if features.dim() != 2 or features.shape[1] != self.layout.feature_dim:
            raise InputError(
                f"3DMM features: expected (N, {self.layout.feature_dim}) laid out as {self.layout.describe()}, "
                f"got {tuple(features.shape)}"
            )
        return torch.cat([cameras, features.to(cameras)], dim=1)

    def latents(self, seeds: list[int]) -> Tensor:
        """z `(N, z_dim)`: ``numpy.random.RandomState(seed).randn(z_dim)`` per seed (the authors' demo)."""
        z_dim = self.generator.z_dim
        return torch.from_numpy(np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds])).float()

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def map(self, z: Tensor, features: Tensor, truncation_psi: float | None = None) -> Tensor:
        """ws `(N, num_ws, w_dim)` from z and features, with the frontal mapping camera of the demo."""
        r = self.config.render
        frontal = self.cameras(torch.zeros(len(z)), torch.zeros(len(z)), center=math.pi / 2)
        mapping_labels = self.labels(frontal, features)
        return self.generator.mapping(
            z,
            mapping_labels,
            truncation_psi=r.truncation_psi if truncation_psi is None else truncation_psi,
            truncation_cutoff=r.truncation_cutoff,
        )

    @torch.no_grad()
    def render(self, ws: Tensor, labels: Tensor, noise_mode: NoiseMode | None = None) -> OmniAvatarOutput:
        """Render styles `ws` with labels `(N, 25 + F)`."""
        out = self.generator.synthesis(ws, labels, noise_mode=noise_mode or self.config.render.noise_mode)
        return OmniAvatarOutput(
            images=out["image"][:, :3],
            images_raw=out["image_raw"][:, :3],
            depth=out["image_depth"],
            mask=out["image_mask"],
            ws=ws,
            labels=labels,
        )

    @torch.no_grad()
    def __call__(
        self,
        seeds: list[int],
        features: Tensor | None = None,
        yaw: Tensor | float = 0.0,
        pitch: Tensor | float = 0.0,
        truncation_psi: float | None = None,
        noise_mode: NoiseMode | None = None,
    ) -> OmniAvatarOutput:
        """Sample heads.

        Args:
            seeds (`list[int]`): one z per seed.
            features (`torch.Tensor` of shape `(N, F)`, *optional*): 3DMM values (neutral by default).
            yaw, pitch (`float` or `(N,)`): camera offsets from the demo's view (π/2, π/2 + ``pitch_offset``).
            truncation_psi (`float`, *optional*): defaults to ``render.truncation_psi``.
            noise_mode (*optional*): defaults to ``render.noise_mode``.
        """
        n = len(seeds)
        if features is None:
            features = torch.zeros(n, self.layout.feature_dim)
        ws = self.map(self.latents(seeds), features, truncation_psi)
        pitch_t = torch.as_tensor(pitch, dtype=torch.float32).reshape(-1).expand(n) + self.config.render.pitch_offset
        cameras = self.cameras(torch.as_tensor(yaw, dtype=torch.float32).reshape(-1).expand(n), pitch_t)
        return self.render(ws, self.labels(cameras, features), noise_mode)

    @torch.no_grad()
    def orbit(self, seed: int, features: Tensor | None = None, frames: int | None = None) -> OmniAvatarOutput:
        """One head along a camera path: yaw sweeps ±``yaw_range`` (and pitch ±``pitch_range``) over `frames`."""
        r = self.config.render
        frames = r.frames if frames is None else frames
        t = torch.linspace(0, 2 * math.pi, frames + 1)[:-1]
        features = torch.zeros(1, self.layout.feature_dim) if features is None else features[:1]
        ws = self.map(self.latents([seed]), features).expand(frames, -1, -1)
        cameras = self.cameras(r.yaw_range * torch.sin(t), r.pitch_offset + r.pitch_range * torch.cos(t))
        return self.render(ws, self.labels(cameras, features.expand(frames, -1)))

    @torch.no_grad()
    def expression_path(self, seed: int, start: Tensor, end: Tensor, frames: int | None = None) -> OmniAvatarOutput:
        """One head (ws fixed: the mapping sees `start`) while the features move linearly from `start` to `end`
        `(F,)`, frontal camera."""
        frames = self.config.render.frames if frames is None else frames
        ws = self.map(self.latents([seed]), start[None]).expand(frames, -1, -1)
        alpha = torch.linspace(0, 1, frames)[:, None]
        features = start[None] * (1 - alpha) + end[None] * alpha
        cameras = self.cameras(torch.zeros(frames), torch.full((frames,), self.config.render.pitch_offset))
        return self.render(ws, self.labels(cameras, features))

    @torch.no_grad()
    def density_grid(self, ws: Tensor, features: Tensor, resolution: int, chunk: int = 32768) -> Tensor:
        """σ on a `resolution`³ grid spanning the volumes' box (``box_warp``), `(R, R, R)` indexed (x, y, z)."""
        planes = self.generator.synthesize_planes(ws[:1], self.config.render.noise_mode)

        def sigma(points: Tensor) -> Tensor:
            return self.generator.density_and_features(planes, points, torch.zeros_like(points), features[:1])["sigma"]

        return density_grid(sigma, self.config.generator.box_warp, resolution, chunk)

    def mesh(
        self, ws: Tensor, features: Tensor, resolution: int | None = None, level: float = 10.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Marching cubes on the density: `(vertices (V, 3) in world units, faces (T, 3))`.

        Raises:
            InputError: scikit-image is missing (``pip install omniavatar[demo]``) or the level is not crossed.
        """
        resolution = self.config.render.mesh_resolution if resolution is None else resolution
        sigma = torch.nn.functional.softplus(self.density_grid(ws, features, resolution) - 1)
        return marching_cubes_mesh(sigma, self.config.generator.box_warp, level)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
