"""OmniAvatar training (the authors released none; spec §4, recipe [unverified] beyond the code's structure).

**Stage I** (:class:`SemanticSDFModule`, ``omniavatar train --stage sdf``): W and the template SDF fitted to meshes of
the head model at random parameters with :func:`~omniavatar.semantic_sdf.stage1_losses`; ``trained/`` holds
``semantic_sdf.safetensors``.

**Stage II** (:class:`OmniAvatarGANModule`, ``--stage gan``) on genblocks' GAN module (four optimizer steps per
iteration, lazy R1, EMA, exact resume), with EG3D's blur fade-in, generator pose conditioning and density
regularisation, plus:

- the geometry prior ``L_prior = mean(exp(−|s|/κ) · |σ − σ_prior|)`` over the rendered samples, weight decayed linearly
  from ``prior_loss.weight`` to ``final_weight`` over ``decay_kimg``;
- the control loss ``‖β̂ − β‖ + λ‖θ̂ − θ‖`` (L1 or L2) on the final image, β̂, θ̂ from the discriminator's parameter head
  (``disc_head``, trained on real images' FLAME fits in the D step), a user-given :class:`ControlEstimator`
  (``pretrained``) or one fitted first on generated images (``trained``);
- optimizers: EG3D's Adam by default; ``train.optimizer.name`` ``coap_adamw`` (etc.) or ``adamw8bit`` picks genblocks'
  optimizer factory with the same learning rates;
- :class:`MaskDualDiscriminator`: EG3D's dual discriminator with a branch over the accumulated-opacity mask whose
  features are added after the first block, and a head regressing the (β, θ) values.

Data (:class:`OmniAvatarDataModule`): an FFHQ-style folder with EG3D's ``dataset.json``
(``{"labels": [[file, [25 + F values]], ...]}``) and, for the mask branch, ``masks/<file>``; or, with ``data.root``
unset, a synthetic set rendered by a seeded random generator (tiny runs). Mirroring flips the image, the camera
(EG3D: ``c[[1, 2, 3, 4, 8]] *= −1``) and the neck and jaw rotations ((x, y, z) -> (x, −y, −z)).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from genblocks.errors import InputError
from genblocks.gan.dual_discriminator import blur_images, discriminator_blur_sigma
from genblocks.gan.losses import discriminator_logistic_loss, generator_nonsaturating_loss
from genblocks.gan.stylegan2 import DiscriminatorBlock, EqualLinear, StyleGAN2Discriminator
from genblocks.gan.triplane import gpc_swap_probability
from genblocks.training.gan_module import GANBatch, GANTrainingModule, GeneratorOutput
from omniavatar.config import OmniAvatarConfig
from omniavatar.head_model import HeadModel, ProceduralHead
from omniavatar.modeling_omniavatar import OmniAvatarGenerator
from omniavatar.pipeline_omniavatar import OmniAvatarPipeline
from omniavatar.semantic_sdf import SemanticSDF, sample_head_params, stage1_losses

__all__ = [
    "ControlEstimator",
    "DatasetFolder",
    "FolderImages",
    "MaskDualDiscriminator",
    "MirroredImages",
    "OmniAvatarDataModule",
    "OmniAvatarGANModule",
    "SemanticSDFModule",
    "build_head",
    "control_loss",
    "load_weights_file",
    "mirror_labels",
    "prior_loss",
    "read_dataset_folder",
]


def build_head(config: OmniAvatarConfig) -> HeadModel:
    """The head model of ``model.head``: the procedural stand-in, or FLAME from ``model.flame_path``."""
    if config.model.head == "procedural":
        return ProceduralHead(config.flame, seed=config.model.seed)
    if config.model.flame_path is None:
        raise InputError("model.flame_path: expected FLAME's generic_model.pkl (or .npz) for model.head=flame")
    from omniavatar.head_model import FlameHead, load_flame

    return FlameHead(load_flame(config.model.flame_path), config.flame)


# ---------------------------------------------------------------------------------------------------------- Stage I
class _StepIndex(Dataset):
    """Step indices: Stage I draws its meshes itself, the loader only paces the steps."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> int:
        return index


class _StepData(L.LightningDataModule):
    def __init__(self, length: int) -> None:
        super().__init__()
        self.length = length

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_StepIndex(self.length), batch_size=1)


def step_datamodule(steps: int) -> L.LightningDataModule:
    """A data module of `steps` dummy items (Stage I samples its meshes in the module)."""
    return _StepData(steps)


class SemanticSDFModule(L.LightningModule):
    """Stage I: fit :class:`SemanticSDF` to the head model's meshes (module docstring).

    Args:
        config (`OmniAvatarConfig`): ``flame``, ``igr``, ``sdf_train``, ``model``.
        batch_size (`int`, defaults to 4): meshes per step.
    """

    def __init__(self, config: OmniAvatarConfig, batch_size: int = 4) -> None:
        super().__init__()
        self.config = config
        self.batch_size = batch_size
        self.network = SemanticSDF(config.flame.feature_dim, config.igr)
        self.head = build_head(config)
        self.rng = torch.Generator().manual_seed(config.train.seed)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        s = self.config.sdf_train
        params = sample_head_params(
            self.batch_size, self.config.flame.feature_dim, s.param_std, s.neutral_fraction, self.rng, s.pose_std
        )
        losses = stage1_losses(self.network, self.head, params, s, self.config.igr.bbox, self.rng)
        for key, value in losses.items():
            self.log(f"train/{key}", value.detach(), prog_bar=key == "loss", batch_size=self.batch_size)
        return losses["loss"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.network.parameters(), lr=self.config.sdf_train.lr)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["omniavatar_sdf_rng"] = self.rng.get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "omniavatar_sdf_rng" in checkpoint:
            self.rng.set_state(checkpoint["omniavatar_sdf_rng"].clone())


def save_semantic_sdf(module: L.LightningModule, folder: Path) -> None:
    """``trained/semantic_sdf.safetensors`` of a :class:`SemanticSDFModule`."""
    from safetensors.torch import save_file

    network = cast(SemanticSDFModule, module).network
    save_file(
        {k: v.detach().contiguous() for k, v in network.state_dict().items()}, str(folder / "semantic_sdf.safetensors")
    )


SDF_FILE = "safetensors of the Stage I SemanticSDF: trained/semantic_sdf.safetensors of train --stage sdf, same igr.*"
"""What ``train.sdf_checkpoint`` names, for error messages."""


def load_weights_file(network: nn.Module, path: str | Path, option: str, expected: str) -> None:
    """Load a safetensors state dict (strict) into `network`, refusing a bad file with one line naming `option`.

    Args:
        network (`nn.Module`): the module whose ``state_dict`` the file must hold.
        path (`str` or `Path`): the user's file.
        option (`str`): the option or config key that named it (``--estimator``, ``train.sdf_checkpoint``).
        expected (`str`): what the file should be, for the messages (``"safetensors of a ControlEstimator"``).

    Raises:
        InputError: The file is missing, is not safetensors, or holds tensors that do not fit `network`.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{option} {path}: file not found (expected {expected})")
    try:
        state = load_file(str(path))
    except SafetensorError as error:
        raise InputError(f"{option} {path}: not a safetensors file (expected {expected}; {error})") from None
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        line = str(error).splitlines()[0]
        raise InputError(f"{option} {path}: does not fit (expected {expected}; {line})") from None


def load_semantic_sdf(network: SemanticSDF, path: str | Path) -> None:
    """Load Stage I weights (strict) into `network`.

    Raises:
        InputError: `path` is missing, not safetensors, or does not fit ``igr.*``.
    """
    load_weights_file(network, path, "train.sdf_checkpoint", SDF_FILE)


# ---------------------------------------------------------------------------------------------------------- Stage II
ESTIMATOR_FILE = "safetensors of a ControlEstimator state dict (ctrl_loss.estimator_channels wide)"
"""What ``--estimator`` and ``ctrl_loss.estimator_path`` name, for error messages."""


class ControlEstimator(nn.Module):
    """E: a small conv net regressing the expression and pose values `(N, pose_dim)` from images `(N, 3, H, W)`.

    Args:
        pose_dim (`int`): expression + 6.
        channels (`int`, defaults to 64): width.
    """

    def __init__(self, pose_dim: int, channels: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, pose_dim),
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


class MaskDualDiscriminator(StyleGAN2Discriminator):
    """EG3D's dual discriminator (``concat(image, resize(image_raw))``, camera projection) with a mask branch and a
    parameter head (module docstring).

    Args:
        img_resolution (`int`), img_channels (`int`, defaults to 3), c_dim (`int`, defaults to 25),
        channel_base (`int`), channel_max (`int`): as :class:`~genblocks.gan.dual_discriminator.DualDiscriminator`.
        p_dim (`int`, defaults to 0): regressed values (expression + 6); 0 for no head.
        mask_branch (`bool`, defaults to `True`): the conv branch over the mask.
    """

    def __init__(
        self,
        img_resolution: int,
        img_channels: int = 3,
        c_dim: int = 25,
        channel_base: int = 32768,
        channel_max: int = 512,
        p_dim: int = 0,
        mask_branch: bool = True,
    ) -> None:
        super().__init__(
            img_resolution,
            c_dim=c_dim,
            channel_base=channel_base,
            channel_max=channel_max,
            in_channels=2 * img_channels,
        )
        r = img_resolution
        self.mask_block = (
            DiscriminatorBlock(self.channels[r], self.channels[r], self.channels[r // 2], r, 1, first=True)
            if mask_branch
            else None
        )
        self.param_head = EqualLinear(self.channels[4] * 16, p_dim) if p_dim > 0 else None

    def discriminate(
        self, image: Tensor, image_raw: Tensor, mask: Tensor | None, c: Tensor, blur_sigma: float = 0.0
    ) -> tuple[Tensor, Tensor | None]:
        """Logits `(N, 1)` and regressed parameters `(N, p_dim)` (None without a head)."""
        r = self.img_resolution
        if blur_sigma > 0:
            image = blur_images(image, blur_sigma)
        raw = F.interpolate(image_raw, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
        cmap = self.mapping(None, c[:, : self.c_dim])
        x = getattr(self, f"b{r}")(torch.cat([image, raw], dim=1))
        if self.mask_block is not None:
            if mask is None:
                raise ValueError("the mask branch needs the accumulated-opacity mask (N, 1, r, r)")
            m = F.interpolate(mask, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
            x = x + self.mask_block(m * 2 - 1)
        for res in self.block_resolutions[1:]:
            x = getattr(self, f"b{res}")(x)
        params = self.param_head(x.flatten(1)) if self.param_head is not None else None
        return self.b4(x, cmap), params

    def forward(  # type: ignore[override]
        self, image: Tensor, image_raw: Tensor, mask: Tensor | None, c: Tensor, blur_sigma: float = 0.0
    ) -> Tensor:
        return self.discriminate(image, image_raw, mask, c, blur_sigma)[0]


def prior_loss(outputs: GeneratorOutput, kappa: float) -> Tensor:
    """``mean(exp(−|s|/κ) · |σ − σ_prior|)`` over the rendered samples (``return_extras`` outputs)."""
    weight = torch.exp(-outputs["sample_sdf"].abs() / kappa)
    return (weight * outputs["sample_geom_delta"].abs()).mean()


def control_loss(estimate: Tensor, target: Tensor, expression_dim: int, lam: float, norm: str) -> Tensor:
    """``‖β̂ − β‖ + λ‖θ̂ − θ‖`` averaged over the batch (L1: mean absolute; L2: mean squared)."""
    error = (estimate - target).abs() if norm == "l1" else (estimate - target).square()
    return error[:, :expression_dim].mean() + lam * error[:, expression_dim:].mean()


def mirror_labels(labels: Tensor, feature_dim: int) -> Tensor:
    """Labels `(N, 25 + F)` of x-flipped images: the camera as EG3D (``c[[1, 2, 3, 4, 8]] *= −1``), neck and jaw
    axis-angles (x, y, z) -> (x, −y, −z); shape and expression unchanged [unverified: FLAME is not exactly symmetric]."""
    out = labels.clone()
    out[..., [1, 2, 3, 4, 8]] *= -1
    for start in (25 + feature_dim - 6, 25 + feature_dim - 3):
        out[..., start + 1 : start + 3] *= -1
    return out


@dataclass(frozen=True)
class DatasetFolder:
    """The labelled images of an FFHQ-style folder, everything but the pixels (:func:`read_dataset_folder`).

    Attributes:
        root: The folder.
        files: Image paths, in ``dataset.json`` order.
        labels: `(N, 25 + F)` float32 label rows, row i for ``files[i]``.
        masks: ``masks/<file>`` per image, None where absent (an all-ones mask).
    """

    root: Path
    files: tuple[Path, ...]
    labels: Tensor
    masks: tuple[Path | None, ...]


def _manifest_entries(manifest: Path) -> list[tuple[str, list[float]]]:
    """The ``[file, values]`` pairs of an EG3D ``dataset.json``."""
    layout = "EG3D layout: {'labels': [[file, [25 camera + 3DMM values]], ...]}"
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8")).get("labels") or []
        pairs = [(str(name), values) for name, values in entries]
    except (ValueError, AttributeError, TypeError) as error:
        raise InputError(f"data.root {manifest}: not readable ({error}; expected the {layout})") from None
    if not pairs:
        raise InputError(f"data.root {manifest}: no labelled images (expected the {layout})")
    return pairs


def read_dataset_folder(root: Path, label_dim: int) -> DatasetFolder:
    """Read and check the labels and file list of an FFHQ-style folder with ``dataset.json``; the images are read
    later, one per item (:class:`FolderImages`).

    Args:
        root (`Path`): the folder.
        label_dim (`int`): 25 + F values per label.

    Raises:
        InputError: No or a malformed ``dataset.json``, a label of another length, a listed file that is missing.
    """
    manifest = root / "dataset.json"
    if not manifest.is_file():
        raise InputError(f"data.root {root}: no dataset.json (EG3D layout: {{'labels': [[file, [values]], ...]}})")
    pairs = _manifest_entries(manifest)
    for name, values in pairs:
        if not isinstance(values, list) or len(values) != label_dim:
            length = len(values) if isinstance(values, list) else type(values).__name__
            raise InputError(
                f"data.root {manifest}: label of {name} has {length} values, expected {label_dim} "
                "(25 camera values: cam2world 16 + intrinsics 9, then the 3DMM values)"
            )
        if not (root / name).is_file():
            raise InputError(f"data.root {manifest}: lists {name}, which is not a file under {root}")
    try:
        labels = torch.tensor([values for _, values in pairs], dtype=torch.float32)
    except (TypeError, ValueError) as error:
        raise InputError(f"data.root {manifest}: label rows must hold numbers ({error})") from None
    masks = tuple(root / "masks" / name if (root / "masks" / name).is_file() else None for name, _ in pairs)
    return DatasetFolder(root, tuple(root / name for name, _ in pairs), labels, masks)


class FolderImages(Dataset):
    """The items of a :class:`DatasetFolder`, each image (and mask) read from disk when the item is asked for.

    Args:
        folder (`DatasetFolder`): from :func:`read_dataset_folder`.
        resolution (`int`): image side R (resize the shorter side, centre-crop).
        mask_size (`int`): mask side r (the neural-rendering resolution).
    """

    def __init__(self, folder: DatasetFolder, resolution: int, mask_size: int) -> None:
        self.folder, self.resolution, self.mask_size = folder, resolution, mask_size

    def __len__(self) -> int:
        return len(self.folder.files)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """``{"image": (3, R, R) in [−1, 1], "c": (25 + F,), "mask": (1, r, r) in [0, 1]}``."""
        from genblocks.training.data import load_image

        r = self.mask_size
        mask_path = self.folder.masks[index]
        mask = torch.ones(1, r, r) if mask_path is None else (load_image(mask_path, (r, r))[:1] + 1) / 2
        image = load_image(self.folder.files[index], (self.resolution, self.resolution))
        return {"image": image, "c": self.folder.labels[index], "mask": mask}


class _TensorImages(Dataset):
    """Images `(N, 3, R, R)`, labels `(N, 25 + F)` and masks `(N, 1, r, r)` held in memory (the synthetic set)."""

    def __init__(self, images: Tensor, labels: Tensor, masks: Tensor) -> None:
        self.images, self.labels, self.masks = images, labels, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"image": self.images[index], "c": self.labels[index], "mask": self.masks[index]}


class MirroredImages(Dataset):
    """A labelled image set followed, when `mirror`, by its x-flipped copy: item ``N + i`` is item i with the image and
    mask flipped and the labels mirrored by :func:`mirror_labels`.

    Args:
        base (`Dataset`): items ``{"image", "c", "mask"}``.
        mirror (`bool`): add the mirrored copy.
        feature_dim (`int`): F, for :func:`mirror_labels`.
    """

    def __init__(self, base: Dataset, mirror: bool, feature_dim: int) -> None:
        self.base, self.mirror, self.feature_dim = base, mirror, feature_dim
        self.count = len(cast(Any, base))

    def __len__(self) -> int:
        return self.count * (2 if self.mirror else 1)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        sample = self.base[index % self.count]
        if index < self.count:
            return sample
        return {
            "image": sample["image"].flip(-1),
            "c": mirror_labels(sample["c"], self.feature_dim),
            "mask": sample["mask"].flip(-1),
        }


def synthetic_dataset(config: OmniAvatarConfig, count: int, seed: int = 123) -> tuple[Tensor, Tensor, Tensor]:
    """`count` images, labels and masks rendered by a seeded random generator at random cameras and 3DMM values."""
    pipeline = OmniAvatarPipeline.from_config(config, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    features = sample_head_params(count, config.flame.feature_dim, 0.5, 0.0, generator, 0.1)
    yaw = (torch.rand(count, generator=generator) * 2 - 1) * 0.3
    pitch = (torch.rand(count, generator=generator) * 2 - 1) * 0.1
    labels = pipeline.labels(pipeline.cameras(yaw, pitch), features)
    z = torch.randn(count, config.generator.z_dim, generator=generator)
    with torch.no_grad():
        ws = pipeline.generator.mapping(z, labels)
        out = pipeline.render(ws, labels, noise_mode="const")
    return out.images.clamp(-1, 1), labels, out.mask.clamp(0, 1)


class OmniAvatarDataModule(L.LightningDataModule):
    """Labelled images for Stage II (module docstring).

    Args:
        config (`OmniAvatarConfig`): ``data``, ``gan.batch_size``, sizes.
    """

    def __init__(self, config: OmniAvatarConfig) -> None:
        super().__init__()
        self.config = config
        self.dataset: MirroredImages | None = None

    def setup(self, stage: str) -> None:
        if self.dataset is not None:
            return
        c = self.config
        base: Dataset
        if c.data.root is None:
            base = _TensorImages(*synthetic_dataset(c, c.data.synthetic_size))
        else:
            folder = read_dataset_folder(Path(c.data.root), 25 + c.flame.feature_dim)
            base = FolderImages(folder, c.generator.img_resolution, c.generator.neural_rendering_resolution)
        self.dataset = MirroredImages(base, c.data.mirror, c.flame.feature_dim)

    def train_dataloader(self) -> DataLoader:
        if self.dataset is None:
            self.setup("fit")
        assert self.dataset is not None
        data = self.config.data
        return DataLoader(
            self.dataset,
            batch_size=self.config.gan.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=data.num_workers,
        )


class OmniAvatarGANModule(GANTrainingModule):
    """Stage II (module docstring).

    Args:
        config (`OmniAvatarConfig`): the whole config.
        generator (`OmniAvatarGenerator`, *optional*): defaults to a new one (W from ``train.sdf_checkpoint``).
        estimator (`ControlEstimator`, *optional*): E for ``ctrl_loss.estimator`` ``pretrained`` / ``trained``.
    """

    def __init__(
        self,
        config: OmniAvatarConfig,
        generator: OmniAvatarGenerator | None = None,
        estimator: ControlEstimator | None = None,
    ) -> None:
        g, layout, ctrl = config.gan, config.flame, config.ctrl_loss
        if generator is None:
            generator = OmniAvatarGenerator(config.generator, layout, config.igr)
            if config.train.sdf_checkpoint is not None and generator.semantic_sdf is not None:
                load_semantic_sdf(generator.semantic_sdf, config.train.sdf_checkpoint)
        discriminator = MaskDualDiscriminator(
            config.generator.img_resolution,
            c_dim=25,
            channel_base=g.d_channel_base,
            channel_max=g.d_channel_max,
            p_dim=layout.pose_dim if ctrl.estimator == "disc_head" else 0,
            mask_branch=g.d_mask_branch,
        )
        super().__init__(
            generator,
            discriminator,
            g_lr=g.g_lr,
            d_lr=g.d_lr,
            r1_gamma=g.r1_gamma,
            r1_interval=g.r1_interval,
            g_reg_interval=g.g_reg_interval,
            ema_kimg=g.ema_kimg,
            ema_rampup=g.ema_rampup,
            seed=config.train.seed,
        )
        self.config = config
        if ctrl.estimator != "disc_head":
            if estimator is None:
                estimator = ControlEstimator(layout.pose_dim, ctrl.estimator_channels)
                if ctrl.estimator == "pretrained":
                    if ctrl.estimator_path is None:
                        raise InputError("ctrl_loss.estimator_path: expected the estimator weights for 'pretrained'")
                    load_weights_file(estimator, ctrl.estimator_path, "ctrl_loss.estimator_path", ESTIMATOR_FILE)
            self.estimator: ControlEstimator | None = estimator.requires_grad_(False)
        else:
            self.estimator = None

    # ------------------------------------------------------------------ hooks of the shared loop
    def real_inputs(self, batch: Any) -> GeneratorOutput:
        image = batch["image"]
        r = self.config.generator.neural_rendering_resolution
        raw = F.interpolate(image, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
        return {"image": image, "image_raw": raw, "image_mask": batch["mask"]}

    def map_latents(self, z: Tensor, c: Tensor | None, update_emas: bool = False) -> Tensor:
        assert c is not None
        p = gpc_swap_probability(self.kimg, self.config.gan.gpc_prob, self.config.gan.gpc_fade_kimg)
        return self.generator.mapping(z, c, update_emas=update_emas, swap_probability=p, generator=self.rng)

    def generate(self, z: Tensor, c: Tensor | None, update_emas: bool = False) -> tuple[GeneratorOutput, Tensor]:
        ws = self.map_latents(z, c, update_emas)
        generator = cast(OmniAvatarGenerator, self.generator)
        return generator.synthesis(ws, cast(Tensor, c), return_extras=True), ws

    def discriminator_inputs(self, outputs: GeneratorOutput) -> GeneratorOutput:
        return {key: outputs[key] for key in ("image", "image_raw", "image_mask")}

    def _discriminate(self, images: GeneratorOutput, c: Tensor) -> tuple[Tensor, Tensor | None]:
        sigma = discriminator_blur_sigma(self.kimg, 10.0, self.config.gan.blur_fade_kimg)
        disc = cast(MaskDualDiscriminator, self.discriminator)
        return disc.discriminate(images["image"], images["image_raw"], images.get("image_mask"), c, sigma)

    def run_discriminator(self, images: GeneratorOutput, c: Tensor | None) -> Tensor:
        return self._discriminate(images, cast(Tensor, c))[0]

    def prior_weight(self) -> float:
        """The decayed geometry-prior weight at the current kimg."""
        p = self.config.prior_loss
        alpha = min(self.kimg / p.decay_kimg, 1.0) if p.decay_kimg > 0 else 1.0
        return p.weight + (p.final_weight - p.weight) * alpha

    def control_targets(self, c: Tensor) -> Tensor:
        """(β, θ) of labels: the last ``expression + 6`` values."""
        return c[:, -self.config.flame.pose_dim :]

    def estimate_controls(self, fake: GeneratorOutput, c: Tensor) -> Tensor:
        """(β̂, θ̂) `(N, pose_dim)` of generated images."""
        if self.estimator is not None:
            return self.estimator(fake["image"])
        params = self._discriminate(self.discriminator_inputs(fake), c)[1]
        assert params is not None
        return params

    def generator_loss(self, batch: GANBatch) -> Tensor:
        c = cast(Tensor, self.sample_c(batch, batch.size))
        fake, _ = self.generate(self.sample_z(batch.size), c)
        logits, params = self._discriminate(self.discriminator_inputs(fake), c)
        adversarial = generator_nonsaturating_loss(logits)
        ctrl = self.config.ctrl_loss
        estimate = self.estimator(fake["image"]) if self.estimator is not None else params
        assert estimate is not None
        control = control_loss(estimate, self.control_targets(c), self.config.flame.expression, ctrl.lam, ctrl.norm)
        prior = prior_loss(fake, self.config.prior_loss.kappa)
        loss = adversarial + ctrl.weight * control + self.prior_weight() * prior
        self.log("train/g_loss", adversarial.detach(), prog_bar=True, batch_size=batch.size)
        self.log("train/control_loss", control.detach(), batch_size=batch.size)
        self.log("train/prior_loss", prior.detach(), batch_size=batch.size)
        return loss

    def generator_regularization(self, batch: GANBatch) -> Tensor | None:
        weight = self.config.gan.density_reg
        if weight <= 0:
            return None
        c = cast(Tensor, self.sample_c(batch, batch.size))
        ws = self.map_latents(self.sample_z(batch.size), c)
        generator = cast(OmniAvatarGenerator, self.generator)
        penalty = generator.density_regularization(
            ws, num_points=256, extent=generator.config.box_warp / 2, field_condition=c[:, 25:], generator=self.rng
        )
        self.log("train/density_reg", penalty.detach(), batch_size=batch.size)
        return penalty * weight

    def discriminator_loss(self, batch: GANBatch) -> Tensor:
        c = cast(Tensor, self.sample_c(batch, batch.size))
        with torch.no_grad():
            fake, _ = self.generate(self.sample_z(batch.size), c, update_emas=True)
        fake_logits, _ = self._discriminate(self.discriminator_inputs(fake), c)
        real_logits, real_params = self._discriminate(batch.real, cast(Tensor, batch.c))
        loss = discriminator_logistic_loss(real_logits, fake_logits)
        if real_params is not None:
            ctrl = self.config.ctrl_loss
            targets = self.control_targets(cast(Tensor, batch.c))
            regression = control_loss(real_params, targets, self.config.flame.expression, ctrl.lam, ctrl.norm)
            self.log("train/d_control", regression.detach(), batch_size=batch.size)
            loss = loss + ctrl.weight * regression
        self.log("train/d_loss", loss.detach(), prog_bar=True, batch_size=batch.size)
        return loss

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """EG3D's Adam (the default, ``train.optimizer.name=adamw``), or ``train.optimizer`` by name (COAP, 8-bit
        AdamW) with the GAN learning rates and betas, lazily scaled like Adam's."""
        option = self.config.train.optimizer
        if option.name == "adamw":
            return super().configure_optimizers()
        from dataclasses import replace

        from genblocks.training.optim import build_optimizer

        optimizers = []
        for network, lr, interval in (
            (self.generator, self.hparams["g_lr"], self.hparams["g_reg_interval"]),
            (self.discriminator, self.hparams["d_lr"], self.hparams["r1_interval"]),
        ):
            ratio = 1.0 if interval is None else interval / (interval + 1)
            betas = tuple(beta**ratio for beta in self.hparams["betas"])
            optimizers.append(build_optimizer(network, replace(option, lr=lr * ratio, betas=betas)))
        return optimizers

    def on_fit_start(self) -> None:
        if self.config.ctrl_loss.estimator == "trained" and self.trainer.global_step == 0:
            self.fit_estimator(self.config.ctrl_loss.estimator_steps)

    def fit_estimator(self, steps: int, batch_size: int = 4) -> list[float]:
        """``trained``: fit E on images the generator makes at random 3DMM values (its own seeded draws)."""
        assert self.estimator is not None
        estimator = self.estimator.requires_grad_(True)
        optimizer = torch.optim.Adam(estimator.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(self.hparams["seed"] + 1)
        pipeline = OmniAvatarPipeline(cast(OmniAvatarGenerator, self.generator_ema), self.config)
        history = []
        for _ in range(steps):
            features = sample_head_params(batch_size, self.config.flame.feature_dim, 0.5, 0.0, generator, 0.1)
            labels = pipeline.labels(pipeline.cameras(torch.zeros(batch_size), torch.zeros(batch_size)), features)
            with torch.no_grad():
                z = torch.randn(batch_size, pipeline.generator.z_dim, generator=generator)
                images = pipeline.generator(z.to(self.device), labels.to(self.device))["image"]
            loss = F.mse_loss(estimator(images), self.control_targets(labels.to(self.device)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            history.append(float(loss.detach()))
        estimator.requires_grad_(False)
        return history


def save_generator(module: L.LightningModule, folder: Path) -> None:
    """``trained/``: a weights folder (``config.json`` + ``generator.safetensors``) of the EMA generator."""
    gan = cast(OmniAvatarGANModule, module)
    OmniAvatarPipeline(cast(OmniAvatarGenerator, gan.generator_ema), gan.config).save_pretrained(folder)
