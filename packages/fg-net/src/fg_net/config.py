"""Typed configuration of FG-Net: the model, the data, training and landmarks, with tiny and paper presets.

Every value the spec (``shared/papers/fg-net.md``) marks as unverified is a field with a documented default (§8):
``select_on_test`` (`TrainingConfig`), ``fold`` (`DataConfig`), ``remap_encoder_latents`` (`FGNetConfig`) and
``backend`` (`LandmarkConfig`). The YAML files shipped in ``fg_net/configs/`` (``tiny``, ``paper`` (BP4D), ``disfa``) are
the one source of truth (`paper_config`, `tiny_config` and `tiny_run_config` read them); they load onto
`FGNetRunConfig` through :func:`genblocks.cli.load_command_config`::

    from genblocks.cli import load_command_config
    from fg_net.config import FGNetRunConfig

    run, path = load_command_config(FGNetRunConfig, "fg_net", "train", "paper", ["data.fold=1"])
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from fg_net.heatmaps import BP4D_AUS, DATASET_AUS, check_aus
from genblocks.training.config import OptimizerConfig, TrainConfig

__all__ = [
    "DataConfig",
    "FGNetConfig",
    "FGNetRunConfig",
    "LandmarkConfig",
    "TrainingConfig",
    "paper_config",
    "tiny_config",
    "tiny_run_config",
]

_DATASETS = ("BP4D", "DISFA", "custom")
_NOISE_MODES = ("const", "random", "none")
_SUBSETS = (100, 1000, 5000, 10000)


def _power_of_two(value: int, name: str, minimum: int) -> None:
    if value < minimum or value & (value - 1):
        raise ValueError(f"`{name}` must be a power of two >= {minimum}, got {value}.")


@dataclass
class FGNetConfig:
    """The FG-Net model: pSp encoder -> (re-mapping) -> StyleGAN2 synthesis features -> pyramid interpreter.

    The defaults are the paper's (spec fg-net §3): a 1024-px config-F StyleGAN2 (FFHQ), pSp ``GradualStyleEncoder(50,
    'ir_se')`` on 256-px faces, and a pyramid interpreter producing 32 heatmaps of 128 px, of which the dataset's K
    are used.

    Args:
        dataset (`str`, defaults to `"BP4D"`): ``"BP4D"``, ``"DISFA"`` or ``"custom"``; names the AU list's origin.
        aus (`tuple[int, ...]`, defaults to BP4D's 12 AUs): AU numbers, in heatmap-channel order.
        resolution (`int`, defaults to 1024): StyleGAN2 output resolution; features are tapped at 4..resolution.
        w_dim (`int`, defaults to 512): StyleGAN2 w size (= pSp style size).
        mapping_layers (`int`, defaults to 8): mapping MLP depth.
        channel_base (`int`, defaults to 32768): StyleGAN2 ``channels(res) = min(channel_base // res, channel_max)``
            (config F, rosinality ``channel_multiplier=2``).
        channel_max (`int`, defaults to 512): upper bound on generator channels.
        encoder_units (`tuple[int, ...]`, defaults to `(3, 4, 14, 3)`): IR-SE units per encoder stage (IR-SE-50).
        encoder_channels (`tuple[int, ...]`, defaults to `(64, 128, 256, 512)`): encoder stage widths.
        encoder_se_reduction (`int`, defaults to 16): squeeze-and-excitation reduction of the IR-SE units.
        input_size (`int`, defaults to 256): side of the aligned face fed to the encoder.
        remap_encoder_latents (`bool`, defaults to `True`): pass every W+ code again through the mapping MLP before
            synthesis, as the authors' code does [unverified whether intended].
        noise_mode (`str`, defaults to `"const"`): synthesis noise: ``"const"`` (the generator's fixed buffers, as
            upstream ``randomize_noise=False``), ``"random"`` or ``"none"``.
        heatmap_size (`int`, defaults to 128): interpreter output size; generator features above it are resized down.
        heatmap_sigma (`float`, defaults to 20.0): Gaussian sigma of the target heatmaps, in heatmap pixels.
        heatmap_threshold (`float`, defaults to 0.01): Gaussian values below it are zeroed in the targets.
        interpreter_out_channels (`int`, defaults to 32): heatmaps the head produces (the first K are used).
        interpreter_dropout (`float`, defaults to 0.1): dropout of every interpreter block.
        interpreter_first_kernel_size (`int`, defaults to 3): kernel of the first interpreter convolution.
        interpreter_kernel_size (`int`, defaults to 5): kernel of the other interpreter convolutions.
    """

    dataset: str = "BP4D"
    aus: tuple[int, ...] = BP4D_AUS
    resolution: int = 1024
    w_dim: int = 512
    mapping_layers: int = 8
    channel_base: int = 32768
    channel_max: int = 512
    encoder_units: tuple[int, ...] = (3, 4, 14, 3)
    encoder_channels: tuple[int, ...] = (64, 128, 256, 512)
    encoder_se_reduction: int = 16
    input_size: int = 256
    remap_encoder_latents: bool = True
    noise_mode: str = "const"
    heatmap_size: int = 128
    heatmap_sigma: float = 20.0
    heatmap_threshold: float = 0.01
    interpreter_out_channels: int = 32
    interpreter_dropout: float = 0.1
    interpreter_first_kernel_size: int = 3
    interpreter_kernel_size: int = 5

    def __post_init__(self) -> None:
        if self.dataset not in _DATASETS:
            raise ValueError(f"FGNetConfig.dataset must be one of {_DATASETS}, got {self.dataset!r}.")
        self.aus = check_aus(self.aus, "FGNetConfig.aus")
        self.encoder_units = tuple(self.encoder_units)
        self.encoder_channels = tuple(self.encoder_channels)
        _power_of_two(self.resolution, "FGNetConfig.resolution", 8)
        _power_of_two(self.input_size, "FGNetConfig.input_size", 16)
        _power_of_two(self.heatmap_size, "FGNetConfig.heatmap_size", 8)
        if self.heatmap_size > self.resolution:
            raise ValueError(
                f"FGNetConfig.heatmap_size ({self.heatmap_size}) must not exceed FGNetConfig.resolution "
                f"({self.resolution})."
            )
        if self.noise_mode not in _NOISE_MODES:
            raise ValueError(f"FGNetConfig.noise_mode must be one of {_NOISE_MODES}, got {self.noise_mode!r}.")
        if len(self.aus) > self.interpreter_out_channels:
            raise ValueError(
                f"FGNetConfig.aus has {len(self.aus)} AUs but the interpreter has only {self.interpreter_out_channels} "
                "output channels (FGNetConfig.interpreter_out_channels)."
            )
        if not 0.0 <= self.interpreter_dropout < 1.0:
            raise ValueError(f"FGNetConfig.interpreter_dropout must be in [0, 1), got {self.interpreter_dropout}.")
        for name in ("interpreter_first_kernel_size", "interpreter_kernel_size"):
            if getattr(self, name) < 1 or getattr(self, name) % 2 == 0:
                raise ValueError(f"FGNetConfig.{name} must be a positive odd number, got {getattr(self, name)}.")
        if self.heatmap_sigma <= 0:
            raise ValueError(f"FGNetConfig.heatmap_sigma must be positive, got {self.heatmap_sigma}.")

    @property
    def num_aus(self) -> int:
        """K, the number of AUs (used heatmap channels)."""
        return len(self.aus)

    @property
    def n_styles(self) -> int:
        """W+ codes of the generator: ``2 * log2(resolution) - 2`` (18 at 1024 px)."""
        return 2 * int(math.log2(self.resolution)) - 2


PAPER_CONFIG_NAMES: dict[str, str] = {"BP4D": "paper", "DISFA": "disfa"}
"""The shipped config of each dataset's paper model: ``configs/paper.yaml`` (BP4D), ``configs/disfa.yaml``."""


def _shipped(name: str) -> FGNetRunConfig:
    """The run config ``configs/<name>.yaml`` shipped inside the package (the one source of truth)."""
    from genblocks.config import load_shipped_config

    return load_shipped_config(FGNetRunConfig, "fg_net", name)


def paper_config(dataset: str = "BP4D") -> FGNetConfig:
    """The paper's model for ``dataset`` (``"BP4D"``: 12 AUs, ``"DISFA"``: 8 AUs): the ``model`` of the shipped
    ``configs/paper.yaml`` (BP4D) / ``configs/disfa.yaml``.

    Args:
        dataset (`str`, defaults to `"BP4D"`): ``"BP4D"`` or ``"DISFA"``.

    Returns:
        `FGNetConfig`.
    """
    if dataset not in DATASET_AUS:
        raise ValueError(f"`dataset` must be one of {sorted(DATASET_AUS)}, got {dataset!r}.")
    return _shipped(PAPER_CONFIG_NAMES[dataset]).model


def tiny_config(aus: tuple[int, ...] = (1, 2, 6, 12)) -> FGNetConfig:
    """The spec's tiny test model (fg-net §9), the ``model`` of the shipped ``configs/tiny.yaml``: 32-px StyleGAN2
    with <= 32 channels and 2 mapping layers, a tiny IR-SE encoder (8 styles) on 32-px inputs, a 16-px interpreter
    with 8 outputs (sigma scaled to 2.5 px).

    Args:
        aus (`tuple[int, ...]`, defaults to `(1, 2, 6, 12)`): AUs (4 spatially distinct ones by default).

    Returns:
        `FGNetConfig`.
    """
    model = _shipped("tiny").model
    return model if tuple(aus) == tuple(model.aus) else dataclasses.replace(model, aus=tuple(aus))


@dataclass
class DataConfig:
    """Where the AU data lives and how it is read (the authors' fold CSVs, spec fg-net §4).

    Args:
        root (`str`, defaults to `"data"`): folder holding ``{BP4D,DISFA}/labels/{fold}/*.csv``; image paths in the
            CSVs are relative to it (upstream ``image_path = "../data/"``).
        dataset (`str`, defaults to `"BP4D"`): ``"BP4D"`` or ``"DISFA"``: the corpus folder. Training reads the AU
            columns of the model's AU list; cross-corpus evaluation scores the AUs this corpus shares with the model.
        fold (`int`, defaults to 0): fold 0, 1 or 2 (each tests on subjects unseen in its training CSV)
            [unverified: which fold the released checkpoints used].
        subset (`int`, *optional*): train on the authors' ``train_{subset}.csv`` (100, 1000, 5000 or 10000 rows) for
            the data-efficiency study; `None` reads the full ``train.csv``.
        aligned (`bool`, defaults to `True`): images are already FFHQ-aligned 256-px faces (the authors' CSVs point
            at ``aligned_images``); `False` aligns each image on the fly (dlib -> FFHQ -> dlib again).
        image_size (`int`, defaults to 256): side of the aligned face.
        val_fraction (`float`, defaults to 0.2): share of the training subjects held out for model selection when
            ``TrainingConfig.select_on_test`` is off.
        split_seed (`int`, defaults to 0): seed of the subject hold-out.
        num_workers (`int`, defaults to 0): data-loader workers.
        synthetic (`bool`, defaults to `False`): ``fg-net train`` writes a small synthetic corpus in the authors'
            layout into the run folder's ``data/`` and trains on it, ignoring ``root``
            (`fg_net.data.write_synthetic_corpus`: 6 subjects x 8 faces whose painted blobs show their AU labels; a
            smoke run of the whole path, not training on faces). The tiny config sets it; the run's ``config.yaml``
            records the written corpus as ``root`` (and ``synthetic: false``).
    """

    root: str = "data"
    dataset: str = "BP4D"
    fold: int = 0
    subset: int | None = None
    aligned: bool = True
    image_size: int = 256
    val_fraction: float = 0.2
    split_seed: int = 0
    num_workers: int = 0
    synthetic: bool = False

    def __post_init__(self) -> None:
        if self.dataset not in DATASET_AUS:
            raise ValueError(f"DataConfig.dataset must be one of {sorted(DATASET_AUS)}, got {self.dataset!r}.")
        if self.fold not in (0, 1, 2):
            raise ValueError(f"DataConfig.fold must be 0, 1 or 2, got {self.fold}.")
        if self.subset is not None and self.subset not in _SUBSETS:
            raise ValueError(f"DataConfig.subset must be one of {_SUBSETS} or null, got {self.subset}.")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"DataConfig.val_fraction must be in (0, 1), got {self.val_fraction}.")


def _paper_optimizer() -> OptimizerConfig:
    """The paper's optimiser: AdamW, lr 5e-5, weight decay 5e-4, default betas and eps (spec fg-net §4)."""
    return OptimizerConfig(name="adamw", lr=5e-5, weight_decay=5e-4)


@dataclass
class TrainingConfig(TrainConfig):
    """Optimisation and model selection (spec fg-net §4): genblocks' shared training keys
    (:class:`genblocks.training.TrainConfig`: ``optimizer.{name,lr,weight_decay,...}``, ``gradient_clip_val``,
    ``max_steps``, ``val_every_n_steps``, ``checkpoint_every_n_steps``, ``precision``, ``devices``, ``seed``, ...)
    with the paper's defaults, plus FG-Net's own.

    The schedule is counted in epochs of ``steps_per_epoch`` optimizer steps (upstream ``interval``): the run is
    ``max_steps = epochs * steps_per_epoch`` steps and validation (the best epoch by ``val/f1``) runs after each epoch,
    ``val_every_n_steps = steps_per_epoch``. Left ``null`` those two keys follow the epochs (`fit_config` fills them);
    set, they win (``max_steps=4`` for a smoke run).

    Args:
        optimizer (`OptimizerConfig`, defaults to AdamW lr 5e-5, weight decay 5e-4): the optimiser by name (built with
            `genblocks.training.optim.build_optimizer`).
        gradient_clip_val (`float`, defaults to 0.1): gradient-norm clip over all trained parameters.
        seed (`int`, defaults to 0): global seed (and the order of the training batches).
        max_steps (`int`, *optional*): optimizer steps of the run; `None`: ``epochs * steps_per_epoch``.
        val_every_n_steps (`int`, *optional*): steps between validations; `None`: ``steps_per_epoch`` (after every
            epoch; at most ``max_steps``).
        checkpoint_every_n_steps (`int`, defaults to 500): steps between ``checkpoints/step-<N>.ckpt`` (one epoch).
        progress_bar (`bool`, defaults to `False`): Lightning's progress bar (``fg-net train --progress``).
        batch_size (`int`, defaults to 16): training batch.
        eval_batch_size (`int`, defaults to 32): evaluation batch.
        epochs (`int`, defaults to 15): epochs.
        steps_per_epoch (`int`, defaults to 500): optimizer steps per epoch (upstream ``interval``).
        train_encoder (`bool`, defaults to `True`): fine-tune the pSp encoder.
        train_generator (`bool`, defaults to `True`): fine-tune the StyleGAN2 synthesis network.
        train_mapping (`bool`, defaults to `True`): fine-tune the mapping MLP (only reached with re-mapping).
        select_on_test (`bool`, defaults to `False`): pick the best epoch by F1 on the test fold, as the authors' code
            does (their "val" loader reads the test CSV) [unverified whether the paper's numbers used it]. Off: pick
            it on held-out training subjects (``DataConfig.val_fraction``).
        au_weights (`tuple[float, ...]`, *optional*): per-AU loss weights; `None` averages the AUs' MSEs uniformly
            (upstream multiplies by a ``weights`` list defined only for GFT).

    The other keys (``precision``, ``accelerator``, ``devices``, ``num_nodes``, ``strategy``,
    ``accumulate_grad_batches``, ``log_every_n_steps``, ``keep_last``) keep genblocks' defaults.
    """

    # None (follow the epochs) is FG-Net's own; fit_config() fills an int before genblocks' fit reads it.
    max_steps: int | None = None  # type: ignore[assignment]
    gradient_clip_val: float | None = 0.1
    checkpoint_every_n_steps: int = 500
    val_every_n_steps: int | None = None
    seed: int = 0
    progress_bar: bool = False
    optimizer: OptimizerConfig = field(default_factory=_paper_optimizer)
    batch_size: int = 16
    eval_batch_size: int = 32
    epochs: int = 15
    steps_per_epoch: int = 500
    train_encoder: bool = True
    train_generator: bool = True
    train_mapping: bool = True
    select_on_test: bool = False
    au_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "eval_batch_size", "epochs", "steps_per_epoch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"training.{name}: expected a positive integer, got {value!r}")
        if self.optimizer.weight_decay < 0:
            raise ValueError(f"training.optimizer.weight_decay: expected >= 0, got {self.optimizer.weight_decay}")
        if self.au_weights is not None:
            self.au_weights = tuple(float(w) for w in self.au_weights)
        # genblocks' checks (positive integers, clipping) on the schedule the run will use; the nulls stay nulls.
        explicit = (self.max_steps, self.val_every_n_steps)
        self.max_steps, self.val_every_n_steps = self.total_steps, self.validation_interval
        try:
            super().__post_init__()
        finally:
            self.max_steps, self.val_every_n_steps = explicit

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the run: ``max_steps``, or ``epochs * steps_per_epoch`` when it is `None`."""
        return self.max_steps if self.max_steps is not None else self.epochs * self.steps_per_epoch

    @property
    def validation_interval(self) -> int:
        """Steps between validations: ``val_every_n_steps``, or one epoch (at most the whole run) when `None`."""
        if self.val_every_n_steps is not None:
            return self.val_every_n_steps
        total = self.total_steps
        return min(self.steps_per_epoch, total) if isinstance(total, int) and total > 0 else self.steps_per_epoch

    def fit_config(self) -> TrainingConfig:
        """This config with ``max_steps`` and ``val_every_n_steps`` filled in: what `genblocks.training.fit` runs."""
        return dataclasses.replace(self, max_steps=self.total_steps, val_every_n_steps=self.validation_interval)


@dataclass
class LandmarkConfig:
    """The 68-point landmark backend used for alignment and target heatmaps.

    Args:
        backend (`str`, defaults to `"dlib"`): ``"dlib"`` (genblocks' `DlibFaceAnalyzer`, the authors' detector);
            another 68-point backend may differ slightly [unverified: backend equivalence].
        threshold (`float`, defaults to 0.0): detector score threshold (dlib's own default; the authors used it).
        upsample (`int`, defaults to 1): detector upsampling (the authors' ``detector(gray, 1)``).
        cache (`bool`, defaults to `True`): read ``aligned_landmarks/*.npy`` next to ``aligned_images`` when present
            (the authors' layout) instead of detecting.
    """

    backend: str = "dlib"
    threshold: float = 0.0
    upsample: int = 1
    cache: bool = True

    def __post_init__(self) -> None:
        if self.backend != "dlib":
            raise ValueError(
                f"LandmarkConfig.backend must be 'dlib' (the only 68-point backend), got {self.backend!r}."
            )


@dataclass
class FGNetRunConfig:
    """Everything a CLI run needs: model, data, training, landmarks and the weights to start from.

    Args:
        model (`FGNetConfig`): the model.
        data (`DataConfig`): the data.
        training (`TrainingConfig`): optimisation and selection.
        landmarks (`LandmarkConfig`): the landmark backend.
        stylegan_checkpoint (`str`, *optional*): rosinality ``stylegan2-ffhq-config-f.pt`` (uses ``g_ema``).
        encoder_checkpoint (`str`, *optional*): pSp ``encoder.pt`` (FFHQ encode), with ``latent_avg``.
        checkpoint (`str`, *optional*): a converted FG-Net folder (``fg_net.FGNet.save_pretrained``) or the authors'
            ``model.pth``; takes precedence over the two above for the weights it holds.
        tiny_random (`bool`, defaults to `False`): start from random weights (seed ``training.seed``) with no
            checkpoint, for smoke runs and the demo.
    """

    model: FGNetConfig = field(default_factory=FGNetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    landmarks: LandmarkConfig = field(default_factory=LandmarkConfig)
    stylegan_checkpoint: str | None = None
    encoder_checkpoint: str | None = None
    checkpoint: str | None = None
    tiny_random: bool = False


def tiny_run_config() -> FGNetRunConfig:
    """The shipped ``configs/tiny.yaml``: `tiny_config` with a short CPU training schedule and random weights.

    Returns:
        `FGNetRunConfig`.
    """
    return _shipped("tiny")
