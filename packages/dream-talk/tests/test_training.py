"""Training (spec §4): both stages lower their loss on synthetic data, condition dropout, the lip losses, the
synthetic data's audio -> mouth link, and exact kill / resume through genblocks' fit()."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from dream_talk.config import load_shipped_config
from dream_talk.motion import mouth_indices
from dream_talk.training import (
    EmoDiffTrainingModule,
    LipTrainingModule,
    SyntheticWindows,
    build_training,
    lip_loss,
    load_sync_expert,
)


def _batch(stage: str = "emodiff", size: int = 8) -> tuple[Any, dict[str, torch.Tensor]]:
    config = load_shipped_config("tiny", [f"train.stage={stage}"])
    arguments = build_training(config)
    loader = arguments["datamodule"].train_dataloader()
    dataset = loader.dataset
    batch = {key: torch.stack([dataset[i][key] for i in range(size)]) for key in dataset[0]}
    return arguments["module"], batch


def test_synthetic_windows_tie_the_mouth_to_the_audio() -> None:
    data = SyntheticWindows(4, 16, 13, 8)
    item = data[0]
    assert item["motion"].shape == (16, 58) and item["audio"].shape == (16, 13) and item["style"].shape == (8, 58)
    assert torch.equal(item["initial_state"], item["motion"][0])
    jaw = item["motion"][:, 17]
    assert torch.corrcoef(torch.stack([jaw, item["audio"][:, 0]]))[0, 1] > 0.9
    assert torch.equal(SyntheticWindows(4, 16, 13, 8)[2]["motion"], data[2]["motion"])  # deterministic


def _fixed_loss(module: EmoDiffTrainingModule, batch: dict[str, torch.Tensor]) -> float:
    state = module.generator.get_state()
    module.generator.manual_seed(123)
    with torch.no_grad():
        values = [float(module.compute_loss(batch)) for _ in range(4)]
    module.generator.set_state(state)
    return sum(values) / len(values)


def test_emodiff_loss_falls_on_synthetic_windows() -> None:
    module, batch = _batch("emodiff")
    assert isinstance(module, EmoDiffTrainingModule)
    module.setup("fit")
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3)
    before = _fixed_loss(module, batch)
    for _ in range(40):
        optimizer.zero_grad()
        module.compute_loss(batch).backward()
        optimizer.step()
    after = _fixed_loss(module, batch)
    assert after < 0.7 * before, (before, after)


def test_condition_dropout_nulls_audio_and_style_independently() -> None:
    module, batch = _batch("emodiff")
    module.condition_dropout = {"audio_keep": 0.5, "style_keep": 0.5}
    big = {key: value.repeat(32, *([1] * (value.ndim - 1))) for key, value in batch.items()}
    dropped = module.drop_conditions(big)
    audio, style = dropped["audio_keep"], dropped["style_keep"]
    assert 0.3 < float((audio == 0).float().mean()) < 0.7 and 0.3 < float((style == 0).float().mean()) < 0.7
    assert not torch.equal(audio, style)  # independent draws


def test_lip_loss_terms() -> None:
    target = torch.rand(2, 8, 58)
    refined = target.clone()
    assert float(lip_loss(refined, target, torch.zeros(2, 8, 13))["loss"]) == 0.0
    refined[..., 20] += 0.5  # a constant mouth offset: L2 only, no velocity error
    losses = lip_loss(refined, target, torch.zeros(2, 8, 13), w_vel=1.0)
    assert abs(float(losses["l2"]) - 0.25 / 27) < 1e-6 and float(losses["velocity"]) < 1e-10
    other = target.clone()
    other[..., 0] += 5.0  # an eye channel: not a mouth channel, no loss
    assert float(lip_loss(other, target, torch.zeros(2, 8, 13))["loss"]) == 0.0
    hook = lip_loss(refined, target, torch.zeros(2, 8, 13), w_sync=2.0, sync_loss=lambda m, a: m.sum() * 0 + 1.5)
    assert abs(float(hook["loss"]) - float(losses["loss"]) - 3.0) < 1e-6
    with pytest.raises(ValueError, match="lip-sync expert"):
        lip_loss(refined, target, torch.zeros(2, 8, 13), w_sync=1.0)


class _MouthEnergyExpert(torch.nn.Module):
    """A stand-in lip-sync expert with weights: mean squared gap between the jaw opening and a learnt audio readout."""

    def __init__(self) -> None:
        super().__init__()
        self.readout = torch.nn.Parameter(torch.full((13,), 0.1))

    def forward(self, motion: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return ((motion[..., 17] - audio @ self.readout) ** 2).mean()


@pytest.fixture()
def sync_expert_file(tmp_path: Path) -> Path:
    path = tmp_path / "expert.pt"
    torch.jit.save(torch.jit.script(_MouthEnergyExpert()), str(path))
    return path


def test_lip_sync_model_adds_its_loss_and_stays_frozen(sync_expert_file: Path) -> None:
    overrides = ["train.stage=lip", "lip.w_sync=2.0", f"lip.sync_model={sync_expert_file}"]
    with_expert = build_training(load_shipped_config("tiny", overrides))["module"]
    plain, batch = _batch("lip")
    assert isinstance(with_expert, LipTrainingModule) and isinstance(plain, LipTrainingModule)
    with_expert.lip_refiner.load_state_dict(plain.lip_refiner.state_dict())
    assert [name for name, _ in with_expert.named_parameters()] == [name for name, _ in plain.named_parameters()]
    assert not any("readout" in key for key in with_expert.state_dict())  # not saved with the checkpoints

    with_expert.generator.manual_seed(5)
    refined = with_expert.lip_refiner(with_expert.perturb(batch["motion"]), batch["audio"], batch["style"])
    expected = _MouthEnergyExpert()(refined, batch["audio"])
    with_expert.generator.manual_seed(5)
    plain.generator.manual_seed(5)
    gap = with_expert.compute_loss(batch) - plain.compute_loss(batch)
    torch.testing.assert_close(gap, 2.0 * expected, rtol=1e-5, atol=1e-6)

    expert = load_sync_expert(sync_expert_file)
    motion = batch["motion"].clone().requires_grad_(True)
    expert(motion, batch["audio"]).backward()
    assert motion.grad is not None and float(motion.grad[..., 17].abs().sum()) > 0  # gradients reach the motion
    assert float(motion.grad[..., 0].abs().sum()) == 0.0


def test_lip_sync_weight_without_an_expert_or_a_bad_file_is_refused(tmp_path: Path) -> None:
    from genblocks.errors import InputError

    with pytest.raises(InputError, match=r"lip\.w_sync=1\.0 needs a lip-sync expert"):
        build_training(load_shipped_config("tiny", ["train.stage=lip", "lip.w_sync=1"]))
    garbage = tmp_path / "expert.pt"
    garbage.write_bytes(b"not torchscript")
    for path, message in ((garbage, "not a TorchScript file"), (tmp_path / "missing.pt", "no such file")):
        config = load_shipped_config("tiny", ["train.stage=lip", "lip.w_sync=1", f"lip.sync_model={path}"])
        with pytest.raises(InputError, match=f"lip.sync_model .*{message}"):
            build_training(config)
    with pytest.raises(InputError, match="sync_model: a lip-sync expert is given but w_sync is 0"):
        load_shipped_config("tiny", [f"lip.sync_model={garbage}"])


def test_lip_stage_loss_falls_and_keeps_other_channels() -> None:
    module, batch = _batch("lip")
    assert isinstance(module, LipTrainingModule)
    optimizer = torch.optim.AdamW(module.parameters(), lr=5e-3)

    def loss() -> float:
        module.generator.manual_seed(7)
        with torch.no_grad():
            refined = module.lip_refiner(module.perturb(batch["motion"]), batch["audio"], batch["style"])
        return float(lip_loss(refined, batch["motion"], batch["audio"])["loss"])

    before = loss()
    module.generator.manual_seed(0)
    for _ in range(100):
        optimizer.zero_grad()
        module.compute_loss(batch).backward()
        optimizer.step()
    after = loss()
    assert after < 0.7 * before, (before, after)
    perturbed = module.perturb(batch["motion"])
    others = [i for i in range(58) if i not in set(mouth_indices())]
    assert torch.equal(perturbed[..., others], batch["motion"][..., others])


def build(out_dir: Path) -> dict[str, Any]:
    """fit() arguments of a 4-step tiny EmoDiff run checkpointed every 2 steps (kill / resume test)."""
    overrides = ["train.max_steps=4", "train.checkpoint_every_n_steps=2", "train.log_every_n_steps=1"]
    return build_training(load_shipped_config("tiny", overrides))


def build_lip(out_dir: Path) -> dict[str, Any]:
    """The same for the lip stage."""
    overrides = ["train.stage=lip", "train.max_steps=4", "train.checkpoint_every_n_steps=2"]
    return build_training(load_shipped_config("tiny", overrides))


@pytest.mark.slow
@pytest.mark.parametrize("builder", ["build", "build_lip"])
def test_kill_and_resume_is_exact(tmp_path: Path, builder: str) -> None:
    from genblocks.testing.resume import assert_kill_resume_exact

    result = assert_kill_resume_exact(f"{__file__}:{builder}", tmp_path, kill_after=2)
    trained = sorted(p.name for p in (tmp_path / "straight" / "trained").iterdir())
    expected = ["config.json", "emodiff.safetensors", "style_encoder.safetensors"]
    assert trained == (expected if builder == "build" else ["config.json", "lip_refiner.safetensors"])
    assert result["killed_run"].is_dir()


def test_manifest_windows_align_audio_to_motion_frames(tmp_path: Path) -> None:
    import json

    import numpy as np

    from dream_talk.demo import happy_style, synthetic_speech
    from dream_talk.training import ManifestWindows
    from genblocks.audio import write_audio

    rows = []
    for index, (seconds, emotion) in enumerate(((1.0, "happy"), (0.8, "happy"), (0.6, "sad"))):
        write_audio(tmp_path / f"a{index}.wav", synthetic_speech(seconds, 16000, seed=index), 16000)
        happy_style(round(seconds * 25)).write_json(tmp_path / f"m{index}.json")
        rows.append({"audio": f"a{index}.wav", "motion": f"m{index}.json", "emotion": emotion, "speaker": "s"})
    (tmp_path / "manifest.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    data = ManifestWindows(tmp_path / "manifest.jsonl", load_shipped_config("tiny"))
    # windows of 8 frames with stride 4: 25 frames -> 5, 20 -> 4, 15 -> 2
    assert len(data) == 11
    item = data[0]
    assert item["motion"].shape == (8, 58) and item["audio"].shape == (8, 13) and item["style"].shape == (8, 58)
    assert np.isfinite(item["audio"].numpy()).all()
    # the style is the next clip of the emotion (20 frames), centre-cropped to emodiff.style_frames = 8: frames 6..13
    np.testing.assert_array_equal(item["style"].numpy(), data.clips[1][1][6:14])
    # the only "sad" clip (15 frames) is its own style: frames 3..10
    np.testing.assert_array_equal(data[10]["style"].numpy(), data.clips[2][1][3:11])
    (tmp_path / "bad.jsonl").write_text(json.dumps({"audio": "a0.wav"}) + "\n")
    from genblocks.errors import InputError

    with pytest.raises(InputError, match=r"train.manifest .*bad.jsonl: row 1 lacks 'motion'"):
        ManifestWindows(tmp_path / "bad.jsonl", load_shipped_config("tiny"))
