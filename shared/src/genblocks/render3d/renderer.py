"""Volume rendering of a density + feature field along rays: stratified and importance sampling and the MipRayMarcher2
compositor of EG3D (arXiv 2112.07945; NVlabs/eg3d ``eg3d/training/volumetric_rendering/renderer.py`` and
``ray_marcher.py``; the importance sampler follows NeRF, arXiv 2003.08934, via kwea123/nerf_pl ``sample_pdf``),
re-derived in plain PyTorch.

The renderer takes the field as a callable ``density_and_features(points (N, P, 3), directions (N, P, 3)) ->
{"sigma": (N, P, 1), "features": (N, P, C), ...}``, so EG3D's tri-planes, OmniAvatar's 3-D feature volumes or any
analytic field render the same way; an optional ``point_warp(points) -> points`` (e.g. OmniAvatar's observation ->
canonical correspondence) is applied before the field is queried. Extra keys the field returns (an SDF, a prior
density) come back per sample, sorted with the samples.

Per ray (spec genblocks §3 "render3d"):

1. Stratified depths ``linspace(ray_start, ray_end, S)``; in training mode each is jittered by ``U[0, 1)·Δ``,
   Δ = (ray_end − ray_start)/(S − 1) (EG3D's jitter, which can pass ``ray_end`` by up to Δ). In eval mode the
   samples are deterministic.
2. MipRayMarcher2 on the S samples gives interval weights w (S − 1 values).
3. Importance sampling: w is smoothed by ``max_pool1d(2, stride 1, pad 1)`` then ``avg_pool1d(2, stride 1)``, plus
   0.01; the interior smoothed weights ``w[1:-1]`` define a piecewise-constant pdf over the intervals between
   consecutive sample midpoints, and K depths are drawn by inverse-CDF (uniform u in training, ``linspace(0, 1, K)``
   in eval mode). As in EG3D, the S − 3 weights are paired with the first S − 2 midpoints (the last midpoint is
   unused). No gradient flows through the drawn depths.
4. Coarse and fine samples are merged, sorted by depth, and composited again by MipRayMarcher2.

MipRayMarcher2 works on interval midpoints: σ = softplus(σ_mid − 1), α = 1 − exp(−σ·δ),
w_i = α_i · Π_{j<i}(1 − α_j + 1e-10); features = Σ w·f_mid (then ×2 − 1), depth = Σ w·t_mid / Σ w with NaN → +inf,
clamped to the ray's sample range (EG3D clamps to the range over the whole batch; identical whenever Σw > 0 and the
rays share one depth range).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DensityField",
    "ImportanceRenderer",
    "MipRayMarcher2",
    "PointWarp",
    "RenderOutput",
    "sample_importance",
    "sample_pdf",
    "sample_stratified",
]

DensityField = Callable[[Tensor, Tensor], dict[str, Tensor]]
"""``(points (N, P, 3), directions (N, P, 3)) -> {"sigma": (N, P, 1), "features": (N, P, C), ...}``."""

PointWarp = Callable[[Tensor], Tensor]
"""``points (N, P, 3) -> warped points (N, P, 3)``, applied before the field is queried."""


@dataclass
class RenderOutput:
    """What `ImportanceRenderer` returns for N x M rays and S sorted samples per ray.

    Args:
        features (`torch.Tensor` of shape `(N, M, C)`): composited features, mapped by ×2 − 1 (so a field's
            [0, 1] colours land in [−1, 1]).
        depth (`torch.Tensor` of shape `(N, M, 1)`): expected termination depth.
        opacity (`torch.Tensor` of shape `(N, M, 1)`): accumulated weight Σw (EG3D's ``weights_samples``).
        weights (`torch.Tensor` of shape `(N, M, S - 1, 1)`): per-interval compositing weights.
        sample_depths (`torch.Tensor` of shape `(N, M, S, 1)`): the sorted sample depths.
        samples (`dict[str, torch.Tensor]`): every field output per sorted sample, shapes `(N, M, S, ...)`.
    """

    features: Tensor
    depth: Tensor
    opacity: Tensor
    weights: Tensor
    sample_depths: Tensor
    samples: dict[str, Tensor] = field(default_factory=dict)


def _check_rays(ray_origins: Tensor, ray_directions: Tensor) -> None:
    if ray_origins.dim() != 3 or ray_origins.shape[-1] != 3:
        raise ValueError(f"ray_origins must have shape (N, M, 3), got {tuple(ray_origins.shape)}")
    if ray_directions.shape != ray_origins.shape:
        raise ValueError(
            f"ray_directions must match ray_origins {tuple(ray_origins.shape)}, got {tuple(ray_directions.shape)}"
        )


def sample_stratified(
    ray_origins: Tensor,
    ray_start: float,
    ray_end: float,
    num_samples: int,
    perturb: bool,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Evenly spaced depths on every ray, optionally jittered by ``U[0, 1) · (ray_end − ray_start)/(S − 1)``.

    Args:
        ray_origins (`torch.Tensor` of shape `(N, M, 3)`): only its shape, device and dtype are used.
        ray_start, ray_end (`float`): depth range, ``ray_start < ray_end``.
        num_samples (`int`): S, at least 2.
        perturb (`bool`): jitter the depths (training) or not (inference).
        generator (`torch.Generator`, *optional*): source of the jitter, on the rays' device.

    Returns:
        `torch.Tensor` of shape `(N, M, S, 1)`.
    """
    if num_samples < 2:
        raise ValueError(f"num_samples must be at least 2, got {num_samples}")
    if not ray_start < ray_end:
        raise ValueError(f"ray_start must be smaller than ray_end, got {ray_start} and {ray_end}")
    n, m = ray_origins.shape[:2]
    depths = torch.linspace(ray_start, ray_end, num_samples, device=ray_origins.device, dtype=ray_origins.dtype)
    depths = depths.view(1, 1, num_samples, 1).expand(n, m, num_samples, 1)
    if perturb:
        jitter = torch.rand(depths.shape, generator=generator, device=depths.device, dtype=depths.dtype)
        depths = depths + jitter * ((ray_end - ray_start) / (num_samples - 1))
    return depths.contiguous()


def sample_pdf(
    bins: Tensor,
    weights: Tensor,
    num_samples: int,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Inverse-CDF sampling from a piecewise-constant pdf over bins.

    Args:
        bins (`torch.Tensor` of shape `(R, B + 1)`): increasing bin edges per row.
        weights (`torch.Tensor` of shape `(R, B)`): non-negative bin weights (``eps`` is added before normalising).
        num_samples (`int`): K samples per row.
        deterministic (`bool`, defaults to `False`): use ``u = linspace(0, 1, K)`` instead of uniform noise.
        generator (`torch.Generator`, *optional*): source of u, on the bins' device.
        eps (`float`, defaults to 1e-5): added to the weights, and the smallest CDF step treated as non-empty.

    Returns:
        `torch.Tensor` of shape `(R, K)`, samples within ``[bins[:, 0], bins[:, -1]]`` (unsorted when random).
    """
    if bins.dim() != 2 or weights.dim() != 2 or bins.shape != (weights.shape[0], weights.shape[1] + 1):
        raise ValueError(
            f"bins must have shape (R, B + 1) for weights (R, B); got {tuple(bins.shape)} and {tuple(weights.shape)}"
        )
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    num_rows, num_bins = weights.shape
    pdf = weights + eps
    pdf = pdf / pdf.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, dim=-1)], dim=-1)
    if deterministic:
        u = torch.linspace(0.0, 1.0, num_samples, device=bins.device, dtype=bins.dtype).expand(num_rows, num_samples)
    else:
        u = torch.rand(num_rows, num_samples, generator=generator, device=bins.device, dtype=bins.dtype)
    u = u.contiguous()
    upper = torch.searchsorted(cdf, u, right=True)
    lower = (upper - 1).clamp(min=0)
    upper = upper.clamp(max=num_bins)
    cdf_lower, cdf_upper = cdf.gather(1, lower), cdf.gather(1, upper)
    bins_lower, bins_upper = bins.gather(1, lower), bins.gather(1, upper)
    step = cdf_upper - cdf_lower
    step = torch.where(step < eps, torch.ones_like(step), step)
    return bins_lower + (u - cdf_lower) / step * (bins_upper - bins_lower)


@torch.no_grad()
def sample_importance(
    depths: Tensor,
    weights: Tensor,
    num_importance: int,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """EG3D's importance depths from coarse depths and their MipRayMarcher2 interval weights (module docstring,
    step 3).

    Args:
        depths (`torch.Tensor` of shape `(N, M, S, 1)`): sorted coarse depths, S >= 4.
        weights (`torch.Tensor` of shape `(N, M, S - 1, 1)`): interval weights from `MipRayMarcher2`.
        num_importance (`int`): K new depths per ray.
        deterministic (`bool`, defaults to `False`): evenly spaced quantiles instead of random ones.
        generator (`torch.Generator`, *optional*): source of randomness.

    Returns:
        `torch.Tensor` of shape `(N, M, K, 1)`, detached.
    """
    n, m, s, _ = depths.shape
    if s < 4:
        raise ValueError(f"importance sampling needs at least 4 coarse samples per ray, got {s}")
    if weights.shape != (n, m, s - 1, 1):
        raise ValueError(f"weights must have shape {(n, m, s - 1, 1)}, got {tuple(weights.shape)}")
    t = depths.reshape(n * m, s)
    w = F.max_pool1d(weights.reshape(n * m, 1, s - 1), kernel_size=2, stride=1, padding=1)
    w = F.avg_pool1d(w, kernel_size=2, stride=1).squeeze(1) + 0.01
    midpoints = 0.5 * (t[:, :-1] + t[:, 1:])
    fine = sample_pdf(midpoints[:, :-1], w[:, 1:-1], num_importance, deterministic=deterministic, generator=generator)
    return fine.reshape(n, m, num_importance, 1)


class MipRayMarcher2(nn.Module):
    """EG3D's compositor over interval midpoints (module docstring).

    Args:
        density_activation (`"softplus"`, `"none"` or `"sdf"`, defaults to `"softplus"`): ``softplus(σ − 1)`` as in
            EG3D; ``"none"`` takes σ as already non-negative; ``"sdf"`` reads the field's ``"sigma"`` as a signed
            distance ``s`` (negative inside) and uses the density ``sigmoid(−s / β) / β`` with a learnable ``β``
            (StyleSDF / OmniAvatar): the surface sharpens as ``β`` shrinks.
        white_background (`bool`, defaults to `False`): add ``1 − Σw`` to the features before the ×2 − 1 mapping.
        sdf_beta (`float`, defaults to 0.1): initial ``β`` of ``"sdf"`` (a parameter, kept above 1e-4).
    """

    def __init__(
        self,
        density_activation: Literal["softplus", "none", "sdf"] = "softplus",
        white_background: bool = False,
        sdf_beta: float = 0.1,
    ) -> None:
        super().__init__()
        if density_activation not in ("softplus", "none", "sdf"):
            raise ValueError(f"density_activation must be 'softplus', 'none' or 'sdf', got {density_activation!r}")
        if sdf_beta <= 0:
            raise ValueError(f"sdf_beta must be positive, got {sdf_beta}")
        self.density_activation = density_activation
        self.white_background = white_background
        self.sdf_beta = nn.Parameter(torch.tensor(float(sdf_beta))) if density_activation == "sdf" else None

    def extra_repr(self) -> str:
        return f"density_activation={self.density_activation!r}, white_background={self.white_background}"

    def density(self, raw: Tensor) -> Tensor:
        """Non-negative density from the field's raw ``"sigma"`` (any shape), per ``density_activation``."""
        if self.density_activation == "softplus":
            return F.softplus(raw - 1.0)
        if self.density_activation == "sdf":
            assert self.sdf_beta is not None  # created in __init__ for density_activation="sdf"
            beta = self.sdf_beta.clamp_min(1e-4)
            return torch.sigmoid(-raw / beta) / beta
        return raw

    def forward(self, features: Tensor, densities: Tensor, depths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Composite S samples per ray.

        Args:
            features (`torch.Tensor` of shape `(N, M, S, C)`): per-sample features (colours in [0, 1] for RGB).
            densities (`torch.Tensor` of shape `(N, M, S, 1)`): raw per-sample densities.
            depths (`torch.Tensor` of shape `(N, M, S, 1)`): sorted sample depths.

        Returns:
            `(features (N, M, C), depth (N, M, 1), weights (N, M, S - 1, 1))`.
        """
        if depths.dim() != 4 or depths.shape[-1] != 1 or depths.shape[2] < 2:
            raise ValueError(f"depths must have shape (N, M, S >= 2, 1), got {tuple(depths.shape)}")
        if densities.shape != depths.shape or features.shape[:3] != depths.shape[:3]:
            raise ValueError(
                f"features {tuple(features.shape)}, densities {tuple(densities.shape)} and depths "
                f"{tuple(depths.shape)} must agree on (N, M, S), with one density channel"
            )
        deltas = depths[:, :, 1:] - depths[:, :, :-1]
        features_mid = 0.5 * (features[:, :, :-1] + features[:, :, 1:])
        densities_mid = 0.5 * (densities[:, :, :-1] + densities[:, :, 1:])
        depths_mid = 0.5 * (depths[:, :, :-1] + depths[:, :, 1:])
        densities_mid = self.density(densities_mid)
        alpha = 1.0 - torch.exp(-densities_mid * deltas)
        transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :, :1]), 1.0 - alpha + 1e-10], dim=2), dim=2)
        weights = alpha * transmittance[:, :, :-1]
        composite = (weights * features_mid).sum(dim=2)
        total = weights.sum(dim=2)
        depth = torch.nan_to_num((weights * depths_mid).sum(dim=2) / total, nan=float("inf"))
        depth = torch.clamp(depth, depths.amin(dim=2), depths.amax(dim=2))
        if self.white_background:
            composite = composite + 1.0 - total
        return composite * 2.0 - 1.0, depth, weights


class ImportanceRenderer(nn.Module):
    """Two-pass volume renderer (stratified, then importance samples) over a `DensityField`.

    Args:
        ray_start (`float`, defaults to 2.25): near depth (FFHQ preset).
        ray_end (`float`, defaults to 3.3): far depth (FFHQ preset).
        num_samples (`int`, defaults to 48): stratified samples per ray (EG3D ``depth_resolution``).
        num_importance (`int`, defaults to 48): importance samples per ray (``depth_resolution_importance``); 0
            renders the stratified pass only.
        density_activation (`"softplus"`, `"none"` or `"sdf"`, defaults to `"softplus"`): see `MipRayMarcher2`.
        density_noise (`float`, defaults to 0): std of Gaussian noise added to σ in training mode (EG3D option).
        white_background (`bool`, defaults to `False`): see `MipRayMarcher2`.
        sdf_beta (`float`, defaults to 0.1): initial learnable ``β`` of the ``"sdf"`` density.

    Training mode jitters the stratified depths and draws random importance quantiles; eval mode is deterministic.
    """

    def __init__(
        self,
        ray_start: float = 2.25,
        ray_end: float = 3.3,
        num_samples: int = 48,
        num_importance: int = 48,
        density_activation: Literal["softplus", "none", "sdf"] = "softplus",
        density_noise: float = 0.0,
        white_background: bool = False,
        sdf_beta: float = 0.1,
    ) -> None:
        super().__init__()
        if not ray_start < ray_end:
            raise ValueError(f"ray_start must be smaller than ray_end, got {ray_start} and {ray_end}")
        if num_samples < 2 or num_importance < 0:
            raise ValueError(f"need num_samples >= 2 and num_importance >= 0, got {num_samples}, {num_importance}")
        if num_importance > 0 and num_samples < 4:
            raise ValueError(f"importance sampling needs num_samples >= 4, got {num_samples}")
        if density_noise < 0:
            raise ValueError(f"density_noise must be non-negative, got {density_noise}")
        self.ray_start = ray_start
        self.ray_end = ray_end
        self.num_samples = num_samples
        self.num_importance = num_importance
        self.density_noise = density_noise
        self.ray_marcher = MipRayMarcher2(density_activation, white_background, sdf_beta)

    def extra_repr(self) -> str:
        return (
            f"ray_start={self.ray_start}, ray_end={self.ray_end}, num_samples={self.num_samples}, "
            f"num_importance={self.num_importance}, density_noise={self.density_noise}"
        )

    def query(
        self,
        density_and_features: DensityField,
        ray_origins: Tensor,
        ray_directions: Tensor,
        depths: Tensor,
        point_warp: PointWarp | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Evaluate the field at ``origin + depth · direction``.

        Args:
            density_and_features (`DensityField`): the field.
            ray_origins, ray_directions (`torch.Tensor` of shape `(N, M, 3)`).
            depths (`torch.Tensor` of shape `(N, M, S, 1)`).
            point_warp (`PointWarp`, *optional*): applied to the points before the field.
            generator (`torch.Generator`, *optional*): source of the density noise.

        Returns:
            `dict[str, torch.Tensor]`: the field outputs reshaped to `(N, M, S, ...)`; ``"sigma"`` is `(N, M, S, 1)`.
        """
        n, m, s, _ = depths.shape
        points = (ray_origins.unsqueeze(2) + depths * ray_directions.unsqueeze(2)).reshape(n, m * s, 3)
        directions = ray_directions.unsqueeze(2).expand(n, m, s, 3).reshape(n, m * s, 3)
        if point_warp is not None:
            points = point_warp(points)
            if points.shape != (n, m * s, 3):
                raise ValueError(f"point_warp must return shape {(n, m * s, 3)}, got {tuple(points.shape)}")
        out = density_and_features(points, directions)
        if "sigma" not in out or "features" not in out:
            raise ValueError(f"density_and_features must return 'sigma' and 'features', got keys {sorted(out)}")
        if out["sigma"].shape != (n, m * s, 1):
            raise ValueError(f"density_and_features 'sigma' must have shape {(n, m * s, 1)}, got {out['sigma'].shape}")
        samples = {key: value.reshape(n, m, s, *value.shape[2:]) for key, value in out.items()}
        if self.training and self.density_noise > 0:
            sigma = samples["sigma"]
            noise = torch.randn(sigma.shape, generator=generator, device=sigma.device, dtype=sigma.dtype)
            samples["sigma"] = sigma + noise * self.density_noise
        return samples

    def forward(
        self,
        density_and_features: DensityField,
        ray_origins: Tensor,
        ray_directions: Tensor,
        point_warp: PointWarp | None = None,
        generator: torch.Generator | None = None,
    ) -> RenderOutput:
        """Render N x M rays.

        Args:
            density_and_features (`DensityField`): the field to render.
            ray_origins (`torch.Tensor` of shape `(N, M, 3)`): ray origins.
            ray_directions (`torch.Tensor` of shape `(N, M, 3)`): unit ray directions.
            point_warp (`PointWarp`, *optional*): maps sample points before the field is queried.
            generator (`torch.Generator`, *optional*): source of the training-mode randomness.

        Returns:
            `RenderOutput` with S = num_samples + num_importance sorted samples per ray.
        """
        _check_rays(ray_origins, ray_directions)
        depths = sample_stratified(
            ray_origins, self.ray_start, self.ray_end, self.num_samples, perturb=self.training, generator=generator
        )
        samples = self.query(density_and_features, ray_origins, ray_directions, depths, point_warp, generator)
        if self.num_importance > 0:
            _, _, weights = self.ray_marcher(samples["features"], samples["sigma"], depths)
            fine_depths = sample_importance(
                depths, weights, self.num_importance, deterministic=not self.training, generator=generator
            )
            fine = self.query(density_and_features, ray_origins, ray_directions, fine_depths, point_warp, generator)
            if fine.keys() != samples.keys():
                raise ValueError("density_and_features must return the same keys on every call")
            depths, order = torch.sort(torch.cat([depths, fine_depths], dim=2), dim=2)
            merged = {}
            for key, value in samples.items():
                value = torch.cat([value, fine[key]], dim=2)
                index = order.reshape(*order.shape[:3], *([1] * (value.dim() - 3))).expand_as(value)
                merged[key] = value.gather(2, index)
            samples = merged
        features, depth, weights = self.ray_marcher(samples["features"], samples["sigma"], depths)
        return RenderOutput(
            features=features,
            depth=depth,
            opacity=weights.sum(dim=2),
            weights=weights,
            sample_depths=depths,
            samples=samples,
        )
