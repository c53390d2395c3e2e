"""Training (spec §4) on the tiny configuration: the dropout cases and their nulls, the reconstruction swap, what
trains, UNet-only clipping, a falling loss, the v-prediction target, COAP, exact kill/resume and the train command."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

from genblocks.training import OptimizerConfig
from genblocks.training.reference_video import loss_on_fixed_draws
from portrait_edit.cli import main
from portrait_edit.config import PortraitEditConfig, tiny_config
from portrait_edit.data import pair_datamodule
from portrait_edit.modeling_portrait_edit import SD15_SCHEDULER, black_clip_pixels, clip_pixels, unipc_scheduler
from portrait_edit.training import (
    DROP_CASES,
    ConditionDrops,
    PortraitEditTrainingModule,
    build_fit_arguments,
    build_training_module,
    dropout_cases,
    training_components,
)

FROZEN = ("vae", "text_encoder", "image_encoder")


def _config(**train: Any) -> PortraitEditConfig:
    config = tiny_config()
    return replace(config, train=replace(config.train, **train))


def _module(**options: Any) -> PortraitEditTrainingModule:
    options.setdefault("optimizer", OptimizerConfig(lr=1e-3, weight_decay=1e-2))
    module = PortraitEditTrainingModule(training_components(tiny_config()), **options)
    module.setup("fit")
    return module


def _batch(folder: Path, rows: int = 2) -> dict[str, Any]:
    config = _config(batch_size=rows)
    data = pair_datamodule(replace(config, data=replace(config.data, synthetic_pairs=rows)), folder)
    data.setup("fit")
    return next(iter(data.train_dataloader()))


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def test_one_draw_per_sample_picks_the_spec_band() -> None:
    # spec §4: p <= 0.05 concat, <= 0.10 image, <= 0.15 text, <= 0.20 all three, else nothing
    draws = torch.tensor([0.0, 0.049, 0.05, 0.099, 0.10, 0.149, 0.15, 0.199, 0.2, 0.7])
    cases = dropout_cases(draws, (0.05, 0.05, 0.05, 0.05))
    assert [DROP_CASES[c] for c in cases] == ["concat"] * 2 + ["image"] * 2 + ["text"] * 2 + ["all"] * 2 + ["none"] * 2
    drops = ConditionDrops.from_cases(torch.arange(5))
    table = torch.stack([drops.concat, drops.image, drops.text], dim=1).int().tolist()
    assert table == [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]


def test_the_module_draws_the_cases_and_the_swap_at_their_rates() -> None:
    module = _module(reconstruction_prob=0.05)
    rows = 40_000
    batch = {
        "source": torch.ones(rows, 1, 1, 1),
        "target": torch.zeros(rows, 1, 1, 1),
        "prompt": ["edit"] * rows,
        "source_prompt": ["source"] * rows,
    }
    dropped = module.drop_conditions(batch)
    drops: ConditionDrops = dropped["drops"]
    swapped = dropped["target"].flatten() == 1
    assert swapped.float().mean().item() == pytest.approx(0.05, abs=0.004)
    assert [p == "source" for p in dropped["prompt"]] == swapped.tolist()
    pattern = drops.concat.int() * 4 + drops.image.int() * 2 + drops.text.int()
    rates = {code: (pattern == code).float().mean().item() for code in range(8)}
    # one draw per sample: only the four cases occur (independent drops would give every combination)
    assert rates[4] == pytest.approx(0.05, abs=0.004) and rates[2] == pytest.approx(0.05, abs=0.004)
    assert rates[1] == pytest.approx(0.05, abs=0.004) and rates[7] == pytest.approx(0.05, abs=0.004)
    assert rates[0] == pytest.approx(0.80, abs=0.006) and rates[3] == rates[5] == rates[6] == 0.0
    assert batch["target"].sum() == 0  # the caller's batch is not modified


def test_dropped_conditions_are_grey_latents_black_clip_and_empty_text() -> None:
    module = _module(condition_latents="mean")
    generator = torch.Generator().manual_seed(0)
    source = torch.rand(5, 3, 64, 64, generator=generator) * 2 - 1
    batch = {"source": source, "prompt": ["a man, santa claus costume"] * 5}
    conditions = module.condition_inputs(batch, ConditionDrops.from_cases(torch.arange(5)))  # none..all
    scale = module.vae.config["scaling_factor"]
    with torch.no_grad():
        own = module.vae.encode(source).latent_dist.mean * scale
        grey = module.vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean * scale  # normalised pixels set to 0
    assert grey.abs().mean() > 1e-3  # the training null is not upstream's zero inference latent
    for row, (concat, image) in enumerate([(0, 0), (1, 0), (0, 1), (0, 0), (1, 1)]):
        torch.testing.assert_close(conditions.concat_latents[row], (grey[0] if concat else own[row]))
        torch.testing.assert_close(conditions.token_latents[row], (grey[0] if image else own[row]))
    mean = torch.tensor(module.feature_extractor.image_mean).view(3, 1, 1)
    std = torch.tensor(module.feature_extractor.image_std).view(3, 1, 1)
    black = ((0.0 - mean) / std).expand(3, 32, 32)
    torch.testing.assert_close(black_clip_pixels(module.feature_extractor, 1)[0], black)
    own_clip = clip_pixels(module.feature_extractor, (source + 1) / 2)
    for row in range(5):
        expected = black if row in (2, 4) else own_clip[row]
        torch.testing.assert_close(conditions.clip_pixel_values[row], expected)
    assert conditions.prompts == ["a man, santa claus costume"] * 3 + ["", ""]


def test_reconstruction_trains_source_to_source(tmp_path: Path) -> None:
    batch = _batch(tmp_path)
    always = _module(reconstruction_prob=1.0).drop_conditions(batch)
    torch.testing.assert_close(always["target"], batch["source"])
    assert always["prompt"] == batch["source_prompt"] == ["a person", "a person"]
    never = _module(reconstruction_prob=0.0).drop_conditions(batch)
    assert torch.equal(never["target"], batch["target"]) and never["prompt"] == batch["prompt"]


def test_a_step_changes_only_the_unet_and_the_adapter(tmp_path: Path) -> None:
    module = _module()
    optimizer = module.configure_optimizers()
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in (*module.unet.parameters(), *module.adapter.parameters())}
    before = {name: _params(getattr(module, name)) for name in ("unet", "adapter", *FROZEN)}
    module.train()
    assert not any(getattr(module, name).training for name in FROZEN) and module.unet.training
    module.compute_loss(_batch(tmp_path)).backward()
    optimizer.step()
    for name in FROZEN:
        after = _params(getattr(module, name))
        assert all(torch.equal(before[name][key], after[key]) for key in after), name
    unet, adapter = _params(module.unet), _params(module.adapter)
    changed = [key for key in unet if not torch.equal(before["unet"][key], unet[key])]
    assert len(changed) / len(unet) > 0.9
    assert not torch.equal(before["unet"]["conv_in.weight"][:, 4:], unet["conv_in.weight"][:, 4:])  # the new inputs
    assert all(not torch.equal(before["adapter"][key], adapter[key]) for key in adapter)


def test_gradient_clipping_takes_the_unet_only() -> None:
    module = _module()
    for parameter in (*module.unet.parameters(), *module.adapter.parameters()):
        parameter.grad = torch.full_like(parameter, 10.0)
    module.configure_gradient_clipping(module.configure_optimizers(), 1.0)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.unet.parameters()]))
    assert norm.item() == pytest.approx(1.0, rel=1e-4)
    assert all((p.grad == 10.0).all() for p in module.adapter.parameters())


def test_loss_falls_on_a_tiny_overfit(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = _module(drop_bands=(0.0, 0.0, 0.0, 0.0), reconstruction_prob=0.0, optimizer=OptimizerConfig(lr=2e-3))
    batch = _batch(tmp_path)
    first = loss_on_fixed_draws(module, batch)
    optimizer = module.configure_optimizers()
    for _ in range(30):
        optimizer.zero_grad()
        module.compute_loss(batch).backward()
        optimizer.step()
    last = loss_on_fixed_draws(module, batch)
    assert last < 0.7 * first, (first, last)


def _recorded_loss(module: PortraitEditTrainingModule, batch: dict[str, Any]) -> tuple[float, dict[str, torch.Tensor]]:
    seen: dict[str, torch.Tensor] = {}
    add_noise = module.noise_scheduler.add_noise

    def record(latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        seen.update(latents=latents, noise=noise, timesteps=timesteps)
        return add_noise(latents, noise, timesteps)

    module.noise_scheduler.add_noise = record  # type: ignore[method-assign]
    module.predict = lambda noisy, timesteps, batch: torch.zeros_like(noisy)  # type: ignore[method-assign]
    with torch.no_grad():
        return float(module.compute_loss(batch)), seen


def test_v_prediction_when_the_scheduler_asks(tmp_path: Path) -> None:
    batch = _batch(tmp_path)
    v_scheduler = DDPMScheduler(**SD15_SCHEDULER, prediction_type="v_prediction")
    module = _module(noise_scheduler=v_scheduler)
    assert module.prediction_type == "v_prediction"
    loss, seen = _recorded_loss(module, batch)
    alphas = v_scheduler.alphas_cumprod[seen["timesteps"]].view(-1, 1, 1, 1)
    velocity = alphas.sqrt() * seen["noise"] - (1 - alphas).sqrt() * seen["latents"]
    assert loss == pytest.approx(velocity.pow(2).mean().item(), rel=1e-5)
    assert abs(loss - seen["noise"].pow(2).mean().item()) > 1e-3  # not the epsilon target
    epsilon_loss, epsilon_seen = _recorded_loss(_module(), batch)
    assert epsilon_loss == pytest.approx(epsilon_seen["noise"].pow(2).mean().item(), rel=1e-5)
    # a base model whose scheduler says v_prediction trains with it, with no setting
    components = training_components(tiny_config())
    components.scheduler = unipc_scheduler({**SD15_SCHEDULER, "prediction_type": "v_prediction"})
    assert PortraitEditTrainingModule(components).prediction_type == "v_prediction"


def test_coap_adamw8bit_is_selectable(tmp_path: Path) -> None:
    pytest.importorskip("coap_optim")
    config = _config(optimizer=OptimizerConfig(name="coap_adamw8bit", lr=1e-3, rank=4))
    module = build_training_module(config)
    module.setup("fit")
    optimizer = module.configure_optimizers()
    assert type(optimizer).__name__ == "CoapAdamW8bit"
    before, vae = _params(module.unet), _params(module.vae)
    module.compute_loss(_batch(tmp_path)).backward()
    optimizer.step()
    assert not torch.equal(before["conv_in.weight"], module.unet.conv_in.weight)
    assert all(torch.equal(vae[key], value) for key, value in _params(module.vae).items())


def build(out_dir: Path) -> dict[str, Any]:
    """The kill/resume run: 3 steps of the tiny config, a checkpoint after each."""
    config = _config(max_steps=3, checkpoint_every_n_steps=1, drop_all=0.3, reconstruction_prob=0.3)
    arguments = build_fit_arguments(config, out_dir)
    arguments.pop("save_trained")  # the train command's test covers trained/; three pipeline writes cost time here
    return arguments


@pytest.mark.slow
def test_kill_and_resume_is_exact(tmp_path: Path) -> None:
    from genblocks.testing.resume import assert_kill_resume_exact

    runs = assert_kill_resume_exact(f"{__file__}:build", tmp_path, kill_after=2)
    checkpoint = torch.load(runs["killed_run"] / "checkpoints" / "last.ckpt", weights_only=True)
    assert not [key for key in checkpoint["state_dict"] if key.split(".")[0] in FROZEN]  # the slim checkpoint
    assert any(key.startswith("adapter.") for key in checkpoint["state_dict"])


def test_train_command_writes_a_pipeline_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from portrait_edit.pipeline_portrait_edit import PortraitEditPipeline

    out = tmp_path / "run"
    assert main(["train", "--config", "tiny", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and len(summary["losses"]) == 2 and summary["prediction_type"] == "epsilon"
    for name in ("config.yaml", "metrics.csv", "loss.png", "checkpoints/last.ckpt", "data/pairs.jsonl"):
        assert (out / name).is_file(), name
    pipeline = PortraitEditPipeline.from_pretrained(out / "trained")
    fresh = training_components(tiny_config())
    assert not torch.equal(pipeline.unet.conv_in.weight, fresh.unet.conv_in.weight)
    assert torch.equal(pipeline.vae.encoder.conv_in.weight, fresh.vae.encoder.conv_in.weight)
    assert main(["train", "--out", str(out), "--resume", "--set", "train.max_steps=3"]) == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 3
    capsys.readouterr()
    assert main(["train", "--out", str(out)]) == 2  # a used run folder
    assert "--resume" in capsys.readouterr().err
    missing = tmp_path / "missing"
    assert main(["train", "--out", str(missing), "--set", f"data.manifest={tmp_path / 'none.jsonl'}"]) == 2
    assert "data.manifest" in capsys.readouterr().err and not missing.exists()
