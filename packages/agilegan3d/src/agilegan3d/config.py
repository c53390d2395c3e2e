"""Typed configuration of AgileGAN3D (arXiv 2303.14297): the 3-D generator, the 2-D style prior, pair synthesis (the
3-D-aware augmentation of the exemplars), guided transfer, the multi-view inversion encoder and inference.

Only the three-step structure is known from the paper (spec agilegan3d §1); every number and design choice below is
the spec's [unverified] default (§3, §4, §8) and a field of its own. ``configs/tiny.yaml`` (seeded random, CPU) and
``configs/paper.yaml`` (EG3D FFHQ-512, StyleGAN2 config F, IR-SE-50 pSp) ship in the wheel and load onto
:class:`AgileGAN3DConfig` through :func:`genblocks.config.load_config`::

    from genblocks.cli import load_command_config
    from agilegan3d.config import AgileGAN3DConfig

    config, path = load_command_config(AgileGAN3DConfig, "agilegan3d", "train", "tiny", ["pairs.n=16"])
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from genblocks.errors import FieldError
from genblocks.training.config import TrainConfig

__all__ = [
    "STAGES",
    "AgileGAN3DConfig",
    "AugmentConfig",
    "EncoderConfig",
    "G3DConfig",
    "InferenceConfig",
    "PairsConfig",
    "PriorConfig",
    "SelectionConfig",
    "TransferConfig",
    "load_preset",
]

STAGES: tuple[str, ...] = ("prior", "pairs", "transfer", "encoder")
"""The training stages in order: 2-D style prior, pair synthesis, guided 3-D transfer, multi-view encoder."""


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise FieldError(name, f"expected a positive number, got {value!r}")


def _non_negative(name: str, value: float) -> None:
    if not value >= 0:
        raise FieldError(name, f"expected a number >= 0, got {value!r}")


@dataclass
class G3DConfig:
    """The pretrained 3-D-aware generator G3D that guided transfer starts from (spec §3 "Guided transfer").

    Args:
        kind: The 3-D GAN backbone; only ``"eg3d"`` [unverified: spec §8 ``g3d.kind``].
        weights: EG3D generator weights: NVIDIA ``network-snapshot.pkl`` (read by genblocks' restricted unpickler, never
            executed), ``.safetensors`` or a ``torch.save`` state dict; ``None``: seeded random weights.
        z_dim, w_dim, img_resolution, backbone_resolution, plane_channels, channel_base, channel_max: EG3D sizes
            (FFHQ-512: 512, 512, 512, 256, 32, 32768, 512).
        decoder_hidden_features, decoder_output_features: OSG decoder widths (64, 32).
        num_samples, num_importance: samples per ray (48 + 48).
        neural_rendering_resolution: raw rendering side (128 for FFHQ-512 at the end of EG3D training).
        superresolution: ``"hybrid8xdc"`` (FFHQ-512), ``"hybrid4x"`` or ``"hybrid2x"``.
        sr_channels: SR block widths; ``None``: the module's defaults.
        plane_projection: ``"eg3d_legacy"`` (needed by released checkpoints) or ``"xy_yz_xz"``.
        seed: Seed of random weights.
    """

    kind: str = "eg3d"
    weights: str | None = None
    z_dim: int = 512
    w_dim: int = 512
    img_resolution: int = 512
    backbone_resolution: int = 256
    plane_channels: int = 32
    channel_base: int = 32768
    channel_max: int = 512
    decoder_hidden_features: int = 64
    decoder_output_features: int = 32
    num_samples: int = 48
    num_importance: int = 48
    neural_rendering_resolution: int = 128
    superresolution: str = "hybrid8xdc"
    sr_channels: tuple[int, int] | None = None
    plane_projection: str = "eg3d_legacy"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind != "eg3d":
            raise FieldError("kind", f"only 'eg3d' is implemented, got {self.kind!r}")
        if self.superresolution not in ("hybrid2x", "hybrid4x", "hybrid8xdc"):
            raise FieldError(
                "superresolution", f"expected hybrid2x, hybrid4x or hybrid8xdc, got {self.superresolution!r}"
            )

    def generator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`genblocks.gan.TriPlaneGenerator` (plain values, JSON-able)."""
        kwargs = dataclasses.asdict(self)
        for key in ("kind", "weights", "seed"):
            kwargs.pop(key)
        if kwargs["sr_channels"] is not None:
            kwargs["sr_channels"] = list(kwargs["sr_channels"])
        return kwargs


@dataclass
class AugmentConfig:
    """DiffAugment-style differentiable augmentation of every discriminator input (Zhao et al., arXiv 2006.10738),
    with ADA's adaptive probability as an option (Karras et al., arXiv 2006.06676) [unverified: spec §3 "ADA-style"].

    Args:
        policy: Which transforms, in order, from ``color``, ``translation``, ``cutout``.
        probability: Probability that a transform is applied to an image (per image, per transform); with
            ``adaptive`` this is the starting value.
        adaptive: Tune the probability towards ``target`` sign(D(real)) (ADA).
        target: ADA's target overfitting heuristic r_t = E[sign(D(real))].
        adjust_kimg: Images (thousands) for the probability to move by 1.
        translation: Largest shift, as a fraction of the image side.
        cutout: Side of the cut-out square, as a fraction of the image side.
    """

    policy: tuple[str, ...] = ("color", "translation", "cutout")
    probability: float = 1.0
    adaptive: bool = False
    target: float = 0.6
    adjust_kimg: float = 100.0
    translation: float = 0.125
    cutout: float = 0.5

    def __post_init__(self) -> None:
        unknown = [p for p in self.policy if p not in ("color", "translation", "cutout")]
        if unknown:
            raise FieldError("policy", f"expected transforms from color, translation, cutout, got {unknown}")
        if not 0 <= self.probability <= 1:
            raise FieldError("probability", f"expected a probability in [0, 1], got {self.probability}")


@dataclass
class SelectionConfig:
    """FID/KID checkpoint selection of the 2-D prior (spec §4 "Stage A": "checkpoints are selected by FID/KID against
    the exemplars, computed on augmented copies"; every setting below is [unverified]).

    Every ``every`` optimizer steps (and at the last step) the EMA generator renders ``samples`` images from fixed
    latents; their features are compared with those of a fixed reference set, ``augmented_copies`` augmented copies of
    each exemplar (the prior's DiffAugment policy, ``prior.augment``, every transform applied). ``trained/`` gets the
    EMA weights of the lowest ``metric``; ``prior/selection.json`` lists every evaluation.

    Args:
        features: A TorchScript feature extractor (``torch.jit.save`` file, e.g. an exported Inception-v3 pool layer),
            called on images (B, 3, H, W) in [-1, 1] -> (B, D), as ``agilegan3d eval --features``; ``None``: no
            selection, ``trained/`` keeps the last EMA weights.
        every: Optimizer steps between evaluations (the GAN loop counts 4 steps per iteration).
        samples: Generated images per evaluation (the same latents every time).
        augmented_copies: Augmented copies of each exemplar in the reference set.
        metric: ``"fid"`` or ``"kid"`` (both are computed and recorded; this one selects).
        augment_samples: Give the generated images the same augmentation (fixed draws), so both sets carry the same
            augmentation distribution and the score does not reward augmentation leaking into G; ``False``: score the
            raw samples.
        batch_size: Images per generator and feature-extractor call.
        seed: Seed of the latents, the reference copies and the samples' augmentation.
    """

    features: str | None = None
    every: int = 400
    samples: int = 1000
    augmented_copies: int = 50
    metric: str = "fid"
    augment_samples: bool = True
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.metric not in ("fid", "kid"):
            raise FieldError("metric", f"expected fid or kid, got {self.metric!r}")
        for name, least in (("every", 1), ("samples", 2), ("augmented_copies", 1), ("batch_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise FieldError(name, f"expected an integer >= {least}, got {value!r}")


@dataclass
class PriorConfig:
    """Stage A, the 2-D style prior G2s (spec §3 "Style prior", §4 "Stage A").

    Args:
        method: ``"stylegan2_finetune"``: fine-tune an FFHQ StyleGAN2 (rosinality layout) on the exemplars and stylise
            a face as G2s(E2(x)); ``"toon"``: a fixed 2-D cartoon filter (no training; for demos and tests);
            ``"external"``: the callable ``external`` names [unverified: spec §8 ``prior.method``].
        external: ``"module:function"`` of a stylisation ``f(images (N, 3, H, W) in [-1, 1]) -> same shape``.
        generator: FFHQ StyleGAN2 weights to start from (rosinality ``.pt`` with ``g_ema``); ``None``: random.
        encoder: pSp checkpoint of E2 (``{opts, state_dict, latent_avg}``) into the StyleGAN2's W+; ``None``: random.
        resolution, z_dim, w_dim, mapping_layers, channel_base, channel_max: the StyleGAN2 (config F: 1024, 512, 512,
            8, 32768, 512).
        freeze_mapping: Keep the mapping network frozen (few-shot recipe).
        freeze_layers: Freeze the synthesis blocks at these resolutions (4², 8², 16²).
        g_lr, d_lr: Adam learning rates (0.002).
        r1_gamma: R1 weight (StyleGAN2 1024: 10).
        augment: The discriminator's augmentation.
        encoder_units, encoder_channels, encoder_input_size: E2 (IR-SE-50: (3, 4, 14, 3), (64, 128, 256, 512), 256).
        toon_levels: Colour levels of the ``toon`` filter.
        toon_edges: Edge darkening strength of the ``toon`` filter.
        selection: FID/KID selection of the EMA weights ``trained/`` keeps (off unless ``selection.features`` is set).
    """

    method: str = "stylegan2_finetune"
    external: str | None = None
    generator: str | None = None
    encoder: str | None = None
    resolution: int = 1024
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    channel_base: int = 32768
    channel_max: int = 512
    freeze_mapping: bool = True
    freeze_layers: tuple[int, ...] = (4, 8, 16)
    g_lr: float = 0.002
    d_lr: float = 0.002
    r1_gamma: float = 10.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    encoder_units: tuple[int, int, int, int] = (3, 4, 14, 3)
    encoder_channels: tuple[int, int, int, int] = (64, 128, 256, 512)
    encoder_input_size: int = 256
    toon_levels: int = 4
    toon_edges: float = 1.0
    selection: SelectionConfig = field(default_factory=SelectionConfig)

    def __post_init__(self) -> None:
        if self.method not in ("stylegan2_finetune", "toon", "external"):
            raise FieldError("method", f"expected stylegan2_finetune, toon or external, got {self.method!r}")
        if self.method == "external" and not self.external:
            raise FieldError("external", "prior.method=external needs prior.external='module:function'")
        if self.toon_levels < 2:
            raise FieldError("toon_levels", f"expected at least 2 levels, got {self.toon_levels}")

    @property
    def trains(self) -> bool:
        """Whether the prior stage trains a network (only ``stylegan2_finetune`` does)."""
        return self.method == "stylegan2_finetune"


@dataclass
class PairsConfig:
    """Stage B, pair synthesis: the 3-D-aware augmentation of the exemplars (spec §3 "Pair synthesis").

    Latents z and cameras (yaw, pitch) are drawn, ``x_real = G3D(w, c)`` is rendered and stylised through the prior,
    giving tuples (x_sty, x_real, ws, c) whose poses are exact by construction.

    Args:
        n: Number of tuples (20k) [unverified: spec §8 ``pairs.n``].
        yaw: Half-range of the yaw, radians (±0.6) [unverified].
        pitch: Half-range of the pitch, radians (±0.3) [unverified].
        distribution: ``"uniform"`` over the ranges or ``"gaussian"`` with these as standard deviations.
        truncation_psi: Truncation of the sampled latents (1 = none).
        batch_size: Tuples rendered per forward pass.
        seed: Tuple i is drawn from a generator seeded with ``seed + i`` (so a resumed stage reproduces any tuple).
    """

    n: int = 20000
    yaw: float = 0.6
    pitch: float = 0.3
    distribution: str = "uniform"
    truncation_psi: float = 0.7
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise FieldError("n", f"expected at least one pair, got {self.n}")
        if self.distribution not in ("uniform", "gaussian"):
            raise FieldError("distribution", f"expected uniform or gaussian, got {self.distribution!r}")
        if not 0 <= self.yaw < math.pi / 2 or not 0 <= self.pitch < math.pi / 2:
            raise FieldError("yaw", f"expected yaw and pitch half-ranges in [0, pi/2), got {self.yaw}, {self.pitch}")


@dataclass
class TransferConfig:
    """Stage C, guided transfer of G3D into the style generator G3s (spec §3 "Guided transfer", §4 "Stage C").

    Args:
        adv: Weight of the non-saturating loss under the camera-conditioned dual discriminator (1).
        l1: Weight of the paired L1 between G3s(ws, c) and x_sty (1).
        lpips: Weight of the paired perceptual distance (1); used when ``perceptual`` names a network.
        perceptual: A TorchScript file of a perceptual distance ``d(x, y) -> (N,)`` (e.g. an exported LPIPS-VGG);
            ``None``: the perceptual term is off.
        density_reg: EG3D density-regulariser weight (0.25, every ``g_reg_interval`` iterations).
        density_points: Points per sample of the density regulariser.
        freeze_mapping: Keep the mapping frozen, so ws of G3D and G3s are the same space [unverified: spec §8].
        train_layers: Name prefixes of the G3D parameters that train (the rest are frozen).
        g_lr, d_lr: EG3D's 0.0025 / 0.002 scaled by 0.1 for fine-tuning.
        r1_gamma: R1 weight (1).
        r1_interval, g_reg_interval: Lazy regularisation intervals (16, 4).
        ema_kimg: Half-life of the generator EMA (thousands of images).
        paired_adversarial: Fakes of the adversarial terms are the paired renders G3s(ws, c) (``True``) or fresh
            samples G3s(z, c) (``False``, plain EG3D fine-tuning).
        naive: The ablation the paper's claim implies (spec §6): fine-tune EG3D adversarially on the raw exemplars
            (cameras sampled in the pair ranges), without pairs or guidance.
        augment: Discriminator augmentation (DiffAugment; off by default here: the pairs are plentiful).
        batch_size: Pairs per iteration.
    """

    adv: float = 1.0
    l1: float = 1.0
    lpips: float = 1.0
    perceptual: str | None = None
    density_reg: float = 0.25
    density_points: int = 1000
    freeze_mapping: bool = True
    train_layers: tuple[str, ...] = ("backbone.synthesis", "decoder", "superresolution")
    g_lr: float = 0.00025
    d_lr: float = 0.0002
    r1_gamma: float = 1.0
    r1_interval: int = 16
    g_reg_interval: int = 4
    ema_kimg: float = 10.0
    paired_adversarial: bool = True
    naive: bool = False
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(probability=0.0))
    batch_size: int = 4

    def __post_init__(self) -> None:
        for name in ("adv", "l1", "lpips", "density_reg", "r1_gamma"):
            _non_negative(name, getattr(self, name))
        _positive("g_lr", self.g_lr)
        _positive("d_lr", self.d_lr)
        if not self.train_layers:
            raise FieldError("train_layers", "expected at least one parameter-name prefix that trains")


@dataclass
class EncoderConfig:
    """Stage D, the multi-view-consistent inversion encoder E: image -> W+ of G3D (spec §3, §4 "Stage D").

    Args:
        n_styles: Styles E emits; ``None``: the generator's ``num_ws`` (14 for EG3D-512) [unverified: spec §8].
        units, channels: IR-SE stages (IR-SE-50: (3, 4, 14, 3), (64, 128, 256, 512)).
        input_size: Side of E's input (256).
        se_reduction: Squeeze-and-excitation reduction.
        l2, lpips, id, latent, mv: Loss weights (1, 0.8, 0.1, 0.01, 1).
        mv_l1: Weight of the L1 part of the multi-view term (the perceptual part uses ``mv``).
        perceptual: TorchScript perceptual distance ``d(x, y) -> (N,)``; ``None``: perceptual terms off.
        identity: TorchScript face-embedding network ``f(x (N, 3, H, W) in [-1, 1]) -> (N, D)`` (e.g. an exported
            ArcFace); ``None``: identity term off.
        lr: Adam learning rate (1e-4).
        batch_size: Synthetic samples per step.
        yaw, pitch: Half-ranges of the input and the second ("c2") cameras, radians.
        truncation_psi: Truncation of the sampled training latents.
    """

    n_styles: int | None = None
    units: tuple[int, int, int, int] = (3, 4, 14, 3)
    channels: tuple[int, int, int, int] = (64, 128, 256, 512)
    input_size: int = 256
    se_reduction: int = 16
    l2: float = 1.0
    lpips: float = 0.8
    id: float = 0.1
    latent: float = 0.01
    mv: float = 1.0
    mv_l1: float = 1.0
    perceptual: str | None = None
    identity: str | None = None
    lr: float = 1e-4
    batch_size: int = 4
    yaw: float = 0.6
    pitch: float = 0.3
    truncation_psi: float = 0.7

    def __post_init__(self) -> None:
        for name in ("l2", "lpips", "id", "latent", "mv", "mv_l1"):
            _non_negative(name, getattr(self, name))
        _positive("lr", self.lr)


@dataclass
class InferenceConfig:
    """Stylising a photo (spec §5).

    Args:
        views: Cameras on the orbit.
        yaw: Half-range of the orbit's yaw, radians.
        pitch: Amplitude of the orbit's pitch, radians.
        camera_from: ``"auto"`` (landmarks when a face analyzer finds a face, else frontal), ``"landmarks"``
            (required: no face -> error), ``"frontal"`` (skip the analyzer) [unverified: spec §8 ``pose.backend``].
        truncation_psi: Pull the encoded ws towards the generator's ``w_avg`` (1 = none).
        optimize_steps: Steps of latent refinement against the input view (0 = off, the default).
        optimize_lr: Adam learning rate of the refinement.
        fps: Frames per second of the orbit GIF or MP4.
        mesh_resolution: Grid points per axis of the density grid ``stylize --mesh`` runs marching cubes on.
        mesh_level: Iso-level on the generator's raw density σ (EG3D's shape extraction uses 10); ``None``: the
            grid's median σ, a surface for any field (for random-weight trials) [unverified: spec §5 mesh export].
    """

    views: int = 8
    yaw: float = 0.5
    pitch: float = 0.15
    camera_from: str = "auto"
    truncation_psi: float = 1.0
    optimize_steps: int = 0
    optimize_lr: float = 0.01
    fps: float = 8.0
    mesh_resolution: int = 256
    mesh_level: float | None = 10.0

    def __post_init__(self) -> None:
        if self.mesh_resolution < 2:
            raise FieldError(
                "mesh_resolution", f"expected at least 2 grid points per axis, got {self.mesh_resolution}"
            )
        if self.views < 1:
            raise FieldError("views", f"expected at least one view, got {self.views}")
        if self.camera_from not in ("auto", "landmarks", "frontal"):
            raise FieldError("camera_from", f"expected auto, landmarks or frontal, got {self.camera_from!r}")


@dataclass
class AgileGAN3DConfig:
    """Everything one style run needs (``agilegan3d train``) and how it stylises (``agilegan3d stylize``).

    Args:
        style: The style's name (written to ``config.json``).
        min_exemplars: Fewer style exemplars are refused (the paper uses about 20).
        exemplar_resolution: Exemplars are resized (with a note) to this side; ``None``: the prior's resolution.
        synthetic_exemplars: With no ``--exemplars``, make this many by the ``toon`` filter of G3D renders (a built-in
            synthetic style for trying the package; 0: exemplars are required).
        stage: The stage ``train`` runs (``--stage``), or ``"all"`` (every unfinished stage, in order).
        seed: Seed of every random initialisation.
        g3d, prior, pairs, transfer, encoder, inference: the sections.
        train: genblocks' shared training settings (``max_steps`` etc. of the stage being trained).
        prior_steps, transfer_steps, encoder_steps: ``train.max_steps`` of each stage when ``stage=all`` (GAN stages
            count 4 optimizer steps per iteration).
    """

    style: str = "style"
    min_exemplars: int = 5
    exemplar_resolution: int | None = None
    synthetic_exemplars: int = 0
    stage: str = "all"
    seed: int = 0
    g3d: G3DConfig = field(default_factory=G3DConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prior_steps: int = 8000
    transfer_steps: int = 200000
    encoder_steps: int = 100000

    def __post_init__(self) -> None:
        if self.stage not in ("all", *STAGES):
            raise FieldError("stage", f"expected all or one of {STAGES}, got {self.stage!r}")
        if self.min_exemplars < 1:
            raise FieldError("min_exemplars", f"expected at least 1, got {self.min_exemplars}")
        for name in ("prior_steps", "transfer_steps", "encoder_steps"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"expected a positive number of steps, got {getattr(self, name)}")


def load_preset(name: str = "tiny", overrides: list[str] | tuple[str, ...] = ()) -> AgileGAN3DConfig:
    """The shipped config ``name`` (``"tiny"`` or ``"paper"``) with ``key=value`` overrides."""
    from genblocks.cli import load_command_config

    config, _ = load_command_config(AgileGAN3DConfig, "agilegan3d", "train", name, list(overrides))
    return config
