"""IDPatchTrainingModule on tiny SDXL parts: the loss falls, only ControlNet + R_patch + R_token change, the training
condition and context equal the pipeline's, ID-drop, COAP, and exact resume from a slim checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from genblocks.training import OptimizerConfig
from id_patch.data import IDPatchDataModule, write_synthetic_manifest
from id_patch.training import IDPatchTrainingModule, TrainConfig, build_training_module


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _module(**overrides: Any) -> IDPatchTrainingModule:
    config = TrainConfig()
    module = build_training_module(config)
    defaults = {
        name: getattr(module, name)
        for name in ("unet", "controlnet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
    }
    kwargs = {
        **defaults,
        "id_projector": module.id_projector,
        "noise_scheduler": module.noise_scheduler,
        "optimizer": OptimizerConfig(lr=1e-3, weight_decay=0.0),
        **overrides,
    }
    return IDPatchTrainingModule(**kwargs)


def _data(
    tmp_path: Path, faces: tuple[int, ...] = (2,), num_images: int = 2, batch_size: int = 2
) -> IDPatchDataModule:
    manifest = write_synthetic_manifest(tmp_path / "data", num_images=num_images, faces_per_image=faces)
    data = IDPatchDataModule(str(manifest), resolution=64, batch_size=batch_size, face_dim=16)
    data.setup("fit")
    return data


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[name], p) for name, p in module.named_parameters())


def test_loss_falls_and_only_the_three_trainable_parts_change(tmp_path: Path) -> None:
    module = _module(id_drop_prob=0.1, text_drop_prob=0.05, seed=3, optimizer=OptimizerConfig(lr=3e-3, weight_decay=0))
    batch = next(iter(_data(tmp_path).train_dataloader()))
    module.setup("fit")
    optimizer = module.configure_optimizers()
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    expected = {id(p) for p in (*module.controlnet.parameters(), *module.id_projector.parameters())}
    assert trained == expected
    parts = ("unet", "vae", "text_encoder", "text_encoder_2", "controlnet")
    before = {name: _snapshot(getattr(module, name)) for name in parts}
    before["patch_proj"] = _snapshot(module.id_projector.patch_proj)
    before["prompt_proj"] = _snapshot(module.id_projector.prompt_proj)

    def eval_loss() -> float:
        state = module.generator.get_state()
        module.generator.manual_seed(1234)
        with torch.no_grad():
            loss = torch.stack([module.compute_loss(batch) for _ in range(4)]).mean().item()
        module.generator.set_state(state)
        return loss

    first = eval_loss()
    for _ in range(30):
        loss = module.compute_loss(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    last = eval_loss()
    assert last < 0.7 * first, (first, last)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        assert not _changed(before[name], getattr(module, name)), f"frozen {name} changed"
    assert _changed(before["controlnet"], module.controlnet)
    assert _changed(before["patch_proj"], module.id_projector.patch_proj)
    assert _changed(before["prompt_proj"], module.id_projector.prompt_proj)


class _Capture:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        self.calls.append(dict(kwargs))


def test_training_condition_and_context_match_the_pipeline(tmp_path: Path) -> None:
    module = _module(id_drop_prob=0.0, text_drop_prob=0.0)
    batch = next(iter(_data(tmp_path).train_dataloader()))
    controlnet_inputs, unet_inputs = _Capture(), _Capture()
    module.controlnet.register_forward_pre_hook(controlnet_inputs, with_kwargs=True)
    module.unet.register_forward_pre_hook(unet_inputs, with_kwargs=True)
    module.setup("fit")
    with torch.no_grad():
        module.compute_loss(batch)
    cond = controlnet_inputs.calls[0]["controlnet_cond"]
    context = unet_inputs.calls[0]["encoder_hidden_states"]
    assert cond.shape == (2, 3, 64, 64)
    assert context.shape == (2, 16 + 2 * 2, 64)  # tiny text length 16 + 2 faces x 2 ID tokens
    torch.testing.assert_close(controlnet_inputs.calls[0]["encoder_hidden_states"], context)
    pipe = module.pipeline()
    for b in range(2):
        expected = pipe.prepare_id_condition(
            batch["face_embeds"][b], batch["face_locations"][b], batch["pose_image"][b], 64, 64
        )
        torch.testing.assert_close(cond[b], expected.condition_image[0])
        torch.testing.assert_close(context[b, 16:], expected.id_tokens[0])
        text, _, _, _ = pipe.encode_prompt(batch["caption"][b], device="cpu", do_classifier_free_guidance=False)
        torch.testing.assert_close(context[b, :16], text[0])
    added = unet_inputs.calls[0]["added_cond_kwargs"]
    assert torch.equal(added["time_ids"], batch["time_ids"]) and added["text_embeds"].shape == (2, 32)
    assert batch["time_ids"][0].tolist() == [64.0, 64.0, 0.0, 0.0, 64.0, 64.0]
    assert controlnet_inputs.calls[0]["added_cond_kwargs"] is added or torch.equal(
        controlnet_inputs.calls[0]["added_cond_kwargs"]["time_ids"], added["time_ids"]
    )


def test_id_drop_zeroes_the_token_input_only(tmp_path: Path) -> None:
    module = _module(id_drop_prob=1.0, text_drop_prob=1.0)
    batch = next(iter(_data(tmp_path).train_dataloader()))
    dropped = module.drop_conditions(batch)
    assert torch.equal(dropped["id_token_embeds"], torch.zeros_like(batch["face_embeds"]))
    assert torch.equal(dropped["face_embeds"], batch["face_embeds"])  # the patches keep the identities
    assert dropped["caption"] == ["", ""]
    tokens = module.id_projector.id_tokens(dropped["id_token_embeds"])
    torch.testing.assert_close(tokens, module.id_projector.negative_id_tokens(2, batch_size=2))


def test_coap_optimizer_from_config() -> None:
    coap_optim = pytest.importorskip("coap_optim")
    module = _module(optimizer=OptimizerConfig(name="coap_adamw", lr=1e-3, rank=4, weight_decay=0.0))
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, coap_optim.CoapAdamW)
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert trained == {id(p) for p in (*module.controlnet.parameters(), *module.id_projector.parameters())}


def build(out_dir: Path) -> dict:
    """fit() arguments of the kill/resume test: the tiny config on 5 synthetic photos, batch 2, ID/text dropout, EMA."""
    from genblocks.cli import load_command_config
    from id_patch.training import build_fit_arguments

    overrides = [
        "data.synthetic_images=5",
        "train.max_steps=6",
        "train.checkpoint_every_n_steps=2",
        "train.log_every_n_steps=1",
        "train.progress_bar=false",
        "train.id_drop_prob=0.5",
        "train.text_drop_prob=0.5",
        "train.ema_decay=0.9",
        "train.seed=5",
    ]
    config, _ = load_command_config(TrainConfig, "id_patch", "train", "tiny", overrides)
    return build_fit_arguments(config, out_dir)


def test_kill_mid_epoch_then_resume_from_slim_checkpoint_is_exact(tmp_path: Path) -> None:
    from genblocks.testing.resume import assert_kill_resume_exact

    # step 4 at batch 2 over 5 photos is 8 samples in: mid-way through the second pass
    result = assert_kill_resume_exact(f"{Path(__file__).resolve()}:build", tmp_path, kill_after=4)
    full, resumed = result["uninterrupted"], result["resumed"]
    for a, b in zip(full.ema.shadow_params, resumed.ema.shadow_params, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(full.generator.get_state(), resumed.generator.get_state())
    state = torch.load(result["killed_run"] / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any(k.startswith(("unet.", "vae.", "text_encoder")) for k in state["state_dict"])
    assert any(k.startswith("controlnet.") for k in state["state_dict"])
    assert any(k.startswith("id_projector.prompt_proj.") for k in state["state_dict"])


def test_save_trained_round_trip(tmp_path: Path) -> None:
    module = _module()
    folder = module.save_trained(tmp_path / "trained")
    from diffusers import ControlNetModel

    from id_patch.modeling_id_patch import IDPatchProjector

    controlnet = ControlNetModel.from_pretrained(folder / "controlnet")
    projector = IDPatchProjector.from_pretrained(folder / "id_projector")
    for a, b in zip(module.controlnet.parameters(), controlnet.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(module.id_projector.parameters(), projector.parameters(), strict=True):
        assert torch.equal(a, b)
