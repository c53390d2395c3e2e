"""GANTrainingModule on tiny seeded nets: G and D steps, EMA formula, lazy intervals, dict outputs, exact resume."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from genblocks.gan.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from genblocks.training.gan_module import GANTrainingModule


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _TinyGenerator(nn.Module):
    """z (N, 8) -> image (N, 3, 8, 8); adds a little global-RNG noise like StyleGAN2's noise inputs."""

    z_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3 * 8 * 8)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        image = torch.tanh(self.fc(z)).view(-1, 3, 8, 8)
        return image + 0.01 * torch.randn_like(image)


class _TinyDiscriminator(nn.Module):
    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, 2, 1)
        self.fc = nn.Linear(4 * 4 * 4, 1)

    def forward(self, images: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        return self.fc(F.leaky_relu(self.conv(images), 0.2).flatten(1))


class _DictGenerator(_TinyGenerator):
    """EG3D-like output: final image, low-resolution raw image and a depth map the discriminator must not see."""

    def forward(self, z: torch.Tensor, c: torch.Tensor | None) -> dict[str, torch.Tensor]:
        image = super().forward(z, c)
        return {"image": image, "image_raw": F.avg_pool2d(image, 2), "image_depth": image[:, :1]}


class _DualDiscriminator(_TinyDiscriminator):
    def __init__(self) -> None:
        super().__init__(in_channels=6)
        self.calls = 0

    def forward(self, image: torch.Tensor, image_raw: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        self.calls += 1  # the signature rejects image_depth: only discriminator_keys arrive
        raw = F.interpolate(image_raw, size=image.shape[-2:], mode="bilinear")
        return super().forward(torch.cat([image, raw], dim=1), c)


class _Images(Dataset):
    """Four fixed images (and labels): every batch is the same, whatever the data order, so resume compares fairly."""

    def __init__(self, size: int, labels: bool = False) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(4, 3, size, size, generator=g) * 2 - 1
        self.labels = torch.randn(4, 5, generator=g) if labels else None

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {"image": self.images[index % 2]}
        if self.labels is not None:
            item["c"] = self.labels[index % 2]
        return item


def _loader(size: int = 8, labels: bool = False) -> DataLoader:
    return DataLoader(_Images(size, labels), batch_size=2, shuffle=False)


def _trainer(max_steps: int, callbacks: list[Any] | None = None) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )


def _stylegan(seed: int = 0, c_dim: int = 0) -> tuple[StyleGAN2Generator, StyleGAN2Discriminator]:
    """Spec §9 tiny StyleGAN2: 32 px, w 32, 2 mapping layers (narrow channels)."""
    torch.manual_seed(seed)
    generator = StyleGAN2Generator(
        z_dim=32, c_dim=c_dim, w_dim=32, img_resolution=32, mapping_layers=2, channel_base=128, channel_max=16
    )
    discriminator = StyleGAN2Discriminator(img_resolution=32, c_dim=c_dim, channel_base=128, channel_max=16)
    return generator, discriminator


class _Snapshots(L.Callback):
    """Generator and EMA parameters after every iteration."""

    def __init__(self) -> None:
        self.generator: list[dict[str, torch.Tensor]] = []
        self.ema: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.generator.append({k: v.detach().clone() for k, v in pl_module.generator.named_parameters()})
        self.ema.append({k: v.detach().clone() for k, v in pl_module.generator_ema.named_parameters()})


def test_stylegan2_steps_change_both_nets_and_ema_follows_beta() -> None:
    generator, discriminator = _stylegan(c_dim=5)
    module = GANTrainingModule(
        generator, discriminator, r1_gamma=1.0, r1_interval=2, g_reg_interval=2, pl_weight=2.0, style_mixing_prob=0.5
    )
    g0 = {k: v.detach().clone() for k, v in generator.named_parameters()}
    d0 = {k: v.detach().clone() for k, v in discriminator.named_parameters()}
    snapshots = _Snapshots()
    trainer = _trainer(module.optimizer_steps(3), [snapshots])
    trainer.fit(module, _loader(32, labels=True))

    assert module.iteration == 3 and module.images_seen == 6
    assert trainer.global_step == module.optimizer_steps(3) == 3 * 2 + 2 + 2
    for name in ("g_main_loss", "d_main_loss", "g_reg_loss", "d_reg_loss", "pl_penalty", "r1_penalty"):
        assert torch.isfinite(trainer.callback_metrics[f"train/{name}"]), name
    assert all(not torch.equal(g0[k], v) for k, v in generator.named_parameters() if k.startswith("synthesis"))
    assert any(not torch.equal(g0[k], v) for k, v in generator.named_parameters() if k.startswith("mapping"))
    assert all(not torch.equal(d0[k], v) for k, v in discriminator.named_parameters())
    assert float(module.path_length.pl_mean) > 0

    beta = 0.5 ** (2 / (2 * 10 / 32 * 1000))  # ema_kimg = batch * 10 / 32
    assert module.last_ema_beta == pytest.approx(beta)
    previous = g0  # the EMA starts as a copy of the initial generator
    for params, ema in zip(snapshots.generator, snapshots.ema):
        for name, value in ema.items():
            torch.testing.assert_close(value, params[name] + beta * (previous[name] - params[name]))
        previous = ema
    differs = [not torch.equal(snapshots.ema[-1][k], v) for k, v in snapshots.generator[-1].items()]
    assert any(differs)
    for name, buffer in module.generator_ema.named_buffers():  # w_avg and noise buffers are copied
        assert torch.equal(buffer, dict(generator.named_buffers())[name]), name


class _Spy(GANTrainingModule):
    """Records the iteration of every regularisation call and the (backward loss / regulariser) ratio that follows."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.r1_iterations: list[int] = []
        self.greg_iterations: list[int] = []
        self.r1_inputs: list[int] = []
        self.gains: list[tuple[str, float]] = []
        self._pending: tuple[str, float] | None = None

    @property
    def generator_regularization_active(self) -> bool:
        return True

    def generator_regularization(
        self, batch: Any, real_c: torch.Tensor | None, batch_size: int
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        self.greg_iterations.append(self.iteration)
        loss = sum(p.square().sum() for p in self.generator.parameters()) * 1e-3
        self._pending = ("g", float(loss.detach()))
        return loss, {}

    def r1_regularization(self, real_logits: torch.Tensor, real_tensors: list[torch.Tensor]) -> torch.Tensor:
        self.r1_iterations.append(self.iteration)
        self.r1_inputs.append(len(real_tensors))
        penalty = super().r1_regularization(real_logits, real_tensors)
        self._pending = ("d", float(penalty.detach()) * self.r1_gamma / 2)
        return penalty

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        if self._pending is not None:
            self.gains.append((self._pending[0], float(loss.detach()) / self._pending[1]))
            self._pending = None
        super().manual_backward(loss, *args, **kwargs)


def test_lazy_regularisation_runs_exactly_on_interval_multiples() -> None:
    torch.manual_seed(0)
    module = _Spy(_TinyGenerator(), _TinyDiscriminator(), r1_gamma=4.0, r1_interval=3, g_reg_interval=2)
    trainer = _trainer(module.optimizer_steps(7))
    trainer.fit(module, _loader())
    assert module.iteration == 7
    assert module.r1_iterations == [0, 3, 6]
    assert module.greg_iterations == [0, 2, 4, 6]
    assert trainer.global_step == 7 * 2 + 3 + 4
    g_opt, d_opt = trainer.optimizers
    assert int(g_opt.state[g_opt.param_groups[0]["params"][0]]["step"]) == 7 + 4
    assert int(d_opt.state[d_opt.param_groups[0]["params"][0]]["step"]) == 7 + 3
    # reg phases back-propagate interval x loss (upstream's lazy gain): G-reg x 2, D-reg x 3
    assert [name for name, _ in module.gains] == ["g", "d", "g", "d", "g", "g", "d"]  # iterations 0, 0, 2, 3, 4, 6, 6
    assert [gain for _, gain in module.gains] == pytest.approx([2, 3, 2, 3, 2, 2, 3])
    # lazy scaling: lr * k/(k+1), beta ** (k/(k+1))
    assert g_opt.param_groups[0]["lr"] == pytest.approx(0.0025 * 2 / 3)
    assert d_opt.param_groups[0]["lr"] == pytest.approx(0.002 * 3 / 4)
    assert d_opt.param_groups[0]["betas"] == pytest.approx((0.0, 0.99**0.75))
    plain = GANTrainingModule(_TinyGenerator(), _TinyDiscriminator(), lazy_reg_scaling=False).configure_optimizers()
    assert plain[1].param_groups[0]["lr"] == 0.002 and plain[1].param_groups[0]["betas"] == (0.0, 0.99)
    merged = GANTrainingModule(_TinyGenerator(), _TinyDiscriminator(), r1_interval=None)
    assert merged.optimizer_steps(5) == 10 and merged.configure_optimizers()[1].param_groups[0]["lr"] == 0.002


def test_dict_outputs_feed_both_images_to_d_and_r1() -> None:
    torch.manual_seed(0)
    discriminator = _DualDiscriminator()

    class _EG3DLike(_Spy):
        def real_inputs(self, batch: Any) -> dict[str, torch.Tensor]:
            image = batch["image"]
            return {"image": image, "image_raw": F.avg_pool2d(image, 2)}

    module = _EG3DLike(_DictGenerator(), discriminator, r1_interval=2, g_reg_interval=4)
    d_before = [p.detach().clone() for p in discriminator.parameters()]
    trainer = _trainer(module.optimizer_steps(3))
    trainer.fit(module, _loader(labels=True))
    assert module.r1_iterations == [0, 2] and module.r1_inputs == [2, 2]
    assert discriminator.calls == 3 * 3 + 2  # per iteration: G-main 1, D-main 2 (real, fake); D-reg 1
    assert all(not torch.equal(a, b) for a, b in zip(d_before, discriminator.parameters()))
    sample = module.sample(torch.randn(2, 8), torch.randn(2, 5))
    assert isinstance(sample, dict) and sample["image"].shape == (2, 3, 8, 8)


def test_eg3d_generator_and_dual_discriminator_plug_in() -> None:
    """Spec §9 tiny EG3D; the only override is the real (image, image_raw) pair."""
    from genblocks.gan.dual_discriminator import DualDiscriminator
    from genblocks.gan.triplane import TriPlaneGenerator
    from genblocks.render3d.cameras import LookAtCameraSampler

    class _EG3D(_Spy):
        def real_inputs(self, batch: Any) -> dict[str, torch.Tensor]:
            image = batch["image"]
            return {"image": image, "image_raw": F.interpolate(image, size=(16, 16), mode="area")}

    torch.manual_seed(0)
    generator = TriPlaneGenerator(
        z_dim=32,
        w_dim=32,
        img_resolution=32,
        backbone_resolution=32,
        plane_channels=8,
        channel_base=256,
        channel_max=32,
        decoder_hidden_features=16,
        decoder_output_features=8,
        num_samples=8,
        num_importance=8,
        neural_rendering_resolution=16,
        superresolution="hybrid2x",
        sr_channels=(16, 8),
        plane_projection="xy_yz_xz",
    )
    discriminator = DualDiscriminator(32, c_dim=25, channel_base=256, channel_max=32, mapping_layers=2)
    cameras = LookAtCameraSampler().sample_labels(2, yaw_std=0.3, generator=torch.Generator().manual_seed(0))
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    data = [{"image": images[i], "c": cameras[i]} for i in range(2)]
    module = _EG3D(generator, discriminator, r1_interval=2, g_reg_interval=4)
    g0 = {k: v.detach().clone() for k, v in generator.named_parameters()}
    trainer = _trainer(module.optimizer_steps(2))
    trainer.fit(module, DataLoader(data, batch_size=2))
    assert module.r1_iterations == [0] and module.r1_inputs == [2]  # R1 on image and image_raw
    assert module.greg_iterations == [0]  # e.g. the density regulariser would go here
    for name in ("g_adv", "d_adv", "r1_penalty"):
        assert torch.isfinite(trainer.callback_metrics[f"train/{name}"]), name
    changed = [not torch.equal(g0[k], v) for k, v in generator.named_parameters()]
    assert sum(changed) > len(changed) // 2


def test_labels_are_drawn_from_the_batch() -> None:
    module = GANTrainingModule(_TinyGenerator(), _TinyDiscriminator())
    real_c = torch.arange(6.0).view(3, 2)
    drawn = module.sample_c(real_c, 7)
    assert drawn.shape == (7, 2)
    assert all(any(torch.equal(row, r) for r in real_c) for row in drawn)
    assert module.sample_c(None, 3) is None


def _resume_module() -> GANTrainingModule:
    generator, discriminator = _stylegan(seed=3)
    return GANTrainingModule(
        generator,
        discriminator,
        r1_interval=2,
        g_reg_interval=3,
        pl_weight=2.0,
        style_mixing_prob=0.9,
        ema_rampup=0.05,
        seed=7,
    )


def _optimizer_states(trainer: L.Trainer) -> list[dict[str, Any]]:
    return [copy.deepcopy(opt.state_dict()) for opt in trainer.optimizers]


def _assert_same_state(a: Any, b: Any, path: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_same_state(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def test_resume_is_exact(tmp_path: Path) -> None:
    full = _resume_module()
    full_trainer = _trainer(full.optimizer_steps(5))
    full_trainer.fit(full, _loader(32))

    first = _resume_module()
    first_trainer = _trainer(first.optimizer_steps(2))
    first_trainer.fit(first, _loader(32))
    checkpoint = tmp_path / "gan.ckpt"
    first_trainer.save_checkpoint(checkpoint)
    state = torch.load(checkpoint, weights_only=True)  # loads without unpickling code
    assert state["genblocks_gan_state"]["iteration"] == 2

    resumed = _resume_module()
    resumed_trainer = _trainer(resumed.optimizer_steps(5))
    resumed_trainer.fit(resumed, _loader(32), ckpt_path=checkpoint)

    assert resumed.iteration == full.iteration == 5 and resumed.images_seen == full.images_seen == 10
    fresh = dict(_resume_module().generator_ema.named_parameters())
    assert all(not torch.equal(fresh[k], v) for k, v in full.generator_ema.named_parameters())  # it trained
    for name, value in full.state_dict().items():  # generator, discriminator, generator_ema, pl_mean
        assert torch.equal(value, resumed.state_dict()[name]), name
    _assert_same_state(_optimizer_states(full_trainer), _optimizer_states(resumed_trainer))
    assert torch.equal(full.generator_rng.get_state(), resumed.generator_rng.get_state())


def test_validation_does_not_perturb_training() -> None:
    plain, validated = _resume_module(), _resume_module()
    _trainer(plain.optimizer_steps(2)).fit(plain, _loader(32))
    trainer = _trainer(validated.optimizer_steps(2))
    trainer.fit(validated, _loader(32), _loader(32))
    assert torch.isfinite(trainer.callback_metrics["val/d_fake_ema"])
    for name, value in plain.state_dict().items():
        assert torch.equal(value, validated.state_dict()[name]), name


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="ws"):
        GANTrainingModule(_TinyGenerator(), _TinyDiscriminator(), pl_weight=1.0)
    with pytest.raises(ValueError, match="z_dim"):
        GANTrainingModule(nn.Linear(2, 2), _TinyDiscriminator())
    with pytest.raises(ValueError, match="r1_interval"):
        GANTrainingModule(_TinyGenerator(), _TinyDiscriminator(), r1_interval=0)
    with pytest.raises(ValueError, match="betas"):
        GANTrainingModule(_TinyGenerator(), _TinyDiscriminator(), betas=(0.0, 1.0))
    with pytest.raises(ValueError, match="image"):
        GANTrainingModule(_TinyGenerator(), _TinyDiscriminator()).real_inputs({"x": torch.zeros(1)})


_DDP_SCRIPT = """
import sys
import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from genblocks.gan.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from genblocks.training.gan_module import GANTrainingModule


class Module(GANTrainingModule):
    def real_inputs(self, batch):
        return batch[0]


if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.manual_seed(0)
    generator = StyleGAN2Generator(32, 0, 32, 16, mapping_layers=2, channel_base=64, channel_max=16)
    discriminator = StyleGAN2Discriminator(16, channel_base=64, channel_max=16)
    module = Module(generator, discriminator, r1_interval=2, g_reg_interval=2, pl_weight=2.0)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_find_unused_parameters_true",
                        max_steps=module.optimizer_steps(3), logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(module, DataLoader(TensorDataset(torch.rand(8, 3, 16, 16) * 2 - 1), batch_size=2))
    total = sum(p.double().sum().item() for p in module.parameters())
    trainer.save_checkpoint(f"{sys.argv[1]}/ddp.ckpt")  # a collective: every rank's generator state is gathered
    with open(f"{sys.argv[1]}/rank{trainer.global_rank}.txt", "w") as handle:
        handle.write(f"{module.iteration} {module.images_seen} {total!r}")
"""


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_two_cpu_processes(tmp_path: Path) -> None:
    """Lightning's manual-optimisation DDP syncs every backward pass; the module needs find_unused_parameters."""
    script = tmp_path / "ddp_gan.py"
    script.write_text(textwrap.dedent(_DDP_SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [(tmp_path / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert [r[:2] for r in reports] == [["3", "12"], ["3", "12"]]  # images_seen counts the global batch
    assert reports[0][2] == reports[1][2]  # different data and latents per rank, yet identical replicas
    states = torch.load(tmp_path / "ddp.ckpt", weights_only=True)["genblocks_gan_state"]["generator_states"]
    assert states.shape[0] == 2 and not torch.equal(states[0], states[1])
