"""AgileGAN3D training: the three Lightning modules of stages A, C and D and the stage runner that trains
a style into a run folder with exact resume (``genblocks.training.fit``; the data is in :mod:`agilegan3d.data`).

- :class:`PriorModule` (stage A): few-shot fine-tuning of a 2-D StyleGAN2 on the exemplars, the mapping and low
  resolutions frozen, every discriminator input DiffAugmented (optionally with ADA's adaptive p); with
  ``prior.selection.features`` the EMA weights ``trained/`` keeps are chosen by FID/KID
  (:class:`~agilegan3d.selection.EMASelector`, its state in every checkpoint) and ``prior/selection.json`` lists
  every evaluation.
- Stage B (:func:`agilegan3d.pairs.synthesize_pairs`) writes the tuples (x_sty, x_real, ws, c).
- :class:`TransferModule` (stage C): guided transfer of EG3D on the tuples: adversarial under the camera-conditioned
  dual discriminator + paired guidance (L1 + perceptual between G3s(ws, c) and x_sty) + EG3D's density regulariser,
  the mapping frozen. ``transfer.naive=True`` is the ablation: adversarial fine-tuning on the raw exemplars.
- :class:`EncoderModule` (stage D): a pSp encoder into G3D's W+ trained on synthetic renders with reconstruction,
  identity, latent and multi-view consistency losses.

:func:`train_style` runs the stages in ``run/{prior,pairs,transfer,encoder}`` (a finished stage has ``trained/`` or,
for pairs, ``done.json``, and is skipped) and assembles the style folder ``run/style/``
(:mod:`agilegan3d.pipeline_agilegan3d`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import Dataset

from agilegan3d.augment import ada_adjust, augment_pair, resize_like
from agilegan3d.config import STAGES, AgileGAN3DConfig, AugmentConfig
from agilegan3d.data import (
    ExemplarDataset,
    Exemplars,
    SeedDataset,
    StageDataModule,
    load_exemplars,
    synthetic_exemplars,
)
from agilegan3d.modeling_agilegan3d import (
    PerceptualDistance,
    StylePrior,
    build_encoder,
    build_g3d,
    build_g3d_discriminator,
    build_prior_discriminator,
    build_prior_encoder,
    build_prior_generator,
    encode,
    load_torchscript,
    multiview_consistency_loss,
    paired_guidance_loss,
    prior_frozen_prefixes,
    set_trainable,
)
from agilegan3d.pairs import PairDataset, cameras_at, pair_draw, synthesize_pairs
from agilegan3d.selection import EMASelector
from genblocks.errors import InputError
from genblocks.gan import (
    DualDiscriminator,
    GradualStyleEncoder,
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    TriPlaneGenerator,
    discriminator_logistic_loss,
)
from genblocks.metrics import load_feature_extractor
from genblocks.training import fit
from genblocks.training.gan_module import GANBatch, GANTrainingModule

__all__ = [
    "EncoderModule",
    "PriorModule",
    "TransferModule",
    "build_stage",
    "exemplar_hashes",
    "load_style_prior",
    "stage_finished",
    "train_style",
]

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------------
# Stage A: the 2-D style prior
# ---------------------------------------------------------------------------------------------------------------------


class _AugmentedDiscriminatorMixin:
    """DiffAugment on every discriminator input (fakes, reals, R1), with an ADA probability kept in a buffer."""

    augment_p: Tensor
    hparams: Any
    discriminator: nn.Module

    def _augment_settings(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.hparams["augment"])

    def run_discriminator(self, images: dict[str, Tensor], c: Tensor | None) -> Tensor:
        settings = self._augment_settings()
        images = augment_pair(
            images, settings["policy"], float(self.augment_p), settings["translation"], settings["cutout"]
        )
        return cast(Tensor, self.discriminator(*images.values(), c))

    def _adapt(self, real_logits: Tensor) -> None:
        settings = self._augment_settings()
        if settings["adaptive"]:
            p = ada_adjust(float(self.augment_p), real_logits, settings["target"], settings["adjust_kimg"])
            self.augment_p.fill_(p)


def _augment_hparams(augment: AugmentConfig) -> dict[str, Any]:
    return {
        "policy": list(augment.policy),
        "probability": augment.probability,
        "adaptive": augment.adaptive,
        "target": augment.target,
        "adjust_kimg": augment.adjust_kimg,
        "translation": augment.translation,
        "cutout": augment.cutout,
    }


class PriorModule(_AugmentedDiscriminatorMixin, GANTrainingModule):
    """Stage A: few-shot fine-tuning of a StyleGAN2 on the exemplars (spec §3 "Style prior").

    The mapping network and the synthesis blocks at ``frozen`` prefixes (4²–16²) keep their FFHQ weights; the rest of
    G and all of D train with the StyleGAN2 losses (non-saturating, lazy R1) on DiffAugmented inputs. Because the
    mapping is frozen, W+ of the FFHQ generator and of G2s are the same space, so E2 (an FFHQ pSp encoder) stylises
    through G2s.

    With a ``selector``, the EMA generator is scored at the end of every iteration the selector says is due (after
    the EMA update, before genblocks' checkpoint callback writes that step), and the selector's history and best
    state go into every checkpoint (key ``agilegan3d_selection``), so a resumed run selects exactly as an
    uninterrupted one.

    Args:
        generator: The FFHQ StyleGAN2 (unconditional).
        discriminator: A StyleGAN2 discriminator.
        frozen: Parameter-name prefixes kept fixed (:func:`~agilegan3d.modeling_agilegan3d.prior_frozen_prefixes`).
        augment: The augmentation.
        g_lr, d_lr, r1_gamma, ema_kimg, seed: :class:`~genblocks.training.gan_module.GANTrainingModule` arguments.
        selector: FID/KID selection of the EMA weights (``None``: none; the last EMA is the result).
    """

    augment_p: Tensor

    def __init__(
        self,
        generator: StyleGAN2Generator,
        discriminator: StyleGAN2Discriminator,
        frozen: Sequence[str],
        augment: AugmentConfig,
        g_lr: float = 0.002,
        d_lr: float = 0.002,
        r1_gamma: float = 10.0,
        ema_kimg: float = 10.0,
        seed: int = 0,
        selector: EMASelector | None = None,
    ) -> None:
        keep = [name for name, _ in generator.named_parameters() if not any(name.startswith(p) for p in frozen)]
        prefixes = sorted({name.rsplit(".", 1)[0] + "." for name in keep})
        set_trainable(generator, prefixes)
        super().__init__(
            generator, discriminator, g_lr=g_lr, d_lr=d_lr, r1_gamma=r1_gamma, ema_kimg=ema_kimg, seed=seed
        )
        self.hparams.update({"frozen": list(frozen), "augment": _augment_hparams(augment)})
        self.register_buffer("augment_p", torch.tensor(float(augment.probability)))
        self.selector = selector

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return _trainable_adams(self)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One GAN iteration, then a selection evaluation of the EMA generator when one is due."""
        super().training_step(batch, batch_idx)
        step = self.trainer.global_step
        if self.selector is not None and self.selector.due(step, self.trainer.max_steps):
            row = self.selector.evaluate(cast(StyleGAN2Generator, self.generator_ema), step)
            logger.info(
                "selection at step %d: fid %.6g, kid %.6g (best: step %s)",
                step,
                row["fid"],
                row["kid"],
                self.selector.best_step,
            )

    def discriminator_loss(self, batch: GANBatch) -> Tensor:
        c = self.sample_c(batch, batch.size)
        with torch.no_grad():
            fake, _ = self.generate(self.sample_z(batch.size), c, update_emas=False)
        fake_logits = self.run_discriminator(self.discriminator_inputs(fake), c)
        real_logits = self.run_discriminator(batch.real, batch.c)
        self._adapt(real_logits)
        loss = discriminator_logistic_loss(real_logits, fake_logits)
        self.log("train/d_loss", loss.detach(), prog_bar=True, batch_size=batch.size)
        self.log("train/augment_p", self.augment_p, batch_size=batch.size)
        return loss

    def trained_state(self) -> dict[str, Tensor]:
        """The G2s weights ``trained/`` gets: the selected EMA state, or the last EMA state without a selector (or
        before its first evaluation)."""
        if self.selector is not None and self.selector.best_state is not None:
            return self.selector.best_state
        return cast(dict[str, Tensor], self.generator_ema.state_dict())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.selector is not None:
            checkpoint["agilegan3d_selection"] = self.selector.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.selector is not None and "agilegan3d_selection" in checkpoint:
            self.selector.load_state_dict(checkpoint["agilegan3d_selection"])


def _trainable_adams(module: GANTrainingModule) -> list[torch.optim.Optimizer]:
    """GANTrainingModule's two lazily-scaled Adams over the parameters that train (frozen layers are left out)."""
    h = module.hparams
    optimizers: list[torch.optim.Optimizer] = []
    for network, lr, interval in (
        (module.generator, h["g_lr"], h["g_reg_interval"]),
        (module.discriminator, h["d_lr"], h["r1_interval"]),
    ):
        ratio = 1.0 if interval is None else interval / (interval + 1)
        betas = tuple(beta**ratio for beta in h["betas"])
        params = [p for p in network.parameters() if p.requires_grad]
        optimizers.append(torch.optim.Adam(params, lr=lr * ratio, betas=betas, eps=h["eps"]))
    return optimizers


# ---------------------------------------------------------------------------------------------------------------------
# Stage C: guided transfer
# ---------------------------------------------------------------------------------------------------------------------


class TransferModule(_AugmentedDiscriminatorMixin, GANTrainingModule):
    """Stage C: guided transfer learning of EG3D on the stylised tuples (spec §3 "Guided transfer").

    One iteration is GANTrainingModule's four phases with:

    - ``G_main``: ``adv · softplus(−D(G3s(ws, c), c)) + l1 · |G3s(ws, c) − x_sty| + lpips · d(G3s(ws, c), x_sty)``,
      (ws, c, x_sty) the batch's tuples (with ``paired_adversarial=False`` the adversarial fakes are G3s(z, c), c drawn
      from the batch's cameras); ``naive=True`` keeps the adversarial term only (the ablation);
    - ``G_reg``: ``density_reg ·`` EG3D's density regulariser at the batch's ws (lazy, every ``g_reg_interval``);
    - ``D_main`` / ``D_reg``: the dual discriminator's logistic loss (reals: x_sty and its raw-resolution copy at
      their cameras) and lazy R1.

    Only the parameters under ``train_layers`` train (default: everything but the mapping).

    Args:
        generator: G3D (EG3D, pretrained).
        discriminator: The dual discriminator.
        train_layers: Parameter-name prefixes of G that train.
        adv, l1, lpips: Loss weights.
        perceptual: The perceptual distance (``None``: off).
        density_reg: Density-regulariser weight.
        density_points: Points per sample of the regulariser.
        paired_adversarial: Adversarial fakes are the paired renders.
        naive: The ablation (no guidance).
        augment: Discriminator augmentation.
        g_lr, d_lr, r1_gamma, r1_interval, g_reg_interval, ema_kimg, seed: GAN settings.
    """

    augment_p: Tensor

    def __init__(
        self,
        generator: TriPlaneGenerator,
        discriminator: DualDiscriminator,
        train_layers: Sequence[str],
        adv: float = 1.0,
        l1: float = 1.0,
        lpips: float = 1.0,
        perceptual: PerceptualDistance | None = None,
        density_reg: float = 0.25,
        density_points: int = 1000,
        paired_adversarial: bool = True,
        naive: bool = False,
        augment: AugmentConfig | None = None,
        g_lr: float = 0.00025,
        d_lr: float = 0.0002,
        r1_gamma: float = 1.0,
        r1_interval: int = 16,
        g_reg_interval: int = 4,
        ema_kimg: float = 10.0,
        seed: int = 0,
    ) -> None:
        set_trainable(generator, train_layers)
        super().__init__(
            generator,
            discriminator,
            g_lr=g_lr,
            d_lr=d_lr,
            r1_gamma=r1_gamma,
            r1_interval=r1_interval,
            g_reg_interval=g_reg_interval,
            ema_kimg=ema_kimg,
            seed=seed,
        )
        augment = augment if augment is not None else AugmentConfig(probability=0.0)
        self.hparams.update(
            {
                "train_layers": list(train_layers),
                "adv": adv,
                "l1": l1,
                "lpips": lpips,
                "density_reg": density_reg,
                "density_points": density_points,
                "paired_adversarial": paired_adversarial,
                "naive": naive,
                "augment": _augment_hparams(augment),
            }
        )
        self.perceptual = perceptual
        self.register_buffer("augment_p", torch.tensor(float(augment.probability)))
        self._pairs: dict[str, Tensor] = {}

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return _trainable_adams(self)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        self._pairs = {key: batch[key] for key in ("ws", "image") if key in batch}
        super().training_step(batch, batch_idx)

    def _paired(self) -> bool:
        return "ws" in self._pairs and not self.hparams["naive"]

    def guidance_loss(self, rendered: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The paired guidance (:func:`~agilegan3d.modeling_agilegan3d.paired_guidance_loss`) with this module's
        weights; ``rendered`` G3s(ws, c) and ``target`` x_sty, (N, 3, H, W)."""
        return paired_guidance_loss(rendered, target, self.hparams["l1"], self.hparams["lpips"], self.perceptual)

    def generator_loss(self, batch: GANBatch) -> Tensor:
        if not self._paired():
            return super().generator_loss(batch) * self.hparams["adv"]
        generator = cast(TriPlaneGenerator, self.generator)
        rendered = generator.synthesis(self._pairs["ws"], cast(Tensor, batch.c))
        guidance, parts = self.guidance_loss(rendered["image"], self._pairs["image"])
        for name, value in parts.items():
            self.log(f"train/guidance_{name}", value, batch_size=batch.size)
        loss = guidance
        if self.hparams["adv"] > 0:
            if self.hparams["paired_adversarial"]:
                fake, c = rendered, batch.c
            else:
                c = self.sample_c(batch, batch.size)
                fake, _ = self.generate(self.sample_z(batch.size), c)
            logits = self.run_discriminator(self.discriminator_inputs(fake), c)
            adversarial = F.softplus(-logits).mean()
            self.log("train/g_loss", adversarial.detach(), prog_bar=True, batch_size=batch.size)
            loss = loss + self.hparams["adv"] * adversarial
        return loss

    def generator_regularization(self, batch: GANBatch) -> Tensor | None:
        if self.hparams["density_reg"] <= 0:
            return None
        ws = self._pairs["ws"] if self._paired() else self.map_latents(self.sample_z(batch.size), batch.c)
        generator = cast(TriPlaneGenerator, self.generator)
        rng = torch.Generator(device=ws.device).manual_seed(int(torch.randint(2**62, (), generator=self.rng)))
        penalty = generator.density_regularization(ws, self.hparams["density_points"], generator=rng)
        self.log("train/density_reg", penalty.detach(), batch_size=batch.size)
        return penalty * self.hparams["density_reg"]

    def discriminator_loss(self, batch: GANBatch) -> Tensor:
        if self._paired() and self.hparams["paired_adversarial"]:
            c = batch.c
            with torch.no_grad():
                fake = cast(TriPlaneGenerator, self.generator).synthesis(self._pairs["ws"], cast(Tensor, c))
        else:
            c = self.sample_c(batch, batch.size)
            with torch.no_grad():
                fake, _ = self.generate(self.sample_z(batch.size), c, update_emas=False)
        fake_logits = self.run_discriminator(self.discriminator_inputs(fake), c)
        real_logits = self.run_discriminator(batch.real, batch.c)
        self._adapt(real_logits)
        loss = discriminator_logistic_loss(real_logits, fake_logits)
        self.log("train/d_loss", loss.detach(), prog_bar=True, batch_size=batch.size)
        return loss


# ---------------------------------------------------------------------------------------------------------------------
# Stage D: the multi-view-consistent encoder
# ---------------------------------------------------------------------------------------------------------------------


class EncoderModule(L.LightningModule):
    """Stage D: a pSp encoder E into G3D's W+, trained on synthetic renders (spec §3 "3-D inversion encoder").

    For each sample seed: z, an input camera c1 and another camera c2 (both in the configured ranges); ``ws =
    mapping(z, c1)`` (truncated), ``x = G3D(ws, c1)``, ``ŵ = E(x)``; the loss is
    ``l2 · MSE(G3D(ŵ, c1), x) + lpips · d(·,·) + id · (1 − cos(f(G3D(ŵ, c1)), f(x))) + latent · MSE(ŵ, ws) + mv ·
    (mv_l1 · L1 + d)(G3D(ŵ, c2), G3D(ws, c2))``. G3D is frozen and kept in eval mode (deterministic renders).

    Args:
        encoder: E (trainable).
        generator: G3D (frozen).
        l2, lpips, id, latent, mv, mv_l1: Loss weights.
        perceptual: Perceptual distance (``None``: off).
        identity: Face-embedding network (``None``: off).
        lr: Adam learning rate.
        yaw, pitch: Camera half-ranges, radians.
        truncation_psi: Truncation of the sampled ws.
    """

    def __init__(
        self,
        encoder: GradualStyleEncoder,
        generator: TriPlaneGenerator,
        l2: float = 1.0,
        lpips: float = 0.8,
        id: float = 0.1,
        latent: float = 0.01,
        mv: float = 1.0,
        mv_l1: float = 1.0,
        perceptual: PerceptualDistance | None = None,
        identity: nn.Module | None = None,
        lr: float = 1e-4,
        yaw: float = 0.6,
        pitch: float = 0.3,
        truncation_psi: float = 0.7,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {
                "l2": l2,
                "lpips": lpips,
                "id": id,
                "latent": latent,
                "mv": mv,
                "mv_l1": mv_l1,
                "lr": lr,
                "yaw": yaw,
                "pitch": pitch,
                "truncation_psi": truncation_psi,
            }
        )
        self.encoder = encoder
        self.generator = generator.eval().requires_grad_(False)
        self.perceptual = perceptual
        self.identity = identity

    def train(self, mode: bool = True) -> EncoderModule:
        super().train(mode)
        self.generator.eval()
        return self

    def draw(self, seeds: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-sample z (N, z_dim), c1 (N, 25), c2 (N, 25) from generators seeded with ``seeds`` (N,)."""
        zs, angles = [], []
        for seed in seeds.tolist():
            rng = torch.Generator().manual_seed(int(seed))
            zs.append(torch.randn(self.generator.z_dim, generator=rng))
            angles.append(
                (torch.rand(4, generator=rng) * 2 - 1) * torch.tensor([self.hparams["yaw"], self.hparams["pitch"]] * 2)
            )
        a = torch.stack(angles)
        return (
            torch.stack(zs).to(self.device),
            cameras_at(a[:, 0], a[:, 1]).to(self.device),
            cameras_at(a[:, 2], a[:, 3]).to(self.device),
        )

    def losses(self, seeds: Tensor) -> dict[str, Tensor]:
        """The weighted terms and ``"loss"`` (their sum) for a batch of sample seeds (N,)."""
        h = self.hparams
        z, c1, c2 = self.draw(seeds)
        with torch.no_grad():
            ws = self.generator.mapping(z, c1, truncation_psi=h["truncation_psi"])
            x = self.generator.synthesis(ws, c1, noise_mode="const")["image"]
        ws_hat = encode(self.encoder, x)
        rec = self.generator.synthesis(ws_hat, c1, noise_mode="const")["image"]
        terms = {"l2": h["l2"] * F.mse_loss(rec, x), "latent": h["latent"] * F.mse_loss(ws_hat, ws)}
        if self.perceptual is not None and h["lpips"] > 0:
            terms["lpips"] = h["lpips"] * self.perceptual(rec, x).mean()
        if self.identity is not None and h["id"] > 0:
            a, b = self.identity(rec), self.identity(x)
            terms["id"] = h["id"] * (1 - F.cosine_similarity(a, b, dim=-1)).mean()
        if h["mv"] > 0:
            terms["mv"] = h["mv"] * multiview_consistency_loss(
                self.generator, ws_hat, ws, c2, h["mv_l1"], 1.0, self.perceptual
            )
        terms["loss"] = torch.stack(list(terms.values())).sum()
        return terms

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        terms = self.losses(batch)
        for name, value in terms.items():
            self.log(f"train/{name}", value.detach(), prog_bar=name == "loss", batch_size=len(batch))
        return terms["loss"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.encoder.parameters(), lr=self.hparams["lr"])


# ---------------------------------------------------------------------------------------------------------------------
# The stage runner
# ---------------------------------------------------------------------------------------------------------------------


def stage_finished(run: str | os.PathLike, stage: str) -> bool:
    """Whether ``stage`` of the run folder ``run`` is complete (``trained/`` or, for pairs, ``done.json``)."""
    folder = Path(run) / stage
    return (folder / "done.json").is_file() if stage == "pairs" else (folder / "trained").is_dir()


def _stage_train_config(config: AgileGAN3DConfig, stage: str) -> Any:
    steps = {"prior": config.prior_steps, "transfer": config.transfer_steps, "encoder": config.encoder_steps}[stage]
    return dataclasses.replace(config.train, max_steps=steps)


def _exemplars(config: AgileGAN3DConfig, exemplars: str | os.PathLike | None) -> Exemplars:
    resolution = config.exemplar_resolution or config.prior.resolution
    if exemplars is not None:
        return load_exemplars(exemplars, resolution, config.min_exemplars)
    if config.synthetic_exemplars <= 0:
        raise InputError("--exemplars: a folder of style images is required (or set synthetic_exemplars > 0)")
    if config.synthetic_exemplars < config.min_exemplars:
        raise InputError(
            f"synthetic_exemplars={config.synthetic_exemplars}: expected at least min_exemplars={config.min_exemplars}"
        )
    return synthetic_exemplars(build_g3d(config.g3d), config.synthetic_exemplars, resolution, config.seed + 1234)


def load_style_prior(config: AgileGAN3DConfig, run: str | os.PathLike) -> StylePrior:
    """The 2-D style prior of stage B: for ``stylegan2_finetune``, G2s from ``run/prior/trained`` and E2 from
    ``prior.encoder`` (or seeded random); else the configured filter / callable."""
    run = Path(run)
    if not config.prior.trains:
        return StylePrior.from_config(config.prior)
    generator = build_prior_generator(config.prior, config.seed)
    generator.load_state_dict(load_file(str(run / "prior" / "trained" / "g2_style.safetensors")))
    encoder = build_prior_encoder(config.prior, generator.num_ws, config.seed + 2)
    return StylePrior.from_config(config.prior, generator.eval(), encoder)


def build_stage(
    config: AgileGAN3DConfig, stage: str, run: str | os.PathLike, exemplars: str | os.PathLike | None = None
) -> dict[str, Any]:
    """The :func:`genblocks.training.fit` arguments of a training stage (``prior``, ``transfer``, ``encoder``) of the
    style run ``run`` (earlier stages must be finished): ``module``, ``datamodule``, ``train_config``,
    ``save_trained``, ``config``. Seeds first, so the same call builds the same modules (exact resume)."""
    run = Path(run)
    train_config = _stage_train_config(config, stage)
    L.seed_everything(train_config.seed, workers=True, verbose=False)
    if stage == "prior":
        data = _exemplars(config, exemplars)
        for note in data.notes:
            logger.info("exemplars: %s", note)
        generator = build_prior_generator(config.prior, config.seed)
        selection = config.prior.selection
        selector = None
        if selection.features is not None:
            selector = EMASelector(
                load_feature_extractor(selection.features, "prior.selection.features"),
                data.images,
                generator.z_dim,
                selection,
                config.prior.augment,
            )
        module: L.LightningModule = PriorModule(
            generator.train(),
            build_prior_discriminator(config.prior, config.seed + 1),
            prior_frozen_prefixes(config.prior),
            config.prior.augment,
            g_lr=config.prior.g_lr,
            d_lr=config.prior.d_lr,
            r1_gamma=config.prior.r1_gamma,
            seed=config.seed,
            selector=selector,
        )
        datamodule = StageDataModule(ExemplarDataset(data.images), min(4, len(data.images)))

        def save_prior(trained: L.LightningModule, folder: Path) -> None:
            prior = cast(PriorModule, trained)
            state = prior.trained_state()
            save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "g2_style.safetensors"))
            (folder / "exemplars.json").write_text(json.dumps({"hashes": data.hashes, "notes": data.notes}, indent=1))
            if prior.selector is not None:
                summary = json.dumps(prior.selector.summary(), indent=1)
                (folder.parent / "selection.json").write_text(summary)

        save_trained: Callable[[L.LightningModule, Path], Any] = save_prior
    elif stage == "transfer":
        t = config.transfer
        g3d = build_g3d(config.g3d)
        if t.naive:
            data = _exemplars(config, exemplars)
            images = resize_like(data.images, config.g3d.img_resolution)
            draws = [pair_draw(config.pairs, i, g3d.z_dim) for i in range(len(images))]
            cameras = cameras_at(torch.tensor([d[1] for d in draws]), torch.tensor([d[2] for d in draws]))
            dataset: Dataset[Any] = ExemplarDataset(images, cameras)
        else:
            dataset = PairDataset(run / "pairs")
        module = TransferModule(
            g3d.train(),
            build_g3d_discriminator(config.g3d, config.seed + 5),
            t.train_layers if t.freeze_mapping else (*t.train_layers, "backbone.mapping"),
            adv=t.adv,
            l1=t.l1,
            lpips=t.lpips,
            perceptual=cast(PerceptualDistance | None, load_torchscript(t.perceptual, "transfer.perceptual")),
            density_reg=t.density_reg,
            density_points=t.density_points,
            paired_adversarial=t.paired_adversarial,
            naive=t.naive,
            augment=t.augment,
            g_lr=t.g_lr,
            d_lr=t.d_lr,
            r1_gamma=t.r1_gamma,
            r1_interval=t.r1_interval,
            g_reg_interval=t.g_reg_interval,
            ema_kimg=t.ema_kimg,
            seed=config.seed,
        )
        datamodule = StageDataModule(dataset, t.batch_size)

        def save_transfer(trained: L.LightningModule, folder: Path) -> None:
            ema = cast(TransferModule, trained).generator_ema
            save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, str(folder / "g3_style.safetensors"))

        save_trained = save_transfer
    elif stage == "encoder":
        e = config.encoder
        g3d = build_g3d(config.g3d)
        module = EncoderModule(
            build_encoder(e, g3d, config.seed + 3),
            g3d,
            l2=e.l2,
            lpips=e.lpips,
            id=e.id,
            latent=e.latent,
            mv=e.mv,
            mv_l1=e.mv_l1,
            perceptual=cast(PerceptualDistance | None, load_torchscript(e.perceptual, "encoder.perceptual")),
            identity=load_torchscript(e.identity, "encoder.identity"),
            lr=e.lr,
            yaw=e.yaw,
            pitch=e.pitch,
            truncation_psi=e.truncation_psi,
        )
        samples = max(e.batch_size * train_config.max_steps, e.batch_size)
        datamodule = StageDataModule(SeedDataset(samples, config.seed * 1_000_003 + 17), e.batch_size)

        def save_encoder(trained: L.LightningModule, folder: Path) -> None:
            encoder = cast(EncoderModule, trained).encoder
            save_file(
                {k: v.contiguous() for k, v in encoder.state_dict().items()}, str(folder / "encoder.safetensors")
            )

        save_trained = save_encoder
    else:
        raise InputError(f"stage {stage!r}: expected one of prior, transfer, encoder")
    return {
        "module": module,
        "datamodule": datamodule,
        "train_config": train_config,
        "save_trained": save_trained,
        "config": config,
    }


def _run_pairs(config: AgileGAN3DConfig, run: Path, progress: Callable[[int, int], None] | None) -> None:
    if config.transfer.naive:
        (run / "pairs").mkdir(parents=True, exist_ok=True)
        (run / "pairs" / "done.json").write_text(json.dumps({"n": 0, "naive": True}))
        return
    torch.manual_seed(config.seed)
    prior = load_style_prior(config, run)
    g3d = build_g3d(config.g3d)
    synthesize_pairs(g3d, prior, config.pairs, run / "pairs", progress)
    (run / "pairs" / "done.json").write_text(json.dumps({"n": config.pairs.n}))


def train_style(
    config: AgileGAN3DConfig,
    run: str | os.PathLike,
    exemplars: str | os.PathLike | None = None,
    resume: bool = False,
    stages: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    callbacks: Sequence[Any] = (),
) -> Path:
    """Train a style: run the unfinished ``stages`` (default: ``config.stage``, ``"all"`` = every stage in order) in
    ``run/<stage>/`` and, when all are finished, assemble the style folder ``run/style``.

    A stage with a checkpoint but no result continues with ``resume=True`` (else :func:`genblocks.training.fit`
    refuses the used folder); finished stages are skipped.

    Returns:
        ``run / "style"`` (complete only when every stage is finished).
    """
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    wanted = list(stages) if stages is not None else (list(STAGES) if config.stage == "all" else [config.stage])
    for stage in wanted:
        if stage == "prior" and not config.prior.trains:
            continue
        if stage_finished(run, stage):
            logger.info("stage %s: finished, skipped", stage)
            continue
        earlier = [s for s in STAGES[: STAGES.index(stage)] if s != "encoder"]
        missing = [s for s in earlier if not stage_finished(run, s) and not (s == "prior" and not config.prior.trains)]
        if stage != "encoder" and missing:
            raise InputError(
                f"--stage {stage}: run the earlier stages first ({', '.join(missing)} not finished in {run})"
            )
        if stage == "pairs":
            _run_pairs(config, run, progress)
            continue
        arguments = build_stage(config, stage, run, exemplars)
        folder = run / stage
        stage_resume = resume and (folder / "checkpoints" / "last.ckpt").is_file()
        fit(out_dir=folder, resume=stage_resume, callbacks=list(callbacks), **arguments)
    if all(stage_finished(run, s) for s in STAGES if s != "prior" or config.prior.trains):
        from agilegan3d.pipeline_agilegan3d import assemble_style

        assemble_style(config, run)
    return run / "style"


def exemplar_hashes(run: str | os.PathLike) -> list[str]:
    """The exemplar hashes a prior stage recorded (empty when the prior did not train)."""
    path = Path(run) / "prior" / "trained" / "exemplars.json"
    return list(json.loads(path.read_text())["hashes"]) if path.is_file() else []
