"""The configuration schema of omniavatar: frozen dataclasses filled by ``genblocks.config.load_config`` from the YAML
files shipped in ``omniavatar/configs/`` (``tiny``: seconds on a CPU; ``paper``: the authors' sizes) plus dotted
overrides (``--set generator.triplane_depth=4``).

:class:`GeneratorConfig` is the typed form of the authors' pickled ``rendering_kwargs`` together with the sizes their
classes fix (backbone 256², 32-channel planes, decoder pose input 106, SR ``w_dim`` 512): every one is a field here, with
the paper value in ``paper.yaml`` (spec §3, §7). Values the spec marks [unverified] are fields with documented defaults:
``flame`` (the feature layout), ``generator.triplane_depth``, ``generator.density_mode``, ``igr.*``, ``sdf_train.*``,
``prior_loss.*``, ``ctrl_loss.*`` and ``data.mirror_flame``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from genblocks.errors import FieldError
from genblocks.training.config import TrainConfig as SharedTrainConfig

__all__ = [
    "ControlLossConfig",
    "DataConfig",
    "FlameLayout",
    "GanConfig",
    "GeneratorConfig",
    "IGRConfig",
    "OmniAvatarConfig",
    "PriorLossConfig",
    "RenderConfig",
    "SDFTrainConfig",
    "TrainConfig",
]

DensityMode = Literal["delta_geom", "decoder_only", "with_sdf"]
Activation = Literal["swish", "softplus", "sine", "relu"]


@dataclass(frozen=True)
class FlameLayout:
    """The 3DMM feature vector F that follows the 25 camera values in a label: ``[shape | expression | neck | jaw]``.

    The authors' layout is 100 + 100 + 3 + 3 = 206 (FLAME 2020 has 300 shape and 100 expression components; the first
    100 of each are used). The decoder sees the last ``expression + neck + jaw`` values (106 in the paper). Which of the
    two 3-blocks is the neck and which the jaw is inferred from the authors' demo [unverified].

    Args:
        shape: Shape coefficients α.
        expression: Expression coefficients β.
        neck: Neck pose (axis-angle) values.
        jaw: Jaw pose (axis-angle) values.
    """

    shape: int = 100
    expression: int = 100
    neck: int = 3
    jaw: int = 3

    def __post_init__(self) -> None:
        for name in ("shape", "expression"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"expected a positive count, got {getattr(self, name)}")
        for name in ("neck", "jaw"):
            if getattr(self, name) != 3:
                raise FieldError(name, f"expected 3 axis-angle values, got {getattr(self, name)}")

    @property
    def feature_dim(self) -> int:
        """Length of F (206 in the paper)."""
        return self.shape + self.expression + self.neck + self.jaw

    @property
    def pose_dim(self) -> int:
        """Length of the decoder's condition, the last ``expression + neck + jaw`` values of F (106)."""
        return self.expression + self.neck + self.jaw

    def describe(self) -> str:
        """``"shape 100 | expression 100 | neck 3 | jaw 3 (206 values)"``."""
        return (
            f"shape {self.shape} | expression {self.expression} | neck {self.neck} | jaw {self.jaw} "
            f"({self.feature_dim} values)"
        )


@dataclass(frozen=True)
class IGRConfig:
    """The semantic SDF / correspondence network W and the template SDF (spec §3 ``IGRModel``).

    Args:
        intermediate_dims: Hidden widths of W [unverified; the released ones are read from the pickle].
        template_intermediate_dims: Hidden widths of the template SDF [unverified].
        skip_connection_layers: Layers whose input re-concatenates the embedded input (then ÷√2).
        bbox: ``(min xyz, max xyz)`` of the box W is defined in; outside it the warp is the identity.
        activation: ``swish`` (SiLU, the authors' default), ``softplus``, ``sine`` or ``relu``.
        radius_init: Sphere radius of the geometric initialisation (IGR).
        outside_offset: Outside the box, s = ‖p‖ − ``outside_offset`` (0.045 in the authors' code).
        residual_warp: Ours: W predicts x̄ − p (zero-initialised, so training starts at the identity warp); the
            authors' W predicts x̄ itself (``false``, what converted checkpoints use).
    """

    intermediate_dims: tuple[int, ...] = (256, 256, 256, 256, 256, 256, 256, 256)
    template_intermediate_dims: tuple[int, ...] = (256, 256, 256, 256, 256, 256, 256, 256)
    skip_connection_layers: tuple[int, ...] = (4,)
    bbox: tuple[tuple[float, float, float], tuple[float, float, float]] = ((-0.25, -0.3, -0.25), (0.25, 0.3, 0.25))
    activation: Activation = "swish"
    radius_init: float = 1.0
    outside_offset: float = 0.045
    residual_warp: bool = False


@dataclass(frozen=True)
class GeneratorConfig:
    """The Stage II generator: EG3D in canonical space, conditioned on expression and pose (spec §3, §7).

    Fields named as in the authors' ``rendering_kwargs`` keep their names (``depth_resolution``, ``box_warp``, ...).

    Args:
        z_dim, w_dim: Latent sizes (512).
        c_dim: Label columns the mapping sees, ``c[:, :c_dim]`` (25 = camera only, the released pickle).
        img_resolution: Final image side (512).
        img_channels: 3 (RGB), the only value supported. The authors' ``init_kwargs`` carry the field; a 4th
            (mask) channel is refused: the mask is the renderer's accumulated opacity (``OmniAvatarOutput.mask``).
        backbone_resolution: Side of the feature volumes (fixed 256 in the authors' class).
        plane_channels: Channels per volume (fixed 32).
        triplane_depth: Depth D of each volume [unverified; read from the pickle].
        mapping_layers: Mapping depth (2 in EG3D).
        channel_base, channel_max: Backbone widths ``min(channel_base // res, channel_max)``.
        decoder_hidden: Decoder hidden width (64).
        decoder_output_dim: Decoder features (32; the first 3 are the raw RGB).
        decoder_lr_mul: Learning-rate multiplier of the decoder.
        decoder_activation: ``sigmoid`` (rgb = sigmoid·1.002 − 0.001) or ``lrelu``.
        pose_embed: Feed [sin πx, cos πx, x] of the pose condition to ``pose_net``.
        pose_perturb_magnitude: m of the training-time condition noise (authors' ``pose_perturb_magtinude``).
        density_mode: ``delta_geom`` (σ = σ_prior + σ_dec), ``decoder_only`` (σ = σ_dec) or ``with_sdf``
            (sdf = s + Δ_dec, σ = sigmoid(−sdf/β)/β; [unverified], the authors' path crashes).
        sigmoid_beta_init: Initial learnable β of σ_prior = sigmoid(−s/β)/β (1e-3).
        c_scale: Factor on the mapping label (the authors' default when absent: 0).
        c_gen_conditioning_zero: Feed zeros to the mapping instead of the label.
        use_background: A StyleGAN2 background synthesis net (channel_base / 2) composited behind the head.
        with_torgb: A ToRGB layer (32 → 3, styled by ``ws[:, -1]``) makes the raw image from the features.
        superresolution: ``hybrid2x`` (128), ``hybrid4x`` (256) or ``hybrid8xdc`` (512).
        sr_channels: SR block widths.
        sr_antialias: Antialiased resize of the SR input.
        conv_clamp: Clamp of the backbone's (and background net's) conv outputs; a converted pickle takes its
            ``init_kwargs`` value (256 when absent, the authors' ``SynthesisBlock`` default); EG3D-style training runs
            the backbone in fp32 without one; null: no clamp.
        sr_conv_clamp: Clamp of the super-resolution's conv outputs; the authors' SR clamps at 256 whenever
            ``sr_num_fp16_res > 0`` (EG3D trains with 4), in fp32 too; null: no clamp.
        superresolution_noise_mode: Recorded from the pickle; our SR has no noise inputs (``none`` only is exact).
        plane_projection: ``xy_yz_xz``: the volumes are read at (x,y,z), (y,z,x), (x,z,y).
        box_warp: Side of the cube the volumes span (one value or three).
        ray_start, ray_end: Rendered depth range.
        depth_resolution, depth_resolution_importance: Stratified and importance samples per ray.
        neural_rendering_resolution: Raw image side (64).
        density_noise: σ noise in training mode.
        white_back: Add 1 − Σw to the rendered features.
        avg_camera_radius, avg_camera_pivot: The orbit the demo cameras sit on.
        focal: Normalised focal length of the demo cameras (1015/224 in the authors' FLAME fits).
    """

    z_dim: int = 512
    c_dim: int = 25
    w_dim: int = 512
    img_resolution: int = 512
    img_channels: int = 3
    backbone_resolution: int = 256
    plane_channels: int = 32
    triplane_depth: int = 8
    mapping_layers: int = 2
    channel_base: int = 32768
    channel_max: int = 512
    decoder_hidden: int = 64
    decoder_output_dim: int = 32
    decoder_lr_mul: float = 1.0
    decoder_activation: Literal["sigmoid", "lrelu"] = "sigmoid"
    pose_embed: bool = True
    pose_perturb_magnitude: float = 0.0
    density_mode: DensityMode = "delta_geom"
    sigmoid_beta_init: float = 1e-3
    c_scale: float = 1.0
    c_gen_conditioning_zero: bool = False
    use_background: bool = False
    with_torgb: bool = False
    superresolution: Literal["hybrid2x", "hybrid4x", "hybrid8xdc"] = "hybrid8xdc"
    sr_channels: tuple[int, int] = (256, 128)
    sr_antialias: bool = True
    conv_clamp: float | None = None
    sr_conv_clamp: float | None = None
    superresolution_noise_mode: Literal["none", "const", "random"] = "none"
    plane_projection: Literal["xy_yz_xz"] = "xy_yz_xz"
    box_warp: float = 1.0
    ray_start: float = 2.25
    ray_end: float = 3.3
    depth_resolution: int = 48
    depth_resolution_importance: int = 48
    neural_rendering_resolution: int = 64
    density_noise: float = 0.0
    white_back: bool = False
    avg_camera_radius: float = 2.7
    avg_camera_pivot: tuple[float, float, float] = (0.0, 0.0, 0.2)
    focal: float = 1015.0 / 224.0

    def __post_init__(self) -> None:
        if self.img_channels != 3:
            raise FieldError(
                "img_channels",
                f"expected 3 (RGB; the mask is the rendered opacity, not an image channel), got {self.img_channels}",
            )
        if self.triplane_depth < 1:
            raise FieldError("triplane_depth", f"expected at least 1, got {self.triplane_depth}")
        if self.sigmoid_beta_init <= 0:
            raise FieldError("sigmoid_beta_init", f"expected a positive value, got {self.sigmoid_beta_init}")
        if self.c_dim not in (0, 25) and self.c_dim < 25:
            raise FieldError("c_dim", f"expected 0, 25 or 25 + the 3DMM features, got {self.c_dim}")


@dataclass(frozen=True)
class RenderConfig:
    """Inference settings (the authors' demo values as defaults, spec §5).

    Args:
        truncation_psi: ψ (0.7).
        truncation_cutoff: Truncate the first ws only (14).
        noise_mode: Backbone noise (``const``).
        yaw_range, pitch_range: Half-widths of the random camera angles around the frontal view (0.25, 0.1 rad).
        pitch_offset: The demo's cameras sit at pitch π/2 − 0.05.
        orbit_center: The frontal angle of the rendering cameras' yaw and pitch: the authors' demo writes ``3.14/2``
            (1.57, 0.0008 rad from π/2; with their exact labels the converted generator reproduces their images). The
            mapping camera is at π/2.
        jaw_noise: Std of the random jaw motion added per sample (0.1, 0.15, 0.1).
        frames: Frames of a GIF / MP4 path.
        fps: Frames per second of a path.
        mesh_resolution: Grid side of marching cubes on the density.
    """

    truncation_psi: float = 0.7
    truncation_cutoff: int = 14
    noise_mode: Literal["const", "random", "none"] = "const"
    yaw_range: float = 0.25
    pitch_range: float = 0.1
    pitch_offset: float = -0.05
    orbit_center: float = 3.14 / 2
    jaw_noise: tuple[float, float, float] = (0.1, 0.15, 0.1)
    frames: int = 24
    fps: int = 12
    mesh_resolution: int = 64


@dataclass(frozen=True)
class SDFTrainConfig:
    """Stage I: W and the template SDF fitted to sampled head meshes (spec §4; losses [unverified]).

    Args:
        points_per_mesh: Near-surface samples per mesh per step.
        free_points: Uniform box samples per mesh for the eikonal term.
        surface_std: Std of the offsets along the normal of near-surface samples.
        param_std: Std of the sampled shape / expression values (the neutral head is drawn as well).
        pose_std: Std of the sampled neck / jaw axis-angle values (radians).
        neutral_fraction: Fraction of each batch drawn at the neutral head (its canonical map is the identity).
        sdf_weight, eikonal_weight, correspondence_weight, consistency_weight: Loss weights. The correspondence term
            is a mean squared distance (~1e-3 in scene units) beside L1 terms (~1e-2), so it needs a weight near 100 to
            shape W. Measured on the tiny config after 1200 steps, opening the jaw by 0.3 rad: with 10, W undoes 66 %
            of the jaw's true motion (mean surface |s| 0.013); with 100, 83 % (|s| 0.0045); upper-head points move
            a quarter as much as jaw points with either.
        far_weight: Weight of L1 to the mesh's approximate signed distance at uniform box points (ours).
        lr: Adam learning rate of both networks.
    """

    points_per_mesh: int = 512
    free_points: int = 128
    surface_std: float = 0.01
    param_std: float = 1.0
    pose_std: float = 0.3
    neutral_fraction: float = 0.25
    sdf_weight: float = 1.0
    eikonal_weight: float = 0.1
    correspondence_weight: float = 100.0
    consistency_weight: float = 1.0
    far_weight: float = 0.5
    lr: float = 3e-3


@dataclass(frozen=True)
class PriorLossConfig:
    """Geometry prior: mean of w(s)·|σ − σ_prior|, w = exp(−|s|/κ), weight decayed linearly to 0 [unverified form].

    Args:
        weight: Initial weight.
        kappa: κ, the width of the band around the surface the prior holds in.
        decay_kimg: Thousands of images over which the weight falls to ``final_weight``.
        final_weight: Weight after the decay.
    """

    weight: float = 1.0
    kappa: float = 0.02
    decay_kimg: float = 1000.0
    final_weight: float = 0.0


@dataclass(frozen=True)
class ControlLossConfig:
    """Control loss ‖β̂ − β‖ + λ‖θ̂ − θ‖ on the final image [unverified norm and λ].

    Args:
        estimator: ``disc_head`` (the discriminator regresses (β, θ)), ``pretrained`` (a user-given estimator's
            weights in ``estimator_path``), or ``trained`` (an estimator fitted on generated images first, for
            ``estimator_steps`` steps).
        weight: Loss weight.
        lam: λ on the pose term.
        norm: ``l1`` or ``l2``.
        estimator_path: Weights of the ``pretrained`` estimator (safetensors of :class:`ControlEstimator`).
        estimator_steps: Fitting steps of the ``trained`` estimator.
        estimator_channels: Width of the estimator's convolutions.
    """

    estimator: Literal["disc_head", "pretrained", "trained"] = "disc_head"
    weight: float = 1.0
    lam: float = 1.0
    norm: Literal["l1", "l2"] = "l1"
    estimator_path: str | None = None
    estimator_steps: int = 200
    estimator_channels: int = 64


@dataclass(frozen=True)
class GanConfig:
    """Stage II adversarial recipe (EG3D's, spec §4 [unverified]).

    Args:
        g_lr, d_lr: Adam learning rates (0.0025, 0.002); betas (0, 0.99).
        r1_gamma: R1 weight γ.
        r1_interval, g_reg_interval: Lazy regularisation intervals.
        density_reg: Weight of EG3D's density regulariser (applied every ``g_reg_interval``).
        blur_fade_kimg: Discriminator blur fade-in (σ 10 → 0).
        gpc_prob, gpc_fade_kimg: Generator pose conditioning swap probability and fade.
        ema_kimg, ema_rampup: Generator EMA.
        d_channel_base, d_channel_max: Discriminator widths.
        d_mask_branch: Add the conv branch over the rendered accumulation mask (``MaskDualDiscriminator``).
        batch_size: Images per step.
    """

    g_lr: float = 0.0025
    d_lr: float = 0.002
    r1_gamma: float = 1.0
    r1_interval: int = 16
    g_reg_interval: int = 4
    density_reg: float = 0.25
    blur_fade_kimg: float = 200.0
    gpc_prob: float = 0.5
    gpc_fade_kimg: float = 1000.0
    ema_kimg: float = 10.0
    ema_rampup: float | None = 0.05
    d_channel_base: int = 32768
    d_channel_max: int = 512
    d_mask_branch: bool = True
    batch_size: int = 32


@dataclass(frozen=True)
class DataConfig:
    """Training images: an FFHQ-style folder with EG3D's ``dataset.json`` (``{"labels": [[name, [25 + F values]]]}``).

    Args:
        root: The folder (``None``: synthetic images made from the procedural head, for tiny runs).
        mirror: Mirror augmentation (x-flip of the image, the camera and the FLAME parameters).
        mirror_flame: How FLAME values are mirrored: ``negate_yz_rotation`` (axis-angle (x, y, z) -> (x, −y, −z) for
            the neck and jaw; shape and expression unchanged) [unverified: FLAME's bases are not exactly symmetric].
        synthetic_size: Images of the synthetic set.
        num_workers: Loader workers.
    """

    root: str | None = None
    mirror: bool = False
    mirror_flame: Literal["negate_yz_rotation"] = "negate_yz_rotation"
    synthetic_size: int = 16
    num_workers: int = 0


@dataclass
class TrainConfig(SharedTrainConfig):
    """``train.``: the shared keys plus the stage (``sdf``: Stage I; ``gan``: Stage II).

    Args:
        stage: Which stage ``omniavatar train`` runs.
        sdf_checkpoint: Stage II: the Stage I ``trained/semantic_sdf.safetensors``, loaded into the generator's W and
            template SDF (a missing, non-safetensors or misfitting file exits 2). ``None``: Stage II starts anyway
            with W and the template SDF as initialised (the identity warp with ``igr.residual_warp``) and
            ``omniavatar train`` prints a note; run ``--stage sdf`` first for a geometry prior.
    """

    stage: Literal["sdf", "gan"] = "sdf"
    sdf_checkpoint: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    """Which head model backs the prior.

    Args:
        head: ``procedural`` (ellipsoid + random bases, tests/demo) or ``flame`` (``flame_path``).
        flame_path: A FLAME ``generic_model.pkl`` or ``.npz`` (MPI licence; never bundled).
        seed: Seed of the random weights and of the procedural head.
    """

    head: Literal["procedural", "flame"] = "procedural"
    flame_path: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class OmniAvatarConfig:
    """The whole configuration (``omniavatar <command> --config tiny|paper|file.yaml``)."""

    flame: FlameLayout = field(default_factory=FlameLayout)
    model: ModelConfig = field(default_factory=ModelConfig)
    igr: IGRConfig = field(default_factory=IGRConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    sdf_train: SDFTrainConfig = field(default_factory=SDFTrainConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    prior_loss: PriorLossConfig = field(default_factory=PriorLossConfig)
    ctrl_loss: ControlLossConfig = field(default_factory=ControlLossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
