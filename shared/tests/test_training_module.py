"""DiffusionTrainingModule on the tiny seeded UNet: targets, losses, dropout, EMA, exact resume, DDP."""

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

from genblocks.tiny import tiny_unet, tiny_vae
from genblocks.training import DiffusionTrainingModule, OptimizerConfig, weighted_mse


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """Intra-op threads fight over the 2 shared cores (a tiny-UNet step is ~10x slower with 2 busy threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch(bsz: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "latents": torch.randn(bsz, 4, 8, 8, generator=g),
        "encoder_hidden_states": torch.randn(bsz, 3, 32, generator=g),
    }


class _FixedData(Dataset):
    """Four copies of one sample: every batch is the same, whatever the data order."""

    def __init__(self) -> None:
        self.sample = {k: v[0] for k, v in _batch(1).items()}

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.sample


def _loader() -> DataLoader:
    return DataLoader(_FixedData(), batch_size=2, shuffle=False)


def _trainer(
    max_steps: int, tmp_path: Path | None = None, callbacks: list[Any] | None = None, precision: str = "32-true"
) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        precision=precision,
        devices=1,
        max_steps=max_steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=tmp_path is not None,
        default_root_dir=tmp_path,
        callbacks=callbacks,
    )


class _ZeroPredictor(DiffusionTrainingModule):
    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        return torch.zeros_like(noisy_latents) + 0.0 * self.unet.conv_in.bias.sum()


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_targets_match_formulas(prediction_type: str) -> None:
    module = _ZeroPredictor(tiny_unet(), prediction_type=prediction_type, seed=3)
    batch = _batch()
    state = module.generator.get_state()
    loss = module.compute_loss(batch)
    # replay the module's draws: timesteps then noise
    g = torch.Generator()
    g.set_state(state)
    t = torch.randint(0, 1000, (2,), generator=g)
    noise = torch.randn(2, 4, 8, 8, generator=g)
    x0 = batch["latents"]
    abar = module.noise_scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    target = {
        "epsilon": noise,
        "v_prediction": abar.sqrt() * noise - (1 - abar).sqrt() * x0,
        "sample": x0,
    }[prediction_type]
    torch.testing.assert_close(loss, target.pow(2).mean())
    torch.testing.assert_close(module.diffusion_target(x0, noise, t), target)


def test_vae_encoding_uses_module_generator() -> None:
    vae = tiny_vae()
    module = DiffusionTrainingModule(tiny_unet(), vae=vae, seed=2)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    state = module.generator.get_state()
    latents = module.encode_batch({"image": images})
    g = torch.Generator()
    g.set_state(state)
    posterior = vae.encode(images).latent_dist
    expected = (posterior.mean + posterior.std * torch.randn(2, 4, 8, 8, generator=g)) * vae.config.scaling_factor
    torch.testing.assert_close(latents, expected)
    assert not any(p.requires_grad for p in vae.parameters())
    assert not any(p is q for p in module.configure_optimizers().param_groups[0]["params"] for q in vae.parameters())


def test_bad_prediction_type() -> None:
    with pytest.raises(ValueError, match="prediction_type"):
        DiffusionTrainingModule(tiny_unet(), prediction_type="x0")  # type: ignore[arg-type]


def test_masked_and_region_weighted_mse_by_hand() -> None:
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    mask = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    se = (pred - target) ** 2
    kept = se.permute(0, 2, 3, 1)[mask[:, 0].bool()]  # (N_kept, 4)
    torch.testing.assert_close(weighted_mse(pred, target, mask), kept.mean())
    weights = 1.0 + 2.0 * mask
    expected = (se * weights).sum() / (weights.sum() * 4)
    torch.testing.assert_close(weighted_mse(pred, target, weights), expected)
    torch.testing.assert_close(weighted_mse(pred, target, weights[:, 0], reduction="mean"), (se * weights).mean())
    # a map at twice the latent resolution is area-downsampled
    big = mask.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(weighted_mse(pred, target, big), kept.mean())
    # through the module: a zero predictor's masked loss is the masked mean of the squared target
    module = _ZeroPredictor(tiny_unet(), prediction_type="sample")
    batch = {**_batch(), "loss_weight": mask}
    x0_kept = batch["latents"].pow(2).permute(0, 2, 3, 1)[mask[:, 0].bool()]
    torch.testing.assert_close(module.compute_loss(batch), x0_kept.mean())


def test_video_masks_at_full_resolution() -> None:
    g = torch.Generator().manual_seed(2)
    pred, target = torch.randn(2, 4, 3, 8, 8, generator=g), torch.randn(2, 4, 3, 8, 8, generator=g)
    mask = (torch.rand(2, 1, 3, 8, 8, generator=g) > 0.5).float()
    se = (pred - target) ** 2
    kept = se.permute(0, 2, 3, 4, 1)[mask[:, 0].bool()]  # (N_kept, 4): each frame masked by its own map
    torch.testing.assert_close(weighted_mse(pred, target, mask), kept.mean())
    # the masks at the image resolution (x2) are area-downsampled per frame, the frame axis kept
    big = mask.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
    torch.testing.assert_close(weighted_mse(pred, target, big), kept.mean())
    torch.testing.assert_close(weighted_mse(pred, target, big[:, 0]), kept.mean())
    with pytest.raises(ValueError, match=r"\(B, 1, F, H, W\)"):
        weighted_mse(pred, target, torch.ones(2, 8, 8))


def test_condition_dropout_rate_seeded_and_never_at_zero() -> None:
    n = 4000
    batch = {"ctx": torch.ones(n, 3, 2), "ref": torch.ones(n, 5), "prompt": ["a cat"] * n, "keep": torch.ones(n)}
    module = DiffusionTrainingModule(tiny_unet(), condition_dropout={"ctx": 0.3, "ref": 0.0, "prompt": 0.1}, seed=7)
    out = module.drop_conditions(batch)
    dropped = (out["ctx"].abs().sum(dim=(1, 2)) == 0).float()
    assert abs(dropped.mean().item() - 0.3) < 0.03  # ~4.4 sigma
    assert torch.all((out["ctx"] == 0) | (out["ctx"] == 1)) and torch.all(
        out["ctx"].amin((1, 2)) == out["ctx"].amax((1, 2))
    )
    assert torch.equal(out["ref"], batch["ref"])
    assert abs(sum(p == "" for p in out["prompt"]) / n - 0.1) < 0.02
    assert out["keep"] is batch["keep"] and torch.equal(batch["ctx"], torch.ones(n, 3, 2))
    again = DiffusionTrainingModule(tiny_unet(), condition_dropout={"ctx": 0.3, "ref": 0.0, "prompt": 0.1}, seed=7)
    assert torch.equal(again.drop_conditions(batch)["ctx"], out["ctx"])
    with pytest.raises(ValueError, match="'missing' is not in the batch"):
        DiffusionTrainingModule(tiny_unet(), condition_dropout={"missing": 0.5}).drop_conditions(batch)
    with pytest.raises(ValueError, match="probability"):
        DiffusionTrainingModule(tiny_unet(), condition_dropout={"ctx": 1.5})


def test_loss_falls_on_tiny_overfit() -> None:
    module = DiffusionTrainingModule(
        tiny_unet(), prediction_type="sample", optimizer=OptimizerConfig(lr=2e-3, weight_decay=0.0)
    )
    module.setup("fit")
    optimizer = module.configure_optimizers()
    batch = _batch()

    def eval_loss() -> float:
        state = module.generator.get_state()
        module.generator.manual_seed(123)
        with torch.no_grad():
            loss = torch.stack([module.compute_loss(batch) for _ in range(4)]).mean().item()
        module.generator.set_state(state)
        return loss

    before = eval_loss()
    for _ in range(30):
        loss = module.compute_loss(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = eval_loss()
    assert after < 0.5 * before, (before, after)


def test_only_trainable_params_and_gradient_checkpointing() -> None:
    unet = tiny_unet()
    unet.requires_grad_(False)
    unet.conv_out.requires_grad_(True)
    module = DiffusionTrainingModule(unet, gradient_checkpointing=True)
    assert unet.is_gradient_checkpointing
    optimizer = module.configure_optimizers()
    trained = [p for g in optimizer.param_groups for p in g["params"]]
    assert {id(p) for p in trained} == {id(p) for p in unet.conv_out.parameters()}


class _Snapshots(L.Callback):
    def __init__(self) -> None:
        self.params: list[list[torch.Tensor]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.params.append([p.detach().clone() for p in pl_module.trainable_parameters()])


def test_ema_follows_formula() -> None:
    unet = tiny_unet()
    unet.requires_grad_(False)
    unet.conv_out.requires_grad_(True)
    module = DiffusionTrainingModule(unet, ema_decay=0.2, optimizer=OptimizerConfig(lr=1e-2))
    snapshots = _Snapshots()
    _trainer(3, callbacks=[snapshots], precision="bf16-mixed").fit(module, _loader())
    assert len(snapshots.params) == 3
    ema = [p.clone() for p in snapshots.params[0]]  # step 1: decay 0 -> a copy
    for step in (2, 3):
        n = step - 1
        decay = min(0.2, (1 + n) / (10 + n))
        ema = [decay * e + (1 - decay) * p for e, p in zip(ema, snapshots.params[step - 1])]
    assert len(module.ema.shadow_params) == 2
    for expected, shadow in zip(ema, module.ema.shadow_params):
        torch.testing.assert_close(shadow, expected)
    with module.ema_weights():
        torch.testing.assert_close(unet.conv_out.weight, ema[0])
    assert torch.equal(unet.conv_out.weight, snapshots.params[-1][0])


def test_validation_does_not_perturb_training_draws() -> None:
    plain, validated = _resume_module(), _resume_module()
    _trainer(2).fit(plain, _loader())
    trainer = _trainer(2)
    trainer.fit(validated, _loader(), _loader())
    assert trainer.callback_metrics["val/loss"] > 0
    for a, b in zip(plain.parameters(), validated.parameters()):
        assert torch.equal(a, b)


def _resume_module() -> DiffusionTrainingModule:
    return DiffusionTrainingModule(
        tiny_unet(),
        prediction_type="v_prediction",
        condition_dropout={"encoder_hidden_states": 0.5},
        ema_decay=0.9,
        optimizer=OptimizerConfig(lr=1e-3),
        seed=11,
    )


def test_resume_is_exact(tmp_path: Path) -> None:
    full = _resume_module()
    _trainer(4).fit(full, _loader())

    first = _resume_module()
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    _trainer(2, tmp_path, [checkpoint]).fit(first, _loader())
    last = tmp_path / "last.ckpt"
    assert last.is_file()
    resumed = _resume_module()
    _trainer(4, tmp_path, [L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)]).fit(
        resumed, _loader(), ckpt_path=last
    )
    assert not torch.equal(full.unet.conv_out.weight, tiny_unet().conv_out.weight)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(full.ema.shadow_params, resumed.ema.shadow_params):
        assert torch.equal(a, b)
    assert torch.equal(full.generator.get_state(), resumed.generator.get_state())
    # the checkpoint loads without unpickling code
    state = torch.load(last, weights_only=True)
    assert "genblocks_ema" in state and state["genblocks_generator_states"].shape[0] == 1


_DDP_SCRIPT = """
import os
import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from genblocks.tiny import tiny_unet
from genblocks.training import DiffusionTrainingModule, TrainConfig, fit


class Pairs(Dataset):
    def __init__(self):
        generator = torch.Generator().manual_seed(1)
        self.latents = torch.randn(12, 4, 8, 8, generator=generator)
        self.context = torch.randn(12, 3, 32, generator=generator)

    def __len__(self):
        return 12

    def __getitem__(self, index):
        return {"latents": self.latents[index], "encoder_hidden_states": self.context[index]}


class Data(L.LightningDataModule):
    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(Pairs(), batch_size=self.batch_size)


if __name__ == "__main__":
    out, devices, batch = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    L.seed_everything(0, verbose=False)
    module = DiffusionTrainingModule(tiny_unet(), condition_dropout={"encoder_hidden_states": 0.3}, seed=5)
    config = TrainConfig(
        max_steps=3, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
        progress_bar=False, checkpoint_every_n_steps=3, log_every_n_steps=1,
    )
    fit(module, Data(batch), config, out)
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        torch.save(module.unet.state_dict(), out.parent / f"{out.name}-weights.pt")
"""


@pytest.mark.distributed
def test_ddp_on_two_processes_matches_one_process_on_the_doubled_batch(tmp_path: Path) -> None:
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent(_DDP_SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, devices, batch in (("ddp", 2, 2), ("single", 1, 4)):
        result = subprocess.run(
            [sys.executable, str(script), str(tmp_path / name), str(devices), str(batch)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env=env,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp-weights.pt", weights_only=True)
    single = torch.load(tmp_path / "single-weights.pt", weights_only=True)
    initial = tiny_unet().state_dict()
    assert any(not torch.equal(single[k], initial[k]) for k in single)  # it trained
    gaps = torch.cat([(ddp[k] - single[k]).abs().flatten() for k in single])
    # Same samples, noise, timesteps and dropout; only the gradient all-reduce sums in another order. Adam divides by
    # sqrt(v), so where a gradient is near zero that round-off can grow: on one AMD EPYC host 7 of 792,964 weights
    # differ by more than 1e-6 (the worst by 2.1e-5), on another none did. A real mismatch (a batch, a step or a
    # dropout draw out of place) moves most weights.
    assert gaps.max() < 1e-4, gaps.max()
    assert (gaps > 1e-6).float().mean() < 1e-4, int((gaps > 1e-6).sum())
    states = torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", weights_only=True)
    assert states["global_step"] == 3 and states["genblocks_generator_states"].shape[0] == 1


class _WithExtraModule(DiffusionTrainingModule):
    def __init__(self, unet: torch.nn.Module, extra: torch.nn.Module, note: str = "kept out") -> None:
        super().__init__(unet, condition_dropout={"ctx": 0.2}, seed=3)
        self.extra = extra
        self.hparams.update(note=note)


def test_subclass_arguments_are_not_collected_into_hparams(tmp_path: Path) -> None:
    module = _WithExtraModule(tiny_unet(), torch.nn.Linear(2, 2))
    assert "extra" not in module.hparams and "unet" not in module.hparams
    assert module.hparams["seed"] == 3 and module.hparams["condition_dropout"] == {"ctx": 0.2}
    assert module.hparams["note"] == "kept out" and isinstance(module.hparams["optimizer"], dict)
    torch.save(dict(module.hparams), tmp_path / "hparams.pt")
    assert torch.load(tmp_path / "hparams.pt", weights_only=True) == dict(module.hparams)
