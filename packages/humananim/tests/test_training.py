"""Training: every stage runs through fit on synthetic data, the loss on a fixed batch goes down, the stage decides
what learns, and a killed run resumes bit-exactly."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from genblocks.testing.resume import assert_kill_resume_exact
from genblocks.training.optim import OptimizerConfig
from humananim.config import tiny_config
from humananim.training import HumanAnimTrainingModule, SyntheticClips, build_training, train


def config(stage: str = "image", **train_fields: Any):
    base = tiny_config()
    return replace(base, train=replace(base.train, stage=stage, **train_fields))


def test_synthetic_sample_layout() -> None:
    sample = SyntheticClips((64, 48), 3)[0]
    assert sample["frames"].shape == (3, 3, 64, 48) and sample["hint"].shape == (3, 6, 64, 48)
    assert sample["face_mask"].shape == (3, 64, 48) and sample["face_valid"].all()
    assert sample["frames"].min() >= -1 and sample["frames"].max() <= 1 and sample["face_mask"].sum() > 0


def test_keypoints_settings_weight_the_training_hint() -> None:
    """keypoints.motion_gain scales the displacement channels and keypoints.sharpness_ref the measured sharpness
    (v / (v + ref)) of the hints build_training's data makes."""
    from humananim.config import KeypointsConfig

    base = tiny_config()
    settings = replace(base.keypoints, motion_gain=2.0, sharpness_ref=400.0)
    weighted = replace(config("video", num_frames=3), keypoints=settings)
    hint = build_training(weighted, synthetic_clips=1)["datamodule"].dataset[0]["hint"]
    plain = SyntheticClips((64, 48), 3, length=1, settings=KeypointsConfig())[0]["hint"]
    torch.testing.assert_close(hint[:, :3], plain[:, :3])  # the skeleton is the same
    assert plain[:, 3:5].abs().max() > 0 and plain[:, 3:5].abs().max() < 0.5  # moving hands, unclipped when doubled
    torch.testing.assert_close(hint[:, 3:5], 2 * plain[:, 3:5])
    sharp = plain[:, 5]
    on_hands = sharp > 0.05  # above the floor: a measured sharpness
    assert on_hands.any()
    variance = 100.0 * sharp[on_hands] / (1 - sharp[on_hands])  # v from s = v / (v + 100)
    torch.testing.assert_close(hint[:, 5][on_hands], variance / (variance + 400.0), rtol=1e-4, atol=1e-5)


def _fixed_loss(module: HumanAnimTrainingModule, batch: dict[str, torch.Tensor]) -> float:
    state = module.generator.get_state()
    module.generator.manual_seed(123)
    with torch.no_grad():
        value = float(module.compute_loss(batch))
    module.generator.set_state(state)
    return value


def test_image_stage_lowers_the_loss_on_a_fixed_batch() -> None:
    arguments = build_training(config("image", cond_drop_ref=0.0, cond_drop_pose=0.0), synthetic_clips=1)
    module: HumanAnimTrainingModule = arguments["module"]
    trainable = {id(p) for p in module.trainable_parameters()}
    parts = [*module.model.reference_unet.parameters(), *module.model.controlnet.parameters()]
    assert trainable == {id(p) for p in parts}  # the UNet and the VAE stay frozen
    batch = {k: v[None] for k, v in arguments["datamodule"].dataset[0].items()}
    optimizer = torch.optim.AdamW(module.trainable_parameters(), lr=1e-3)
    before = _fixed_loss(module, batch)
    for _ in range(8):
        module.generator.manual_seed(123)  # the same t and noise each step: fit this one batch
        loss = module.compute_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = _fixed_loss(module, batch)
    print(f"image stage, fixed batch: loss {before:.4f} -> {after:.4f} after 8 AdamW steps")
    assert after < 0.9 * before


@pytest.mark.parametrize("stage", ["video", "hires"])
def test_stages_train_their_parts_through_fit(stage: str, tmp_path: Path) -> None:
    result = train(config(stage, max_steps=2, num_frames=2), tmp_path / stage)
    assert (tmp_path / stage / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / stage / "trained" / "model_index.json").is_file()  # a HumanAnimPipeline folder
    assert result is not None


def test_the_next_stage_starts_from_the_previous_trained_folder(tmp_path: Path) -> None:
    from humananim.pipeline import HumanAnimPipeline

    train(config("image", max_steps=1, optimizer=OptimizerConfig(lr=1e-2)), tmp_path / "image")
    trained = HumanAnimPipeline.from_pretrained(tmp_path / "image" / "trained")
    arguments = build_training(config("video", init_from=str(tmp_path / "image" / "trained")))
    model = arguments["module"].model
    for name, value in trained.controlnet.state_dict().items():
        assert torch.equal(model.controlnet.state_dict()[name], value), name
    fresh = build_training(config("video"))["module"].model
    assert any(
        not torch.equal(a, b)
        for a, b in zip(model.controlnet.parameters(), fresh.controlnet.parameters(), strict=True)
    )  # the image stage changed the ControlNet, and the video stage starts from it


def build(out_dir: Path) -> dict[str, Any]:
    return build_training(config("video", max_steps=4, num_frames=2, checkpoint_every_n_steps=2), synthetic_clips=4)


@pytest.mark.slow
def test_kill_and_resume_is_exact(tmp_path: Path) -> None:
    assert_kill_resume_exact(f"{__file__}:build", tmp_path, kill_after=2)
