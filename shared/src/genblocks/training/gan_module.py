"""Lightning GAN training module: manual optimisation, lazy regularisation, an EMA generator and exact resume.

The schedule follows the StyleGAN2 / StyleGAN2-ADA / EG3D training loop (Karras et al., arXiv 1912.04958 and
2006.06676; Chan et al., arXiv 2112.07945; NVlabs/stylegan2-ada-pytorch ``training/training_loop.py`` and
``training/loss.py``, read for the conventions only, the code here is our own). Every iteration (one batch) runs the
phases G-main, G-reg, D-main, D-reg in that order, each with its own backward pass and optimizer step:

- **G-main**: non-saturating loss ``softplus(-D(G(z, c), c))``.
- **G-reg** (every ``g_reg_interval`` iterations, loss × interval): path-length regularisation when ``pl_weight > 0``;
  subclasses add e.g. EG3D's density regulariser in :meth:`GANTrainingModule.generator_regularization`.
- **D-main**: logistic loss ``softplus(D(fake)) + softplus(-D(real))``, fakes made without gradients and with
  ``update_emas=True`` (the mapping network's ``w_avg`` tracks the D-phase latents, as upstream).
- **D-reg** (every ``r1_interval`` iterations, loss × interval): R1, ``r1_gamma / 2 · |∇_x D(x)|²`` on every
  discriminator input (EG3D: ``image`` and ``image_raw``).

An interval of ``None`` merges main and regularisation terms into one step per iteration (upstream's ``Gboth`` /
``Dboth``). With ``lazy_reg_scaling`` the Adam learning rate and betas of a lazily regularised network are scaled by
``ratio = interval / (interval + 1)`` (``lr · ratio``, ``beta ** ratio``), StyleGAN2 Appendix B [unverified for EG3D,
spec §8]. After the phases the EMA generator is updated with ``beta = 0.5 ** (batch / ema_nimg)``.

Interfaces are generic: ``generator(z, c)`` returns an image tensor (N, C, H, W) or a dict with at least ``"image"``;
``discriminator(images, c)`` takes that tensor, or ``discriminator(**images, c=c)`` the dict restricted to
``discriminator_keys`` (EG3D's ``DualDiscriminator(image, image_raw, c)``), and returns logits (N, 1).
A :class:`~genblocks.gan.stylegan2.StyleGAN2Generator` is run as ``mapping`` then ``synthesize`` so that path-length
regularisation, style mixing and the ``w_avg`` update work. Subclasses adapt the loop by overriding
:meth:`~GANTrainingModule.generate`, :meth:`~GANTrainingModule.run_discriminator`,
:meth:`~GANTrainingModule.real_inputs`, :meth:`~GANTrainingModule.real_labels`, :meth:`~GANTrainingModule.sample_c`,
:meth:`~GANTrainingModule.generator_loss`, :meth:`~GANTrainingModule.generator_regularization` or
:meth:`~GANTrainingModule.discriminator_loss`.

Randomness: latents, labels and style-mixing cut-offs come from one ``torch.Generator`` owned by the module; draws made
inside the networks (noise injection, the path-length noise) use the global RNG, which every iteration re-seeds inside
``torch.random.fork_rng`` from a seed drawn from that generator. The generator state, the iteration counter and the
number of images seen go into the checkpoint, so ``trainer.fit(ckpt_path=...)`` continues exactly like an uninterrupted
run (given a data loader that yields the same batches).

Lightning's ``global_step`` counts optimizer steps, i.e. two per iteration plus one per regularisation step; use
:meth:`GANTrainingModule.optimizer_steps` to turn a number of iterations into ``Trainer(max_steps=...)``. Under DDP use
``strategy="ddp_find_unused_parameters_true"`` (each phase back-propagates through part of the module only); Lightning
synchronises the gradients of every manual backward pass.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import lightning as L
import torch
from torch import nn

from genblocks.gan.losses import (
    PathLengthRegularizer,
    discriminator_logistic_loss,
    generator_nonsaturating_loss,
    r1_penalty,
)
from genblocks.gan.stylegan2 import StyleGAN2Generator

__all__ = ["GANPhase", "GANTrainingModule", "GeneratorOutput"]

logger = logging.getLogger(__name__)

GeneratorOutput = torch.Tensor | dict[str, torch.Tensor]
GANPhase = Literal["main", "reg", "both"]


class GANTrainingModule(L.LightningModule):
    """Adversarial training of a generator against a discriminator with Lightning manual optimisation.

    Batch layout of the default hooks: a tensor of real images (N, C, H, W) in [-1, 1], or a mapping with
    ``batch[image_key]`` (N, C, H, W) and optionally ``batch[label_key]`` (N, c_dim) conditioning labels (EG3D: the
    25-d camera label). Generated labels are drawn with replacement from the batch's labels.

    Args:
        generator (`nn.Module`): ``generator(z (N, z_dim), c (N, c_dim) or None)`` -> images or a dict with
            ``"image"``. A deep copy becomes the EMA generator ``generator_ema`` (frozen, used by :meth:`sample` and
            validation).
        discriminator (`nn.Module`): ``discriminator(images, c)`` -> logits (N, 1) or (N,).
        z_dim (`int`, *optional*): latent size; defaults to ``generator.z_dim``.
        g_lr (`float`, defaults to 0.0025): generator Adam learning rate (EG3D).
        d_lr (`float`, defaults to 0.002): discriminator Adam learning rate (EG3D; StyleGAN2 uses 0.002 for both).
        betas (`tuple[float, float]`, defaults to `(0.0, 0.99)`): Adam betas of both optimizers.
        eps (`float`, defaults to 1e-8): Adam epsilon.
        r1_gamma (`float`, defaults to 1.0): R1 weight γ (the penalty is γ/2 · |∇D|²); 0 disables R1. Dataset
            dependent: EG3D FFHQ-512 uses 1, StyleGAN2 FFHQ-1024 uses 10.
        r1_interval (`int`, *optional*, defaults to 16): iterations between lazy R1 steps (on iterations
            ``0, r1_interval, 2·r1_interval, ...``); ``None`` adds R1 to every D step.
        g_reg_interval (`int`, *optional*): iterations between generator regularisation steps (StyleGAN2 path length:
            4; EG3D density regularisation: 4); ``None`` adds the regularisation to every G step.
        pl_weight (`float`, defaults to 0.0): path-length weight (StyleGAN2: 2); needs a generator that exposes its
            ``ws`` (a ``StyleGAN2Generator`` or an overridden :meth:`generate`).
        pl_batch_shrink (`int`, defaults to 2): the path-length batch is ``batch // pl_batch_shrink``.
        pl_decay (`float`, defaults to 0.01): decay of the running path-length mean.
        style_mixing_prob (`float`, defaults to 0.0): probability of style mixing regularisation (StyleGAN2: 0.9).
        lazy_reg_scaling (`bool`, defaults to `True`): scale lr and betas of lazily regularised networks by
            ``interval / (interval + 1)`` [unverified for EG3D].
        use_ema (`bool`, defaults to `True`): keep and update the EMA generator.
        ema_kimg (`float`, *optional*): EMA half-life in thousands of images; ``None`` is ``batch · 10 / 32`` (so
            ``beta = 0.5 ** (32 / 10000)`` whatever the batch size).
        ema_rampup (`float`, *optional*): cap the half-life at ``images_seen · ema_rampup`` (StyleGAN2-ADA: 0.05).
        discriminator_keys (`tuple[str, ...]`, defaults to `("image", "image_raw")`): for dict outputs, the entries
            the discriminator sees and R1 differentiates (those present).
        sanitize_gradients (`bool`, defaults to `True`): replace NaN / ±inf gradients by 0 / ±1e5 before each step.
        seed (`int`, defaults to 0): seed of the module's generator; rank ``r`` uses ``seed + r``.
        image_key (`str`, defaults to `"image"`): batch key of the real images.
        label_key (`str`, defaults to `"c"`): batch key of the conditioning labels (absent: unconditional).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        z_dim: int | None = None,
        g_lr: float = 0.0025,
        d_lr: float = 0.002,
        betas: tuple[float, float] = (0.0, 0.99),
        eps: float = 1e-8,
        r1_gamma: float = 1.0,
        r1_interval: int | None = 16,
        g_reg_interval: int | None = None,
        pl_weight: float = 0.0,
        pl_batch_shrink: int = 2,
        pl_decay: float = 0.01,
        style_mixing_prob: float = 0.0,
        lazy_reg_scaling: bool = True,
        use_ema: bool = True,
        ema_kimg: float | None = None,
        ema_rampup: float | None = None,
        discriminator_keys: tuple[str, ...] = ("image", "image_raw"),
        sanitize_gradients: bool = True,
        seed: int = 0,
        image_key: str = "image",
        label_key: str = "c",
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.save_hyperparameters(ignore=["generator", "discriminator"])
        self.hparams["betas"] = list(betas)
        self.hparams["discriminator_keys"] = list(discriminator_keys)
        z_dim = z_dim if z_dim is not None else getattr(generator, "z_dim", None)
        if not isinstance(z_dim, int) or z_dim < 1:
            raise ValueError(f"`z_dim` must be a positive int (or the generator must have `z_dim`), got {z_dim!r}.")
        for name, value in (("r1_interval", r1_interval), ("g_reg_interval", g_reg_interval)):
            if value is not None and value < 1:
                raise ValueError(f"`{name}` must be None or >= 1, got {value}.")
        for name, value in (("g_lr", g_lr), ("d_lr", d_lr)):
            if value <= 0:
                raise ValueError(f"`{name}` must be positive, got {value}.")
        if not all(0.0 <= b < 1.0 for b in betas) or len(betas) != 2:
            raise ValueError(f"`betas` must be two values in [0, 1), got {betas}.")
        if r1_gamma < 0 or pl_weight < 0:
            raise ValueError(f"`r1_gamma` and `pl_weight` must be >= 0, got {r1_gamma} and {pl_weight}.")
        if not 0.0 <= style_mixing_prob <= 1.0:
            raise ValueError(f"`style_mixing_prob` must be in [0, 1], got {style_mixing_prob}.")
        if pl_batch_shrink < 1:
            raise ValueError(f"`pl_batch_shrink` must be >= 1, got {pl_batch_shrink}.")
        if ema_kimg is not None and ema_kimg < 0:
            raise ValueError(f"`ema_kimg` must be None or >= 0, got {ema_kimg}.")
        if not discriminator_keys:
            raise ValueError("`discriminator_keys` must name at least one output entry.")
        needs_ws = pl_weight > 0 or style_mixing_prob > 0
        if needs_ws and not self._runs_through_ws(generator) and type(self).generate is GANTrainingModule.generate:
            raise ValueError(
                "`pl_weight` > 0 and `style_mixing_prob` > 0 need the generator's ws: pass a StyleGAN2Generator "
                "or override `generate` to return them."
            )
        self.generator = generator
        self.discriminator = discriminator
        self.generator_ema: nn.Module | None = None
        if use_ema:
            self.generator_ema = copy.deepcopy(generator).requires_grad_(False)
        self.path_length: PathLengthRegularizer | None = (
            PathLengthRegularizer(decay=pl_decay) if pl_weight > 0 else None
        )
        self.z_dim = z_dim
        self.g_lr, self.d_lr, self.betas, self.eps = g_lr, d_lr, (float(betas[0]), float(betas[1])), eps
        self.r1_gamma, self.r1_interval = r1_gamma, r1_interval
        self.g_reg_interval, self.pl_weight, self.pl_batch_shrink = g_reg_interval, pl_weight, pl_batch_shrink
        self.style_mixing_prob = style_mixing_prob
        self.lazy_reg_scaling = lazy_reg_scaling
        self.ema_kimg, self.ema_rampup = ema_kimg, ema_rampup
        self.discriminator_keys = tuple(discriminator_keys)
        self.sanitize_gradients = sanitize_gradients
        self.seed = seed
        self.image_key, self.label_key = image_key, label_key
        self.generator_rng = torch.Generator().manual_seed(seed)
        self._generator_restored = False
        self.iteration = 0
        self.images_seen = 0
        self.last_ema_beta: float | None = None

    # ----------------------------------------------------------------- properties
    @staticmethod
    def _runs_through_ws(generator: nn.Module) -> bool:
        return isinstance(generator, StyleGAN2Generator)

    @property
    def kimg(self) -> float:
        """Thousands of real images shown so far (for fades such as EG3D's blur and pose-swap schedules)."""
        return self.images_seen / 1000.0

    @property
    def generator_regularization_active(self) -> bool:
        """Whether G-reg phases run (default: ``pl_weight > 0``); override when adding other G regularisers."""
        return self.pl_weight > 0

    @property
    def discriminator_regularization_active(self) -> bool:
        """Whether D-reg phases run (default: ``r1_gamma > 0``)."""
        return self.r1_gamma > 0

    @staticmethod
    def _phases(iteration: int, interval: int | None, active: bool) -> list[GANPhase]:
        if interval is None:
            return ["both"]
        return ["main", "reg"] if active and iteration % interval == 0 else ["main"]

    def optimizer_steps(self, iterations: int, start: int = 0) -> int:
        """Lightning optimizer steps (``trainer.global_step`` increments) taken by ``iterations`` iterations.

        Args:
            iterations (`int`): number of training iterations (batches).
            start (`int`, defaults to 0): iteration index of the first of them.

        Returns:
            `int`: the value to add to ``Trainer(max_steps=...)`` to run exactly that many iterations.
        """
        steps = 0
        for it in range(start, start + iterations):
            steps += len(self._phases(it, self.g_reg_interval, self.generator_regularization_active))
            steps += len(self._phases(it, self.r1_interval, self.discriminator_regularization_active))
        return steps

    # ----------------------------------------------------------------- randomness
    def sample_z(self, batch_size: int) -> torch.Tensor:
        """Latents (batch_size, z_dim) from the module's generator (drawn on CPU, so device independent)."""
        return torch.randn(batch_size, self.z_dim, generator=self.generator_rng).to(self.device)

    def sample_c(self, real_c: torch.Tensor | None, batch_size: int) -> torch.Tensor | None:
        """Labels for generated samples: ``batch_size`` rows of ``real_c`` (N, c_dim) drawn with replacement.

        Override to sample cameras from a pose distribution instead. Returns ``None`` for unconditional training.
        """
        if real_c is None:
            return None
        index = torch.randint(0, real_c.shape[0], (batch_size,), generator=self.generator_rng)
        return real_c[index.to(real_c.device)]

    @contextmanager
    def _seeded_global_rng(self, seed: int) -> Iterator[None]:
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.default_generator.manual_seed(seed)
            if devices:
                with torch.cuda.device(self.device):
                    torch.cuda.manual_seed(seed)
            yield

    # ----------------------------------------------------------------- hooks a subclass overrides
    def real_inputs(self, batch: Any) -> GeneratorOutput:
        """Real discriminator inputs of a batch: ``batch`` itself if a tensor, else ``batch[image_key]``.

        Override to build dict inputs, e.g. EG3D's ``{"image": x, "image_raw": resize(x)}``.
        """
        if isinstance(batch, torch.Tensor):
            return batch
        if isinstance(batch, Mapping) and self.image_key in batch:
            return batch[self.image_key]
        raise ValueError(
            f"`batch` must be an image tensor or a mapping with {self.image_key!r}, got "
            f"{sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__}."
        )

    def real_labels(self, batch: Any) -> torch.Tensor | None:
        """Conditioning labels (N, c_dim) of the real images: ``batch[label_key]`` or ``None``."""
        if isinstance(batch, Mapping) and self.label_key in batch:
            return batch[self.label_key]
        return None

    def generate(
        self, z: torch.Tensor, c: torch.Tensor | None, update_emas: bool = False
    ) -> tuple[GeneratorOutput, torch.Tensor | None]:
        """Run the trained generator.

        A ``StyleGAN2Generator`` runs as ``mapping(z, c, update_emas)`` -> style mixing -> ``synthesize(ws)``; any
        other generator is called as ``generator(z, c)``. EG3D-style subclasses override this (pose swapping, neural
        rendering resolution).

        Args:
            z (`torch.Tensor`): latents (N, z_dim).
            c (`torch.Tensor` or `None`): labels (N, c_dim).
            update_emas (`bool`, defaults to `False`): let the mapping network update its ``w_avg`` (D phases).

        Returns:
            `tuple`: the generator output (tensor (N, C, H, W) or dict with ``"image"``) and the ws (N, num_ws, w_dim)
            or ``None`` when the generator does not expose them.
        """
        generator = self.generator
        if not self._runs_through_ws(generator):
            return generator(z, c), None
        ws = generator.mapping(z, c, update_emas=update_emas)
        ws = self.mix_styles(ws, c)
        return generator.synthesize(ws), ws

    def mix_styles(self, ws: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """Style mixing regularisation: with ``style_mixing_prob``, ws[:, cutoff:] come from a second latent.

        The cut-off is uniform in [1, num_ws) and shared by the batch; the draws use the module's generator.
        """
        num_ws = ws.shape[1]
        if self.style_mixing_prob <= 0 or num_ws < 2:
            return ws
        cutoff = int(torch.randint(1, num_ws, (), generator=self.generator_rng))
        if float(torch.rand((), generator=self.generator_rng)) >= self.style_mixing_prob:
            return ws
        other = self.generator.mapping(self.sample_z(ws.shape[0]), c, update_emas=False)
        return torch.cat([ws[:, :cutoff], other[:, cutoff:]], dim=1)

    def discriminator_inputs(self, outputs: GeneratorOutput) -> GeneratorOutput:
        """Restrict a dict output to ``discriminator_keys`` (tensors pass through)."""
        if isinstance(outputs, torch.Tensor):
            return outputs
        selected = {key: outputs[key] for key in self.discriminator_keys if key in outputs}
        if not selected:
            raise ValueError(
                f"generator outputs {sorted(outputs)} contain none of `discriminator_keys` {self.discriminator_keys}."
            )
        return selected

    def run_discriminator(self, images: GeneratorOutput, c: torch.Tensor | None) -> torch.Tensor:
        """Discriminator logits for ``images`` (already restricted by :meth:`discriminator_inputs`).

        A tensor is passed as ``discriminator(images, c)``; a dict as keyword arguments,
        ``discriminator(**images, c=c)``, which fits :class:`~genblocks.gan.dual_discriminator.DualDiscriminator`'s
        ``(image, image_raw, c)``. Override to add e.g. EG3D's blur fade-in (using :attr:`kimg`).
        """
        if isinstance(images, torch.Tensor):
            return self.discriminator(images, c)
        return self.discriminator(**images, c=c)

    def generator_regularization(
        self, batch: Any, real_c: torch.Tensor | None, batch_size: int
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """The G-reg loss before the lazy gain: ``pl_weight ·`` mean path-length penalty, or ``None``.

        Override (calling ``super()``) to add EG3D's density regulariser; then also override
        :attr:`generator_regularization_active`.
        """
        if self.path_length is None:
            return None, {}
        n = max(1, batch_size // self.pl_batch_shrink)
        outputs, ws = self.generate(self.sample_z(n), self.sample_c(real_c, n))
        if ws is None:
            raise ValueError("path-length regularisation needs `generate` to return the ws.")
        images = outputs["image"] if isinstance(outputs, Mapping) else outputs
        penalty = self.path_length(images, ws).mean()
        return penalty * self.pl_weight, {"pl_penalty": penalty.detach()}

    def generator_loss(
        self, phase: GANPhase, batch: Any, real: GeneratorOutput, real_c: torch.Tensor | None, batch_size: int
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """The generator loss of one phase, before the lazy gain (which the training step applies).

        ``"main"``: non-saturating adversarial loss; ``"reg"``: :meth:`generator_regularization`; ``"both"``: their
        sum. Override (calling ``super()``) to add package losses (e.g. paired LPIPS / L1 guidance).

        Args:
            phase (`str`): ``"main"``, ``"reg"`` or ``"both"``.
            batch: the raw batch.
            real: :meth:`real_inputs` of the batch.
            real_c (`torch.Tensor` or `None`): :meth:`real_labels` of the batch, (N, c_dim).
            batch_size (`int`): the local batch size N.

        Returns:
            `tuple`: the scalar loss (``None``: skip this phase's step) and detached values to log.
        """
        loss: torch.Tensor | None = None
        logs: dict[str, torch.Tensor] = {}
        if phase in ("main", "both"):
            gen_c = self.sample_c(real_c, batch_size)
            outputs, _ = self.generate(self.sample_z(batch_size), gen_c)
            logits = self.run_discriminator(self.discriminator_inputs(outputs), gen_c)
            loss = generator_nonsaturating_loss(logits)
            logs["g_adv"] = loss.detach()
        if phase in ("reg", "both"):
            reg, reg_logs = self.generator_regularization(batch, real_c, batch_size)
            logs.update(reg_logs)
            if reg is not None:
                loss = reg if loss is None else loss + reg
        return loss, logs

    def _prepare_real(self, real: GeneratorOutput, requires_grad: bool) -> tuple[GeneratorOutput, list[torch.Tensor]]:
        selected = self.discriminator_inputs(real)
        if isinstance(selected, torch.Tensor):
            tensor = selected.detach().requires_grad_(requires_grad)
            return tensor, [tensor]
        prepared = {key: value.detach().requires_grad_(requires_grad) for key, value in selected.items()}
        return prepared, list(prepared.values())

    def discriminator_loss(
        self, phase: GANPhase, batch: Any, real: GeneratorOutput, real_c: torch.Tensor | None, batch_size: int
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """The discriminator loss of one phase, before the lazy gain (which the training step applies).

        ``"main"``: logistic loss on reals and (gradient-free) fakes; ``"reg"``: R1 ``r1_gamma / 2 · mean |∇D|²``
        over every discriminator input; ``"both"``: their sum, sharing the real logits. Arguments as in
        :meth:`generator_loss`.

        Returns:
            `tuple`: the scalar loss (``None``: skip this phase's step) and detached values to log.
        """
        main = phase in ("main", "both")
        reg = phase in ("reg", "both") and self.r1_gamma > 0
        if not (main or reg):
            return None, {}
        real_inputs, real_tensors = self._prepare_real(real, requires_grad=reg)
        real_logits = self.run_discriminator(real_inputs, real_c)
        loss: torch.Tensor | None = None
        logs: dict[str, torch.Tensor] = {}
        if main:
            gen_c = self.sample_c(real_c, batch_size)
            with torch.no_grad():
                fake, _ = self.generate(self.sample_z(batch_size), gen_c, update_emas=True)
            fake_logits = self.run_discriminator(self.discriminator_inputs(fake), gen_c)
            loss = discriminator_logistic_loss(real_logits, fake_logits)
            logs["d_adv"] = loss.detach()
            logs["d_real"] = real_logits.detach().mean()
            logs["d_fake"] = fake_logits.detach().mean()
        if reg:
            penalty = self.r1_regularization(real_logits, real_tensors)
            logs["r1_penalty"] = penalty.detach()
            r1 = penalty * (self.r1_gamma / 2)
            loss = r1 if loss is None else loss + r1
        return loss, logs

    def r1_regularization(self, real_logits: torch.Tensor, real_tensors: list[torch.Tensor]) -> torch.Tensor:
        """Mean over the batch of the summed squared gradients of the real logits w.r.t. every real input."""
        return r1_penalty(real_logits, real_tensors).mean()

    # ----------------------------------------------------------------- EMA and sampling
    def ema_beta(self, batch_size: int) -> float:
        """EMA coefficient for one iteration of ``batch_size`` images (the global batch).

        ``beta = 0.5 ** (batch_size / ema_nimg)`` with ``ema_nimg = 1000 · ema_kimg`` (``ema_kimg`` defaulting to
        ``batch_size · 10 / 32``), capped at ``images_seen · ema_rampup`` when a ramp-up is set.
        """
        ema_kimg = self.ema_kimg if self.ema_kimg is not None else batch_size * 10 / 32
        ema_nimg = ema_kimg * 1000
        if self.ema_rampup is not None:
            ema_nimg = min(ema_nimg, self.images_seen * self.ema_rampup)
        return 0.5 ** (batch_size / max(ema_nimg, 1e-8))

    @torch.no_grad()
    def update_ema(self, batch_size: int) -> None:
        """``p_ema <- p + beta · (p_ema - p)`` for every parameter; buffers are copied from the generator."""
        if self.generator_ema is None:
            return
        beta = self.ema_beta(batch_size)
        params = dict(self.generator.named_parameters())
        for name, p_ema in self.generator_ema.named_parameters():
            p_ema.copy_(params[name].detach().lerp(p_ema, beta))
        buffers = dict(self.generator.named_buffers())
        for name, b_ema in self.generator_ema.named_buffers():
            b_ema.copy_(buffers[name])
        self.last_ema_beta = beta

    @torch.no_grad()
    def sample(self, z: torch.Tensor, c: torch.Tensor | None = None) -> GeneratorOutput:
        """Generate with the EMA generator (the trained one when ``use_ema=False``), called as ``G(z, c)``.

        Args:
            z (`torch.Tensor`): latents (N, z_dim).
            c (`torch.Tensor`, *optional*): labels (N, c_dim).

        Returns:
            The generator output: images (N, C, H, W) or a dict with ``"image"``.
        """
        generator = self.generator_ema if self.generator_ema is not None else self.generator
        return generator(z, c)

    # ----------------------------------------------------------------- Lightning
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Adam for G and D; a lazily regularised net gets ``lr · ratio`` and ``betas ** ratio``, ratio = k/(k+1)."""

        def adam(module: nn.Module, lr: float, interval: int | None) -> torch.optim.Optimizer:
            ratio = self.lazy_ratio(interval) if self.lazy_reg_scaling else 1.0
            params = [p for p in module.parameters() if p.requires_grad]
            betas = (self.betas[0] ** ratio, self.betas[1] ** ratio)
            return torch.optim.Adam(params, lr=lr * ratio, betas=betas, eps=self.eps)

        return [
            adam(self.generator, self.g_lr, self.g_reg_interval),
            adam(self.discriminator, self.d_lr, self.r1_interval),
        ]

    def setup(self, stage: str) -> None:
        if not self._generator_restored:
            self.generator_rng.manual_seed(self.seed + self.global_rank)

    def _global_batch(self, real: GeneratorOutput) -> tuple[int, int]:
        first = real if isinstance(real, torch.Tensor) else next(iter(real.values()))
        local = int(first.shape[0])
        world = self.trainer.world_size if self._trainer is not None else 1
        return local, local * world

    def training_step(self, batch: Any, batch_idx: int) -> None:
        g_opt, d_opt = self.optimizers()
        real, real_c = self.real_inputs(batch), self.real_labels(batch)
        local_batch, global_batch = self._global_batch(real)
        seed = int(torch.randint(0, 2**62, (), generator=self.generator_rng))
        logs: dict[str, torch.Tensor] = {}
        with self._seeded_global_rng(seed):
            for opt, interval, active, loss_fn, prefix in (
                (g_opt, self.g_reg_interval, self.generator_regularization_active, self.generator_loss, "g"),
                (d_opt, self.r1_interval, self.discriminator_regularization_active, self.discriminator_loss, "d"),
            ):
                for phase in self._phases(self.iteration, interval, active):
                    with self.toggled_optimizer(opt):
                        loss, phase_logs = loss_fn(phase, batch, real, real_c, local_batch)
                        logs.update(phase_logs)
                        if loss is None:
                            continue
                        gain = float(interval) if phase == "reg" and interval is not None else 1.0
                        opt.zero_grad(set_to_none=True)
                        self.manual_backward(loss * gain)
                        if self.sanitize_gradients:
                            for group in opt.param_groups:
                                for param in group["params"]:
                                    if param.grad is not None:
                                        param.grad.nan_to_num_(nan=0.0, posinf=1e5, neginf=-1e5)
                        opt.step()
                        logs[f"{prefix}_{phase}_loss"] = loss.detach()
        self.update_ema(global_batch)
        self.images_seen += global_batch
        self.iteration += 1
        for name, value in logs.items():
            self.log(f"train/{name}", value, prog_bar=name in ("g_adv", "d_adv"), batch_size=local_batch)
        self.log("train/kimg", self.kimg, batch_size=local_batch)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Mean discriminator logits on the real batch and on EMA samples drawn from ``seed + batch_idx``.

        Uses its own generator and a forked global RNG, so it does not perturb the training draws.
        """
        real = self.real_inputs(batch)
        real_c = self.real_labels(batch)
        local_batch, _ = self._global_batch(real)
        rng = torch.Generator().manual_seed(self.seed + batch_idx)
        z = torch.randn(local_batch, self.z_dim, generator=rng).to(self.device)
        with self._seeded_global_rng(self.seed + batch_idx):
            fake = self.sample(z, real_c)
            real_logits = self.run_discriminator(self.discriminator_inputs(real), real_c)
            fake_logits = self.run_discriminator(self.discriminator_inputs(fake), real_c)
        self.log("val/d_real", real_logits.mean(), sync_dist=True, batch_size=local_batch)
        self.log("val/d_fake_ema", fake_logits.mean(), sync_dist=True, batch_size=local_batch)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning calls this hook on every rank (only rank 0 writes), so each rank's generator state is gathered.
        state = self.generator_rng.get_state()
        if self._trainer is not None and self.trainer.world_size > 1:
            states = self.all_gather(state.to(self.device)).cpu()
        else:
            states = state.unsqueeze(0)
        checkpoint["genblocks_gan_state"] = {
            "generator_states": states,
            "iteration": self.iteration,
            "images_seen": self.images_seen,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("genblocks_gan_state")
        if state is None:
            logger.warning("checkpoint has no GAN loop state; counters and latent draws restart")
            return
        self.iteration = int(state["iteration"])
        self.images_seen = int(state["images_seen"])
        states = state["generator_states"]
        rank = self.global_rank if self._trainer is not None else 0
        if rank < len(states):
            self.generator_rng.set_state(states[rank].clone())
            self._generator_restored = True
        else:
            logger.warning(
                "checkpoint holds generator states of %d ranks; rank %d starts from seed %d + rank",
                len(states),
                rank,
                self.seed,
            )

    @staticmethod
    def lazy_ratio(interval: int | None) -> float:
        """``interval / (interval + 1)`` (1 for ``None``): the lr / betas exponent of lazy regularisation."""
        return 1.0 if interval is None else interval / (interval + 1)

    def extra_repr(self) -> str:
        return (
            f"z_dim={self.z_dim}, g_lr={self.g_lr}, d_lr={self.d_lr}, betas={self.betas}, r1_gamma={self.r1_gamma}, "
            f"r1_interval={self.r1_interval}, g_reg_interval={self.g_reg_interval}, pl_weight={self.pl_weight}, "
            f"ema={'on' if self.generator_ema is not None else 'off'}, "
            f"lazy_reg_scaling={self.lazy_reg_scaling}, iteration={self.iteration}"
        )
