"""The configuration schema of portrait-edit: dataclasses that ``genblocks.config.load_config`` fills from the YAML
files shipped in ``portrait_edit/configs/`` (``tiny``, ``paper``: the one source of truth) plus dotted
command-line overrides (``sampling.num_inference_steps=2``).

Every value the spec marks [unverified] (portrait-edit spec §8) is a field with a documented default: whether the edit
mask is used at inference (``sampling.use_mask``) and how it is built (``mask_strength``, ``mask_samples``,
``mask_clamp``), where it blends (``sampling.mask_blend``), the inference nulls (``sampling.null_mode``), the base
checkpoint (``model.base_model``) and the pair generator (``data.pair_generator``, ``pairs.*``).

Sections: ``model`` (architecture and where the weights come from), ``sampling`` (one edit), ``train`` (genblocks'
shared training keys plus the spec's condition dropout), ``data`` (the training manifest) and ``pairs`` (training-pair
generation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from genblocks.errors import InputError
from genblocks.tiny import RandomComponentsConfig
from genblocks.training.config import OptimizerConfig
from genblocks.training.config import TrainConfig as SharedTrainConfig

__all__ = [
    "DataConfig",
    "ModelConfig",
    "PairsConfig",
    "PortraitEditConfig",
    "RandomClipVisionConfig",
    "RandomComponentsConfig",
    "SamplingConfig",
    "TrainConfig",
    "paper_config",
    "tiny_config",
]

CombineType = Literal["concat", "add", "img_only"]
NullMode = Literal["upstream", "matched"]
MaskBlend = Literal["latent", "eps"]
ImageLatentsMode = Literal["sample", "mean"]
EditRegion = Literal["face", "outfit", "all"]


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or value <= 0:
        raise InputError(f"{name}: expected a positive number, got {value!r}")


def _probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise InputError(f"{name}: expected a probability in [0, 1], got {value!r}")


@dataclass(frozen=True)
class RandomClipVisionConfig:
    """Sizes of the seeded random CLIP vision tower of ``model.source="random"`` (spec §9: hidden 32, patch 8, image 32
    -> 17 tokens). Its hidden size must equal the UNet's ``cross_attention_dim`` (``model.random``): the adapter's
    tokens join the text context.

    Args:
        hidden_size: Token width.
        patch_size: Patch side in pixels; ``(model.clip_image_size / patch_size) ** 2 + 1`` tokens.
        num_hidden_layers: Transformer layers.
        num_attention_heads: Attention heads.
        intermediate_size: MLP width.
    """

    hidden_size: int = 32
    patch_size: int = 8
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 37

    def __post_init__(self) -> None:
        for name in ("hidden_size", "patch_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            _positive(f"model.random_clip.{name}", getattr(self, name))


@dataclass(frozen=True)
class ModelConfig:
    """The MCDM architecture (spec §3) and where its weights come from.

    Args:
        source: ``"random"``: seeded random tiny components built from ``random`` and ``random_clip`` (no download);
            ``"pretrained"``: a ``PortraitEditPipeline`` folder (``save_pretrained`` or ``portrait-edit convert``
            output) at ``pretrained``; ``"base"``: a diffusers SD1.5 folder at ``base_model`` plus a CLIP vision folder
            at ``image_encoder``, with ``conv_in`` widened to 8 channels and a fresh adapter (training from scratch).
        pretrained: Folder of a ``PortraitEditPipeline``.
        base_model: Folder of a diffusers SD1.5 pipeline (upstream trains on ``stablediffusionapi/realistic-vision-v40``)
            [unverified: any SD1.5-class model].
        image_encoder: Folder of a CLIP vision model with its image processor (upstream:
            ``openai/clip-vit-base-patch32``).
        combine_type: How the image tokens join the text context: ``"concat"`` ([text; image] along the token axis,
            upstream's demo), ``"add"`` (summed; the adapter then emits as many tokens as the text) or ``"img_only"``.
        resolution: Side of the square images the model edits (512 upstream).
        clip_image_size: Side of the CLIP vision input (224 for ViT-B/32); the adapter's CLIP token count follows.
        vae_pool: Max-pool window applied to the source latent before ``vae2clip`` (2 upstream: (4, 64, 64) ->
            (4, 1024)).
        random: Sizes of the random UNet, VAE and text encoder (``source="random"``).
        random_clip: Sizes of the random CLIP vision tower (``source="random"``).
        seed: Seed of random components and of freshly initialised layers.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        dtype: Weight dtype for inference (``"float16"`` on GPU halves memory).
    """

    source: Literal["random", "pretrained", "base"] = "random"
    pretrained: str | None = None
    base_model: str | None = None
    image_encoder: str | None = None
    combine_type: CombineType = "concat"
    resolution: int = 512
    clip_image_size: int = 224
    vae_pool: int = 2
    random: RandomComponentsConfig = field(default_factory=RandomComponentsConfig)
    random_clip: RandomClipVisionConfig = field(default_factory=RandomClipVisionConfig)
    seed: int = 0
    device: str = "auto"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"

    def __post_init__(self) -> None:
        _positive("model.resolution", self.resolution)
        _positive("model.clip_image_size", self.clip_image_size)
        _positive("model.vae_pool", self.vae_pool)
        if self.source == "pretrained" and not self.pretrained:
            raise InputError('model.pretrained: expected a pipeline folder when model.source is "pretrained"')
        if self.source == "base" and not (self.base_model and self.image_encoder):
            raise InputError(
                "model.base_model and model.image_encoder: expected an SD1.5 folder and a CLIP vision folder when "
                'model.source is "base"'
            )
        if self.source == "random" and self.random_clip.hidden_size != self.random.cross_attention_dim:
            raise InputError(
                f"model.random_clip.hidden_size: expected the UNet's cross_attention_dim "
                f"({self.random.cross_attention_dim}), got {self.random_clip.hidden_size}"
            )


@dataclass(frozen=True)
class SamplingConfig:
    """One edit (spec §5): UniPC, 4-way nested CFG, the DiffEdit-style edit mask and mask-guided sampling.

    The guidance is ``eps = eps_null + s1 (eps_img - eps_null) + s2 (eps_img+concat - eps_img) + s3 (eps_all -
    eps_img+concat)``.

    Args:
        num_inference_steps: UniPC steps (20 upstream).
        guidance_scale_image: s1, the image embedding's scale (3 in the demo).
        guidance_scale_concat: s2, the concatenated source latent's scale (2).
        guidance_scale_text: s3, the text's scale (4).
        null_mode: Inference nulls: ``"upstream"`` (image embedding of a black image, zero concat latent) or
            ``"matched"`` (the training nulls: mid-grey pixels through the VAE for the concat input and the
            embedding's VAE part, a black image for CLIP) [unverified].
        image_latents: The source's VAE latents: a ``"sample"`` of the posterior drawn from the pipeline's generator
            (upstream draws one, from the global stream) or its ``"mean"``.
        negative_prompt: The text null (``""``, upstream).
        use_mask: Build the edit mask and sample with it (the demo does not) [unverified].
        mask_strength: How far the source is noised for the mask, on a ``mask_steps`` schedule (0.5) [unverified].
        mask_samples: Independent noise samples averaged into the mask (10) [unverified].
        mask_steps: Schedule length on which ``mask_strength`` picks the timestep (50, DiffEdit's).
        mask_clamp: The difference map is clamped at this multiple of its mean, then divided by it (3) [unverified].
        mask_blend: ``"latent"``: after every step, latents outside the mask are those of the reconstruction run
            (upstream code); ``"eps"``: the predicted noise is blended with the source prompt's (the patent's
            "mask-guided predicted noise") [unverified].
        height: Image height (``None``: ``model.resolution``).
        width: Image width (``None``: ``model.resolution``).
        seed: Seed of the generator (start noise, mask noise, posterior samples).
    """

    num_inference_steps: int = 20
    guidance_scale_image: float = 3.0
    guidance_scale_concat: float = 2.0
    guidance_scale_text: float = 4.0
    null_mode: NullMode = "upstream"
    image_latents: ImageLatentsMode = "sample"
    negative_prompt: str = ""
    use_mask: bool = True
    mask_strength: float = 0.5
    mask_samples: int = 10
    mask_steps: int = 50
    mask_clamp: float = 3.0
    mask_blend: MaskBlend = "latent"
    height: int | None = None
    width: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _positive("sampling.num_inference_steps", self.num_inference_steps)
        _positive("sampling.mask_samples", self.mask_samples)
        _positive("sampling.mask_steps", self.mask_steps)
        _positive("sampling.mask_clamp", self.mask_clamp)
        if not 0.0 < self.mask_strength <= 1.0:
            raise InputError(f"sampling.mask_strength: expected a value in (0, 1], got {self.mask_strength!r}")
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None:
                _positive(f"sampling.{name}", value)

    @property
    def guidance_scales(self) -> tuple[float, float, float]:
        """``(s1, s2, s3)``: image embedding, concat, text."""
        return (self.guidance_scale_image, self.guidance_scale_concat, self.guidance_scale_text)


@dataclass
class TrainConfig(SharedTrainConfig):
    """Training (spec §4): genblocks' shared ``train.`` keys (``max_steps``, ``precision``, ``devices``,
    ``optimizer.{name,lr,...}``, ... see :class:`genblocks.training.TrainConfig`) plus the MCDM's own. The UNet and
    the adapter train; VAE, text encoder and CLIP vision stay frozen.

    Condition dropout is drawn once per sample, ``p ~ U(0, 1)``, in consecutive bands: ``p < drop_concat`` drops the
    concat input, the next ``drop_image`` the image embedding, the next ``drop_text`` the text, the next ``drop_all``
    all three (0.05 each upstream, 0.2 in total). Dropped concat and VAE-token inputs are mid-grey pixels (0 after
    normalisation) through the VAE; the dropped CLIP input is a black image; the dropped text is ``""``.

    Args:
        batch_size: Pairs per device and step (4 upstream, at 512 px).
        drop_concat: Probability band that drops the concat input.
        drop_image: Probability band that drops the image embedding (CLIP and VAE tokens).
        drop_text: Probability band that drops the text.
        drop_all: Probability band that drops all three.
        reconstruction_prob: Probability that a sample's target and prompt are replaced by its source and source
            prompt (0.05 in ``train.sh``).
        condition_latents: The source and grey-pixel latents as a posterior ``"sample"`` (upstream) or its ``"mean"``.
        clip_unet_only: ``gradient_clip_val`` clips the UNet's gradients only (upstream), or UNet and adapter
            together (``false``).
        ema_decay: EMA of the trainable weights (``None``: none, as upstream).
        init_from: ``PortraitEditPipeline`` folder to start from (``None``: ``model``).
        gradient_checkpointing: Checkpoint the UNet's activations.
        num_workers: Data-loader workers.
    """

    max_steps: int = 200_000
    batch_size: int = 4
    gradient_clip_val: float | None = 1.0
    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(lr=5e-6, weight_decay=1e-2))
    drop_concat: float = 0.05
    drop_image: float = 0.05
    drop_text: float = 0.05
    drop_all: float = 0.05
    reconstruction_prob: float = 0.05
    condition_latents: ImageLatentsMode = "sample"
    clip_unet_only: bool = True
    ema_decay: float | None = None
    init_from: str | None = None
    gradient_checkpointing: bool = False
    num_workers: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("train.batch_size", self.batch_size)
        for name in ("drop_concat", "drop_image", "drop_text", "drop_all", "reconstruction_prob"):
            _probability(f"train.{name}", getattr(self, name))
        _probability("train.drop_* (their sum)", self.condition_dropout)

    @property
    def condition_dropout(self) -> float:
        """Total probability that some condition is dropped (0.2 upstream)."""
        return self.drop_concat + self.drop_image + self.drop_text + self.drop_all


@dataclass(frozen=True)
class DataConfig:
    """The training data: the authors' JSON-lines manifest of pairs.

    Args:
        manifest: JSONL file of ``{"source", "target", "prompt", "source_prompt"}`` rows (image paths relative to the
            manifest's folder); ``None`` writes synthetic pairs into the run folder (a smoke run, not training).
        image_size: Side the images are resized to (512 upstream).
        pair_generator: The :class:`portrait_edit.pairs.PairGenerator` ``make-pairs`` uses (``"editor"``: an
            off-the-shelf editing pipeline plus the filters of ``pairs``) [unverified].
        synthetic_pairs: Rows of the synthetic manifest.
    """

    manifest: str | None = None
    image_size: int = 512
    pair_generator: str = "editor"
    synthetic_pairs: int = 4

    def __post_init__(self) -> None:
        _positive("data.image_size", self.image_size)
        _positive("data.synthetic_pairs", self.synthetic_pairs)


@dataclass(frozen=True)
class PairsConfig:
    """Training-pair generation (``portrait-edit make-pairs``); the authors did not release theirs, so every value is
    [unverified].

    Args:
        editor: Folder of the off-the-shelf diffusers image-to-image or instruction-editing pipeline (``None``: a
            tiny random one, for tests).
        identity_threshold: Keep a pair only if the identity cosine similarity of target to source is at least this
            (the "ID similarity" papers report; 0.6 is a loose ArcFace-scale bound).
        identity_max_distance: Keep a pair only if the Euclidean distance of the two identity embeddings is at most
            this (``None``: not tested). 0.6 is dlib's same-person rule for its 128-d descriptor, the default face
            analyzer; dlib's descriptors have norm ``n`` ≈ 1.4-1.5, so distance ``d`` is cosine
            ``1 - d^2 / (2 n^2)``, and 0.6 is ≈0.91, the binding bound of the two for dlib. Set it to ``null``
            with an ArcFace embedder (another distance scale) and use ``identity_threshold`` alone.
        landmark_tolerance: Keep a pair only if the mean landmark distance, as a fraction of the image side, is at
            most this.
        outside_psnr_min: Keep a pair only if the PSNR outside the edit region is at least this (dB).
        edit_region: What the edit may change (:func:`portrait_edit.pairs.edit_region_mask`): ``"outfit"``
            (costume edits: everything but the face ellipse), ``"face"`` (expression and cartoon edits: the face
            ellipse) or ``"all"`` (no PSNR test).
        max_pairs: Stop after this many kept pairs (``None``: every source).
    """

    editor: str | None = None
    identity_threshold: float = 0.6
    identity_max_distance: float | None = 0.6
    landmark_tolerance: float = 0.05
    outside_psnr_min: float = 25.0
    edit_region: EditRegion = "outfit"
    max_pairs: int | None = None

    def __post_init__(self) -> None:
        if not -1.0 <= self.identity_threshold <= 1.0:
            raise InputError(
                f"pairs.identity_threshold: expected a cosine in [-1, 1], got {self.identity_threshold!r}"
            )
        if self.identity_max_distance is not None:
            _positive("pairs.identity_max_distance", self.identity_max_distance)
        _positive("pairs.landmark_tolerance", self.landmark_tolerance)
        if self.max_pairs is not None:
            _positive("pairs.max_pairs", self.max_pairs)


@dataclass(frozen=True)
class PortraitEditConfig:
    """Everything one ``portrait-edit`` command reads: ``configs/tiny.yaml`` and ``configs/paper.yaml`` fill it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)


def _shipped(name: str) -> PortraitEditConfig:
    """The config ``configs/<name>.yaml`` shipped inside the package."""
    from genblocks.cli import resolve_config
    from genblocks.config import load_config

    # Every command shares configs/ (no per-command folder), so any command name resolves there.
    return load_config(PortraitEditConfig, resolve_config("portrait_edit", "edit", name))


def tiny_config() -> PortraitEditConfig:
    """The shipped tiny CPU configuration ``configs/tiny.yaml`` (spec §9): random (32, 64) UNet with 8 input
    channels, 64-px images (8x8 latents), a 32-px CLIP vision tower with 17 tokens, 2 UniPC steps, s = (3, 2, 4)."""
    return _shipped("tiny")


def paper_config() -> PortraitEditConfig:
    """The shipped paper settings ``configs/paper.yaml``: 512-px images, CLIP ViT-B/32 at 224, 20 UniPC steps,
    s = (3, 2, 4), the edit mask from 10 samples at strength 0.5; weights from a converted pipeline folder."""
    return _shipped("paper")
