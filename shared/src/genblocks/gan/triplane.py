"""EG3D tri-plane generator (Chan et al., "Efficient Geometry-aware 3D Generative Adversarial Networks",
arXiv 2112.07945), written in plain PyTorch from the paper and spec genblocks §3 "triplane.py" (NVlabs/eg3d
``eg3d/training/triplane.py`` and ``volumetric_rendering/renderer.py`` define the conventions followed; their code is
under the NVIDIA Source Code License and was not copied).

Pipeline: ``z (N, z_dim)`` and the camera-conditioning label ``c (N, 25)`` -> StyleGAN2 mapping (``c`` embedded by
FC, 2nd-moment normalised, concatenated with ``z``; 2 layers, lr 0.01) -> ``ws (N, num_ws, w_dim)`` -> StyleGAN2
synthesis emitting ``3 * C`` channels, viewed as three ``C``-channel planes -> per sample point: project onto the
planes, bilinear lookup, average -> `OSGDecoder` (σ and ``C'`` features) ->
`~genblocks.render3d.renderer.ImportanceRenderer` at the neural-rendering resolution -> raw image = the first 3
features -> super-resolution.

Plane projection (``plane_projection``), for a point (x, y, z) scaled by ``2 / box_warp``:

- ``"eg3d_legacy"``: the released EG3D axes. Plane 0 is read at (x, y), plane 1 at (x, z), plane 2 at (z, x): the yz
  plane is never used and plane 2 repeats plane 1's coordinates transposed (NVlabs/eg3d#67). Needed to run released
  EG3D checkpoints.
- ``"xy_yz_xz"``: plane 0 at (x, y), plane 1 at (y, z), plane 2 at (x, z); each point is determined by its three
  lookups.

The grid coordinate pair is (horizontal = last tensor axis W, vertical = H), as ``grid_sample`` reads it. For 3-D
feature volumes (OmniAvatar, ``triplane_depth > 1``) the third permuted coordinate indexes the depth axis D:
(x, y, z), (y, z, x), (x, z, y) for ``"xy_yz_xz"``.

Generator pose conditioning (GPC): with probability p the mapping sees another sample's camera (``c`` rolled by one
along the batch), p fading from 1 to 0.5 over the first 1000 kimg (`gpc_swap_probability`); rendering always uses the
true camera. Density regularisation: L1 between σ at uniform points in [−1, 1]³ and at the same points moved by
N(0, 0.004²) (weight 0.25 every 4 steps in EG3D's recipe; the weight belongs to the training loop).

Reuse without copies (OmniAvatar, AgileGAN3D): ``triplane_depth > 1`` gives 3-D feature volumes; ``point_warp`` maps
sample points (e.g. observation -> canonical space) before the lookup; a subclass may override
`TriPlaneGenerator.density_and_features` and read ``field_condition`` (e.g. 3DMM features), and any extra per-point
outputs it returns come back as ``sample_<key>`` with ``return_extras=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genblocks.gan.stylegan2 import EqualLinear, StyleGAN2Generator
from genblocks.gan.superres import (
    SuperResolutionHybrid2X,
    SuperResolutionHybrid4X,
    SuperResolutionHybrid8XDC,
)
from genblocks.render3d.cameras import CAMERA_LABEL_DIM, FFHQ_CAMERA, split_camera_label
from genblocks.render3d.rays import sample_rays
from genblocks.render3d.renderer import ImportanceRenderer, PointWarp

__all__ = [
    "OSGDecoder",
    "PlaneProjection",
    "TriPlaneGenerator",
    "gpc_swap_probability",
    "neural_rendering_resolution_at",
    "plane_axes",
    "project_onto_planes",
    "sample_from_planes",
    "sample_from_volumes",
    "swap_conditioning",
]

PlaneProjection = Literal["eg3d_legacy", "xy_yz_xz"]
"""Which coordinates each of the three planes is read at (module docstring)."""

_PLANE_AXES: dict[str, tuple[tuple[int, int, int], ...]] = {
    # Per plane: the point coordinates (0 = x, 1 = y, 2 = z) giving (grid W, grid H, volume depth D).
    "eg3d_legacy": ((0, 1, 2), (0, 2, 1), (2, 0, 1)),
    "xy_yz_xz": ((0, 1, 2), (1, 2, 0), (0, 2, 1)),
}


def plane_axes(projection: PlaneProjection) -> tuple[tuple[int, int, int], ...]:
    """The coordinate permutation of each plane: ``((a0, b0, d0), (a1, b1, d1), (a2, b2, d2))``.

    Plane k is read at grid coordinates ``(p[a_k], p[b_k])``; a feature volume additionally uses ``p[d_k]`` as depth.
    """
    if projection not in _PLANE_AXES:
        raise ValueError(f"plane_projection must be one of {sorted(_PLANE_AXES)}, got {projection!r}")
    return _PLANE_AXES[projection]


def _scale_coordinates(coordinates: Tensor, box_warp: float | Sequence[float]) -> Tensor:
    if coordinates.dim() != 3 or coordinates.shape[-1] != 3:
        raise ValueError(f"coordinates must have shape (N, M, 3), got {tuple(coordinates.shape)}")
    box = torch.as_tensor(box_warp, dtype=coordinates.dtype, device=coordinates.device)
    if box.numel() not in (1, 3) or bool((box <= 0).any()):
        raise ValueError(f"box_warp must be a positive float or three positive floats, got {box_warp}")
    return coordinates * (2.0 / box)


def project_onto_planes(coordinates: Tensor, projection: PlaneProjection = "xy_yz_xz") -> Tensor:
    """Permute point coordinates into each plane's frame.

    Args:
        coordinates (`torch.Tensor` of shape `(N, M, 3)`): points, already scaled to the planes' [−1, 1] range.
        projection (`PlaneProjection`): plane axes.

    Returns:
        `torch.Tensor` of shape `(N, 3, M, 3)`: per plane, (grid W, grid H, depth) coordinates. Planes use `[..., :2]`.
    """
    if coordinates.dim() != 3 or coordinates.shape[-1] != 3:
        raise ValueError(f"coordinates must have shape (N, M, 3), got {tuple(coordinates.shape)}")
    index = torch.tensor(plane_axes(projection), device=coordinates.device)
    return coordinates[:, :, index].permute(0, 2, 1, 3)


def _reduce_planes(features: Tensor, reduce: Literal["mean", "none"]) -> Tensor:
    if reduce == "mean":
        return features.mean(dim=1)
    if reduce == "none":
        return features
    raise ValueError(f"reduce must be 'mean' or 'none', got {reduce!r}")


def sample_from_planes(
    planes: Tensor,
    coordinates: Tensor,
    box_warp: float | Sequence[float] = 1.0,
    projection: PlaneProjection = "xy_yz_xz",
    reduce: Literal["mean", "none"] = "mean",
) -> Tensor:
    """Bilinear tri-plane lookup: scale by ``2 / box_warp``, project, ``grid_sample`` (zeros padding,
    ``align_corners=False``), average the planes.

    Args:
        planes (`torch.Tensor` of shape `(N, 3, C, H, W)`): the feature planes.
        coordinates (`torch.Tensor` of shape `(N, M, 3)`): world-space points; the planes span the cube of side
            `box_warp` centred at the origin, and points outside it read zeros.
        box_warp (`float` or three floats, defaults to 1.0): side length of that cube (per axis when three).
        projection (`PlaneProjection`, defaults to `"xy_yz_xz"`): plane axes.
        reduce (`"mean"` or `"none"`, defaults to `"mean"`): average the planes or return them separately.

    Returns:
        `torch.Tensor` of shape `(N, M, C)` (``"mean"``) or `(N, 3, M, C)` (``"none"``).
    """
    if planes.dim() != 5 or planes.shape[1] != 3:
        raise ValueError(f"planes must have shape (N, 3, C, H, W), got {tuple(planes.shape)}")
    n, _, c, h, w = planes.shape
    if coordinates.shape[0] != n:
        raise ValueError(f"coordinates must have batch size {n}, got {tuple(coordinates.shape)}")
    m = coordinates.shape[1]
    grid = project_onto_planes(_scale_coordinates(coordinates, box_warp), projection)[..., :2]
    sampled = F.grid_sample(
        planes.reshape(n * 3, c, h, w),
        grid.reshape(n * 3, 1, m, 2).to(planes.dtype),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    return _reduce_planes(sampled.reshape(n, 3, c, m).transpose(2, 3), reduce)


def sample_from_volumes(
    volumes: Tensor,
    coordinates: Tensor,
    box_warp: float | Sequence[float] = 1.0,
    projection: PlaneProjection = "xy_yz_xz",
    reduce: Literal["mean", "none"] = "mean",
) -> Tensor:
    """Trilinear lookup in three D-deep feature volumes (OmniAvatar's "tri-plane with depth"), otherwise as
    `sample_from_planes`: the permuted coordinates index (W, H, D).

    Args:
        volumes (`torch.Tensor` of shape `(N, 3, C, D, H, W)`): the feature volumes.
        coordinates (`torch.Tensor` of shape `(N, M, 3)`): world-space (or canonical) points.
        box_warp (`float` or three floats, defaults to 1.0): side length of the cube the volumes span.
        projection (`PlaneProjection`, defaults to `"xy_yz_xz"`): axis permutation per volume.
        reduce (`"mean"` or `"none"`, defaults to `"mean"`): average the volumes or return them separately.

    Returns:
        `torch.Tensor` of shape `(N, M, C)` (``"mean"``) or `(N, 3, M, C)` (``"none"``).
    """
    if volumes.dim() != 6 or volumes.shape[1] != 3:
        raise ValueError(f"volumes must have shape (N, 3, C, D, H, W), got {tuple(volumes.shape)}")
    n, _, c, d, h, w = volumes.shape
    if coordinates.shape[0] != n:
        raise ValueError(f"coordinates must have batch size {n}, got {tuple(coordinates.shape)}")
    m = coordinates.shape[1]
    grid = project_onto_planes(_scale_coordinates(coordinates, box_warp), projection)
    sampled = F.grid_sample(
        volumes.reshape(n * 3, c, d, h, w),
        grid.reshape(n * 3, 1, 1, m, 3).to(volumes.dtype),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    return _reduce_planes(sampled.reshape(n, 3, c, m).transpose(2, 3), reduce)


class OSGDecoder(nn.Module):
    """EG3D's small MLP from plane features to density and features: FC → Softplus → FC,
    ``rgb = sigmoid·1.002 − 0.001``.

    Args:
        in_features (`int`, defaults to 32): plane feature channels C.
        hidden_features (`int`, defaults to 64): hidden width.
        out_features (`int`, defaults to 32): output feature channels C' (the first 3 are the raw RGB).
        lr_multiplier (`float`, defaults to 1.0): equalised-lr multiplier of both layers (EG3D ``decoder_lr_mul``).

    Parameter names ``net.0`` / ``net.2`` follow EG3D's ``decoder.net.{0,2}``.
    """

    def __init__(
        self, in_features: int = 32, hidden_features: int = 64, out_features: int = 32, lr_multiplier: float = 1.0
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.net = nn.Sequential(
            EqualLinear(in_features, hidden_features, lr_multiplier=lr_multiplier),
            nn.Softplus(),
            EqualLinear(hidden_features, 1 + out_features, lr_multiplier=lr_multiplier),
        )

    def forward(self, features: Tensor, directions: Tensor | None = None) -> dict[str, Tensor]:
        """Decode sampled plane features.

        Args:
            features (`torch.Tensor` of shape `(N, M, C)`): plane features averaged over the planes.
            directions (`torch.Tensor` of shape `(N, M, 3)`, *optional*): view directions; unused (EG3D's decoder is
                view-independent), accepted so the decoder fits `~genblocks.render3d.renderer.DensityField`.

        Returns:
            `dict` with ``"sigma"`` `(N, M, 1)` (raw, before the ray marcher's softplus) and ``"features"``
            `(N, M, C')` in (−0.001, 1.001).
        """
        if features.dim() != 3 or features.shape[-1] != self.in_features:
            raise ValueError(f"features must have shape (N, M, {self.in_features}), got {tuple(features.shape)}")
        n, m, c = features.shape
        out = self.net(features.reshape(n * m, c)).reshape(n, m, -1)
        return {"sigma": out[..., :1], "features": torch.sigmoid(out[..., 1:]) * (1 + 2 * 0.001) - 0.001}


def swap_conditioning(c: Tensor, probability: float, generator: torch.Generator | None = None) -> Tensor:
    """Generator pose conditioning: replace each row of `c` by the previous row's (a roll by one along the batch)
    with the given probability.

    Args:
        c (`torch.Tensor` of shape `(N, D)`): conditioning labels.
        probability (`float`): swap probability in [0, 1].
        generator (`torch.Generator`, *optional*): source of randomness, on `c`'s device.

    Returns:
        `torch.Tensor` of shape `(N, D)`.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"swap probability must be in [0, 1], got {probability}")
    swap = torch.rand(c.shape[0], 1, generator=generator, device=c.device) < probability
    return torch.where(swap, c.roll(1, dims=0), c)


def gpc_swap_probability(cur_kimg: float, final_probability: float = 0.5, fade_kimg: float = 1000.0) -> float:
    """GPC swap probability after `cur_kimg` thousand real images: 1 fading linearly to `final_probability` over
    `fade_kimg` (EG3D FFHQ: ``--gpc_reg_prob 0.5``, ``gpc_reg_fade_kimg 1000``)."""
    alpha = min(cur_kimg / fade_kimg, 1.0) if fade_kimg > 0 else 1.0
    return (1.0 - alpha) + alpha * final_probability


def neural_rendering_resolution_at(
    cur_kimg: float, initial: int = 64, final: int | None = 128, fade_kimg: float = 1000.0
) -> int:
    """Neural-rendering resolution schedule (spec genblocks §5): `initial` rising linearly to `final` over
    `fade_kimg`, rounded to the nearest integer; constant `initial` when `final` is None."""
    if final is None:
        return initial
    alpha = min(cur_kimg / fade_kimg, 1.0) if fade_kimg > 0 else 1.0
    return round(initial * (1 - alpha) + final * alpha)


# The presets (not their base, whose constructor also takes input_resolution and first_block_upsamples).
_SUPERRESOLUTION: dict[
    str, type[SuperResolutionHybrid2X] | type[SuperResolutionHybrid4X] | type[SuperResolutionHybrid8XDC]
] = {
    "hybrid2x": SuperResolutionHybrid2X,
    "hybrid4x": SuperResolutionHybrid4X,
    "hybrid8xdc": SuperResolutionHybrid8XDC,
}


class TriPlaneGenerator(nn.Module):
    """EG3D generator: StyleGAN2 tri-plane backbone, OSG decoder, importance volume renderer and super-resolution.

    Args:
        z_dim (`int`, defaults to 512): latent size.
        c_dim (`int`, defaults to 25): size of the label the mapping network sees (the camera label; 0 for none).
        w_dim (`int`, defaults to 512): intermediate latent size.
        img_resolution (`int`, defaults to 512): final image side (a power of two).
        img_channels (`int`, defaults to 3): channels of the raw and final images (the first features rendered).
        backbone_resolution (`int`, defaults to 256): plane side H = W.
        plane_channels (`int`, defaults to 32): channels C per plane; the backbone emits ``3 * C * triplane_depth``.
        triplane_depth (`int`, defaults to 1): 1 for planes; D > 1 turns each plane into a D-deep feature volume
            (OmniAvatar), channels grouped as (plane, C, D) [unverified for OmniAvatar checkpoints].
        mapping_layers (`int`, defaults to 2): mapping depth.
        channel_base (`int`, defaults to 32768), channel_max (`int`, defaults to 512): backbone channels
            ``min(channel_base // res, channel_max)``.
        use_noise (`bool`, defaults to `True`): noise inputs in the backbone.
        decoder_hidden_features (`int`, defaults to 64), decoder_output_features (`int`, defaults to 32),
        decoder_lr_multiplier (`float`, defaults to 1.0): `OSGDecoder` settings.
        plane_projection (`PlaneProjection`, defaults to `"eg3d_legacy"`): plane axes; the default runs released EG3D
            checkpoints, ``"xy_yz_xz"`` is the corrected projection for new models.
        box_warp (`float` or three floats, defaults to 1.0): side of the cube the planes span.
        ray_start (`float`, defaults to 2.25), ray_end (`float`, defaults to 3.3): rendered depth range (FFHQ).
        num_samples (`int`, defaults to 48), num_importance (`int`, defaults to 48): samples per ray.
        density_noise (`float`, defaults to 0.0): σ noise in training mode.
        neural_rendering_resolution (`int`, defaults to 64): default side of the rendered (raw) image.
        superresolution (`"hybrid2x"`, `"hybrid4x"` or `"hybrid8xdc"`, defaults to `"hybrid8xdc"`): the SR module.
        sr_channels (`tuple[int, int]`, *optional*): SR block widths; defaults to the module's (128, 64) or (256, 128).
        sr_antialias (`bool`, defaults to `True`): antialiased resize of the SR input.
        c_scale (`float`, defaults to 1.0): factor on the label the mapping sees (OmniAvatar uses 0).
        pose_conditioning (`bool`, defaults to `True`): condition the mapping on the camera; `False` feeds zeros
            (EG3D ``c_gen_conditioning_zero``).
        conv_clamp (`float`, *optional*): clamp of the backbone's conv outputs (EG3D's ``conv_clamp``, read from a
            network pickle's ``init_kwargs``); `None`: no clamp.
        sr_conv_clamp (`float`, *optional*): clamp of the super-resolution's conv outputs (EG3D: 256 when
            ``sr_num_fp16_res > 0``); `None`: no clamp.
    """

    def __init__(
        self,
        z_dim: int = 512,
        c_dim: int = CAMERA_LABEL_DIM,
        w_dim: int = 512,
        img_resolution: int = 512,
        img_channels: int = 3,
        backbone_resolution: int = 256,
        plane_channels: int = 32,
        triplane_depth: int = 1,
        mapping_layers: int = 2,
        channel_base: int = 32768,
        channel_max: int = 512,
        use_noise: bool = True,
        decoder_hidden_features: int = 64,
        decoder_output_features: int = 32,
        decoder_lr_multiplier: float = 1.0,
        plane_projection: PlaneProjection = "eg3d_legacy",
        box_warp: float | tuple[float, float, float] = FFHQ_CAMERA.box_warp,
        ray_start: float = FFHQ_CAMERA.ray_start,
        ray_end: float = FFHQ_CAMERA.ray_end,
        num_samples: int = 48,
        num_importance: int = 48,
        density_noise: float = 0.0,
        neural_rendering_resolution: int = 64,
        superresolution: Literal["hybrid2x", "hybrid4x", "hybrid8xdc"] = "hybrid8xdc",
        sr_channels: tuple[int, int] | None = None,
        sr_antialias: bool = True,
        c_scale: float = 1.0,
        pose_conditioning: bool = True,
        conv_clamp: float | None = None,
        sr_conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        plane_axes(plane_projection)
        if triplane_depth < 1:
            raise ValueError(f"triplane_depth must be at least 1, got {triplane_depth}")
        if decoder_output_features < img_channels:
            raise ValueError(
                f"decoder_output_features ({decoder_output_features}) must cover img_channels ({img_channels})"
            )
        if neural_rendering_resolution < 1:
            raise ValueError(f"neural_rendering_resolution must be positive, got {neural_rendering_resolution}")
        if superresolution not in _SUPERRESOLUTION:
            raise ValueError(f"superresolution must be one of {sorted(_SUPERRESOLUTION)}, got {superresolution!r}")
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.plane_channels = plane_channels
        self.triplane_depth = triplane_depth
        self.plane_projection = plane_projection
        self.box_warp = box_warp
        self.neural_rendering_resolution = neural_rendering_resolution
        self.c_scale = c_scale
        self.pose_conditioning = pose_conditioning

        self.backbone = StyleGAN2Generator(
            z_dim,
            c_dim,
            w_dim,
            backbone_resolution,
            img_channels=3 * plane_channels * triplane_depth,
            mapping_layers=mapping_layers,
            channel_base=channel_base,
            channel_max=channel_max,
            use_noise=use_noise,
            conv_clamp=conv_clamp,
        )
        self.num_ws = self.backbone.num_ws
        self.decoder = OSGDecoder(
            plane_channels, decoder_hidden_features, decoder_output_features, decoder_lr_multiplier
        )
        self.renderer = ImportanceRenderer(
            ray_start, ray_end, num_samples, num_importance, density_noise=density_noise
        )
        sr_class = _SUPERRESOLUTION[superresolution]
        self.superresolution = sr_class(
            channels=decoder_output_features,
            img_resolution=img_resolution,
            w_dim=w_dim,
            img_channels=img_channels,
            block_channels=sr_channels,
            antialias=sr_antialias,
            conv_clamp=sr_conv_clamp,
        )

    # ---------------------------------------------------------------------------------------------------------------
    # Mapping
    # ---------------------------------------------------------------------------------------------------------------

    def mapping_label(
        self, c: Tensor, swap_probability: float | None = None, generator: torch.Generator | None = None
    ) -> Tensor | None:
        """The label the mapping network sees: `c` (optionally GPC-swapped), zeroed without pose conditioning,
        times ``c_scale``; None when ``c_dim == 0``.

        Args:
            c (`torch.Tensor` of shape `(N, c_dim)`): conditioning labels.
            swap_probability (`float`, *optional*): GPC swap probability; None disables swapping.
            generator (`torch.Generator`, *optional*): source of the swap decisions.
        """
        if self.c_dim == 0:
            return None
        if c.dim() != 2 or c.shape[1] != self.c_dim:
            raise ValueError(f"c must have shape (N, {self.c_dim}), got {tuple(c.shape)}")
        if swap_probability is not None:
            c = swap_conditioning(c, swap_probability, generator)
        if not self.pose_conditioning:
            c = torch.zeros_like(c)
        return c * self.c_scale

    def mapping(
        self,
        z: Tensor,
        c: Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
        swap_probability: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Map latents and labels to ``ws`` of shape `(N, num_ws, w_dim)` (see `mapping_label` for `c`)."""
        return self.backbone.mapping(
            z,
            self.mapping_label(c, swap_probability, generator),
            truncation_psi=truncation_psi,
            truncation_cutoff=truncation_cutoff,
            update_emas=update_emas,
        )

    # ---------------------------------------------------------------------------------------------------------------
    # Planes and the radiance field
    # ---------------------------------------------------------------------------------------------------------------

    def synthesize_planes(self, ws: Tensor, noise_mode: Literal["random", "const", "none"] = "random") -> Tensor:
        """Backbone output viewed as planes `(N, 3, C, H, W)` or, for ``triplane_depth = D > 1``, volumes
        `(N, 3, C, D, H, W)`."""
        planes = self.backbone.synthesis(ws, noise_mode=noise_mode)
        n, _, h, w = planes.shape
        if self.triplane_depth == 1:
            return planes.reshape(n, 3, self.plane_channels, h, w)
        return planes.reshape(n, 3, self.plane_channels, self.triplane_depth, h, w)

    def sample_plane_features(self, planes: Tensor, points: Tensor) -> Tensor:
        """Plane (or volume) features averaged over the three planes, `(N, M, C)`."""
        if self.triplane_depth == 1:
            return sample_from_planes(planes, points, self.box_warp, self.plane_projection)
        return sample_from_volumes(planes, points, self.box_warp, self.plane_projection)

    def density_and_features(
        self, planes: Tensor, points: Tensor, directions: Tensor, condition: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The radiance field of one batch of planes at `points` `(N, M, 3)`.

        Args:
            planes (`torch.Tensor`): output of `synthesize_planes`.
            points (`torch.Tensor` of shape `(N, M, 3)`): (possibly warped) sample points.
            directions (`torch.Tensor` of shape `(N, M, 3)`): ray directions.
            condition (`torch.Tensor`, *optional*): per-sample conditioning for subclasses that override this method
                (OmniAvatar: 3DMM features `(N, F)` for its decoder and density prior); EG3D's field takes none.

        Returns:
            ``{"sigma": (N, M, 1), "features": (N, M, C')}``; overrides may add keys, which the renderer returns per
            sample.
        """
        if condition is not None:
            raise ValueError("TriPlaneGenerator's field takes no condition; override density_and_features to use one")
        return self.decoder(self.sample_plane_features(planes, points), directions)

    def sample_points(
        self,
        ws: Tensor,
        points: Tensor,
        directions: Tensor | None = None,
        noise_mode: Literal["random", "const", "none"] = "random",
        point_warp: PointWarp | None = None,
        field_condition: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Evaluate the field of ``ws`` at arbitrary points (EG3D ``sample_mixed``; density regulariser, meshes).

        Args:
            ws (`torch.Tensor` of shape `(N, num_ws, w_dim)`).
            points (`torch.Tensor` of shape `(N, M, 3)`).
            directions (`torch.Tensor` of shape `(N, M, 3)`, *optional*): defaults to zeros (unused by `OSGDecoder`).
            noise_mode: backbone noise.
            point_warp (`PointWarp`, *optional*): applied to the points first.
            field_condition (`torch.Tensor`, *optional*): passed to `density_and_features`.
        """
        planes = self.synthesize_planes(ws, noise_mode)
        if point_warp is not None:
            points = point_warp(points)
        directions = torch.zeros_like(points) if directions is None else directions
        return self.density_and_features(planes, points, directions, condition=field_condition)

    def density_regularization(
        self,
        ws: Tensor,
        num_points: int = 1000,
        perturb_std: float = 0.004,
        extent: float = 1.0,
        noise_mode: Literal["random", "const", "none"] = "random",
        point_warp: PointWarp | None = None,
        field_condition: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """EG3D's density regulariser ``L1(σ(x), σ(x + ε))``, x ~ U[−extent, extent]³, ε ~ N(0, perturb_std²).

        Args:
            ws (`torch.Tensor` of shape `(N, num_ws, w_dim)`).
            num_points (`int`, defaults to 1000): points per sample.
            perturb_std (`float`, defaults to 0.004): std of the perturbation.
            extent (`float`, defaults to 1.0): half side of the sampling cube.
            noise_mode, point_warp, field_condition: as in `sample_points`.
            generator (`torch.Generator`, *optional*): source of the points.

        Returns:
            Scalar `torch.Tensor`, unweighted (EG3D multiplies by 0.25).
        """
        n = ws.shape[0]
        points = (torch.rand(n, num_points, 3, generator=generator, device=ws.device, dtype=ws.dtype) * 2 - 1) * extent
        noise = torch.randn(points.shape, generator=generator, device=ws.device, dtype=ws.dtype) * perturb_std
        all_points = torch.cat([points, points + noise], dim=1)
        sigma = self.sample_points(ws, all_points, None, noise_mode, point_warp, field_condition)["sigma"]
        return F.l1_loss(sigma[:, :num_points], sigma[:, num_points:])

    # ---------------------------------------------------------------------------------------------------------------
    # Rendering
    # ---------------------------------------------------------------------------------------------------------------

    def synthesis(
        self,
        ws: Tensor,
        c: Tensor,
        neural_rendering_resolution: int | None = None,
        noise_mode: Literal["random", "const", "none"] = "random",
        point_warp: PointWarp | None = None,
        field_condition: Tensor | None = None,
        generator: torch.Generator | None = None,
        return_extras: bool = False,
    ) -> dict[str, Tensor]:
        """Render ``ws`` from the cameras in `c`.

        Args:
            ws (`torch.Tensor` of shape `(N, num_ws, w_dim)`).
            c (`torch.Tensor` of shape `(N, 25)`): camera labels used for rendering (always the true cameras).
            neural_rendering_resolution (`int`, *optional*): raw image side r; defaults to the constructor's.
            noise_mode: backbone noise ("random", "const" or "none"); the SR has no noise inputs.
            point_warp (`PointWarp`, *optional*): maps sample points before the plane lookup (canonical warps).
            field_condition (`torch.Tensor`, *optional*): passed to `density_and_features` (subclasses).
            generator (`torch.Generator`, *optional*): renderer randomness (training mode).
            return_extras (`bool`, defaults to `False`): also return the rendered feature image, accumulated opacity,
                the planes and the per-sample renderer outputs.

        Returns:
            `dict` with ``"image"`` `(N, img_channels, R, R)`, ``"image_raw"`` `(N, img_channels, r, r)`,
            ``"image_depth"`` `(N, 1, r, r)`; with `return_extras`, ``"image_features"`` `(N, C', r, r)`,
            ``"image_weights"`` `(N, 1, r, r)` (Σw per ray), ``"planes"``, ``"sample_depths"`` `(N, r*r, S, 1)`,
            ``"sample_weights"`` `(N, r*r, S - 1, 1)` and ``"sample_<key>"`` `(N, r*r, S, ...)` for every field output
            (``sample_sigma``, ``sample_features``, and any keys an overriding field adds).
        """
        if ws.dim() != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        if c.shape[0] != ws.shape[0]:
            raise ValueError(f"c must have batch size {ws.shape[0]}, got {tuple(c.shape)}")
        cam2world, intrinsics = split_camera_label(c)
        resolution = (
            self.neural_rendering_resolution if neural_rendering_resolution is None else neural_rendering_resolution
        )
        ray_origins, ray_directions = sample_rays(cam2world, intrinsics, resolution)
        planes = self.synthesize_planes(ws, noise_mode)
        rendered = self.renderer(
            partial(self.density_and_features, planes, condition=field_condition),
            ray_origins,
            ray_directions,
            point_warp,
            generator,
        )
        n = ws.shape[0]
        feature_image = rendered.features.transpose(1, 2).reshape(n, -1, resolution, resolution)
        depth_image = rendered.depth.transpose(1, 2).reshape(n, 1, resolution, resolution)
        rgb_image = feature_image[:, : self.img_channels]
        out = {
            "image": self.superresolution(rgb_image, feature_image, ws),
            "image_raw": rgb_image,
            "image_depth": depth_image,
        }
        if return_extras:
            out["image_features"] = feature_image
            out["image_weights"] = rendered.opacity.transpose(1, 2).reshape(n, 1, resolution, resolution)
            out["planes"] = planes
            out["sample_depths"] = rendered.sample_depths
            out["sample_weights"] = rendered.weights
            out.update({f"sample_{key}": value for key, value in rendered.samples.items()})
        return out

    def forward(
        self,
        z: Tensor,
        c: Tensor,
        c_mapping: Tensor | None = None,
        swap_probability: float | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        neural_rendering_resolution: int | None = None,
        noise_mode: Literal["random", "const", "none"] = "random",
        update_emas: bool = False,
        point_warp: PointWarp | None = None,
        field_condition: Tensor | None = None,
        generator: torch.Generator | None = None,
        return_extras: bool = False,
    ) -> dict[str, Tensor]:
        """Map and render.

        Args:
            z (`torch.Tensor` of shape `(N, z_dim)`).
            c (`torch.Tensor` of shape `(N, 25)`): rendering cameras.
            c_mapping (`torch.Tensor` of shape `(N, c_dim)`, *optional*): the mapping's label; defaults to `c`.
            swap_probability (`float`, *optional*): GPC swap probability for the mapping label.
            truncation_psi, truncation_cutoff, update_emas: passed to the mapping network.
            neural_rendering_resolution, noise_mode, point_warp, field_condition, generator, return_extras: see
                `synthesis`.

        Returns:
            The `synthesis` dict.
        """
        ws = self.mapping(
            z,
            c if c_mapping is None else c_mapping,
            truncation_psi=truncation_psi,
            truncation_cutoff=truncation_cutoff,
            update_emas=update_emas,
            swap_probability=swap_probability,
            generator=generator,
        )
        return self.synthesis(
            ws,
            c,
            neural_rendering_resolution=neural_rendering_resolution,
            noise_mode=noise_mode,
            point_warp=point_warp,
            field_condition=field_condition,
            generator=generator,
            return_extras=return_extras,
        )
