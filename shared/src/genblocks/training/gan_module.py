"""Lightning GAN training for StyleGAN2 and EG3D generators: manual optimisation, lazy R1 and path-length
regularisation, a generator EMA, seeded global-batch draws and exact resume through :func:`genblocks.training.fit`.

The schedule follows StyleGAN2 / StyleGAN2-ADA / EG3D (Karras et al., arXiv 1912.04958 and 2006.06676; Chan et al.,
arXiv 2112.07945), read in NVlabs/stylegan2-ada-pytorch@d72cc7d ``training/training_loop.py`` L197-208 (lazy
lr/beta scaling), L277-292 (phases, ``nan_to_num``), L296-303 (EMA) and ``training/loss.py`` L41-45 (style mixing),
L78-89 (path length), L107-131 (R1), and NVlabs/eg3d@7cf1fd1 ``eg3d/training/loss.py`` L108 (the real
``image_raw``); the code here is our own.

**One iteration (one batch) is exactly four optimizer steps**, in this order:

1. ``G_main``: non-saturating loss ``softplus(-D(G(z, c), c))``.
2. ``G_reg``: on iterations ``0, g, 2g, ...`` (``g = g_reg_interval``), ``g ·``
   :meth:`~GANTrainingModule.generator_regularization` (path length ``pl_weight · (|J_w^T y| - a)^2``; EG3D
   subclasses add density regularisation).
3. ``D_main``: logistic loss ``softplus(D(G(z, c), c)) + softplus(-D(x, c_x))``; fakes without gradients, with the
   mapping's ``w_avg`` update.
4. ``D_reg``: on iterations ``0, r, 2r, ...`` (``r = r1_interval``), ``r · r1_gamma / 2 · |∇_x D(x)|²`` over every
   discriminator input (EG3D: ``image`` and ``image_raw``).

A regularisation step outside its interval steps with no gradients, which every torch optimizer skips (as upstream,
where a phase without a loss leaves ``.grad`` at ``None``). So Lightning's ``trainer.global_step``, which counts
optimizer steps, is always ``4 × iterations``: **``train.max_steps`` is four times the number of iterations** (pick it
and ``train.checkpoint_every_n_steps`` / ``log_every_n_steps`` as multiples of 4; Lightning stops at the first
iteration boundary at or past ``max_steps``). After the four steps the EMA generator moves (:meth:`update_ema`).

Randomness: latents, sampled labels, mixing cut-offs and path-length noise come from the module's ``torch.Generator``
(``rng``), drawn for the global batch and sliced by rank (:meth:`GANTrainingModule.draw`), so ``W`` processes with
batch ``B`` draw what one process with batch ``W·B`` draws; its state goes into every checkpoint. Draws inside the
networks (noise inputs, renderer jitter, label noise) use the global RNG, which each iteration forks and seeds with a
seed from ``rng`` plus the rank (ranks get different noise).

Several devices: ``train.strategy=ddp_find_unused_parameters_true`` (each phase back-propagates into one network only,
which plain ``ddp`` refuses). Generated labels are drawn from the labels of the whole global batch (gathered), the
path-length mean averages over ranks, and ``mapping.w_avg`` follows rank 0's batch (as upstream, where every GPU tracks
its own). Precision: ``32-true`` or ``bf16-mixed`` (the ``16-mixed`` grad scaler refuses a step without gradients).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, cast

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genblocks.gan.dual_discriminator import DualDiscriminator
from genblocks.gan.losses import discriminator_logistic_loss, generator_nonsaturating_loss, r1_penalty
from genblocks.gan.stylegan2 import StyleGAN2Generator
from genblocks.gan.triplane import TriPlaneGenerator

__all__ = ["GANBatch", "GANPhase", "GANTrainingModule", "GeneratorOutput"]

GeneratorOutput = dict[str, Tensor]
"""What :meth:`GANTrainingModule.generate` returns: ``"image"`` (N, C, H, W), and for EG3D ``"image_raw"``
(N, C, r, r) and ``"image_depth"`` (N, 1, r, r)."""

GANPhase = Literal["G_main", "G_reg", "D_main", "D_reg"]
"""The four optimizer steps of an iteration, in order."""


@dataclass
class GANBatch:
    """One training batch as the losses see it.

    Args:
        real: Real discriminator inputs, ``"image"`` (N, C, H, W) in [-1, 1] and, for a dual discriminator,
            ``"image_raw"`` (N, C, r, r).
        c: Labels of the real images (N, c_dim) (EG3D: 25-d cameras), or ``None`` (unconditional).
        c_pool: The labels of the whole global batch (W·N, c_dim), from which generated labels are drawn.
    """

    real: GeneratorOutput
    c: Tensor | None
    c_pool: Tensor | None

    @property
    def size(self) -> int:
        """The local batch size N."""
        return int(self.real["image"].shape[0])


class GANTrainingModule(L.LightningModule):
    """Adversarial training of a StyleGAN2 or EG3D generator (module docstring for the schedule).

    Batch layout of the default hooks: ``batch[image_key]`` (N, C, H, W) in [-1, 1] (or the tensor itself) and
    optionally ``batch[label_key]`` (N, c_dim). Generated labels are drawn with replacement from the global batch's
    labels. Subclasses adapt the loop through :meth:`real_inputs`, :meth:`real_labels`, :meth:`sample_c`,
    :meth:`generate`, :meth:`discriminator_inputs`, :meth:`run_discriminator` and :meth:`generator_regularization`.

    Args:
        generator: A :class:`~genblocks.gan.stylegan2.StyleGAN2Generator` or
            :class:`~genblocks.gan.triplane.TriPlaneGenerator` (or anything with ``z_dim`` whose subclass overrides
            :meth:`generate`). A frozen deep copy becomes ``generator_ema``.
        discriminator: A ``StyleGAN2Discriminator`` (called ``D(image, c)``) or a
            :class:`~genblocks.gan.dual_discriminator.DualDiscriminator` (``D(image, image_raw, c)``).
        g_lr: Generator Adam learning rate (EG3D 0.0025; StyleGAN2 0.002).
        d_lr: Discriminator Adam learning rate.
        betas: Adam betas of both networks.
        eps: Adam epsilon.
        r1_gamma: R1 weight γ (dataset dependent: EG3D FFHQ-512 1, StyleGAN2 FFHQ-1024 10); 0 disables R1.
        r1_interval: Iterations between R1 steps; ``None``: no D regularisation step.
        g_reg_interval: Iterations between G regularisation steps (StyleGAN2 and EG3D: 4); ``None``: none.
        pl_weight: Path-length weight (StyleGAN2 2, EG3D 0).
        pl_batch_shrink: The path-length batch is ``N // pl_batch_shrink`` per rank.
        pl_decay: Decay of the running path-length mean (the buffer ``pl_mean``).
        style_mixing_prob: Probability that an iteration's generated batch mixes two latents (StyleGAN2 0.9).
        ema_kimg: Half-life of the generator EMA in thousands of images: ``beta = 0.5 ** (batch / (1000 ·
            ema_kimg))`` per iteration of ``batch`` global images (StyleGAN2 config F 10; ADA / EG3D ``batch · 10 /
            32``).
        ema_rampup: Caps the half-life at ``images_seen · ema_rampup`` images (ADA / EG3D 0.05); ``None``: no ramp.
        seed: Seed of the module's generator ``rng`` (the same on every rank).
        image_key: Batch key of the real images.
        label_key: Batch key of the labels (absent: unconditional).

    Attributes:
        iteration: Index of the iteration being run (``trainer.global_step // 4`` at its start).
        images_seen: Real images (all ranks) before it; :attr:`kimg` is that in thousands.
        rng: The module's ``torch.Generator`` of every draw the losses make.
    """

    STEPS_PER_ITERATION = 4
    pl_mean: Tensor

    def __init__(
        self,
        generator: StyleGAN2Generator | TriPlaneGenerator,
        discriminator: nn.Module,
        g_lr: float = 0.0025,
        d_lr: float = 0.002,
        betas: tuple[float, float] = (0.0, 0.99),
        eps: float = 1e-8,
        r1_gamma: float = 1.0,
        r1_interval: int | None = 16,
        g_reg_interval: int | None = 4,
        pl_weight: float = 0.0,
        pl_batch_shrink: int = 2,
        pl_decay: float = 0.01,
        style_mixing_prob: float = 0.0,
        ema_kimg: float = 10.0,
        ema_rampup: float | None = None,
        seed: int = 0,
        image_key: str = "image",
        label_key: str = "c",
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        z_dim = getattr(generator, "z_dim", None)
        if not isinstance(z_dim, int):
            raise ValueError("generator: expected a network with an int `z_dim` (StyleGAN2 or TriPlane generator)")
        # Plain values only (checkpoints load with weights_only=True); a subclass adds its own with hparams.update.
        hparams = {
            "g_lr": g_lr,
            "d_lr": d_lr,
            "betas": list(betas),
            "eps": eps,
            "r1_gamma": r1_gamma,
            "r1_interval": r1_interval,
            "g_reg_interval": g_reg_interval,
            "pl_weight": pl_weight,
            "pl_batch_shrink": pl_batch_shrink,
            "pl_decay": pl_decay,
            "style_mixing_prob": style_mixing_prob,
            "ema_kimg": ema_kimg,
            "ema_rampup": ema_rampup,
            "seed": seed,
            "image_key": image_key,
            "label_key": label_key,
        }
        _check_hparams(hparams)
        self.save_hyperparameters(hparams)
        self.generator = generator
        self.discriminator = discriminator
        self.generator_ema = copy.deepcopy(generator).requires_grad_(False)
        self.register_buffer("pl_mean", torch.zeros([]))
        self.z_dim = z_dim
        self.rng = torch.Generator().manual_seed(seed)
        self._rng_restored = False
        self.iteration = 0
        self.images_seen = 0

    @property
    def kimg(self) -> float:
        """Thousands of real images seen before this iteration (for schedules such as EG3D's blur fade-in)."""
        return self.images_seen / 1000

    # ----------------------------------------------------------------- random draws
    def _world(self) -> tuple[int, int]:
        return (self.trainer.world_size, self.trainer.global_rank) if self._trainer is not None else (1, 0)

    def draw(self, make: Callable[[int], Tensor], rows: int) -> Tensor:
        """``make(rows · W)`` from ``rng`` (every rank draws the same), keeping this rank's ``rows`` rows.

        Args:
            make: Draws a CPU tensor whose first dimension is the given number of rows, from ``self.rng``.
            rows: This rank's rows.

        Returns:
            Rows ``[rank · rows, (rank + 1) · rows)``, on the module's device.
        """
        world, rank = self._world()
        return make(rows * world)[rank * rows : (rank + 1) * rows].to(self.device)

    def sample_z(self, rows: int) -> Tensor:
        """Latents (rows, z_dim)."""
        return self.draw(lambda n: torch.randn(n, self.z_dim, generator=self.rng), rows)

    def sample_c(self, batch: GANBatch, rows: int) -> Tensor | None:
        """Labels (rows, c_dim) for generated samples, drawn with replacement from ``batch.c_pool``.

        Override to sample cameras from a pose distribution instead; ``None`` when unconditional.
        """
        if batch.c_pool is None:
            return None
        pool = batch.c_pool
        index = self.draw(lambda n: torch.randint(len(pool), (n,), generator=self.rng), rows)
        return pool[index.to(pool.device)]

    @contextmanager
    def _network_rng(self) -> Iterator[None]:
        """Fork the global RNG and seed it from ``rng`` plus the rank, for the draws inside the networks."""
        seed = int(torch.randint(2**62, (), generator=self.rng)) + self._world()[1]
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            yield

    # ----------------------------------------------------------------- hooks
    def real_inputs(self, batch: Any) -> GeneratorOutput:
        """Real discriminator inputs: ``{"image": (N, C, H, W)}``, plus ``"image_raw"`` (N, C, r, r) for a
        :class:`DualDiscriminator`, resized to the generator's ``neural_rendering_resolution`` with antialiasing
        (EG3D's ``filtered_resizing``, mode ``"antialiased"``)."""
        image = batch[self.hparams["image_key"]] if isinstance(batch, Mapping) else batch
        if not isinstance(self.discriminator, DualDiscriminator):
            return {"image": image}
        size = cast(TriPlaneGenerator, self.generator).neural_rendering_resolution  # a dual D trains a tri-plane G
        raw = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return {"image": image, "image_raw": raw}

    def real_labels(self, batch: Any) -> Tensor | None:
        """Labels (N, c_dim) of the real images: ``batch[label_key]``, or ``None``."""
        return batch.get(self.hparams["label_key"]) if isinstance(batch, Mapping) else None

    def generate(self, z: Tensor, c: Tensor | None, update_emas: bool = False) -> tuple[GeneratorOutput, Tensor]:
        """Map, optionally mix styles, synthesise.

        Args:
            z: Latents (N, z_dim).
            c: Labels (N, c_dim) or ``None``; EG3D renders from these cameras.
            update_emas: Let the mapping update its ``w_avg`` (the D phase).

        Returns:
            The outputs (:data:`GeneratorOutput`) and the ws (N, num_ws, w_dim) they were made from.
        """
        ws = self.mix_styles(self.map_latents(z, c, update_emas), c)
        if isinstance(self.generator, TriPlaneGenerator):
            return self.generator.synthesis(ws, cast(Tensor, c)), ws  # map_latents refused c=None
        return {"image": cast(Tensor, self.generator.synthesize(ws))}, ws

    def map_latents(self, z: Tensor, c: Tensor | None, update_emas: bool = False) -> Tensor:
        """The generator's mapping: ws (N, num_ws, w_dim) of latents z (N, z_dim) and labels c (N, c_dim)."""
        if not isinstance(self.generator, TriPlaneGenerator):
            return self.generator.mapping(z, c, update_emas=update_emas)
        if c is None:
            raise ValueError("a TriPlaneGenerator renders from cameras: the batch needs labels `c` (N, 25)")
        return self.generator.mapping(z, c, update_emas=update_emas)

    def mix_styles(self, ws: Tensor, c: Tensor | None) -> Tensor:
        """With ``style_mixing_prob``, ``ws[:, cutoff:]`` come from other latents; one cut-off in [1, num_ws) for
        the global batch."""
        if self.hparams["style_mixing_prob"] <= 0:
            return ws
        cutoff = int(torch.randint(1, ws.shape[1], (), generator=self.rng))
        if float(torch.rand((), generator=self.rng)) >= self.hparams["style_mixing_prob"]:
            return ws
        other = self.map_latents(self.sample_z(ws.shape[0]), c)
        return torch.cat([ws[:, :cutoff], other[:, cutoff:]], dim=1)

    def discriminator_inputs(self, outputs: GeneratorOutput) -> GeneratorOutput:
        """The entries the discriminator sees (and R1 differentiates): ``image`` (+ ``image_raw`` when dual)."""
        keys = ("image", "image_raw") if isinstance(self.discriminator, DualDiscriminator) else ("image",)
        return {key: outputs[key] for key in keys}

    def run_discriminator(self, images: GeneratorOutput, c: Tensor | None) -> Tensor:
        """Logits (N, 1) of :meth:`discriminator_inputs` ``images``; override for e.g. EG3D's blur fade-in."""
        return self.discriminator(*images.values(), c)

    # ----------------------------------------------------------------- losses (before the lazy gain)
    def generator_loss(self, batch: GANBatch) -> Tensor:
        """``G_main``: non-saturating loss on N fakes."""
        c = self.sample_c(batch, batch.size)
        fake, _ = self.generate(self.sample_z(batch.size), c)
        loss = generator_nonsaturating_loss(self.run_discriminator(self.discriminator_inputs(fake), c))
        self.log("train/g_loss", loss.detach(), prog_bar=True, batch_size=batch.size)
        return loss

    def generator_regularization(self, batch: GANBatch) -> Tensor | None:
        """``G_reg``: ``pl_weight ·`` path-length penalty, or ``None`` (no step). Override (calling ``super()``) to
        add EG3D's density regulariser."""
        if self.hparams["pl_weight"] <= 0:
            return None
        penalty = self.path_length_penalty(batch)
        self.log("train/pl_penalty", penalty.detach(), batch_size=batch.size)
        return penalty * self.hparams["pl_weight"]

    def path_length_penalty(self, batch: GANBatch) -> Tensor:
        """Mean of ``(|J_w^T y| - a)^2`` over ``N // pl_batch_shrink`` fakes, ``y ~ N(0, I) / sqrt(H W)``.

        ``a`` is the buffer ``pl_mean``, moved towards the mean length over all ranks by ``pl_decay`` first.
        """
        rows = max(1, batch.size // self.hparams["pl_batch_shrink"])
        fake, ws = self.generate(self.sample_z(rows), self.sample_c(batch, rows))
        image = fake["image"]
        noise = self.draw(lambda n: torch.randn(n, *image.shape[1:], generator=self.rng), rows)
        noise = noise.to(image.dtype) / math.sqrt(image.shape[2] * image.shape[3])
        (grads,) = torch.autograd.grad((image * noise).sum(), ws, create_graph=True)
        lengths = grads.square().sum(2).mean(1).sqrt()
        mean = self.trainer.strategy.reduce(lengths.detach().mean(), reduce_op="mean")
        self.pl_mean.copy_(self.pl_mean.lerp(mean, self.hparams["pl_decay"]))
        return (lengths - self.pl_mean).square().mean()

    def discriminator_loss(self, batch: GANBatch) -> Tensor:
        """``D_main``: logistic loss on the real batch and N fakes made without gradients."""
        c = self.sample_c(batch, batch.size)
        with torch.no_grad():
            fake, _ = self.generate(self.sample_z(batch.size), c, update_emas=True)
        fake_logits = self.run_discriminator(self.discriminator_inputs(fake), c)
        real_logits = self.run_discriminator(batch.real, batch.c)
        loss = discriminator_logistic_loss(real_logits, fake_logits)
        self.log("train/d_loss", loss.detach(), prog_bar=True, batch_size=batch.size)
        return loss

    def discriminator_regularization(self, batch: GANBatch) -> Tensor | None:
        """``D_reg``: ``r1_gamma / 2 ·`` mean R1 penalty over every real discriminator input, or ``None``."""
        if self.hparams["r1_gamma"] <= 0:
            return None
        real = {key: value.detach().requires_grad_(True) for key, value in batch.real.items()}
        penalty = r1_penalty(self.run_discriminator(real, batch.c), list(real.values())).mean()
        self.log("train/r1_penalty", penalty.detach(), batch_size=batch.size)
        return penalty * (self.hparams["r1_gamma"] / 2)

    # ----------------------------------------------------------------- the iteration
    def phase_gain(self, phase: GANPhase, iteration: int) -> int:
        """The factor on the loss of ``phase`` at ``iteration``: 1 for the main phases; for a regularisation phase its
        interval on multiples of it (the lazy gain), else 0 (the step has no gradients)."""
        if phase in ("G_main", "D_main"):
            return 1
        interval = self.hparams["g_reg_interval"] if phase == "G_reg" else self.hparams["r1_interval"]
        return interval if interval is not None and iteration % interval == 0 else 0

    def _step(self, optimizer: Any, loss_fn: Callable[[GANBatch], Tensor | None], batch: GANBatch, gain: int) -> None:
        """One optimizer step on ``gain · loss_fn(batch)``; with no loss the step has no gradients (a no-op)."""
        with self.toggled_optimizer(optimizer):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(batch) if gain > 0 else None
            if loss is not None:
                self.manual_backward(loss * gain)
                _sanitize_gradients(optimizer)
            optimizer.step()

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One iteration: the four phases (:data:`GANPhase`), each one optimizer step, then the EMA update."""
        g_opt, d_opt = cast(list[Any], self.optimizers())
        data = self._gan_batch(batch)
        global_batch = data.size * self._world()[0]
        self.iteration = self.trainer.global_step // self.STEPS_PER_ITERATION
        self.images_seen = self.iteration * global_batch
        phases: tuple[tuple[GANPhase, Any, Callable[[GANBatch], Tensor | None]], ...] = (
            ("G_main", g_opt, self.generator_loss),
            ("G_reg", g_opt, self.generator_regularization),
            ("D_main", d_opt, self.discriminator_loss),
            ("D_reg", d_opt, self.discriminator_regularization),
        )
        with self._network_rng():
            for phase, optimizer, loss_fn in phases:
                self._step(optimizer, loss_fn, data, self.phase_gain(phase, self.iteration))
        self.update_ema(global_batch)
        self.log("train/kimg", self.kimg, batch_size=data.size)

    def _gan_batch(self, batch: Any) -> GANBatch:
        real, c = self.real_inputs(batch), self.real_labels(batch)
        pool = None
        if c is not None:
            pool = cast(Tensor, self.all_gather(c)).flatten(0, 1) if self._world()[0] > 1 else c
        return GANBatch(real=real, c=c, c_pool=pool)

    # ----------------------------------------------------------------- EMA and sampling
    def ema_beta(self, batch_size: int) -> float:
        """``0.5 ** (batch_size / ema_nimg)``, ``ema_nimg = 1000 · ema_kimg`` capped at ``images_seen · ema_rampup``.

        Args:
            batch_size: Images of this iteration over all ranks.
        """
        ema_nimg = self.hparams["ema_kimg"] * 1000
        if self.hparams["ema_rampup"] is not None:
            ema_nimg = min(ema_nimg, self.images_seen * self.hparams["ema_rampup"])
        return 0.5 ** (batch_size / max(ema_nimg, 1e-8))

    @torch.no_grad()
    def update_ema(self, batch_size: int) -> None:
        """``p_ema <- p.lerp(p_ema, beta)`` for every generator parameter; buffers are copied."""
        beta = self.ema_beta(batch_size)
        for p_ema, p in zip(self.generator_ema.parameters(), self.generator.parameters(), strict=True):
            p_ema.copy_(p.lerp(p_ema, beta))
        for b_ema, b in zip(self.generator_ema.buffers(), self.generator.buffers(), strict=True):
            b_ema.copy_(b)

    @torch.no_grad()
    def sample(self, z: Tensor, c: Tensor | None = None) -> Tensor | GeneratorOutput:
        """Generate with the EMA generator, ``generator_ema(z (N, z_dim), c (N, c_dim))``."""
        return self.generator_ema(z, c)

    # ----------------------------------------------------------------- Lightning
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Adam for G and D; a lazily regularised network gets ``lr · k/(k+1)`` and ``betas ** (k/(k+1))``."""
        return [
            self._adam(self.generator, self.hparams["g_lr"], self.hparams["g_reg_interval"]),
            self._adam(self.discriminator, self.hparams["d_lr"], self.hparams["r1_interval"]),
        ]

    def _adam(self, network: nn.Module, lr: float, interval: int | None) -> torch.optim.Optimizer:
        ratio = 1.0 if interval is None else interval / (interval + 1)
        betas = tuple(beta**ratio for beta in self.hparams["betas"])
        return torch.optim.Adam(network.parameters(), lr=lr * ratio, betas=betas, eps=self.hparams["eps"])

    def setup(self, stage: str) -> None:
        if self.trainer.precision == "16-mixed":
            raise ValueError("GANTrainingModule: use precision 32-true or bf16-mixed (16-mixed cannot skip a step)")
        if not self._rng_restored:
            self.rng.manual_seed(self.hparams["seed"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["genblocks_gan_rng"] = self.rng.get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "genblocks_gan_rng" in checkpoint:
            self.rng.set_state(checkpoint["genblocks_gan_rng"].clone())
            self._rng_restored = True


def _sanitize_gradients(optimizer: Any) -> None:
    """NaN -> 0 and ±inf -> ±1e5 in every gradient (StyleGAN2-ADA)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            if param.grad is not None:
                torch.nan_to_num(param.grad, nan=0.0, posinf=1e5, neginf=-1e5, out=param.grad)


def _check_hparams(hparams: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first invalid constructor argument."""
    h = hparams
    valid = {
        "g_lr": h["g_lr"] > 0,
        "d_lr": h["d_lr"] > 0,
        "betas": len(h["betas"]) == 2 and all(0 <= b < 1 for b in h["betas"]),
        "r1_gamma": h["r1_gamma"] >= 0,
        "pl_weight": h["pl_weight"] >= 0,
        "r1_interval": h["r1_interval"] is None or h["r1_interval"] >= 1,
        "g_reg_interval": h["g_reg_interval"] is None or h["g_reg_interval"] >= 1,
        "pl_batch_shrink": h["pl_batch_shrink"] >= 1,
        "style_mixing_prob": 0 <= h["style_mixing_prob"] <= 1,
        "ema_kimg": h["ema_kimg"] >= 0,
    }
    for name, ok in valid.items():
        if not ok:
            raise ValueError(f"{name}: invalid value {h[name]!r}")
