"""MagicAnimate warm start: the conversion round trip is bit-exact on a tiny layout; the key report is strict."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genblocks.errors import InputError
from humananim.config import tiny_config
from humananim.convert import TEMPORAL_CHECKPOINT, convert_magicanimate, export_magicanimate
from humananim.modeling import HumanAnimComponents, build_random_components

CONFIG = tiny_config()
DENSEPOSE = dataclasses.replace(CONFIG.model, pose_type="densepose")


def _randomize(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _released(seed: int) -> HumanAnimComponents:
    """Random components standing in for a MagicAnimate release (its ControlNet reads 3 channels: blur weights 0)."""
    components = build_random_components(CONFIG.model, CONFIG.random, seed=seed)
    for i, part in enumerate((components.reference_unet, components.controlnet, components.motion_modules)):
        _randomize(part, seed + i)
    with torch.no_grad():
        components.controlnet.controlnet_cond_embedding.conv_in.weight[:, 3:] = 0
    return components


def _files(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.suffix == ".safetensors":
            tensors.update({f"{rel}:{k}": v for k, v in load_file(str(path)).items()})
        elif path.suffix == ".ckpt":
            loaded = torch.load(path, weights_only=True)
            tensors.update({f"{rel}:{k}": v for k, v in loaded.items()})
    return tensors


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    released = _released(1)
    export_magicanimate(released, tmp_path / "magicanimate")
    fresh = build_random_components(DENSEPOSE, CONFIG.random, seed=0)
    report = convert_magicanimate(tmp_path / "magicanimate", fresh, DENSEPOSE)
    assert report.is_exact and not report.skipped
    assert set(report.parts) == {"appearance_encoder", "densepose_controlnet", "temporal_attention"}
    for name in ("reference_unet", "controlnet", "motion_modules"):
        ours, theirs = getattr(fresh, name).state_dict(), getattr(released, name).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name
    assert fresh.controlnet.config["conditioning_channels"] == 6
    export_magicanimate(fresh, tmp_path / "again")
    first, second = _files(tmp_path / "magicanimate"), _files(tmp_path / "again")
    assert first.keys() == second.keys() and len(first) > 100
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_temporal_checkpoint_uses_animatediff_keys(tmp_path: Path) -> None:
    export_magicanimate(_released(2), tmp_path)
    keys = set(torch.load(tmp_path / TEMPORAL_CHECKPOINT, weights_only=True))
    block = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0"
    assert {f"{block}.attention_blocks.0.to_q.weight", f"{block}.attention_blocks.1.pos_encoder.pe",
            f"{block}.norms.1.weight", f"{block}.ff_norm.bias", f"{block}.ff.net.0.proj.weight",
            "up_blocks.1.motion_modules.1.temporal_transformer.proj_out.weight"} <= keys  # fmt: skip
    assert not any("attn1" in k or "pos_embed" in k for k in keys)


def test_skeleton_pose_skips_the_densepose_controlnet(tmp_path: Path) -> None:
    export_magicanimate(_released(3), tmp_path)
    fresh = build_random_components(CONFIG.model, CONFIG.random, seed=0)
    before = {k: v.clone() for k, v in fresh.controlnet.state_dict().items()}
    report = convert_magicanimate(tmp_path, fresh, CONFIG.model)
    assert report.skipped == ["densepose_controlnet"]
    assert all(torch.equal(before[k], v) for k, v in fresh.controlnet.state_dict().items())


def test_prefixed_checkpoint_loads_and_extra_keys_fail_strict(tmp_path: Path) -> None:
    released = _released(4)
    export_magicanimate(released, tmp_path)
    path = tmp_path / TEMPORAL_CHECKPOINT
    state = torch.load(path, weights_only=True)
    torch.save({"state_dict": {f"module.unet.{k}": v for k, v in state.items()}}, path)
    fresh = build_random_components(CONFIG.model, CONFIG.random, seed=0)
    assert convert_magicanimate(tmp_path, fresh, CONFIG.model).is_exact
    assert all(
        torch.equal(a, b)
        for a, b in zip(fresh.motion_modules.state_dict().values(), released.motion_modules.state_dict().values())
    )
    state["down_blocks.0.motion_modules.5.temporal_transformer.proj_in.weight"] = torch.zeros(32, 32)
    torch.save(state, path)
    with pytest.raises(InputError, match="temporal_attention"):
        convert_magicanimate(tmp_path, build_random_components(CONFIG.model, CONFIG.random, seed=0), CONFIG.model)
    report = convert_magicanimate(
        tmp_path, build_random_components(CONFIG.model, CONFIG.random, seed=0), CONFIG.model, strict=False
    )
    assert report.parts["temporal_attention"].unexpected_keys == [
        "down_blocks.0.motion_modules.5.temporal_transformer.proj_in.weight"
    ]


def test_not_a_release_folder(tmp_path: Path) -> None:
    components = build_random_components(CONFIG.model, CONFIG.random, seed=0)
    with pytest.raises(InputError, match="not a folder"):
        convert_magicanimate(tmp_path / "missing", components, CONFIG.model)
    with pytest.raises(InputError, match="holds none"):
        convert_magicanimate(tmp_path, components, CONFIG.model)
