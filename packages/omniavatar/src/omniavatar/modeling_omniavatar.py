"""OmniAvatar's Stage II generator (Xu et al., "OmniAvatar: Geometry-Guided Controllable 3D Head Synthesis", CVPR 2023,
arXiv 2303.15539): EG3D evaluated in a canonical space, with a density prior from the FLAME SDF and a decoder
conditioned on expression and pose. Re-derived from spec §3/§7 and the structure of the authors' inference code
(hongyixu37/omniavatar-proj@881e9aa ``training/triplane.py``, ``volumetric_rendering/renderer.py``; NVIDIA-licensed,
not copied), on genblocks' :class:`~genblocks.gan.triplane.TriPlaneGenerator`.

Label layout: ``c = [cam2world 16 | intrinsics 9 | F]`` with F the 3DMM features (:class:`~omniavatar.config.FlameLayout`,
206 in the paper). The mapping sees ``c[:, :c_dim] · c_scale`` (the camera only when ``c_dim`` = 25).

Per sample point p of a ray (`OmniAvatarGenerator.density_and_features`):

1. The frozen semantic SDF W gives the canonical point x̄ and the FLAME signed distance s (identity and ‖p‖ − 0.045
   outside its box).
2. The backbone's 3·D-deep feature volumes are read at x̄ permuted as (x,y,z), (y,z,x), (x,z,y) and averaged.
3. The decoder: ``pose_net`` (FC → softplus) embeds the last ``expression + 6`` values of F (optionally as
   [sin πx, cos πx, x]); its 32 features are concatenated with the volume feature; ``sigma_net`` (FC → softplus → FC)
   gives σ_dec and the colour features.
4. Density: σ_prior = sigmoid(−s/β)/β with a learnable β (init 1e-3). ``delta_geom``: σ = σ_prior + σ_dec;
   ``decoder_only``: σ = σ_dec (σ_dec − σ_prior is returned for the prior loss); ``with_sdf`` [unverified]:
   sdf = s + σ_dec, σ = sigmoid(−sdf/β)/β. The ray marcher then applies EG3D's softplus(σ − 1).

After compositing: an optional background (a StyleGAN2 synthesis net at the SR input size) is added where the
accumulated opacity is below one, an optional ToRGB layer makes the raw image, and EG3D's super-resolution lifts it;
``image_mask`` is the accumulated opacity mapped by ×1.002 − 0.001.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genblocks.gan.stylegan2 import EqualLinear, SynthesisNetwork, ToRGBLayer
from genblocks.gan.triplane import TriPlaneGenerator
from genblocks.render3d.cameras import CAMERA_LABEL_DIM, split_camera_label
from genblocks.render3d.rays import sample_rays
from omniavatar.config import FlameLayout, GeneratorConfig, IGRConfig
from omniavatar.semantic_sdf import SemanticSDF

__all__ = ["OmniAvatarDecoder", "OmniAvatarGenerator", "prior_density"]

NoiseMode = Literal["random", "const", "none"]


def prior_density(s: Tensor, beta: Tensor) -> Tensor:
    """σ_prior = sigmoid(−s/β)/β: a density that rises to 1/β inside the surface (s < 0)."""
    return torch.sigmoid(-s / beta) / beta


class OmniAvatarDecoder(nn.Module):
    """EG3D's OSG decoder with a pose/expression branch (module docstring, step 3).

    Args:
        plane_channels (`int`): volume feature channels C (32).
        pose_dim (`int`): length of the condition (expression + 6; 106 in the paper); 0 for none.
        expression_dim (`int`): its expression part (for the training-time noise scales).
        hidden (`int`, defaults to 64), output_dim (`int`, defaults to 32), lr_multiplier (`float`, defaults to 1).
        activation (`"sigmoid"` or `"lrelu"`): colour activation.
        pose_embed (`bool`): embed the condition as [sin πx, cos πx, x].
        pose_perturb_magnitude (`float`): m; in training mode N(0, m) is added to the expression, N(0, 0.2m) to the
            neck and N(0, m) to the jaw values (0 at inference).

    Parameter names ``pose_net.0`` and ``sigma_net.{0,2}`` follow the authors' decoder.
    """

    def __init__(
        self,
        plane_channels: int,
        pose_dim: int,
        expression_dim: int,
        hidden: int = 64,
        output_dim: int = 32,
        lr_multiplier: float = 1.0,
        activation: Literal["sigmoid", "lrelu"] = "sigmoid",
        pose_embed: bool = True,
        pose_perturb_magnitude: float = 0.0,
    ) -> None:
        super().__init__()
        if activation not in ("sigmoid", "lrelu"):
            raise ValueError(f"activation must be 'sigmoid' or 'lrelu', got {activation!r}")
        self.plane_channels = plane_channels
        self.pose_dim = pose_dim
        self.expression_dim = expression_dim
        self.output_dim = output_dim
        self.activation = activation
        self.pose_embed = pose_embed
        self.pose_perturb_magnitude = pose_perturb_magnitude
        self.pose_net: nn.Sequential | None = None
        if pose_dim > 0:
            width = 3 * pose_dim if pose_embed else pose_dim
            self.pose_net = nn.Sequential(
                EqualLinear(width, plane_channels, lr_multiplier=lr_multiplier), nn.Softplus()
            )
        in_features = plane_channels * (2 if pose_dim > 0 else 1)
        self.sigma_net = nn.Sequential(
            EqualLinear(in_features, hidden, lr_multiplier=lr_multiplier),
            nn.Softplus(),
            EqualLinear(hidden, 1 + output_dim, lr_multiplier=lr_multiplier),
        )

    def embed_pose(self, pose: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The pose branch: condition `(N, pose_dim)` -> `(N, C)` (noise added in training mode)."""
        if self.pose_net is None:
            raise ValueError("this decoder has no pose branch (pose_dim = 0)")
        if pose.dim() != 2 or pose.shape[1] != self.pose_dim:
            raise ValueError(f"pose must have shape (N, {self.pose_dim}), got {tuple(pose.shape)}")
        m = self.pose_perturb_magnitude
        if self.training and m > 0:
            e = self.expression_dim
            scale = pose.new_full((self.pose_dim,), m)
            scale[e : e + 3] = 0.2 * m
            pose = pose + torch.randn(pose.shape, generator=generator, device=pose.device, dtype=pose.dtype) * scale
        if self.pose_embed:
            pose = torch.cat([torch.sin(torch.pi * pose), torch.cos(torch.pi * pose), pose], dim=-1)
        return self.pose_net(pose)

    def forward(self, features: Tensor, pose_embedding: Tensor | None = None) -> dict[str, Tensor]:
        """Decode volume features `(N, M, C)` with the pose embedding `(N, C)` ->
        ``{"sigma": (N, M, 1), "features": (N, M, output_dim)}`` (colours in (−0.001, 1.001) for ``sigmoid``)."""
        n, m, _ = features.shape
        x = features
        if self.pose_net is not None:
            if pose_embedding is None:
                raise ValueError("the decoder needs the pose embedding (embed_pose of the 3DMM features)")
            x = torch.cat([x, pose_embedding[:, None, :].expand(n, m, pose_embedding.shape[-1])], dim=-1)
        out = self.sigma_net(x)
        sigma, rgb = out[..., :1], out[..., 1:]
        if self.activation == "sigmoid":
            rgb = torch.sigmoid(rgb) * (1 + 2 * 0.001) - 0.001
        else:
            rgb = F.leaky_relu(rgb, 0.2) * 2**0.5
        return {"sigma": sigma, "features": rgb}


class OmniAvatarGenerator(TriPlaneGenerator):
    """The OmniAvatar generator (module docstring).

    Args:
        config (`GeneratorConfig`): sizes and rendering settings (the typed ``rendering_kwargs``).
        layout (`FlameLayout`): the 3DMM feature layout (F values follow the camera in a label).
        igr (`IGRConfig`, *optional*): the semantic SDF W and template SDF; ``None`` renders without the prior
            (plain EG3D in observation space with the expression-conditioned decoder).

    Attributes:
        semantic_sdf (`SemanticSDF` or None): W, frozen (no gradients; load the Stage I weights into it).
        sigmoid_beta (`nn.Parameter` of shape `(1,)`): β of σ_prior.
    """

    decoder: OmniAvatarDecoder  # type: ignore[assignment]  # EG3D's decoder with the pose branch

    def __init__(self, config: GeneratorConfig, layout: FlameLayout, igr: IGRConfig | None = None) -> None:
        super().__init__(
            z_dim=config.z_dim,
            c_dim=config.c_dim,
            w_dim=config.w_dim,
            img_resolution=config.img_resolution,
            img_channels=config.img_channels,
            backbone_resolution=config.backbone_resolution,
            plane_channels=config.plane_channels,
            triplane_depth=config.triplane_depth,
            mapping_layers=config.mapping_layers,
            channel_base=config.channel_base,
            channel_max=config.channel_max,
            decoder_hidden_features=config.decoder_hidden,
            decoder_output_features=config.decoder_output_dim,
            decoder_lr_multiplier=config.decoder_lr_mul,
            plane_projection=config.plane_projection,
            box_warp=config.box_warp,
            ray_start=config.ray_start,
            ray_end=config.ray_end,
            num_samples=config.depth_resolution,
            num_importance=config.depth_resolution_importance,
            density_noise=config.density_noise,
            neural_rendering_resolution=config.neural_rendering_resolution,
            superresolution=config.superresolution,
            sr_channels=config.sr_channels,
            sr_antialias=config.sr_antialias,
            c_scale=config.c_scale,
            pose_conditioning=not config.c_gen_conditioning_zero,
            conv_clamp=config.conv_clamp,
            sr_conv_clamp=config.sr_conv_clamp,
        )
        if config.c_dim not in (0, CAMERA_LABEL_DIM, CAMERA_LABEL_DIM + layout.feature_dim):
            raise ValueError(
                f"c_dim must be 0, 25 or 25 + {layout.feature_dim} (camera + {layout.describe()}), got {config.c_dim}"
            )
        self.config = config
        self.layout = layout
        self.density_mode = config.density_mode
        self.decoder = OmniAvatarDecoder(
            config.plane_channels,
            layout.pose_dim,
            layout.expression,
            config.decoder_hidden,
            config.decoder_output_dim,
            config.decoder_lr_mul,
            config.decoder_activation,
            config.pose_embed,
            config.pose_perturb_magnitude,
        )
        self.renderer.ray_marcher.white_background = config.white_back
        self.sigmoid_beta = nn.Parameter(torch.full((1,), config.sigmoid_beta_init))
        self.semantic_sdf: SemanticSDF | None = None
        if igr is not None:
            self.semantic_sdf = SemanticSDF(layout.feature_dim, igr).requires_grad_(False)
        self.bcg_synthesis: SynthesisNetwork | None = None
        if config.use_background:
            self.bcg_synthesis = SynthesisNetwork(
                config.w_dim,
                self.superresolution.input_resolution,
                config.decoder_output_dim,
                channel_base=config.channel_base // 2,
                channel_max=config.channel_max,
                conv_clamp=config.conv_clamp,
            )
        self.torgb: ToRGBLayer | None = None
        if config.with_torgb:
            self.torgb = ToRGBLayer(config.decoder_output_dim, 3, config.w_dim)

    @property
    def label_dim(self) -> int:
        """Columns of a full label: 25 camera values + the 3DMM features."""
        return CAMERA_LABEL_DIM + self.layout.feature_dim

    def check_label(self, c: Tensor) -> None:
        """Raise ``ValueError`` unless `c` is `(N, 25 + F)`."""
        if c.dim() != 2 or c.shape[1] != self.label_dim:
            raise ValueError(
                f"labels must have shape (N, {self.label_dim}): 25 camera values then {self.layout.describe()}, "
                f"got {tuple(c.shape)}"
            )

    def mapping_label(
        self, c: Tensor, swap_probability: float | None = None, generator: torch.Generator | None = None
    ) -> Tensor | None:
        """The mapping's label ``c[:, :c_dim]`` (swapped for GPC, zeroed, scaled as in the base class)."""
        return super().mapping_label(c[:, : self.c_dim], swap_probability, generator)

    def prior(self, points: Tensor, features: Tensor) -> tuple[Tensor, Tensor | None]:
        """Canonical points `(N, P, 3)` and FLAME SDF s `(N, P, 1)` of observation points (s None without W)."""
        if self.semantic_sdf is None:
            return points, None
        with torch.no_grad():
            canonical, s = self.semantic_sdf.warp(points, features)
        return canonical, s

    def density_and_features(
        self, planes: Tensor, points: Tensor, directions: Tensor, condition: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The radiance field at observation points (module docstring, steps 1-4).

        Args:
            planes (`torch.Tensor`): volumes `(N, 3, C, D, H, W)` (or planes when D = 1).
            points, directions (`torch.Tensor` of shape `(N, M, 3)`).
            condition (`torch.Tensor` of shape `(N, F)`): the 3DMM features.

        Returns:
            ``{"sigma", "features", "sdf", "prior_sigma", "geom_delta"}``: `(N, M, 1)` each except ``features``
            `(N, M, C')`; without W, s and σ_prior are zeros.
        """
        if condition is None or condition.dim() != 2 or condition.shape[1] != self.layout.feature_dim:
            raise ValueError(
                f"the OmniAvatar field needs the 3DMM features (N, {self.layout.feature_dim}), got "
                f"{None if condition is None else tuple(condition.shape)}"
            )
        canonical, s = self.prior(points, condition)
        features = self.sample_plane_features(planes, canonical)
        pose_embedding = None
        if self.layout.pose_dim > 0:
            pose_embedding = self.decoder.embed_pose(condition[:, -self.layout.pose_dim :])
        out = self.decoder(features, pose_embedding)
        sigma_dec = out["sigma"]
        if s is None:
            zeros = torch.zeros_like(sigma_dec)
            return {
                "sigma": sigma_dec,
                "features": out["features"],
                "sdf": zeros,
                "prior_sigma": zeros,
                "geom_delta": zeros,
            }
        beta = self.sigmoid_beta.to(sigma_dec.dtype)
        sigma_prior = prior_density(s, beta)
        if self.density_mode == "delta_geom":
            sigma, sdf = sigma_prior + sigma_dec, s
        elif self.density_mode == "decoder_only":
            sigma, sdf = sigma_dec, s
        else:
            sdf = s + sigma_dec
            sigma = prior_density(sdf, beta)
        return {
            "sigma": sigma,
            "features": out["features"],
            "sdf": sdf,
            "prior_sigma": sigma_prior,
            "geom_delta": sigma_dec if self.density_mode == "delta_geom" else sigma - sigma_prior,
        }

    def synthesis(  # type: ignore[override]
        self,
        ws: Tensor,
        c: Tensor,
        neural_rendering_resolution: int | None = None,
        noise_mode: NoiseMode = "random",
        generator: torch.Generator | None = None,
        return_extras: bool = False,
    ) -> dict[str, Tensor]:
        """Render ``ws`` with the cameras and 3DMM features of the labels `c`.

        Args:
            ws (`torch.Tensor` of shape `(N, num_ws, w_dim)`).
            c (`torch.Tensor` of shape `(N, 25 + F)`): camera then 3DMM features.
            neural_rendering_resolution (`int`, *optional*): raw image side r (the config's by default).
            noise_mode: backbone (and background) noise; the SR has none.
            generator (`torch.Generator`, *optional*): renderer randomness in training mode.
            return_extras (`bool`): also the feature image, planes and per-sample field outputs (``sample_sdf``,
                ``sample_prior_sigma``, ``sample_geom_delta``, ``sample_sigma``, ``sample_depths``, ``sample_weights``).

        Returns:
            ``"image"`` `(N, img_channels, R, R)` in about [−1, 1], ``"image_raw"`` `(N, 3, r, r)`,
            ``"image_depth"`` `(N, 1, r, r)`, ``"image_mask"`` `(N, 1, r, r)`.
        """
        if ws.dim() != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        self.check_label(c)
        cam2world, intrinsics = split_camera_label(c[:, :CAMERA_LABEL_DIM])
        features_3dmm = c[:, CAMERA_LABEL_DIM:]
        r = self.neural_rendering_resolution if neural_rendering_resolution is None else neural_rendering_resolution
        origins, directions = sample_rays(cam2world, intrinsics, r)
        planes = self.synthesize_planes(ws, noise_mode)
        rendered = self.renderer(
            partial(self.density_and_features, planes, condition=features_3dmm), origins, directions, None, generator
        )
        n = ws.shape[0]
        composite = rendered.features.transpose(1, 2).reshape(n, -1, r, r)
        opacity = rendered.opacity.transpose(1, 2).reshape(n, 1, r, r)
        depth = rendered.depth.transpose(1, 2).reshape(n, 1, r, r)
        # The renderer maps the composite by ×2 − 1; the authors composite the background before that mapping.
        feature_image = (composite + 1) / 2
        if self.bcg_synthesis is not None:
            background = self.bcg_synthesis(ws[:, : self.bcg_synthesis.num_ws], noise_mode=noise_mode)
            background = F.interpolate(
                background, size=(r, r), mode="bilinear", align_corners=False, antialias=self.config.sr_antialias
            )
            feature_image = feature_image + (1 - opacity) * background
        if self.decoder.activation == "sigmoid":
            feature_image = feature_image * 2 - 1
        torgb = self.torgb
        rgb = torgb(feature_image, ws[:, -1]) if torgb is not None else feature_image[:, : self.img_channels]
        out = {
            "image": self.superresolution(rgb, feature_image, ws),
            "image_raw": rgb,
            "image_depth": depth,
            "image_mask": opacity * (1 + 2 * 0.001) - 0.001,
        }
        if return_extras:
            out["image_features"] = feature_image
            out["image_weights"] = opacity
            out["planes"] = planes
            out["sample_depths"] = rendered.sample_depths
            out["sample_weights"] = rendered.weights
            out.update({f"sample_{key}": value for key, value in rendered.samples.items()})
        return out

    def forward(  # type: ignore[override]
        self,
        z: Tensor,
        c: Tensor,
        c_mapping: Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        neural_rendering_resolution: int | None = None,
        noise_mode: NoiseMode = "random",
        update_emas: bool = False,
        generator: torch.Generator | None = None,
        return_extras: bool = False,
    ) -> dict[str, Tensor]:
        """Map and render: ``ws = mapping(z, c_mapping or c)`` then :meth:`synthesis` with `c`.

        Args:
            z (`torch.Tensor` of shape `(N, z_dim)`).
            c (`torch.Tensor` of shape `(N, 25 + F)`): rendering camera and 3DMM features.
            c_mapping (`torch.Tensor` of shape `(N, 25 + F)`, *optional*): the mapping's label (the authors' demo uses
                a frontal camera); defaults to `c`.
            truncation_psi, truncation_cutoff, update_emas: mapping options.
            neural_rendering_resolution, noise_mode, generator, return_extras: see :meth:`synthesis`.
        """
        ws = self.mapping(
            z,
            c if c_mapping is None else c_mapping,
            truncation_psi=truncation_psi,
            truncation_cutoff=truncation_cutoff,
            update_emas=update_emas,
        )
        return self.synthesis(ws, c, neural_rendering_resolution, noise_mode, generator, return_extras)
