"""Training: both stages lower the loss on a tiny overfit set and change only their trainable parts."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from xp_testing import PATCH, RESOLUTION, face_landmarks, tiny_components

from genblocks.training import OptimizerConfig
from x_portrait.training import WarpReenactor, XPortraitTrainingModule, loss_on_fixed_draws, random_scale


class _Repeat(Dataset):
    """One sample, repeated (an overfit set)."""

    def __init__(self, sample: dict[str, torch.Tensor], length: int) -> None:
        self.sample, self.length = sample, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.sample


def _sample(num_frames: int | None) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    base = torch.rand(3, RESOLUTION, RESOLUTION, generator=generator) * 2 - 1
    smooth = torch.nn.functional.avg_pool2d(base[None], 9, stride=1, padding=4)[0]  # a learnable, smooth image
    landmarks = torch.tensor(face_landmarks(), dtype=torch.float32)
    if num_frames is None:
        return {"source": smooth, "target": smooth.roll(2, dims=-1), "landmarks": landmarks}
    frames = torch.stack([smooth.roll(i, dims=-1) for i in range(num_frames)])
    return {"source": smooth, "frames": frames, "landmarks": landmarks.expand(num_frames, 68, 2).clone()}


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(v, before[k]) for k, v in module.state_dict().items())


def _unchanged(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, before[k]) for k, v in module.state_dict().items())


def _fit(module: XPortraitTrainingModule, sample: dict[str, torch.Tensor], steps: int) -> None:
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, DataLoader(_Repeat(sample, steps), batch_size=1))


@pytest.mark.filterwarnings("ignore:You defined a `validation_step`", "ignore:`isinstance.treespec, LeafSpec.`")
@pytest.mark.parametrize("stage", ["image", "temporal"])
def test_training_stage_lowers_the_loss_and_touches_only_its_parts(stage: str) -> None:
    components = tiny_components(seed=0)
    num_frames = 2 if stage == "temporal" else None
    module = XPortraitTrainingModule(
        components, stage=stage, patch_size=PATCH, num_frames=2, aug_scale=(0.9, 1.1),
        cond_drop_ref=0.0, cond_drop_motion=0.0, cond_drop_local=0.0, optimizer=OptimizerConfig(lr=2e-3), seed=0,
    )  # fmt: skip
    trainable = ["reference_unet", "motion_controlnet", "local_controlnet"] if stage == "image" else ["motion_modules"]
    frozen = [n for n in ("unet", "vae", "reference_unet", "motion_controlnet", "local_controlnet", "motion_modules")
              if n not in trainable]  # fmt: skip
    before = {name: _snapshot(getattr(components, name)) for name in trainable + frozen}
    sample = _sample(num_frames)
    batch = {k: v[None] for k, v in sample.items()}
    initial = loss_on_fixed_draws(module, batch)
    _fit(module, sample, steps=8)
    final = loss_on_fixed_draws(module, batch)
    assert final < 0.97 * initial, (initial, final)
    for name in trainable:
        assert _changed(getattr(components, name), before[name]), f"{name} did not change"
    for name in frozen:
        assert _unchanged(getattr(components, name), before[name]), f"{name} changed but is frozen in stage {stage}"
    assert "components" not in module.hparams and module.hparams["stage"] == stage


def test_control_images_are_reenacted_scaled_and_patched() -> None:
    components = tiny_components(seed=0, with_motion_modules=False)
    module = XPortraitTrainingModule(components, patch_size=PATCH, aug_scale=(1.0, 1.0), seed=0)
    batch = {k: v[None] for k, v in _sample(None).items()}
    prepared = module.prepare_batch(batch)
    assert prepared["driving"].shape == prepared["local"].shape == (1, 1, 3, RESOLUTION, RESOLUTION)
    assert not torch.equal(prepared["driving"][:, 0], batch["target"])  # warped (another "identity")
    assert int((prepared["local"][0, 0, 0] != -1).sum()) > 0 and float((prepared["local"] == -1).float().mean()) > 0.5
    # scaling about the centre keeps the centre pixel and moves landmarks away from it by the factor
    frames = torch.zeros(1, 1, 1, 65, 65)
    frames[..., 32, 32] = 1.0
    landmarks = torch.tensor([[[[42.0, 32.0]]]])
    scaled, moved = random_scale(frames, landmarks, (1.5, 1.5), torch.Generator().manual_seed(0))
    assert float(scaled[0, 0, 0, 32, 32]) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(moved.numpy(), [[[[47.0, 32.0]]]], atol=1e-5)
    warped, _ = WarpReenactor(0.0, 0.0)(frames, None, torch.Generator())
    assert torch.allclose(warped, frames, atol=1e-6)


def _record_draws(module: XPortraitTrainingModule, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Everything random that one loss feeds the model: the noisy clips (VAE samples, timesteps, noise), the
    timesteps, the control clips and patches (clip starts, warps, scales, dropout) and the reference latents (dropout
    of the source, VAE samples); the model itself is replaced by a recorder."""
    seen: dict[str, torch.Tensor] = {}

    def write_reference(latents: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor) -> None:
        seen["reference"] = latents.detach().clone()

    def forward(sample: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor, **kwargs: object) -> torch.Tensor:
        seen.update(sample=sample.detach().clone(), timestep=timestep.clone())
        seen.update(motion=kwargs["motion_image"].clone(), local=kwargs["local_image"].clone())  # type: ignore[union-attr]
        return torch.zeros_like(sample)

    module.model.write_reference = write_reference  # type: ignore[method-assign]
    module.model.forward = forward  # type: ignore[method-assign]
    module.generator.manual_seed(7)
    with torch.no_grad():
        module.compute_loss(dict(batch))
    return seen


def test_draws_are_global_batch_draws_sliced_by_rank() -> None:
    """Rank r of world size 2 on batch B gets exactly rows [r*B:(r+1)*B] of what one process draws on batch 2B: clip
    starts, reenactor warps, scale augmentation, condition dropout, VAE samples, timesteps and noise."""
    per_rank, frames, num_frames = 2, 4, 2
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2 * per_rank, frames + 1, 3, RESOLUTION, RESOLUTION, generator=generator) * 2 - 1
    landmarks = torch.tensor(np.stack([face_landmarks(seed=i) for i in range(frames)]), dtype=torch.float32)
    batch = {
        "source": images[:, 0],
        "frames": images[:, 1:],
        "landmarks": (landmarks + torch.arange(2 * per_rank)[:, None, None, None]).clone(),
    }

    def module() -> XPortraitTrainingModule:
        return XPortraitTrainingModule(
            tiny_components(seed=0), stage="temporal", patch_size=PATCH, num_frames=num_frames, aug_scale=(0.7, 1.3),
            cond_drop_ref=0.5, cond_drop_motion=0.5, cond_drop_local=0.5, seed=0,
        )  # fmt: skip

    single = _record_draws(module(), batch)
    assert single["sample"].shape == (2 * per_rank * num_frames, 4, 8, 8)
    per_frame_rows = {"sample", "timestep", "motion", "local"}
    for rank in range(2):
        ranked = module()
        ranked._world = lambda rank=rank: (2, rank)  # type: ignore[method-assign]
        rows = slice(rank * per_rank, (rank + 1) * per_rank)
        drawn = _record_draws(ranked, {k: v[rows] for k, v in batch.items()})
        for name, value in single.items():
            step = num_frames if name in per_frame_rows else 1  # (b f) rows for the UNet batch
            expected = value[rank * per_rank * step : (rank + 1) * per_rank * step]
            torch.testing.assert_close(drawn[name], expected, atol=1e-6, rtol=0, msg=f"rank {rank}: {name}")
    # the draws do vary per sample, so the slicing is visible
    assert not torch.equal(single["timestep"][:num_frames], single["timestep"][-num_frames:]) or not torch.equal(
        single["motion"][:num_frames], single["motion"][-num_frames:]
    )


def test_stage_temporal_needs_motion_modules() -> None:
    with pytest.raises(ValueError, match="motion_modules"):
        XPortraitTrainingModule(tiny_components(with_motion_modules=False), stage="temporal", patch_size=PATCH)


def build(out_dir: Path) -> dict:
    """fit() arguments of the kill/resume test: the tiny config, stage image, 5 synthetic pairs, batch 2, dropout on."""
    from genblocks.cli import load_command_config
    from x_portrait.config import XPortraitConfig
    from x_portrait.training import build_datamodule, build_training_module

    overrides = [
        "train.max_steps=5",
        "train.checkpoint_every_n_steps=2",
        "train.batch_size=2",
        "train.synthetic_rows=5",
    ]
    overrides += ["train.progress_bar=false", "train.seed=3", "train.ema_decay=0.9"]
    config, _ = load_command_config(XPortraitConfig, "x_portrait", "train", "tiny", overrides)
    L.seed_everything(3, verbose=False)
    module = build_training_module(config, tiny_components(seed=0))
    return {"module": module, "datamodule": build_datamodule(config, out_dir), "train_config": config.train}


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_kill_mid_epoch_then_resume_is_exact(tmp_path: Path) -> None:
    from genblocks.testing.resume import assert_kill_resume_exact

    # step 4 at batch 2 over 5 pairs: 8 samples in, mid-way through the second pass
    result = assert_kill_resume_exact(f"{Path(__file__).resolve()}:build", tmp_path, kill_after=4)
    for a, b in zip(result["uninterrupted"].ema.shadow_params, result["resumed"].ema.shadow_params, strict=True):
        assert torch.equal(a, b)
