"""OmniAvatar's Stage I networks: the semantic SDF / correspondence network W and the template SDF (spec §3, IGR:
Gropp et al., "Implicit Geometric Regularization for Learning Shapes", arXiv 2002.10099), re-derived from the
structure of the authors' ``training/im3dmm_network.py`` (hongyixu37/omniavatar-proj@881e9aa; not copied).

:class:`IGRNetwork` maps an observation point p and the 3DMM features F to ``output_dim`` values:

- p is normalised into its box, ``q = (p − centre) · 2 / (max − min)`` ∈ [−1, 1]³, and embedded as
  ``[q, sin πq, cos πq]`` (9 values), concatenated with F;
- an MLP over ``intermediate_dims`` (layers ``fc0, fc1, ...``); a skip layer re-concatenates the embedded input and
  divides by √2; activation SiLU (``swish``), softplus, sine (ω = 30) or ReLU; IGR's geometric initialisation;
- with ``rescale_warp`` the last three outputs (the canonical point x̄) are mapped back from the box:
  ``x̄ · half-edge + centre``;
- outside the box the network is not run: s = ‖p‖ − ``outside_offset`` and x̄ = p (the identity warp).

:class:`SemanticSDF` pairs W (``output_dim`` 4 = (s, x̄)) with the template SDF (``output_dim`` 1, no features):
``warp`` gives (x̄, s) as the renderer uses them, ``sdf`` the template distance at x̄. :func:`stage1_losses` fits
both to head meshes: SDF L1 on near-surface samples, eikonal ‖∇s‖ = 1, correspondence L2 to the template point with
the same barycentric coordinates (moved along the normal by the same offset), L1 to the mesh's approximate signed
distance at uniform box points (``far_weight``, ours), and the consistency
s(p) = SDF_template(x̄) (spec §4, [unverified] recipe).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omniavatar.config import IGRConfig, SDFTrainConfig
from omniavatar.head_model import HeadModel, barycentric_points, mesh_signed_distance, sample_surface, vertex_normals

__all__ = ["IGRNetwork", "SemanticSDF", "fit_semantic_sdf", "sample_head_params", "stage1_losses"]

EMBEDDING_DIM = 9
"""[q, sin πq, cos πq] of a 3-D point."""


class _Sine(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(30.0 * x)


def _activation(name: str) -> nn.Module:
    if name == "swish":
        return nn.SiLU()
    if name == "softplus":
        return nn.Softplus()
    if name == "sine":
        return _Sine()
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"activation must be 'swish', 'softplus', 'sine' or 'relu', got {name!r}")


class IGRNetwork(nn.Module):
    """An MLP SDF (and warp) over a box (module docstring).

    Args:
        intermediate_dims (`Sequence[int]`): hidden widths.
        skip_connection_layers (`Sequence[int]`): indices of the layers whose input re-concatenates the embedding.
        bbox (`((x0, y0, z0), (x1, y1, z1))`): the box.
        feature_dim (`int`, defaults to 0): length of the conditioning features F.
        output_dim (`int`, defaults to 1): 1 (an SDF), 3 (a warp) or 4 (s and x̄).
        activation (`str`, defaults to `"swish"`).
        radius_init (`float`, defaults to 1.0): sphere radius of the geometric initialisation.
        rescale_warp (`bool`, defaults to `False`): map the last three outputs back from the box.
        residual_warp (`bool`, defaults to `False`): ours, not the authors': x̄ = p + half-edge · (last three outputs),
            with those outputs' weights initialised to zero, so the warp starts as the identity.
        outside_offset (`float`, defaults to 0.045): s = ‖p‖ − offset outside the box.
        geometric_init (`bool`, defaults to `True`).
    """

    def __init__(
        self,
        intermediate_dims: Sequence[int],
        skip_connection_layers: Sequence[int],
        bbox: tuple[Sequence[float], Sequence[float]],
        feature_dim: int = 0,
        output_dim: int = 1,
        activation: Literal["swish", "softplus", "sine", "relu"] = "swish",
        radius_init: float = 1.0,
        rescale_warp: bool = False,
        outside_offset: float = 0.045,
        geometric_init: bool = True,
        residual_warp: bool = False,
    ) -> None:
        super().__init__()
        if output_dim not in (1, 3, 4):
            raise ValueError(f"output_dim must be 1, 3 or 4, got {output_dim}")
        if len(bbox) != 2 or len(bbox[0]) != 3 or len(bbox[1]) != 3 or any(h <= lo for lo, h in zip(*bbox)):
            raise ValueError(f"bbox must be ((x0, y0, z0), (x1, y1, z1)) with x0 < x1 etc., got {bbox}")
        low, high = torch.tensor(bbox[0], dtype=torch.float32), torch.tensor(bbox[1], dtype=torch.float32)
        self.feature_dim = feature_dim
        self.output_dim = output_dim
        self.skip_connection_layers = tuple(skip_connection_layers)
        self.rescale_warp = rescale_warp
        self.residual_warp = residual_warp and output_dim >= 3
        self.outside_offset = outside_offset
        self.bbox_center: Tensor
        self.bbox_half_edge: Tensor
        self.register_buffer("bbox_center", 0.5 * (low + high), persistent=False)
        self.register_buffer("bbox_half_edge", 0.5 * (high - low), persistent=False)
        self.activation = _activation(activation)
        dims = [EMBEDDING_DIM + feature_dim, *intermediate_dims, output_dim]
        self.num_layers = len(dims) - 1
        for layer in range(self.num_layers):
            in_dim = dims[layer] + (EMBEDDING_DIM + feature_dim if layer in self.skip_connection_layers else 0)
            linear = nn.Linear(in_dim, dims[layer + 1])
            if geometric_init:
                if layer == self.num_layers - 1:
                    nn.init.normal_(linear.weight, mean=math.sqrt(math.pi) / math.sqrt(dims[layer]), std=1e-5)
                    nn.init.constant_(linear.bias, -radius_init)
                else:
                    nn.init.normal_(linear.weight, 0.0, math.sqrt(2) / math.sqrt(dims[layer + 1]))
                    nn.init.zeros_(linear.bias)
            if self.residual_warp and layer == self.num_layers - 1:
                with torch.no_grad():
                    linear.weight[-3:] = 0
                    linear.bias[-3:] = 0
            setattr(self, f"fc{layer}", linear)

    def extra_repr(self) -> str:
        return f"feature_dim={self.feature_dim}, output_dim={self.output_dim}, rescale_warp={self.rescale_warp}"

    def outside(self, points: Tensor) -> Tensor:
        """The values outside the box: s = ‖p‖ − offset and/or x̄ = p, shape `(..., output_dim)`."""
        distance = points.norm(dim=-1, keepdim=True) - self.outside_offset
        if self.output_dim == 1:
            return distance
        if self.output_dim == 3:
            return points
        return torch.cat([distance, points], dim=-1)

    def inside_box(self, points: Tensor) -> Tensor:
        """Boolean mask `(...)` of the points inside the (closed) box."""
        scaled = (points - self.bbox_center) / self.bbox_half_edge
        return (scaled.abs() <= 1).all(dim=-1)

    def run_mlp(self, points: Tensor, features: Tensor | None) -> Tensor:
        """The MLP on points `(..., 3)` (and features `(..., F)`), whatever their position; `(..., output_dim)`."""
        q = (points - self.bbox_center) / self.bbox_half_edge
        embedded = torch.cat([q, torch.sin(math.pi * q), torch.cos(math.pi * q)], dim=-1)
        if self.feature_dim > 0:
            if features is None or features.shape[-1] != self.feature_dim:
                raise ValueError(f"features must end in {self.feature_dim} values, got {features}")
            embedded = torch.cat([embedded, features.to(embedded.dtype)], dim=-1)
        x = embedded
        for layer in range(self.num_layers):
            if layer in self.skip_connection_layers:
                x = torch.cat([x, embedded], dim=-1) / math.sqrt(2.0)
            x = getattr(self, f"fc{layer}")(x)
            if layer < self.num_layers - 1:
                x = self.activation(x)
        if self.residual_warp:
            x = torch.cat([x[..., :-3], points + x[..., -3:] * self.bbox_half_edge], dim=-1)
        elif self.rescale_warp and self.output_dim >= 3:
            x = torch.cat([x[..., :-3], x[..., -3:] * self.bbox_half_edge + self.bbox_center], dim=-1)
        return x

    def forward(self, points: Tensor, features: Tensor | None = None) -> Tensor:
        """Evaluate at points.

        Args:
            points (`torch.Tensor` of shape `(N, P, 3)`).
            features (`torch.Tensor` of shape `(N, F)` or `(N, P, F)`, *optional*): required when ``feature_dim > 0``.

        Returns:
            `torch.Tensor` of shape `(N, P, output_dim)`: the MLP inside the box, :meth:`outside` elsewhere.
        """
        if features is not None and features.dim() == 2:
            features = features[:, None, :].expand(*points.shape[:-1], features.shape[-1])
        inside = self.inside_box(points).unsqueeze(-1)
        return torch.where(inside, self.run_mlp(points, features), self.outside(points))


class SemanticSDF(nn.Module):
    """W (``correspondence``: p, F -> (s, x̄)) and the canonical template SDF (``template``), spec §3.

    Args:
        feature_dim (`int`): length of F.
        config (`IGRConfig`): widths, skip layers, box, activation.
    """

    def __init__(self, feature_dim: int, config: IGRConfig) -> None:
        super().__init__()
        self.correspondence = IGRNetwork(
            config.intermediate_dims,
            config.skip_connection_layers,
            config.bbox,
            feature_dim=feature_dim,
            output_dim=4,
            activation=config.activation,
            radius_init=config.radius_init,
            rescale_warp=True,
            outside_offset=config.outside_offset,
            residual_warp=config.residual_warp,
        )
        self.template = IGRNetwork(
            config.template_intermediate_dims,
            config.skip_connection_layers,
            config.bbox,
            feature_dim=0,
            output_dim=1,
            activation=config.activation,
            radius_init=config.radius_init,
            outside_offset=config.outside_offset,
        )

    def warp(self, points: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        """Observation points `(N, P, 3)` and features `(N, F)` -> (canonical points `(N, P, 3)`, s `(N, P, 1)`)."""
        out = self.correspondence(points, features)
        return out[..., 1:], out[..., :1]

    def sdf(self, points: Tensor, features: Tensor) -> Tensor:
        """The template SDF at the warped points, `(N, P, 1)` (the authors' non-warping query)."""
        canonical, _ = self.warp(points, features)
        return self.template(canonical)


def fit_semantic_sdf(
    network: SemanticSDF,
    head: HeadModel,
    config: SDFTrainConfig,
    bbox: tuple[Sequence[float], Sequence[float]],
    steps: int,
    batch_size: int = 4,
    seed: int = 0,
) -> list[dict[str, float]]:
    """A plain Adam loop over :func:`stage1_losses` (tests, demo); ``omniavatar train --stage sdf`` runs the same
    losses through :func:`genblocks.training.fit`. Returns the losses of every step."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr)
    history = []
    network.train()
    for _ in range(steps):
        params = sample_head_params(
            batch_size, head.layout.feature_dim, config.param_std, config.neutral_fraction, generator, config.pose_std
        )
        losses = stage1_losses(network, head, params, config, bbox, generator)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        history.append({key: float(value.detach()) for key, value in losses.items()})
    return history


def sample_head_params(
    count: int,
    feature_dim: int,
    std: float,
    neutral_fraction: float,
    generator: torch.Generator | None = None,
    pose_std: float = 0.3,
) -> Tensor:
    """Random 3DMM features `(count, F)`: shape and expression ~ N(0, std²), the last 6 (neck, jaw) ~ N(0, pose_std²);
    the first ⌈neutral_fraction · count⌉ rows zero (the neutral head)."""
    params = torch.randn(count, feature_dim, generator=generator) * std
    params[:, -6:] *= pose_std / std if std > 0 else 0.0
    params[: math.ceil(neutral_fraction * count)] = 0
    return params


def _gradient(values: Tensor, points: Tensor) -> Tensor:
    return torch.autograd.grad(values.sum(), points, create_graph=True)[0]


def stage1_losses(
    network: SemanticSDF,
    head: HeadModel,
    params: Tensor,
    config: SDFTrainConfig,
    bbox: tuple[Sequence[float], Sequence[float]],
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Stage I losses on the meshes of `params` `(N, F)` (module docstring).

    Returns:
        ``{"loss", "sdf", "far", "eikonal", "correspondence", "consistency", "template"}``, scalars; ``loss`` is the weighted
        sum (the template SDF's own surface + eikonal terms included).
    """
    n = params.shape[0]
    with torch.no_grad():
        vertices = head.vertices(params)
        template = head.template.to(vertices)[None].expand_as(vertices)
        normals = vertex_normals(vertices, head.faces)
        template_normals = vertex_normals(template, head.faces)
        index, bary, surface = sample_surface(vertices, head.faces, config.points_per_mesh, generator)
        canonical_surface = barycentric_points(template, head.faces, index, bary)
        normal = F.normalize(barycentric_points(normals, head.faces, index, bary), dim=-1)
        template_normal = F.normalize(barycentric_points(template_normals, head.faces, index, bary), dim=-1)
        offset = torch.randn(n, config.points_per_mesh, 1, generator=generator) * config.surface_std
        points = surface + offset * normal
        target_canonical = canonical_surface + offset * template_normal
        low, high = torch.tensor(bbox[0]), torch.tensor(bbox[1])
        free = low + (high - low) * torch.rand(n, config.free_points, 3, generator=generator)
        free_sdf = mesh_signed_distance(free, vertices, head.faces)
        t_index, t_bary, t_surface = sample_surface(template[:1], head.faces, config.points_per_mesh, generator)
        t_index_normal = F.normalize(barycentric_points(template_normals[:1], head.faces, t_index, t_bary), dim=-1)
        t_offset = torch.randn(1, config.points_per_mesh, 1, generator=generator) * config.surface_std
        t_points = t_surface + t_offset * t_index_normal

    features = params.to(points)
    near = points.detach().requires_grad_(True)
    canonical, s = network.warp(near, features)
    sdf_loss = (s - offset).abs().mean()
    correspondence = (canonical - target_canonical).square().sum(-1).mean()
    free_points = free.requires_grad_(True)
    _, s_free = network.warp(free_points, features)
    eikonal = (_gradient(s_free, free_points).norm(dim=-1) - 1).square().mean()
    far = (s_free - free_sdf).abs().mean()
    consistency = (network.template(canonical) - s).abs().mean()

    t_near = t_points.detach().requires_grad_(True)
    t_values = network.template(t_near)
    t_free = free[:1].detach().requires_grad_(True)
    template_loss = (t_values - t_offset).abs().mean() + config.eikonal_weight * (
        (_gradient(network.template(t_free), t_free).norm(dim=-1) - 1).square().mean()
    )
    loss = (
        config.sdf_weight * sdf_loss
        + config.eikonal_weight * eikonal
        + config.correspondence_weight * correspondence
        + config.consistency_weight * consistency
        + config.far_weight * far
        + template_loss
    )
    return {
        "loss": loss,
        "sdf": sdf_loss.detach(),
        "far": far.detach(),
        "eikonal": eikonal.detach(),
        "correspondence": correspondence.detach(),
        "consistency": consistency.detach(),
        "template": template_loss.detach(),
    }
