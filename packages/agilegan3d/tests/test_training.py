"""Training: the prior's frozen layers stay put, one guided-transfer step lowers the paired loss, the encoder's losses,
exact kill/resume of the transfer stage, and a whole tiny style run."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from agilegan3d.config import AgileGAN3DConfig, load_preset
from agilegan3d.modeling_agilegan3d import StylePrior, build_g3d, prior_frozen_prefixes
from agilegan3d.pairs import PairDataset, synthesize_pairs
from agilegan3d.training import EncoderModule, TransferModule, build_stage, stage_finished, train_style
from genblocks.training import fit

HERE = Path(__file__).resolve()


def _toon(config: AgileGAN3DConfig, **changes: Any) -> AgileGAN3DConfig:
    """The tiny config with the fixed toon prior (no prior training) and ``changes``."""
    return dataclasses.replace(config, prior=dataclasses.replace(config.prior, method="toon"), **changes)


def test_prior_stage_trains_only_the_unfrozen_layers(tiny: AgileGAN3DConfig, tmp_path: Path) -> None:
    config = dataclasses.replace(tiny, prior_steps=4)
    arguments = build_stage(config, "prior", tmp_path / "run")
    module = arguments["module"]
    before = {k: v.clone() for k, v in module.generator.state_dict().items()}
    fit(out_dir=tmp_path / "run" / "prior", **arguments)
    frozen = tuple(prior_frozen_prefixes(config.prior))
    after = module.generator.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(frozen))
    changed = [k for k in before if not k.startswith(frozen) and not torch.equal(before[k], after[k])]
    assert any(k.startswith("synthesis.b32.") for k in changed)
    assert (tmp_path / "run" / "prior" / "trained" / "g2_style.safetensors").is_file()


def _pairs(config: AgileGAN3DConfig, run: Path) -> None:
    synthesize_pairs(build_g3d(config.g3d), StylePrior("toon"), config.pairs, run / "pairs")
    (run / "pairs" / "done.json").write_text("{}")


def test_one_guided_transfer_step_lowers_the_paired_loss(tiny: AgileGAN3DConfig, tmp_path: Path) -> None:
    config = _toon(tiny)
    _pairs(config, tmp_path)
    batch = torch.utils.data.default_collate([PairDataset(tmp_path / "pairs")[i] for i in range(4)])
    module = build_stage(config, "transfer", tmp_path)["module"]
    assert isinstance(module, TransferModule)
    generator = module.generator.eval()  # no renderer jitter: the same loss function before and after
    assert not any(p.requires_grad for p in generator.backbone.mapping.parameters())

    def loss() -> torch.Tensor:
        rendered = generator.synthesis(batch["ws"], batch["c"], noise_mode="const")["image"]
        return module.guidance_loss(rendered, batch["image"])[0]

    optimizer = torch.optim.Adam([p for p in generator.parameters() if p.requires_grad], lr=1e-3)
    mapping = [p.clone() for p in generator.backbone.mapping.parameters()]
    before = loss()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = loss()
    assert float(after) < float(before.detach())
    assert all(torch.equal(a, b) for a, b in zip(mapping, generator.backbone.mapping.parameters(), strict=True))


def test_encoder_losses_finite_and_train_the_encoder_only(tiny: AgileGAN3DConfig, tmp_path: Path) -> None:
    module = build_stage(tiny, "encoder", tmp_path)["module"]
    assert isinstance(module, EncoderModule)
    terms = module.losses(torch.tensor([1, 2]))
    assert {"l2", "latent", "mv", "loss"} <= set(terms) and all(torch.isfinite(v) for v in terms.values())
    terms["loss"].backward()
    assert all(p.grad is None for p in module.generator.parameters())
    assert sum(float(p.grad.abs().sum()) for p in module.encoder.parameters() if p.grad is not None) > 0


def _kill_resume_config() -> AgileGAN3DConfig:
    config = _toon(load_preset("tiny"), transfer_steps=8, encoder_steps=2)
    return dataclasses.replace(config, train=dataclasses.replace(config.train, checkpoint_every_n_steps=4))


KILLED_RUN = """
import torch; torch.set_num_threads({threads})
from genblocks.testing.resume import KillAfterCheckpoint
from agilegan3d.training import train_style
from test_training import _kill_resume_config
train_style(_kill_resume_config(), {run!r}, callbacks=[KillAfterCheckpoint(4)])
"""


@pytest.mark.slow
def test_style_run_killed_in_transfer_resumes_there_and_ends_identical(tmp_path: Path) -> None:
    """The whole run (pairs, transfer, encoder) killed right after transfer's step-4 checkpoint and run again with
    resume continues in the transfer stage and ends with the uninterrupted run's weights, bit for bit."""
    straight = train_style(_kill_resume_config(), tmp_path / "straight")
    killed_run = tmp_path / "killed"
    code = KILLED_RUN.format(threads=torch.get_num_threads(), run=str(killed_run))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=HERE.parent, timeout=900)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert stage_finished(killed_run, "pairs") and not stage_finished(killed_run, "transfer")
    assert torch.load(killed_run / "transfer" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    assert not (killed_run / "encoder").exists()
    resumed = train_style(_kill_resume_config(), killed_run, resume=True)
    for name in ("g3_style.safetensors", "encoder.safetensors"):
        assert (resumed / name).read_bytes() == (straight / name).read_bytes(), name
    full = [
        torch.load(run / "transfer" / "checkpoints" / "last.ckpt", weights_only=True)
        for run in (tmp_path / "straight", killed_run)
    ]
    assert full[0]["global_step"] == full[1]["global_step"] == 8
    for key, value in full[0]["state_dict"].items():  # G, D, G_ema, buffers
        assert torch.equal(value, full[1]["state_dict"][key]), key


def test_train_style_runs_every_stage_and_skips_finished_ones(tiny: AgileGAN3DConfig, tmp_path: Path) -> None:
    config = _toon(tiny, transfer_steps=4, encoder_steps=2)
    style = train_style(config, tmp_path / "run")
    assert {p.name for p in style.iterdir()} == {"config.json", "g3_style.safetensors", "encoder.safetensors"}
    assert all(stage_finished(tmp_path / "run", s) for s in ("pairs", "transfer", "encoder"))
    stamp = (style / "g3_style.safetensors").stat().st_mtime_ns
    weights = (tmp_path / "run" / "transfer" / "trained" / "g3_style.safetensors").read_bytes()
    train_style(config, tmp_path / "run", resume=True)  # everything finished: nothing retrains
    assert (tmp_path / "run" / "transfer" / "trained" / "g3_style.safetensors").read_bytes() == weights
    assert (style / "g3_style.safetensors").stat().st_mtime_ns >= stamp


def test_exemplars_of_mixed_sizes_are_cropped_and_resized_with_notes(tmp_path: Path) -> None:
    from agilegan3d.data import load_exemplars
    from genblocks.media import write_image

    for k, (h, w) in enumerate([(40, 40), (64, 48), (32, 32), (20, 30), (50, 50)]):
        write_image(tmp_path / f"{k}.png", torch.rand(3, h, w) * 2 - 1)
    data = load_exemplars(tmp_path, 32, min_count=5)
    assert data.images.shape == (5, 3, 32, 32) and len(set(data.hashes)) == 5
    assert any("centre-cropped" in note for note in data.notes) and any("resized" in note for note in data.notes)
    assert not any(note.startswith("2.png") for note in data.notes)  # already 32 x 32: untouched
