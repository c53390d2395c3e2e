"""Training: Stage I and Stage II on the shared fit(), finite losses, the control loss falls on one batch, exact
kill/resume."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from genblocks.config import load_config
from genblocks.media import write_image
from genblocks.testing.resume import assert_kill_resume_exact
from genblocks.training.fitting import fit
from genblocks.training.gan_module import GANBatch
from omniavatar.config import OmniAvatarConfig
from omniavatar.training import (
    OmniAvatarDataModule,
    OmniAvatarGANModule,
    SemanticSDFModule,
    control_loss,
    mirror_labels,
    save_generator,
    save_semantic_sdf,
    step_datamodule,
)

CONFIG = Path(__file__).resolve().parents[1] / "src" / "omniavatar" / "configs" / "tiny.yaml"


def build(out_dir: Path) -> dict[str, Any]:
    """Tiny Stage II run for the kill/resume check (module-level, loaded by path)."""
    import lightning as L

    config = load_config(OmniAvatarConfig, CONFIG)
    L.seed_everything(0)
    return {
        "module": OmniAvatarGANModule(config),
        "datamodule": OmniAvatarDataModule(config),
        "train_config": config.train,
        "config": config,
    }


def _batch(module: OmniAvatarGANModule, data: OmniAvatarDataModule) -> GANBatch:
    batch = next(iter(data.train_dataloader()))
    return module._gan_batch(batch)


@pytest.mark.parametrize("estimator", ["disc_head", "trained"])
def test_control_loss_falls_on_one_batch(tiny_config: OmniAvatarConfig, estimator: str) -> None:
    config = replace(tiny_config, ctrl_loss=replace(tiny_config.ctrl_loss, estimator=estimator))
    torch.manual_seed(0)
    module = OmniAvatarGANModule(config)
    data = OmniAvatarDataModule(config)
    batch = _batch(module, data)
    if estimator == "trained":
        history = module.fit_estimator(3, batch_size=2)
        assert all(torch.isfinite(torch.tensor(history)))
    z = torch.randn(2, config.generator.z_dim)
    c = batch.c
    assert c is not None
    optimizer = torch.optim.Adam(module.generator.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        fake, _ = module.generate(z, c)
        estimate = module.estimate_controls(fake, c)
        loss = control_loss(estimate, module.control_targets(c), config.flame.expression, 1.0, "l1")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0]


def test_losses_are_finite(tiny_config: OmniAvatarConfig) -> None:
    torch.manual_seed(0)
    module = OmniAvatarGANModule(tiny_config)
    batch = _batch(module, OmniAvatarDataModule(tiny_config))
    logged: dict[str, float] = {}
    module.log = lambda name, value, **_: logged.__setitem__(name, float(value))  # type: ignore[method-assign]
    g = module.generator_loss(batch)
    reg = module.generator_regularization(batch)
    d = module.discriminator_loss(batch)
    assert reg is not None
    assert all(torch.isfinite(t) for t in (g, reg, d))
    assert {"train/control_loss", "train/prior_loss", "train/d_control"} <= logged.keys()


def test_coap_is_selectable(tiny_config: OmniAvatarConfig) -> None:
    coap_optim = pytest.importorskip("coap_optim")
    optimizer = replace(tiny_config.train.optimizer, name="coap_adamw", weight_decay=0.0)
    config = replace(tiny_config, train=replace(tiny_config.train, optimizer=optimizer))
    g_opt, d_opt = OmniAvatarGANModule(config).configure_optimizers()
    assert type(d_opt) is type(g_opt)
    assert type(g_opt).__module__.startswith(coap_optim.__name__)
    assert g_opt.param_groups[0]["lr"] == pytest.approx(config.gan.g_lr * 2 / 3)


def test_mirror_labels_is_an_involution(tiny_config: OmniAvatarConfig) -> None:
    labels = torch.randn(3, 25 + tiny_config.flame.feature_dim)
    mirrored = mirror_labels(labels, tiny_config.flame.feature_dim)
    assert torch.equal(mirror_labels(mirrored, tiny_config.flame.feature_dim), labels)
    assert torch.equal(mirrored[:, 25:-6], labels[:, 25:-6])
    assert torch.equal(mirrored[:, -3], labels[:, -3]) and torch.equal(mirrored[:, -2:], -labels[:, -2:])


def test_stage1_through_fit(tmp_path: Path, tiny_config: OmniAvatarConfig) -> None:
    config = replace(tiny_config, train=replace(tiny_config.train, max_steps=4, stage="sdf"))
    module = SemanticSDFModule(config)
    result = fit(
        module, step_datamodule(4), config.train, tmp_path / "sdf", config=config, save_trained=save_semantic_sdf
    )
    assert result.global_step == 4
    assert result.trained is not None and (result.trained / "semantic_sdf.safetensors").is_file()


@pytest.mark.slow
def test_gan_kill_resume_exact(tmp_path: Path) -> None:
    result = assert_kill_resume_exact(f"{__file__}:build", tmp_path, kill_after=4)
    trained = result["resumed"]
    save_generator(trained, tmp_path / "trained")
    assert (tmp_path / "trained" / "generator.safetensors").is_file()


def _write_folder(root: Path, config: OmniAvatarConfig, count: int = 3) -> torch.Tensor:
    """`count` random 40² PNGs in FFHQ's ``00000/`` layout and an EG3D ``dataset.json``; returns the labels."""
    from omniavatar.pipeline_omniavatar import OmniAvatarPipeline

    rng = np.random.default_rng(0)
    pipeline = OmniAvatarPipeline.from_config(config)
    features = torch.from_numpy(rng.normal(0, 0.2, (count, config.flame.feature_dim)).astype(np.float32))
    yaw = torch.from_numpy(rng.uniform(-0.3, 0.3, count).astype(np.float32))
    labels = pipeline.labels(pipeline.cameras(yaw, torch.zeros(count)), features)
    rows = []
    for k in range(count):
        name = f"00000/img{k:08d}.png"
        write_image(root / name, rng.integers(0, 255, (40, 40, 3), dtype=np.uint8), (0, 255))
        rows.append([name, labels[k].tolist()])
    (root / "dataset.json").write_text(json.dumps({"labels": rows}))
    return labels


def test_folder_data_is_read_per_item_and_mirrored(tmp_path: Path, tiny_config: OmniAvatarConfig) -> None:
    labels = _write_folder(tmp_path, tiny_config)
    config = replace(tiny_config, data=replace(tiny_config.data, root=str(tmp_path), mirror=True))
    data = OmniAvatarDataModule(config)
    data.setup("fit")
    dataset = data.dataset
    assert dataset is not None and len(dataset) == 6
    first, flipped = dataset[1], dataset[4]
    assert first["image"].shape == (3, 32, 32) and first["mask"].shape == (1, 16, 16)
    assert torch.equal(flipped["image"], first["image"].flip(-1)) and torch.equal(first["c"], labels[1])
    expected = labels[1].clone()
    expected[[1, 2, 3, 4, 8]] *= -1  # EG3D's camera flip
    expected[-5:-3] *= -1  # neck (x, y, z) -> (x, -y, -z)
    expected[-2:] *= -1  # jaw (x, y, z) -> (x, -y, -z); shape and expression unchanged
    assert torch.equal(flipped["c"], expected)
    write_image(tmp_path / "00000" / "img00000001.png", np.zeros((40, 40, 3), dtype=np.uint8), (0, 255))
    assert torch.equal(dataset[1]["image"], -torch.ones(3, 32, 32))  # read from disk when asked for, not held


def test_gan_trains_from_a_folder_with_mirroring(tmp_path: Path, tiny_config: OmniAvatarConfig) -> None:
    from omniavatar.cli import main

    _write_folder(tmp_path / "data", tiny_config)
    overrides = [f"data.root={tmp_path / 'data'}", "data.mirror=true", "train.max_steps=2"]
    assert main(["train", "--stage", "gan", "--set", *overrides, "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "trained" / "generator.safetensors").is_file()


def test_folder_label_of_the_wrong_length_is_refused(tmp_path: Path, tiny_config: OmniAvatarConfig) -> None:
    from genblocks.errors import InputError
    from omniavatar.training import read_dataset_folder

    _write_folder(tmp_path, tiny_config)
    with pytest.raises(InputError, match=r"label of 00000/img00000000.png has 51 values, expected 52 \(25 camera"):
        read_dataset_folder(tmp_path, 52)


def test_pretrained_estimator_is_read_from_its_file(tmp_path: Path, tiny_config: OmniAvatarConfig) -> None:
    from safetensors.torch import save_file

    from omniavatar.training import ControlEstimator

    torch.manual_seed(3)
    given = ControlEstimator(tiny_config.flame.pose_dim, tiny_config.ctrl_loss.estimator_channels)
    save_file(given.state_dict(), str(tmp_path / "estimator.safetensors"))
    ctrl = replace(
        tiny_config.ctrl_loss, estimator="pretrained", estimator_path=str(tmp_path / "estimator.safetensors")
    )
    torch.manual_seed(0)  # a different draw from the estimator's: only the file can make them equal
    module = OmniAvatarGANModule(replace(tiny_config, ctrl_loss=ctrl))
    assert module.estimator is not None and not any(p.requires_grad for p in module.estimator.parameters())
    assert module.discriminator.param_head is None  # the discriminator regresses nothing with a given estimator
    batch = _batch(module, OmniAvatarDataModule(tiny_config))
    assert batch.c is not None
    fake, _ = module.generate(torch.randn(2, tiny_config.generator.z_dim), batch.c)
    with torch.no_grad():
        assert torch.equal(module.estimate_controls(fake, batch.c), given(fake["image"]))


def test_geometry_prior_weight_decays_linearly(tiny_config: OmniAvatarConfig) -> None:
    prior = replace(tiny_config.prior_loss, weight=2.0, final_weight=0.5, decay_kimg=1.0)
    torch.manual_seed(0)
    module = OmniAvatarGANModule(replace(tiny_config, prior_loss=prior))
    weights = []
    for images in (0, 250, 500, 1000, 4000):
        module.images_seen = images
        weights.append(module.prior_weight())
    assert weights == pytest.approx([2.0, 1.625, 1.25, 0.5, 0.5])
    module.images_seen = 500
    batch = _batch(module, OmniAvatarDataModule(tiny_config))
    logged: dict[str, float] = {}
    module.log = lambda name, value, **_: logged.__setitem__(name, float(value))  # type: ignore[method-assign]
    loss = float(module.generator_loss(batch).detach())
    control = tiny_config.ctrl_loss.weight * logged["train/control_loss"]
    assert loss == pytest.approx(logged["train/g_loss"] + control + 1.25 * logged["train/prior_loss"], rel=1e-5)
    assert logged["train/prior_loss"] > 0
