"""Training: both stages lower the loss on a tiny overfit set and change only their trainable parts."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from diffportrait3d.cli import main
from diffportrait3d.config import tiny_config
from diffportrait3d.modeling_diffportrait3d import build_random_components
from diffportrait3d.training import DiffPortrait3DTrainingModule, loss_on_fixed_draws
from genblocks.training import OptimizerConfig


class _Repeat(Dataset):
    def __init__(self, sample: dict[str, torch.Tensor], length: int) -> None:
        self.sample, self.length = sample, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.sample


def _sample(views: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(3, 64, 64, generator=gen) * 2 - 1
    smooth = torch.nn.functional.avg_pool2d(base[None], 9, stride=1, padding=4)[0]
    targets = torch.stack([smooth.roll(2 * i, dims=-1) for i in range(views)])
    conditions = torch.rand(views, 3, 64, 64, generator=gen) * 2 - 1
    return {"source": smooth, "targets": targets, "conditions": conditions}


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::DeprecationWarning", "ignore:`isinstance.treespec, LeafSpec.`"
)
@pytest.mark.parametrize("stage", [1, 2])
def test_stage_lowers_loss_and_touches_only_trainable_parts(stage: int) -> None:
    config = tiny_config()
    parts = build_random_components(config.model, config.random, seed=0)
    module = DiffPortrait3DTrainingModule(
        parts, stage=stage, num_views=2, cond_drop=0.0, optimizer=OptimizerConfig(lr=2e-3), seed=0
    )
    trainable = ["reference_unet", "view_controlnet"] if stage == 1 else ["view_modules"]
    frozen = [n for n in ("unet", "vae", "reference_unet", "view_controlnet", "view_modules") if n not in trainable]
    before = {name: _state(getattr(parts, name)) for name in trainable + frozen}
    sample = _sample(2)
    batch = {k: v[None] for k, v in sample.items()}
    initial = loss_on_fixed_draws(module, batch)
    trainer = L.Trainer(
        max_steps=8, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, DataLoader(_Repeat(sample, 8), batch_size=1))
    final = loss_on_fixed_draws(module, batch)
    assert final < 0.97 * initial, (initial, final)
    for name in trainable:
        after = getattr(parts, name).state_dict()
        assert any(not torch.equal(after[k], v) for k, v in before[name].items()), f"{name} did not change"
    for name in frozen:
        after = getattr(parts, name).state_dict()
        assert all(torch.equal(after[k], v) for k, v in before[name].items()), f"{name} changed"


def test_stage2_needs_view_modules() -> None:
    config = tiny_config()
    parts = build_random_components(config.model, config.random, with_view_modules=False)
    with pytest.raises(ValueError, match="view_modules"):
        DiffPortrait3DTrainingModule(parts, stage=2)


@pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::DeprecationWarning", "ignore:`isinstance.treespec, LeafSpec.`"
)
def test_cli_train_on_synthetic_views(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "train"
    code = main(
        [
            "train",
            "--config",
            "tiny",
            "--stage",
            "2",
            "--set",
            "train.max_steps=1",
            "train.progress_bar=false",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["stage"] == 2 and (out / "trained" / "model_index.json").is_file()


@pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::DeprecationWarning", "ignore:`isinstance.treespec, LeafSpec.`"
)
def test_cli_train_on_a_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from diffportrait3d.cameras import orbit_cameras
    from genblocks.media import write_image

    rows = []
    for i in range(2):
        write_image(tmp_path / f"src{i}.png", torch.rand(3, 64, 64), value_range=(0.0, 1.0))
        targets, conditions = [], []
        for v in range(4):
            write_image(tmp_path / f"t{i}_{v}.png", torch.rand(3, 64, 64), value_range=(0.0, 1.0))
            write_image(tmp_path / f"c{i}_{v}.png", torch.rand(3, 64, 64), value_range=(0.0, 1.0))
            targets.append(f"t{i}_{v}.png")
            conditions.append(f"c{i}_{v}.png")
        cams = orbit_cameras(4).tolist()
        rows.append({"source": f"src{i}.png", "targets": targets, "conditions": conditions, "cameras": cams})
    manifest = tmp_path / "views.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "train"
    args = [
        "train",
        "--manifest",
        str(manifest),
        "--set",
        "train.max_steps=1",
        "train.progress_bar=false",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["stage"] == 1
    assert (out / "trained" / "model_index.json").is_file()


def build(out_dir: Path) -> dict:
    """fit() arguments of the kill/resume test: tiny config, stage 1, 5 synthetic EG3D subjects, batch 2."""
    from dataclasses import replace

    from diffportrait3d.training import SyntheticViewData, build_components, build_training_module

    config = tiny_config()
    settings = replace(
        config.train, max_steps=5, checkpoint_every_n_steps=2, batch_size=2, synthetic_samples=5, progress_bar=False
    )
    config = replace(config, train=settings)
    L.seed_everything(0, verbose=False)
    module = build_training_module(config, build_components(config))
    return {"module": module, "datamodule": SyntheticViewData(config), "train_config": config.train}


def test_kill_mid_epoch_then_resume_is_exact(tmp_path: Path) -> None:
    from genblocks.testing.resume import assert_kill_resume_exact

    # step 4 at batch 2 over 5 subjects: 8 samples in, mid-way through the second pass
    assert_kill_resume_exact(f"{Path(__file__).resolve()}:build", tmp_path, kill_after=4)


def test_train_refuses_a_used_folder_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train", "--config", "tiny", "--out", str(out), "--set", "train.progress_bar=false"]) == 0
    capsys.readouterr()
    for name in ("config.yaml", "metrics.csv", "loss.png", "checkpoints/last.ckpt", "trained/model_index.json"):
        assert (out / name).is_file(), name
    assert main(["train", "--config", "tiny", "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--config", "tiny", "--out", str(out), "--resume", "--set", "train.max_steps=3"]) == 0
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
