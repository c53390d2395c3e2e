"""FID/KID checkpoint selection of the prior stage (spec §4 "Stage A"): one evaluation per ``selection.every`` steps,
``trained/`` is the EMA state of the chosen (lowest-metric) step bit for bit, nothing changes without
``selection.features``, a bad extractor file exits 2 before training, and a killed run resumes to the same choice."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from agilegan3d.cli import main
from agilegan3d.config import AgileGAN3DConfig, load_preset
from agilegan3d.training import build_stage, train_style
from genblocks.training import fit

HERE = Path(__file__).resolve()


class _Features(nn.Module):
    """A tiny feature extractor: a strided conv, ReLU and global average pooling, (N, 3, H, W) -> (N, 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(x)).mean(dim=(2, 3))


def write_extractor(path: Path) -> Path:
    """Save a seeded scripted :class:`_Features` at ``path``."""
    torch.manual_seed(0)
    with warnings.catch_warnings():  # torch 2.9+ marks TorchScript deprecated; the extractors users have are scripted
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(_Features()).save(str(path))
    return path


def selection_config(
    features: Path | None, steps: int = 16, every: int = 4, metric: str = "fid", **train: Any
) -> AgileGAN3DConfig:
    """The tiny config training the prior for ``steps`` steps with selection by ``metric`` every ``every`` steps;
    ``train`` overrides ``train.*``."""
    config = load_preset("tiny")
    selection = dataclasses.replace(
        config.prior.selection,
        features=None if features is None else str(features),
        every=every,
        samples=8,
        augmented_copies=2,
        batch_size=4,
        metric=metric,
    )
    prior = dataclasses.replace(config.prior, selection=selection)
    return dataclasses.replace(
        config, prior=prior, prior_steps=steps, train=dataclasses.replace(config.train, **train)
    )


def _ema(checkpoint: Path) -> dict[str, Tensor]:
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    return {k.removeprefix("generator_ema."): v for k, v in state.items() if k.startswith("generator_ema.")}


def test_trained_is_the_ema_of_the_lowest_fid_step(tmp_path: Path) -> None:
    config = selection_config(write_extractor(tmp_path / "features.pt"), checkpoint_every_n_steps=4, keep_last=10)
    arguments = build_stage(config, "prior", tmp_path / "run")
    fit(out_dir=tmp_path / "run" / "prior", **arguments)
    summary = json.loads((tmp_path / "run" / "prior" / "selection.json").read_text())
    rows = summary["evaluations"]
    assert [row["step"] for row in rows] == [4, 8, 12, 16]
    assert all(set(row) == {"step", "fid", "kid"} for row in rows)
    assert len({row["fid"] for row in rows}) == 4  # the EMA moves: every evaluation scores differently
    chosen = summary["chosen_step"]
    assert summary["metric"] == "fid" and chosen == min(rows, key=lambda row: row["fid"])["step"]
    trained = load_file(str(tmp_path / "run" / "prior" / "trained" / "g2_style.safetensors"))
    expected = _ema(tmp_path / "run" / "prior" / "checkpoints" / f"step-{chosen}.ckpt")
    assert trained.keys() == expected.keys()
    assert all(torch.equal(trained[k], expected[k]) for k in expected)


def test_an_earlier_best_step_is_kept_not_the_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With scripted FIDs 3, 1, 2, 4 at steps 4..16, step 8 is chosen and ``trained/`` is its EMA, not the last one."""
    import agilegan3d.selection

    scores = iter([3.0, 1.0, 2.0, 4.0])
    monkeypatch.setattr(agilegan3d.selection, "frechet_distance", lambda real, fake: next(scores))
    config = selection_config(write_extractor(tmp_path / "features.pt"), checkpoint_every_n_steps=4, keep_last=10)
    fit(out_dir=tmp_path / "run" / "prior", **build_stage(config, "prior", tmp_path / "run"))
    summary = json.loads((tmp_path / "run" / "prior" / "selection.json").read_text())
    assert [row["fid"] for row in summary["evaluations"]] == [3.0, 1.0, 2.0, 4.0]
    assert summary["chosen_step"] == 8 and summary["chosen"]["fid"] == 1.0
    trained = load_file(str(tmp_path / "run" / "prior" / "trained" / "g2_style.safetensors"))
    checkpoints = tmp_path / "run" / "prior" / "checkpoints"
    at_8, last = _ema(checkpoints / "step-8.ckpt"), _ema(checkpoints / "step-16.ckpt")
    assert all(torch.equal(trained[k], at_8[k]) for k in at_8)
    assert any(not torch.equal(trained[k], last[k]) for k in last)


def test_kid_metric_and_an_every_that_is_not_a_multiple_of_the_iteration(tmp_path: Path) -> None:
    """``every=6`` with 4 steps per iteration: evaluations where a multiple of 6 is crossed (8, 12) and at the end."""
    config = selection_config(write_extractor(tmp_path / "features.pt"), steps=16, every=6, metric="kid")
    fit(out_dir=tmp_path / "run" / "prior", **build_stage(config, "prior", tmp_path / "run"))
    summary = json.loads((tmp_path / "run" / "prior" / "selection.json").read_text())
    rows = summary["evaluations"]
    assert [row["step"] for row in rows] == [8, 12, 16]
    assert summary["metric"] == "kid" and summary["chosen_step"] == min(rows, key=lambda row: row["kid"])["step"]


def test_without_features_trained_is_the_last_ema(tmp_path: Path) -> None:
    config = selection_config(None, steps=8)
    arguments = build_stage(config, "prior", tmp_path / "run")
    module = arguments["module"]
    fit(out_dir=tmp_path / "run" / "prior", **arguments)
    trained = load_file(str(tmp_path / "run" / "prior" / "trained" / "g2_style.safetensors"))
    last = module.generator_ema.state_dict()
    assert trained.keys() == last.keys() and all(torch.equal(trained[k], last[k]) for k in last)
    assert not (tmp_path / "run" / "prior" / "selection.json").exists()
    assert "agilegan3d_selection" not in torch.load(
        tmp_path / "run" / "prior" / "checkpoints" / "last.ckpt", weights_only=True
    )


@pytest.mark.parametrize("kind", ["missing", "not TorchScript"])
def test_bad_features_file_exits_2_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    features = tmp_path / "features.pt"
    if kind == "not TorchScript":
        features.write_bytes(b"not a model")
    run = tmp_path / "run"
    argv = ["train", "--config", "tiny", "--stage", "prior", "--out", str(run)]
    assert main([*argv, "--set", f"prior.selection.features={features}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "prior.selection.features" in lines[0] and str(features) in lines[0], lines
    assert ("no such file" if kind == "missing" else "not a TorchScript file") in lines[0]
    assert not (run / "prior" / "checkpoints").exists()


def test_extractor_with_wrong_output_refused_before_training(tmp_path: Path) -> None:
    """An extractor that does not give one feature row per image fails on a probe, before anything trains."""
    from genblocks.errors import InputError

    torch.jit.script(nn.Flatten(0)).save(str(tmp_path / "flat.pt"))
    with pytest.raises(InputError, match="feature extractor"):
        build_stage(selection_config(tmp_path / "flat.pt"), "prior", tmp_path / "run")


def kill_resume_config(features: Path) -> AgileGAN3DConfig:
    """16 prior steps, an evaluation every 4, checkpoints every 8 (the killed run stops after step 8)."""
    return selection_config(features, checkpoint_every_n_steps=8)


KILLED_RUN = """
import torch; torch.set_num_threads({threads})
from pathlib import Path
from genblocks.testing.resume import KillAfterCheckpoint
from agilegan3d.training import train_style
from test_selection import kill_resume_config
train_style(kill_resume_config(Path({features!r})), {run!r}, stages=["prior"], callbacks=[KillAfterCheckpoint(8)])
"""


@pytest.mark.slow
def test_killed_prior_run_resumes_to_the_same_choice_and_weights(tmp_path: Path) -> None:
    features = write_extractor(tmp_path / "features.pt")
    train_style(kill_resume_config(features), tmp_path / "straight", stages=["prior"])
    killed = tmp_path / "killed"
    code = KILLED_RUN.format(threads=torch.get_num_threads(), features=str(features), run=str(killed))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=HERE.parent, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    checkpoint = torch.load(killed / "prior" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 8
    assert [row["step"] for row in checkpoint["agilegan3d_selection"]["history"]] == [4, 8]
    assert not (killed / "prior" / "trained").exists()
    train_style(kill_resume_config(features), killed, resume=True, stages=["prior"])
    straight, resumed = (
        json.loads((run / "prior" / "selection.json").read_text()) for run in (tmp_path / "straight", killed)
    )
    assert [row["step"] for row in resumed["evaluations"]] == [4, 8, 12, 16]
    assert resumed == straight
    for name in ("g2_style.safetensors", "exemplars.json"):
        assert (killed / "prior" / "trained" / name).read_bytes() == (
            tmp_path / "straight" / "prior" / "trained" / name
        ).read_bytes(), name
