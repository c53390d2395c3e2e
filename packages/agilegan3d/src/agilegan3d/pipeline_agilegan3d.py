"""AgileGAN3D inference (spec agilegan3d §5): a photo -> W+ by the multi-view-consistent encoder E -> the stylised
head G3s(w, c') from any camera c' (one forward pass each), and the style folder that holds a trained style.

Style folder (``run/style``, written by :func:`assemble_style`, read by :meth:`AgileGAN3DPipeline.from_pretrained`)::

    config.json            format version, style name, exemplar hashes, the architecture and stage settings
    g3_style.safetensors   G3s, EG3D layout (TriPlaneGenerator names): any EG3D tool of genblocks loads it
    encoder.safetensors    E, pSp GradualStyleEncoder layout with num_ws styles
    g2_style.safetensors   G2s, the 2-D style prior (when it was trained)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from agilegan3d.config import AgileGAN3DConfig, G3DConfig
from agilegan3d.modeling_agilegan3d import build_encoder, build_g3d, encode
from agilegan3d.pairs import cameras_at
from genblocks.errors import InputError
from genblocks.gan import GradualStyleEncoder, TriPlaneGenerator
from genblocks.render3d.mesh import density_grid, marching_cubes_mesh

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "STYLE_FORMAT",
    "AgileGAN3DOutput",
    "AgileGAN3DPipeline",
    "assemble_style",
    "orbit_cameras",
    "read_style_config",
]

STYLE_FORMAT = "agilegan3d-style/1"
"""The ``format`` of a style folder's ``config.json``; a folder of another format is refused."""


def orbit_cameras(views: int, yaw: float = 0.5, pitch: float = 0.15) -> Tensor:
    """``views`` EG3D cameras (views, 25) on a closed orbit: yaw ``yaw · sin(2πt)``, pitch ``pitch · cos(2πt)``."""
    if views < 1:
        raise InputError(f"views={views}: expected at least one camera")
    t = torch.arange(views, dtype=torch.float32) / views
    return cameras_at(yaw * torch.sin(2 * math.pi * t), pitch * torch.cos(2 * math.pi * t))


@dataclass
class AgileGAN3DOutput:
    """What :class:`AgileGAN3DPipeline` returns.

    Attributes:
        images: Stylised renders (N, V, 3, R, R) in [-1, 1], V cameras per input.
        depths: Raw-resolution depth (N, V, 1, r, r).
        ws: The encoded (and possibly refined) codes (N, num_ws, w_dim).
        cameras: The rendering cameras (V, 25).
        reconstructions: G3D (the un-stylised generator) at the input cameras (N, 3, R, R), when asked for.
    """

    images: Tensor
    depths: Tensor
    ws: Tensor
    cameras: Tensor
    reconstructions: Tensor | None = None


class AgileGAN3DPipeline(nn.Module):
    """Photo -> stylised 3-D portrait: ``w = E(x)`` then ``G3s(w, c')`` for each camera c'.

    Args:
        generator: G3s, the style generator (EG3D).
        encoder: E, into W+ of G3D (shared by G3s: the mapping is frozen during transfer).
        source_generator: G3D, the un-stylised generator (optional: reconstructions and latent refinement).
        config: The style's config (stored back by :meth:`save_pretrained`).
    """

    def __init__(
        self,
        generator: TriPlaneGenerator,
        encoder: GradualStyleEncoder,
        source_generator: TriPlaneGenerator | None = None,
        config: AgileGAN3DConfig | None = None,
    ) -> None:
        super().__init__()
        if encoder.n_styles != generator.num_ws or encoder.style_dim != generator.w_dim:
            raise ValueError(
                f"the encoder emits ({encoder.n_styles}, {encoder.style_dim}) codes, "
                f"the generator takes ({generator.num_ws}, {generator.w_dim})"
            )
        self.generator = generator.eval().requires_grad_(False)
        self.encoder = encoder.eval().requires_grad_(False)
        self.source_generator = source_generator.eval().requires_grad_(False) if source_generator else None
        self.config = config if config is not None else AgileGAN3DConfig()

    def check_inputs(self, images: Tensor, cameras: Tensor) -> None:
        """Raise ``InputError`` unless images are (N, 3, H, W) and cameras (V, 25)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise InputError(f"images: expected (N, 3, H, W) in [-1, 1], got {tuple(images.shape)}")
        if cameras.dim() != 2 or cameras.shape[1] != 25:
            raise InputError(f"cameras: expected (V, 25) EG3D camera labels, got {tuple(cameras.shape)}")

    def refine(self, images: Tensor, ws: Tensor, input_cameras: Tensor, steps: int, lr: float) -> Tensor:
        """Optional test-time refinement: ``steps`` Adam steps on ws against the input view through G3D (L1)."""
        generator = self.source_generator if self.source_generator is not None else self.generator
        ws = ws.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([ws], lr=lr)
        target = torch.nn.functional.interpolate(
            images, size=generator.img_resolution, mode="bilinear", antialias=True
        )
        with torch.enable_grad():
            for _ in range(steps):
                optimizer.zero_grad()
                rendered = generator.synthesis(ws, input_cameras, noise_mode="const")["image"]
                (rendered - target).abs().mean().backward()
                optimizer.step()
        return ws.detach()

    @torch.no_grad()
    def __call__(  # type: ignore[override]
        self,
        images: Tensor,
        cameras: Tensor | None = None,
        input_cameras: Tensor | None = None,
        truncation_psi: float | None = None,
        optimize_steps: int | None = None,
        reconstruct: bool = False,
    ) -> AgileGAN3DOutput:
        """Stylise ``images``.

        Args:
            images: Aligned portraits (N, 3, H, W) in [-1, 1] (EG3D's crop).
            cameras: Rendering cameras (V, 25); default: :func:`orbit_cameras` of the config's inference section.
            input_cameras: The portraits' cameras (N, 25) (refinement and reconstructions; default frontal).
            truncation_psi: Pull ws towards the generator's ``w_avg`` (default ``inference.truncation_psi``).
            optimize_steps: Latent refinement steps (default ``inference.optimize_steps``; 0 = pure feed-forward).
            reconstruct: Also render G3D (un-stylised) at the input cameras.

        Returns:
            :class:`AgileGAN3DOutput`.
        """
        inference = self.config.inference
        # 1. inputs
        cameras = cameras if cameras is not None else orbit_cameras(inference.views, inference.yaw, inference.pitch)
        self.check_inputs(images, cameras)
        n = images.shape[0]
        input_cameras = input_cameras if input_cameras is not None else cameras_at(torch.zeros(n), torch.zeros(n))
        cameras = cameras.to(images.device, images.dtype)  # built on the CPU by default
        input_cameras = input_cameras.to(images.device, images.dtype)
        # 2. encode (and optionally refine against the input view)
        ws = encode(self.encoder, images)
        steps = inference.optimize_steps if optimize_steps is None else optimize_steps
        if steps > 0:
            ws = self.refine(images, ws, input_cameras, steps, inference.optimize_lr)
        psi = inference.truncation_psi if truncation_psi is None else truncation_psi
        if psi != 1.0:
            w_avg = self.generator.backbone.mapping.w_avg
            ws = w_avg.lerp(ws, psi)
        # 3. render every camera with G3s
        views, depths = [], []
        for camera in cameras:
            out = self.generator.synthesis(ws, camera.expand(n, -1), noise_mode="const")
            views.append(out["image"].clamp(-1, 1))
            depths.append(out["image_depth"])
        reconstructions = None
        if reconstruct and self.source_generator is not None:
            reconstructions = self.source_generator.synthesis(ws, input_cameras, noise_mode="const")["image"]
        return AgileGAN3DOutput(torch.stack(views, 1), torch.stack(depths, 1), ws, cameras, reconstructions)

    @torch.no_grad()
    def density_grid(self, ws: Tensor, resolution: int | None = None, chunk: int = 32768) -> Tensor:
        """G3s's raw density σ (before the renderer's softplus) for the first code of ``ws`` (N, num_ws, w_dim) on a
        ``resolution``³ grid (default ``inference.mesh_resolution``) spanning the tri-planes' box, `(R, R, R)` indexed
        (x, y, z); constant noise, as the renders."""
        resolution = self.config.inference.mesh_resolution if resolution is None else resolution
        planes = self.generator.synthesize_planes(ws[:1], noise_mode="const")

        def sigma(points: Tensor) -> Tensor:
            points = points.to(planes.device, planes.dtype)
            return self.generator.density_and_features(planes, points, torch.zeros_like(points))["sigma"]

        return density_grid(sigma, _box_size(self.generator), resolution, chunk)

    def mesh(
        self, ws: Tensor, resolution: int | None = None, level: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Marching cubes on :meth:`density_grid`: vertices (V, 3) float32 in world units (inside the planes' box),
        faces (T, 3) int64 and the level used (default ``inference.mesh_level``; ``None`` there: the grid's median).

        Raises:
            InputError: scikit-image is missing or the level is not crossed by the grid.
        """
        grid = self.density_grid(ws, resolution)
        configured = self.config.inference.mesh_level if level is None else level
        used = float(grid.median()) if configured is None else float(configured)
        vertices, faces = marching_cubes_mesh(grid, _box_size(self.generator), used)
        return vertices, faces, used

    # -------------------------------------------------------------------------------------------------------------
    # Style folders
    # -------------------------------------------------------------------------------------------------------------

    def save_pretrained(self, folder: str | os.PathLike, exemplar_hashes: Sequence[str] = ()) -> Path:
        """Write the style folder (module docstring): safetensors per module and ``config.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(_contiguous(self.generator.state_dict()), str(folder / "g3_style.safetensors"))
        save_file(_contiguous(self.encoder.state_dict()), str(folder / "encoder.safetensors"))
        _write_style_config(self.config, folder, exemplar_hashes)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, with_source: bool = False) -> AgileGAN3DPipeline:
        """Load a style folder (``with_source``: also build G3D from ``g3d.weights`` / the seed, for refinement).

        Raises:
            InputError: Not a style folder, or one of another format version.
        """
        folder = Path(folder)
        config = read_style_config(folder)
        generator = TriPlaneGenerator(**G3DConfig(**_g3d_fields(config)).generator_kwargs())
        generator.load_state_dict(load_file(str(folder / "g3_style.safetensors")))
        encoder = build_encoder(config.encoder, generator)
        encoder.load_state_dict(load_file(str(folder / "encoder.safetensors")))
        source = build_g3d(config.g3d) if with_source else None
        return cls(generator, encoder, source, config)


def _box_size(generator: TriPlaneGenerator) -> float:
    """Side of the cube the tri-planes span (the largest side when ``box_warp`` is given per axis)."""
    box = generator.box_warp
    return float(box) if isinstance(box, (int, float)) else float(max(box))


def _contiguous(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {key: value.detach().contiguous() for key, value in state.items()}


def _g3d_fields(config: AgileGAN3DConfig) -> dict[str, Any]:
    return {f.name: getattr(config.g3d, f.name) for f in dataclasses.fields(G3DConfig)}


def _write_style_config(config: AgileGAN3DConfig, folder: Path, exemplar_hashes: Sequence[str]) -> None:
    from genblocks.config import config_to_yaml

    payload = {
        "format": STYLE_FORMAT,
        "style": config.style,
        "exemplar_hashes": list(exemplar_hashes),
        "config_yaml": config_to_yaml(config),
    }
    (folder / "config.json").write_text(json.dumps(payload, indent=1))


def read_style_config(folder: str | os.PathLike) -> AgileGAN3DConfig:
    """The config stored in a style folder's ``config.json``.

    Raises:
        InputError: No style folder at ``folder``, or one written by another format version.
    """
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise InputError(f"--style {folder}: not a style folder (no config.json; train one with agilegan3d train)")
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"--style {folder}: config.json is not JSON ({error})") from None
    if not isinstance(payload, dict) or payload.get("format") != STYLE_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else None
        raise InputError(
            f"--style {folder}: style folder format {found!r}, expected {STYLE_FORMAT!r} (another version)"
        )
    for name in ("g3_style.safetensors", "encoder.safetensors"):
        if not (folder / name).is_file():
            raise InputError(f"--style {folder}: {name} is missing")
    import tempfile

    from genblocks.config import load_config

    with tempfile.TemporaryDirectory() as scratch:
        yaml_path = Path(scratch) / "config.yaml"
        yaml_path.write_text(payload["config_yaml"])
        return load_config(AgileGAN3DConfig, yaml_path)


def assemble_style(config: AgileGAN3DConfig, run: str | os.PathLike) -> Path:
    """Gather the stages' results of the run folder into ``run/style`` (module docstring)."""
    from agilegan3d.training import exemplar_hashes

    run = Path(run)
    style = run / "style"
    style.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "transfer" / "trained" / "g3_style.safetensors", style / "g3_style.safetensors")
    shutil.copyfile(run / "encoder" / "trained" / "encoder.safetensors", style / "encoder.safetensors")
    prior = run / "prior" / "trained" / "g2_style.safetensors"
    if prior.is_file():
        shutil.copyfile(prior, style / "g2_style.safetensors")
    _write_style_config(config, style, exemplar_hashes(run))
    return style
