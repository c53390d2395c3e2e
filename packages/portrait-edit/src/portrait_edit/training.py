"""Training the Multi-Conditioned Diffusion Model (spec §4; issue #18 item 5): the whole UNet and the embedding adapter
learn to map a source portrait and a target prompt to the edited portrait.

Upstream: bytedance/feature-preserve-portrait-editing@570c18ac9dc7da45285e80b222d40ffb673c4ce2 ``train.py``,
``utils/parse_args.py``, ``dataset/dataset.py`` and ``train.sh``. The recipe:

- epsilon-MSE (or v-prediction when the noise scheduler's ``prediction_type`` asks) on the VAE latents of the
  *target*, with the *source* as the condition through its three paths: its latents concatenated to the noisy latents
  (8 input channels), its image embedding ``adapter(CLIP(source), source latents)`` after the text tokens, and the
  target prompt's text;
- trainable: the UNet (all of it) and the adapter; frozen: VAE, text encoder, CLIP vision tower;
- AdamW, lr 5e-6 constant, betas (0.9, 0.999), weight decay 1e-2, gradient clipping at 1.0 on the UNet's parameters
  only (as upstream); any optimizer of :func:`genblocks.training.build_optimizer` by name (``coap_adamw8bit`` ...);
- condition dropout: ONE uniform draw ``p`` per sample picks one of four cases in consecutive bands (0.05 each
  upstream): drop the concat input, drop the image embedding, drop the text, drop all three. A dropped concat input
  and a dropped embedding's VAE part are mid-grey pixels (the normalised tensor set to 0) through the VAE; a dropped
  CLIP input is a black image; a dropped text is ``""`` (:func:`dropout_cases`, :meth:`condition_inputs`). genblocks'
  :class:`~genblocks.training.DiffusionTrainingModule` drops each condition independently, so its
  :meth:`~PortraitEditTrainingModule.drop_conditions` hook is replaced;
- reconstruction: with ``reconstruction_prob`` (0.05 in ``train.sh``) a sample's target and prompt become its source
  and source prompt.

Every draw (reconstruction, dropout case, VAE posterior samples, timesteps, noise) comes from the module's generator,
whose state is checkpointed, so a killed and resumed run equals an uninterrupted one (tested). Checkpoints hold the
trainable weights only; the frozen parts are rebuilt from the config. ``trained/`` is a ``PortraitEditPipeline``
folder (``--set model.source=pretrained model.pretrained=RUN/trained`` edits with it).

Example::

    from portrait_edit.config import tiny_config
    from portrait_edit.training import train_from_config

    summary = train_from_config(tiny_config(), "runs/portrait-edit-tiny")
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightning as L
import torch
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

from genblocks.errors import InputError
from genblocks.training import DiffusionTrainingModule, OptimizerConfig
from portrait_edit.modeling_portrait_edit import (
    PortraitEditComponents,
    black_clip_pixels,
    build_base_components,
    build_random_components,
    clip_pixels,
    combine_context,
    null_pixels,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from portrait_edit.config import PortraitEditConfig

__all__ = [
    "DROP_CASES",
    "ConditionDrops",
    "PortraitEditTrainingModule",
    "TrainingConditions",
    "build_fit_arguments",
    "build_training_module",
    "dropout_cases",
    "train_from_config",
    "training_components",
]

DROP_CASES: tuple[str, ...] = ("none", "concat", "image", "text", "all")
"""The dropout cases in band order; :func:`dropout_cases` returns indices into this tuple."""

_FROZEN = ("vae", "text_encoder", "image_encoder")


def dropout_cases(draws: torch.Tensor, bands: Sequence[float]) -> torch.Tensor:
    """The dropout case of each sample from its one uniform draw (upstream ``train.py``).

    The bands are consecutive: ``p < b1`` drops the concat input, ``b1 <= p < b1 + b2`` the image embedding, then the
    text, then all three; anything above keeps every condition. Upstream's bands are 0.05 each (0.2 in total).

    Args:
        draws (`torch.Tensor` of shape `(B,)`): Uniform draws in [0, 1).
        bands (`Sequence[float]`): Widths ``(concat, image, text, all)``.

    Returns:
        `torch.Tensor` of shape `(B,)`, long: indices into :data:`DROP_CASES` (0 = none, 1 = concat, 2 = image,
        3 = text, 4 = all).
    """
    if len(bands) != 4:
        raise InputError(f"dropout bands: expected (concat, image, text, all), got {tuple(bands)}")
    edges = torch.tensor(bands, dtype=torch.float64).cumsum(0)
    cases = torch.bucketize(draws.double(), edges, right=True) + 1  # 1..5: the band p falls in
    return torch.where(cases > 4, torch.zeros_like(cases), cases)


@dataclass(frozen=True)
class ConditionDrops:
    """Which conditions each sample drops (one case per sample, :func:`dropout_cases`).

    Attributes:
        concat (`torch.Tensor` of shape `(B,)`, bool): The concat input becomes the grey-pixel latent.
        image (`torch.Tensor` of shape `(B,)`, bool): The image embedding takes a black CLIP image and the
            grey-pixel latent.
        text (`torch.Tensor` of shape `(B,)`, bool): The prompt becomes ``""``.
    """

    concat: torch.Tensor
    image: torch.Tensor
    text: torch.Tensor

    @classmethod
    def from_cases(cls, cases: torch.Tensor) -> ConditionDrops:
        """Flags from :func:`dropout_cases` indices (case ``"all"`` sets all three)."""
        everything = cases == 4
        return cls(concat=(cases == 1) | everything, image=(cases == 2) | everything, text=(cases == 3) | everything)


@dataclass
class TrainingConditions:
    """The three condition inputs of one training batch after dropout.

    Attributes:
        concat_latents (`torch.Tensor` of shape `(B, 4, h, w)`): Scaled latents concatenated to the noisy latents.
        token_latents (`torch.Tensor` of shape `(B, 4, h, w)`): Scaled latents of the embedding's VAE part.
        clip_pixel_values (`torch.Tensor` of shape `(B, 3, S, S)`): CLIP pixel values of the embedding's CLIP part.
        prompts (`list[str]`): The text of each sample.
        grey_latents (`torch.Tensor` of shape `(B, 4, h, w)`, *optional*): The grey-pixel latents the dropped rows
            took (``None`` when no row dropped the concat input or the embedding).
    """

    concat_latents: torch.Tensor
    token_latents: torch.Tensor
    clip_pixel_values: torch.Tensor
    prompts: list[str]
    grey_latents: torch.Tensor | None = None


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.to(like.device).view(-1, *([1] * (like.ndim - 1)))


class PortraitEditTrainingModule(DiffusionTrainingModule):
    """Lightning module training the MCDM's UNet and adapter on pairs (spec §4; the recipe is the module docstring).

    Batch layout (:func:`portrait_edit.data.pair_datamodule`): ``source`` and ``target`` (B, 3, H, W) in [-1, 1],
    ``prompt`` and ``source_prompt`` lists of B strings.

    Args:
        components (`PortraitEditComponents`): UNet (8 input channels), VAE, text encoder and tokenizer, CLIP vision
            tower and its processor, adapter; the scheduler is kept for the exported pipeline.
        noise_scheduler (`DDPMScheduler`, *optional*): The training schedule; ``None``: a ``DDPMScheduler`` on the
            components' scheduler config (the base model's; its ``prediction_type`` picks epsilon or v-prediction).
        combine_type (`str`, defaults to `"concat"`): How the image tokens join the text context.
        optimizer (`OptimizerConfig`, *optional*): ``None``: AdamW, lr 5e-6, weight decay 1e-2 (upstream).
        drop_bands (`tuple[float, float, float, float]`): Dropout band widths ``(concat, image, text, all)``.
        reconstruction_prob (`float`, defaults to 0.05): Probability that a sample trains on (source -> source).
        condition_latents (`str`, defaults to `"sample"`): Source and grey-pixel latents as a posterior ``"sample"``
            (upstream) or its ``"mean"``.
        clip_unet_only (`bool`, defaults to `True`): Gradient clipping (``train.gradient_clip_val``) on the UNet's
            parameters only, as upstream; ``False`` clips UNet and adapter together.
        ema_decay (`float`, *optional*): EMA of the trainable weights (``None``: none, as upstream).
        gradient_checkpointing (`bool`, defaults to `False`): Checkpoint the UNet's activations.
        seed (`int`, defaults to 0): Seed of the module's generator.
    """

    def __init__(
        self,
        components: PortraitEditComponents,
        noise_scheduler: DDPMScheduler | None = None,
        combine_type: str = "concat",
        optimizer: OptimizerConfig | None = None,
        drop_bands: tuple[float, float, float, float] = (0.05, 0.05, 0.05, 0.05),
        reconstruction_prob: float = 0.05,
        condition_latents: Literal["sample", "mean"] = "sample",
        clip_unet_only: bool = True,
        ema_decay: float | None = None,
        gradient_checkpointing: bool = False,
        seed: int = 0,
    ) -> None:
        if noise_scheduler is None:
            noise_scheduler = DDPMScheduler.from_config(dict(components.scheduler.config))
        if not 0.0 <= sum(drop_bands) <= 1.0 or min(drop_bands) < 0.0:
            raise InputError(f"drop_bands: expected non-negative widths summing to at most 1, got {drop_bands}")
        if not 0.0 <= reconstruction_prob <= 1.0:
            raise InputError(f"reconstruction_prob: expected a probability, got {reconstruction_prob}")
        if condition_latents not in ("sample", "mean"):
            raise InputError(f'condition_latents: expected "sample" or "mean", got {condition_latents!r}')
        super().__init__(
            components.unet,
            noise_scheduler=noise_scheduler,
            vae=components.vae,
            optimizer=optimizer if optimizer is not None else OptimizerConfig(lr=5e-6, weight_decay=1e-2),
            ema_decay=ema_decay,
            gradient_checkpointing=gradient_checkpointing,
            seed=seed,
            image_key="target",
        )
        self.hparams.update(
            combine_type=combine_type,
            drop_bands=list(drop_bands),
            reconstruction_prob=reconstruction_prob,
            condition_latents=condition_latents,
            clip_unet_only=clip_unet_only,
        )
        self.text_encoder = components.text_encoder
        self.image_encoder = components.image_encoder
        self.adapter = components.adapter
        self.tokenizer = components.tokenizer
        self.feature_extractor = components.feature_extractor
        self.inference_scheduler = components.scheduler
        self.combine_type = combine_type
        self.drop_bands = tuple(float(b) for b in drop_bands)
        self.reconstruction_prob = reconstruction_prob
        self.condition_latents = condition_latents
        self.clip_unet_only = clip_unet_only
        for name in _FROZEN:
            getattr(self, name).requires_grad_(False).eval()
        self.unet.requires_grad_(True)
        self.adapter.requires_grad_(True)
        # Checkpoints leave the frozen weights out (on_save_checkpoint), so loading one is not strict.
        self.strict_loading = False

    # ----------------------------------------------------------------- modes and export
    def train(self, mode: bool = True) -> PortraitEditTrainingModule:
        """Lightning's ``train()`` for the trainable parts; the frozen encoders stay in eval mode."""
        super().train(mode)
        for name in _FROZEN:
            getattr(self, name).eval()
        return self

    def components(self) -> PortraitEditComponents:
        """The module's parts as pipeline components (shared, not copied)."""
        return PortraitEditComponents(
            unet=self.unet,
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            image_encoder=self.image_encoder,
            feature_extractor=self.feature_extractor,
            adapter=self.adapter,
            scheduler=self.inference_scheduler,
        )

    def save_trained(self, directory: str | Path) -> Path:
        """Write the trained model as a ``PortraitEditPipeline`` folder (``save_pretrained`` layout).

        Args:
            directory (`str` or `Path`): Output folder (created).

        Returns:
            `Path`: The folder.
        """
        from portrait_edit.pipeline_portrait_edit import PortraitEditPipeline

        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        parts: dict[str, Any] = self.components().as_dict()
        PortraitEditPipeline(**parts, combine_type=self.combine_type).save_pretrained(folder)
        return folder

    # ----------------------------------------------------------------- conditions
    def _uniform(self, size: int) -> torch.Tensor:
        return self.draw_global(lambda rows: torch.rand(rows, generator=self.generator), size)

    def drop_conditions(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Reconstruction swap, then the condition dropout: one draw per sample for each (replaces genblocks'
        independent per-condition dropout). Adds ``batch["drops"]`` (:class:`ConditionDrops`); the target and prompt
        of swapped samples become the source and the source prompt.
        """
        batch = dict(batch)
        size = int(batch["source"].shape[0])
        swap = self._uniform(size) < self.reconstruction_prob
        cases = dropout_cases(self._uniform(size), self.drop_bands)
        if bool(swap.any()):
            batch["target"] = torch.where(_rows(swap, batch["target"]), batch["source"], batch["target"])
            batch["prompt"] = [
                s if k else p for p, s, k in zip(batch["prompt"], batch["source_prompt"], swap.tolist())
            ]
        batch["drops"] = ConditionDrops.from_cases(cases)
        return batch

    def encode_latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """Scaled VAE latents (B, 4, h, w) of pixels (B, 3, H, W) in [-1, 1]: the posterior mean, plus its std times
        noise from the module's generator when ``condition_latents="sample"``."""
        with torch.no_grad():
            posterior = self.vae.encode(pixels.to(dtype=self.vae.dtype)).latent_dist
            latents = posterior.mean
            if self.condition_latents == "sample":
                noise = self.randn(latents.shape).to(device=latents.device, dtype=latents.dtype)
                latents = latents + posterior.std * noise
        return latents * self.vae.config["scaling_factor"]

    def condition_inputs(self, batch: dict[str, Any], drops: ConditionDrops) -> TrainingConditions:
        """The condition inputs of a batch after dropout (spec §4, "How upstream drops").

        The source is encoded once for both the concat input and the embedding's VAE part; rows that drop either take
        the latents of mid-grey pixels (0 after normalisation, :func:`~portrait_edit.modeling_portrait_edit.null_pixels`)
        encoded the same way; rows that drop the image embedding give CLIP a black image; rows that drop the text get
        ``""``.

        Args:
            batch (`dict`): ``source`` (B, 3, H, W) in [-1, 1] and ``prompt`` (B strings).
            drops (`ConditionDrops`): The per-sample drops.
        """
        source = batch["source"]
        batch_size, device = source.shape[0], source.device
        source_latents = self.encode_latents(source)
        grey_latents = None
        concat_latents = token_latents = source_latents
        if bool((drops.concat | drops.image).any()):
            grey = null_pixels("grey", batch_size, source.shape[2], source.shape[3], device, source.dtype)
            grey_latents = self.encode_latents(grey)
            concat_latents = torch.where(_rows(drops.concat, source_latents), grey_latents, source_latents)
            token_latents = torch.where(_rows(drops.image, source_latents), grey_latents, source_latents)
        dtype = self.image_encoder.dtype
        clip_values = clip_pixels(self.feature_extractor, (source.detach().float() + 1.0) / 2.0, device, dtype)
        if bool(drops.image.any()):
            black = black_clip_pixels(self.feature_extractor, batch_size, device, dtype)
            clip_values = torch.where(_rows(drops.image, clip_values), black, clip_values)
        prompts = ["" if d else p for p, d in zip(batch["prompt"], drops.text.tolist(), strict=True)]
        return TrainingConditions(concat_latents, token_latents, clip_values, prompts, grey_latents)

    def encode_text(self, prompts: Sequence[str], device: torch.device) -> torch.Tensor:
        """CLIP text context (B, T, D) of the prompts, padded to the tokenizer's maximum (frozen, no gradient)."""
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        with torch.no_grad():
            return self.text_encoder(tokens.input_ids.to(device))[0]

    def context(self, conditions: TrainingConditions, device: torch.device) -> torch.Tensor:
        """The UNet's cross-attention context: ``combine_context(text, adapter(CLIP(image), token latents))``,
        (B, T + N, D) for ``combine_type="concat"``. Gradients reach the adapter only."""
        text = self.encode_text(conditions.prompts, device)
        with torch.no_grad():
            clip_embeds = self.image_encoder(pixel_values=conditions.clip_pixel_values).last_hidden_state
        tokens = self.adapter(clip_embeds.to(self.adapter.dtype), conditions.token_latents.to(self.adapter.dtype))
        return combine_context(text.to(tokens.dtype), tokens, self.combine_type)

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """The UNet's prediction (B, 4, h, w) for ``[noisy latents ; concat latents]`` (8 channels) and the context."""
        drops = batch.get("drops")
        if drops is None:
            size = noisy_latents.shape[0]
            nothing = torch.zeros(size, dtype=torch.bool)
            drops = ConditionDrops(nothing, nothing, nothing)
        conditions = self.condition_inputs(batch, drops)
        context = self.context(conditions, noisy_latents.device)
        model_input = torch.cat([noisy_latents, conditions.concat_latents.to(noisy_latents.dtype)], dim=1)
        return self.unet(model_input, timesteps, encoder_hidden_states=context.to(model_input.dtype)).sample

    # ----------------------------------------------------------------- Lightning
    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: int | float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the gradient norm of the UNet's parameters only (upstream), or of UNet and adapter together."""
        if gradient_clip_val is None or gradient_clip_val <= 0:
            return
        parameters = list(self.unet.parameters())
        if not self.clip_unet_only:
            parameters += list(self.adapter.parameters())
        torch.nn.utils.clip_grad_norm_([p for p in parameters if p.grad is not None], float(gradient_clip_val))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.split(".", 1)[0] in _FROZEN]:
            del state[key]


def training_components(config: PortraitEditConfig) -> PortraitEditComponents:
    """The components training starts from, in float32 on the CPU: ``train.init_from`` (a ``PortraitEditPipeline``
    folder) if set, else ``model`` (``random``: seeded tiny parts; ``base``: SD1.5 + CLIP vision folders, widened UNet
    and a fresh adapter; ``pretrained``: a pipeline folder). ``model.dtype`` is an inference setting and is ignored:
    mixed precision is ``train.precision``."""
    folder = config.train.init_from or (config.model.pretrained if config.model.source == "pretrained" else None)
    if folder is not None:
        from portrait_edit.pipeline_portrait_edit import PortraitEditPipeline

        if not (Path(folder) / "model_index.json").is_file():
            raise InputError(f"{folder}: expected a PortraitEditPipeline folder (model_index.json) to train from")
        pipeline = PortraitEditPipeline.from_pretrained(folder, torch_dtype=torch.float32)
        names = PortraitEditComponents.__dataclass_fields__
        return PortraitEditComponents(**{name: getattr(pipeline, name) for name in names})
    if config.model.source == "base":
        assert config.model.base_model is not None and config.model.image_encoder is not None  # ModelConfig checks
        return build_base_components(config.model.base_model, config.model.image_encoder, config.model)
    return build_random_components(config.model)


def build_training_module(
    config: PortraitEditConfig, noise_scheduler: DDPMScheduler | None = None
) -> PortraitEditTrainingModule:
    """The training module of a config: components from :func:`training_components`, recipe from ``config.train``."""
    train = config.train
    combine_type: str = config.model.combine_type
    folder = train.init_from or (config.model.pretrained if config.model.source == "pretrained" else None)
    if folder is not None and (Path(folder) / "model_index.json").is_file():
        index = json.loads((Path(folder) / "model_index.json").read_text(encoding="utf-8"))
        combine_type = str(index.get("combine_type", combine_type))  # the folder's own, over model.combine_type
    return PortraitEditTrainingModule(
        training_components(config),
        noise_scheduler=noise_scheduler,
        combine_type=combine_type,
        optimizer=train.optimizer,
        drop_bands=(train.drop_concat, train.drop_image, train.drop_text, train.drop_all),
        reconstruction_prob=train.reconstruction_prob,
        condition_latents=train.condition_latents,
        clip_unet_only=train.clip_unet_only,
        ema_decay=train.ema_decay,
        gradient_checkpointing=train.gradient_checkpointing,
        seed=train.seed,
    )


def build_fit_arguments(config: PortraitEditConfig, run_dir: str | Path) -> dict[str, Any]:
    """The :func:`genblocks.training.fit` arguments of a config: the seeded module, the pair data module (synthetic
    pairs in ``<run_dir>/data`` when ``data.manifest`` is unset), the shared training settings, the whole config and
    the ``trained/`` writer."""
    from portrait_edit.data import pair_datamodule

    L.seed_everything(config.train.seed, workers=True, verbose=False)
    module = build_training_module(config)
    return {
        "module": module,
        "datamodule": pair_datamodule(config, run_dir),
        "train_config": config.train,
        "config": config,
        "save_trained": lambda trained, folder: trained.save_trained(folder),
    }


def train_from_config(
    config: PortraitEditConfig,
    out_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Sequence[L.Callback] = (),
) -> dict[str, Any]:
    """Train through :func:`genblocks.training.fit` in the run folder ``out_dir``.

    Args:
        config (`PortraitEditConfig`): The run (``model``, ``train``, ``data``).
        out_dir (`str` or `Path`): The run folder: ``config.yaml``, ``checkpoints/``, ``metrics.csv``, ``loss.png``,
            ``trained/`` (a ``PortraitEditPipeline`` folder), ``summary.json``, ``data/`` (synthetic pairs).
        resume (`bool`, defaults to `False`): Continue from ``checkpoints/last.ckpt``.
        overwrite (`bool`, defaults to `False`): Start again in a used folder.
        callbacks (`Sequence[L.Callback]`): More Lightning callbacks.

    Returns:
        `dict`: ``steps``, ``first_loss`` / ``last_loss`` / ``losses`` (``train/loss`` of every logged step),
        ``optimizer``, ``prediction_type``, ``checkpoint`` and ``trained``; also written to ``summary.json``.
    """
    from genblocks.training import RunFolder, fit
    from genblocks.training.fitting import read_metrics

    run = RunFolder.open(out_dir, resume=resume, overwrite=overwrite)
    arguments = build_fit_arguments(config, run.root)
    result = fit(out_dir=run, resume=resume, callbacks=callbacks, **arguments)
    losses = [value for _, name, value in read_metrics(run.metrics) if name == "train/loss"]
    summary = {
        "steps": int(result.global_step),
        "first_loss": losses[0] if losses else math.nan,
        "last_loss": losses[-1] if losses else math.nan,
        "losses": losses,
        "optimizer": config.train.optimizer.name,
        "prediction_type": arguments["module"].prediction_type,
        "checkpoint": str(result.last_checkpoint),
        "trained": str(result.trained),
    }
    (run.root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
