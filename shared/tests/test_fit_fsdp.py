"""fit() with ``train.strategy=fsdp`` (FSDP2) and the COAP optimizer on two CPU processes (gloo).

Two processes with batch 2 each equal one process with batch 4 (same samples) after steps that include COAP's
projection refresh and re-projection, and a run resumed from its step-2 checkpoint ends on the same weights.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("coap_optim")

_SCRIPT = """
import os
import sys
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from genblocks.training import TrainConfig, fit
from genblocks.training.optim import OptimizerConfig, build_optimizer


class Points(Dataset):
    def __init__(self):
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(64, 8, generator=generator)
        self.y = torch.sin(self.x[:, :2])

    def __len__(self):
        return 64

    def __getitem__(self, index):
        return {"x": self.x[index], "y": self.y[index]}


class Data(L.LightningDataModule):
    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(Points(), batch_size=self.batch_size, shuffle=True)


class Regressor(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 24), nn.Tanh(), nn.Linear(24, 2))

    def training_step(self, batch, batch_idx):
        return ((self.net(batch["x"]) - batch["y"]) ** 2).mean()

    def configure_optimizers(self):
        config = OptimizerConfig(name="coap_adamw", lr=1e-2, weight_decay=0.0, rank=4, update_interval=1,
                                 reproject_factor=2)
        return build_optimizer(self, config)


if __name__ == "__main__":
    out, devices, batch, resume = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "resume"
    L.seed_everything(0, verbose=False)
    module = Regressor()
    config = TrainConfig(
        max_steps=4, accelerator="cpu", devices=devices, strategy="fsdp" if devices > 1 else "auto",
        progress_bar=False, checkpoint_every_n_steps=2, log_every_n_steps=1,
    )
    fit(module, Data(batch), config, out, resume=resume)
    weights = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in module.state_dict().items()}
    kinds = sorted({type(p).__name__ for p in module.parameters()})
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        torch.save({"weights": weights, "kinds": kinds}, out.parent / f"{out.name}-weights.pt")
"""


def _run(script: Path, out: Path, devices: int, batch: int, resume: bool = False) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, str(script), str(out), str(devices), str(batch), "resume" if resume else "fresh"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=script.parent, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out.parent / f"{out.name}-weights.pt", weights_only=True)


def _in_process(out: Path, batch: int) -> dict:
    """The one-process reference, run in this process (no second interpreter start-up)."""
    import lightning as L

    from genblocks.training import TrainConfig, fit

    namespace: dict = {"__name__": "fsdp_train"}
    exec(compile(textwrap.dedent(_SCRIPT), "fsdp_train.py", "exec"), namespace)
    L.seed_everything(0, verbose=False)
    module = namespace["Regressor"]()
    config = TrainConfig(max_steps=4, accelerator="cpu", progress_bar=False, checkpoint_every_n_steps=2)
    fit(module, namespace["Data"](batch), config, out)
    kinds = sorted({type(p).__name__ for p in module.parameters()})
    return {"weights": {k: v.detach().clone() for k, v in module.state_dict().items()}, "kinds": kinds}


@pytest.mark.slow
@pytest.mark.distributed
def test_fsdp2_with_coap_matches_one_process_and_resumes(tmp_path: Path) -> None:
    script = tmp_path / "fsdp_train.py"
    script.write_text(textwrap.dedent(_SCRIPT))
    fsdp = _run(script, tmp_path / "fsdp", 2, 2)
    single = _in_process(tmp_path / "single", 4)
    assert fsdp["kinds"] == ["DTensor"] and single["kinds"] == ["Parameter"]
    worst = max((fsdp["weights"][k] - single["weights"][k]).abs().max().item() for k in single["weights"])
    assert worst < 1e-5, worst  # FSDP averages the two ranks' gradients: fp32 round-off only

    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "fsdp", resumed)
    last = resumed / "checkpoints" / "last.ckpt"
    last.unlink()
    os.link(resumed / "checkpoints" / "step-2.ckpt", last)
    again = _run(script, resumed, 2, 2, resume=True)
    for key, value in fsdp["weights"].items():
        assert torch.equal(again["weights"][key], value), key
