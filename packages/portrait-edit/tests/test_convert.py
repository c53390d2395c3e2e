"""The converter (spec §7): official unet.pth + adapter.pth (with or without DDP ``module.`` prefixes) + a base SD1.5
folder + a CLIP vision folder -> a PortraitEditPipeline folder, bit-exact, with a strict key report."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel

from genblocks.errors import InputError
from portrait_edit.config import tiny_config
from portrait_edit.convert_portrait_edit_original import adapter_from_state_dict, convert_original_checkpoint
from portrait_edit.modeling_portrait_edit import PortraitEditComponents, build_random_components
from portrait_edit.pipeline_portrait_edit import PortraitEditPipeline


def official_files(
    root: Path, seed: int = 3, prefix: str = "module."
) -> tuple[PortraitEditComponents, Path, Path, Path]:
    """Tiny "trained" weights written as upstream's train.py saves them (accelerate/DDP: ``module.`` keys), the base
    SD1.5-layout folder (4-channel UNet) and the CLIP folder."""
    parts = build_random_components(tiny_config().model, seed=seed)
    with torch.no_grad():  # trained weights: the widened channels are no longer zero, the adapter no longer eye
        torch.manual_seed(seed)
        parts.unet.conv_in.weight.normal_(std=0.1)
        parts.adapter.linear1.weight.normal_(std=0.1)
    base = root / "base"
    config = {**parts.unet.config, "in_channels": 4}
    UNet2DConditionModel.from_config(config).save_pretrained(base / "unet")
    parts.vae.save_pretrained(base / "vae")
    parts.text_encoder.save_pretrained(base / "text_encoder")
    parts.tokenizer.save_pretrained(base / "tokenizer")
    parts.scheduler.save_pretrained(base / "scheduler")
    parts.image_encoder.save_pretrained(root / "clip")
    parts.feature_extractor.save_pretrained(root / "clip")
    ckpt = root / "checkpoint-200000"
    ckpt.mkdir()
    torch.save(OrderedDict((prefix + k, v) for k, v in parts.unet.state_dict().items()), ckpt / "unet.pth")
    torch.save(OrderedDict((prefix + k, v) for k, v in parts.adapter.state_dict().items()), ckpt / "adapter.pth")
    return parts, base, root / "clip", ckpt


@pytest.mark.parametrize("prefix", ["module.", ""])
def test_round_trip_is_bit_exact(tmp_path: Path, prefix: str) -> None:
    parts, base, clip, ckpt = official_files(tmp_path, prefix=prefix)
    report = convert_original_checkpoint(ckpt / "unet.pth", ckpt / "adapter.pth", base, clip, tmp_path / "out")
    assert report.is_exact
    assert report.components["unet"].loaded_keys == len(parts.unet.state_dict())
    assert report.components["adapter"].loaded_keys == 4
    pipe = PortraitEditPipeline.from_pretrained(tmp_path / "out")
    for name in ("unet", "adapter", "vae", "text_encoder", "image_encoder"):
        expected, loaded = getattr(parts, name).state_dict(), getattr(pipe, name).state_dict()
        assert expected.keys() == loaded.keys(), name
        for key, value in expected.items():
            assert torch.equal(loaded[key], value), f"{name}.{key}"
    assert pipe.unet.config.in_channels == 8 and pipe.config.combine_type == "concat"
    assert type(pipe.scheduler).__name__ == "UniPCMultistepScheduler"
    written = json.loads((tmp_path / "out" / "conversion_report.json").read_text())
    assert written["is_exact"] and written["resolution"] == 64


def test_converted_pipeline_edits_like_the_original(tmp_path: Path) -> None:
    parts, base, clip, ckpt = official_files(tmp_path)
    convert_original_checkpoint(ckpt / "unet.pth", ckpt / "adapter.pth", base, clip, tmp_path / "out")
    converted = PortraitEditPipeline.from_pretrained(tmp_path / "out")
    original = PortraitEditPipeline(**parts.as_dict())
    kwargs = {
        "image": torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)),
        "prompt": "a man, santa claus costume",
        "use_mask": False,
        "num_inference_steps": 2,
        "output_type": "latent",
    }
    for pipe in (converted, original):
        pipe.set_progress_bar_config(disable=True)
    a = converted(**kwargs, generator=torch.Generator().manual_seed(1)).images
    b = original(**kwargs, generator=torch.Generator().manual_seed(1)).images
    assert torch.equal(a, b)


def test_adapter_sizes_come_from_the_checkpoint() -> None:
    state = {"vae2clip.weight": torch.zeros(768, 1024), "linear1.weight": torch.zeros(50, 54)}
    adapter = adapter_from_state_dict(state)
    assert (adapter.config.clip_tokens, adapter.config.clip_dim, adapter.config.latent_size) == (50, 768, 64)
    assert adapter.num_output_tokens == 50
    with pytest.raises(InputError, match="vae2clip"):
        adapter_from_state_dict({"vae2clip.weight": torch.zeros(768, 1000), "linear1.weight": torch.zeros(50, 54)})
    with pytest.raises(InputError, match=r"linear1\.weight"):
        adapter_from_state_dict({"vae2clip.weight": torch.zeros(768, 1024)})


def test_strict_report_refuses_a_partial_checkpoint(tmp_path: Path) -> None:
    _, base, clip, ckpt = official_files(tmp_path)
    state = torch.load(ckpt / "unet.pth", weights_only=True)
    del state["module.conv_out.bias"]
    state["module.extra.weight"] = torch.zeros(1)
    torch.save(state, ckpt / "partial.pth")
    with pytest.raises(InputError, match="nothing written"):
        convert_original_checkpoint(ckpt / "partial.pth", ckpt / "adapter.pth", base, clip, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    report = convert_original_checkpoint(
        ckpt / "partial.pth", ckpt / "adapter.pth", base, clip, tmp_path / "out", strict=False
    )
    assert report.components["unet"].missing_keys == ["conv_out.bias"]
    assert report.components["unet"].unexpected_keys == ["extra.weight"]
    assert (tmp_path / "out" / "model_index.json").is_file()


def test_unrelated_or_missing_files_are_refused(tmp_path: Path) -> None:
    _, base, clip, ckpt = official_files(tmp_path)
    torch.save({"encoder.weight": torch.zeros(2, 2)}, ckpt / "other.pth")
    with pytest.raises(InputError, match="matches nothing"):
        convert_original_checkpoint(ckpt / "other.pth", ckpt / "adapter.pth", base, clip, tmp_path / "out")
    with pytest.raises(InputError, match="no such file"):
        convert_original_checkpoint(ckpt / "missing.pth", ckpt / "adapter.pth", base, clip, tmp_path / "out")
    with pytest.raises(InputError, match="output tokens"):
        convert_original_checkpoint(
            ckpt / "unet.pth", ckpt / "adapter.pth", base, clip, tmp_path / "out", combine_type="add"
        )
    assert not (tmp_path / "out").exists()
