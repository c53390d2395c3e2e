"""GANTrainingModule trained through genblocks.training.fit(): a tiny StyleGAN2 and a tiny EG3D, the four-step schedule
(lazy R1 / G-reg iterations, lazy gains, lr and beta scaling), EMA by formula, gradients to every parameter, bit-exact
kill and resume, and 2-process DDP against one process on the doubled batch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from genblocks.gan.dual_discriminator import DualDiscriminator
from genblocks.gan.eg3d import TINY_EG3D
from genblocks.gan.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from genblocks.gan.triplane import TriPlaneGenerator
from genblocks.render3d.cameras import LookAtCameraSampler
from genblocks.testing.resume import assert_kill_resume_exact
from genblocks.training import GANBatch, GANTrainingModule, TrainConfig, fit

THIS_FILE = Path(__file__).resolve()


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Faces(Dataset):
    """8 fixed random images in [-1, 1] with labels (5-d, or 25-d cameras for EG3D)."""

    def __init__(self, size: int = 16, c_dim: int = 5) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.rand(8, 3, size, size, generator=generator) * 2 - 1
        if c_dim == 25:
            self.c = LookAtCameraSampler().sample_labels(8, yaw_std=0.3, generator=generator)
        else:
            self.c = torch.randn(8, c_dim, generator=generator)

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], "c": self.c[index]}


class FacesData(L.LightningDataModule):
    def __init__(self, batch_size: int = 2, size: int = 16, c_dim: int = 5) -> None:
        super().__init__()
        self.batch_size, self.size, self.c_dim = batch_size, size, c_dim

    def train_dataloader(self) -> DataLoader:
        return DataLoader(Faces(self.size, self.c_dim), batch_size=self.batch_size, shuffle=True)


def tiny_stylegan2(noise: bool = True, mbstd_group_size: int = 4) -> tuple[StyleGAN2Generator, StyleGAN2Discriminator]:
    """A 16-px StyleGAN2 with 5-d labels: w 32, 2 mapping layers, at most 16 channels."""
    torch.manual_seed(0)
    generator = StyleGAN2Generator(
        z_dim=32, c_dim=5, w_dim=32, img_resolution=16, mapping_layers=2, channel_base=64, channel_max=16,
        use_noise=noise,
    )  # fmt: skip
    discriminator = StyleGAN2Discriminator(
        img_resolution=16,
        c_dim=5,
        channel_base=64,
        channel_max=16,
        mapping_layers=2,
        mbstd_group_size=mbstd_group_size,
    )
    return generator, discriminator


def train_config(max_steps: int, checkpoint_every: int | None = None, **changes: Any) -> TrainConfig:
    return TrainConfig(
        max_steps=max_steps,
        checkpoint_every_n_steps=checkpoint_every or max_steps,
        log_every_n_steps=4,
        accelerator="cpu",
        progress_bar=False,
        **changes,
    )


class Recorder(L.Callback):
    """Per optimizer step: the names of the stepping optimizer's parameters holding a gradient; per iteration: the
    generator and EMA parameters."""

    def __init__(self) -> None:
        self.with_grad: list[set[str]] = []
        self.generator: list[dict[str, torch.Tensor]] = []
        self.ema: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer: L.Trainer, module: Any, optimizer: Any) -> None:
        names = {id(p): name for name, p in module.named_parameters()}
        params = [p for group in optimizer.param_groups for p in group["params"]]
        self.with_grad.append({names[id(p)] for p in params if p.grad is not None})

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, *args: Any) -> None:
        self.generator.append({k: v.detach().clone() for k, v in module.generator.named_parameters()})
        self.ema.append({k: v.detach().clone() for k, v in module.generator_ema.named_parameters()})


class Spy(GANTrainingModule):
    """Records the iteration of each regulariser call and the ratio (loss back-propagated / regulariser) after it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, int]] = []
        self.gains: list[float] = []
        self._pending: float | None = None

    def _record(self, name: str, loss: torch.Tensor | None) -> torch.Tensor | None:
        self.calls.append((name, self.iteration))
        self._pending = None if loss is None else float(loss.detach())
        return loss

    def generator_regularization(self, batch: GANBatch) -> torch.Tensor | None:
        return self._record("G_reg", super().generator_regularization(batch))

    def discriminator_regularization(self, batch: GANBatch) -> torch.Tensor | None:
        return self._record("D_reg", super().discriminator_regularization(batch))

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        if self._pending is not None:
            self.gains.append(float(loss.detach()) / self._pending)
            self._pending = None
        super().manual_backward(loss, *args, **kwargs)


def test_stylegan2_through_fit_runs_the_four_step_schedule(tmp_path: Path) -> None:
    generator, discriminator = tiny_stylegan2()
    g0 = {k: v.detach().clone() for k, v in generator.named_parameters()}
    module = Spy(
        generator, discriminator, r1_interval=3, g_reg_interval=2, pl_weight=2.0, style_mixing_prob=0.5, ema_kimg=0.01
    )
    recorder = Recorder()
    result = fit(module, FacesData(), train_config(20), tmp_path / "run", callbacks=[recorder])

    # 5 iterations x 4 optimizer steps; G-reg on iterations 0, 2, 4; R1 on 0, 3; each reg loss back-propagated x interval
    assert result.global_step == 20 and len(recorder.with_grad) == 20 and module.iteration == 4
    assert module.calls == [("G_reg", 0), ("D_reg", 0), ("G_reg", 2), ("D_reg", 3), ("G_reg", 4)]
    assert module.gains == pytest.approx([2, 3, 2, 3, 2])
    g_names = {f"generator.{k}" for k in g0}
    d_names = {f"discriminator.{k}" for k, _ in discriminator.named_parameters()}
    for i in range(5):
        g_main, g_reg, d_main, d_reg = recorder.with_grad[4 * i : 4 * i + 4]
        assert g_main == g_names and d_main == d_names  # every parameter gets a gradient in its main phase
        assert bool(g_reg) == (i % 2 == 0) and g_reg <= g_names  # outside the interval: a step without gradients
        assert bool(d_reg) == (i % 3 == 0) and d_reg <= d_names
    # R1 reaches every D parameter but the logit bias; path length every G parameter but the constant RGB biases
    assert recorder.with_grad[3] == d_names - {"discriminator.b4.out.bias"}
    assert recorder.with_grad[1] == g_names - {f"generator.synthesis.b{r}.torgb.bias" for r in (4, 8, 16)}
    checkpoint = torch.load(result.last_checkpoint, weights_only=True)
    g_state, d_state = checkpoint["optimizer_states"]
    assert [int(s["step"]) for s in (g_state["state"][0], d_state["state"][0])] == [5 + 3, 5 + 2]  # no-ops skipped
    assert g_state["param_groups"][0]["lr"] == pytest.approx(0.0025 * 2 / 3)  # lazy scaling: lr·k/(k+1)
    assert d_state["param_groups"][0]["lr"] == pytest.approx(0.002 * 3 / 4)
    assert d_state["param_groups"][0]["betas"] == pytest.approx((0.0, 0.99**0.75))
    assert float(module.pl_mean) > 0 and torch.equal(checkpoint["state_dict"]["pl_mean"], module.pl_mean)

    # EMA: beta = 0.5 ** (batch / (1000 · ema_kimg)) = 0.5 ** 0.2; p_ema <- p.lerp(p_ema, beta), bit for bit
    beta = 0.5 ** (2 / 10)
    assert module.ema_beta(2) == pytest.approx(beta)
    previous = g0
    for params, ema in zip(recorder.generator, recorder.ema, strict=True):
        for name, value in ema.items():
            assert torch.equal(value, params[name].lerp(previous[name], beta)), name
        previous = ema
    assert torch.equal(module.generator_ema.mapping.w_avg, generator.mapping.w_avg)  # buffers are copied


def test_eg3d_through_fit_feeds_image_pairs_and_cameras(tmp_path: Path) -> None:
    """Tiny EG3D (TriPlaneGenerator + DualDiscriminator, 25-d cameras), density regularisation as the G-reg hook."""

    class EG3D(Spy):
        def generator_regularization(self, batch: GANBatch) -> torch.Tensor:
            ws = self.map_latents(self.sample_z(batch.size), self.sample_c(batch, batch.size))
            return self._record("G_reg", 0.25 * self.generator.density_regularization(ws, num_points=64))

        def sample_c(self, batch: GANBatch, rows: int) -> torch.Tensor | None:
            c = super().sample_c(batch, rows)
            assert all(any(torch.equal(row, real) for real in batch.c_pool) for row in c)  # rows of the real cameras
            return c

    torch.manual_seed(0)
    generator = TriPlaneGenerator(**TINY_EG3D)
    discriminator = DualDiscriminator(32, c_dim=25, channel_base=256, channel_max=32, mapping_layers=2)
    shapes: list[tuple[int, ...]] = []
    discriminator.register_forward_pre_hook(lambda _, args: shapes.append(tuple(args[1].shape)))
    module = EG3D(generator, discriminator, r1_interval=2, g_reg_interval=2)
    recorder = Recorder()
    fit(module, FacesData(size=32, c_dim=25), train_config(8), tmp_path / "run", callbacks=[recorder])

    assert module.calls == [("G_reg", 0), ("D_reg", 0)] and module.gains == pytest.approx([2, 2])
    assert set(shapes) == {(2, 3, 16, 16)}  # image_raw of reals (resized) and fakes (rendered) at 16 px
    assert len(shapes) == 2 * (1 + 2) + 1  # per iteration G-main 1, D-main 2; R1 once (on image and image_raw)
    names = {f"generator.{k}" for k, _ in generator.named_parameters()}
    assert recorder.with_grad[0] == names and recorder.with_grad[4] == names
    assert recorder.with_grad[2] == {f"discriminator.{k}" for k, _ in discriminator.named_parameters()}
    assert recorder.with_grad[1] and not recorder.with_grad[5]  # density regularisation on iteration 0 only
    sample = module.sample(torch.randn(2, 32), Faces(32, 25).c[:2])
    assert sample["image"].shape == (2, 3, 32, 32) and sample["image_raw"].shape == (2, 3, 16, 16)


def build(out_dir: Path) -> dict[str, Any]:
    """fit() arguments of the kill/resume test: 5 iterations (20 steps), checkpoints at 8, 16 and 20."""
    generator, discriminator = tiny_stylegan2()
    module = GANTrainingModule(
        generator,
        discriminator,
        r1_interval=2,
        g_reg_interval=3,
        pl_weight=2.0,
        style_mixing_prob=0.9,
        ema_kimg=0.01,
        ema_rampup=0.05,
        seed=7,
    )
    return {"module": module, "datamodule": FacesData(), "train_config": train_config(20, checkpoint_every=8, seed=3)}


def test_kill_after_a_checkpoint_then_resume_is_bit_exact(tmp_path: Path) -> None:
    # Killed after step 8 (iteration 2 of 5), resumed: G, D, G_ema, pl_mean and the draw generator all equal.
    result = assert_kill_resume_exact(f"{THIS_FILE}:build", tmp_path, kill_after=8)
    straight, resumed = result["uninterrupted"], result["resumed"]
    assert torch.equal(straight.rng.get_state(), resumed.rng.get_state())
    assert float(resumed.pl_mean) > 0
    fresh = build(tmp_path)["module"].generator_ema.state_dict()
    assert all(not torch.equal(fresh[k], v) for k, v in resumed.generator_ema.named_parameters())  # it trained


def build_ddp(out_dir: Path, devices: int) -> dict[str, Any]:
    """8 images; 2 processes x batch 2 or 1 process x batch 4; 4 iterations with R1, path length and style mixing.

    Noise inputs are off and the minibatch-std group is 1: both draw or mix across a rank's own batch only, which no
    global-batch draw can reproduce (upstream computes them per GPU as well).
    """
    generator, discriminator = tiny_stylegan2(noise=False, mbstd_group_size=1)
    module = GANTrainingModule(
        generator, discriminator, r1_interval=2, g_reg_interval=3, pl_weight=2.0, style_mixing_prob=0.5, seed=5
    )
    strategy = "ddp_find_unused_parameters_true" if devices > 1 else "auto"
    config = train_config(16, devices=devices, strategy=strategy)
    return {"module": module, "datamodule": FacesData(batch_size=4 // devices), "train_config": config}


_DDP_SCRIPT = """
import os
import sys
from pathlib import Path

import torch

from genblocks.testing.resume import load_builder
from genblocks.training import fit

if __name__ == "__main__":
    torch.set_num_threads(1)
    out = Path(sys.argv[2])
    arguments = load_builder(sys.argv[1])(out, 2)
    fit(out_dir=out, **arguments)
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        torch.save(arguments["module"].state_dict(), out.parent / "ddp-state.pt")
"""


@pytest.mark.distributed
def test_ddp_on_two_processes_matches_one_process_on_the_doubled_batch(tmp_path: Path) -> None:
    script = tmp_path / "ddp_gan.py"
    script.write_text(textwrap.dedent(_DDP_SCRIPT))
    command = [sys.executable, str(script), f"{THIS_FILE}:build_ddp", str(tmp_path / "ddp")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    arguments = build_ddp(tmp_path / "single", 1)
    initial = {k: v.clone() for k, v in arguments["module"].state_dict().items()}
    fit(out_dir=tmp_path / "single", **arguments)
    single = arguments["module"].state_dict()
    ddp = torch.load(tmp_path / "ddp-state.pt", weights_only=True)
    # mapping.w_avg tracks each rank's own fakes (rank 0's survives, as upstream); everything else must agree
    compared = [k for k in single if not k.endswith(("w_avg", "pl_mean"))]
    moved = max((single[k] - initial[k]).abs().max().item() for k in compared)
    worst = max((ddp[k] - single[k]).abs().max().item() for k in compared)
    # Same reals, latents, labels, mixing cut-offs, path-length noise and mean; only all-reduce sums round differently
    # (Adam with beta1 = 0 divides tiny gradients by their own size, so rounding can grow to ~1e-5 in 4 iterations).
    assert moved > 5e-3 and worst < 5e-5, (moved, worst)
    assert float(single["pl_mean"]) > 0 and abs(float(ddp["pl_mean"] - single["pl_mean"])) < 1e-6


def test_bad_arguments_raise() -> None:
    generator, discriminator = tiny_stylegan2()
    with pytest.raises(ValueError, match="z_dim"):
        GANTrainingModule(torch.nn.Linear(2, 2), discriminator)
    with pytest.raises(ValueError, match="r1_interval"):
        GANTrainingModule(generator, discriminator, r1_interval=0)
    with pytest.raises(ValueError, match="betas"):
        GANTrainingModule(generator, discriminator, betas=(0.0, 1.0))
    assert [GANTrainingModule(generator, discriminator).phase_gain("D_reg", i) for i in (0, 1, 16, 17)] == [
        16,
        0,
        16,
        0,
    ]
