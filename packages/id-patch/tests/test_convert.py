"""The official-checkpoint converter: key layouts detected for both projection types, agreement with diffusers' own
IP-Adapter converter, ours -> official -> ours round trips, paper-size shape checks on meta tensors, clear errors for
unknown layouts, and the release folder (id-patch.bin + ControlNetModel/) loaded as a pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.loaders.unet import UNet2DConditionLoadersMixin

from id_patch.cli import main as cli_main
from id_patch.convert_id_patch_original import (
    convert_official,
    convert_release,
    detect_key_layout,
    detect_projection_type,
    load_official_controlnet,
    load_official_pipeline,
    official_to_diffusers,
    to_official_state_dict,
)
from id_patch.modeling_id_patch import IDPatchProjector
from id_patch.testing import TINY_ID_PATCH_CONFIG, tiny_id_patch_pipeline, tiny_id_projector

PROJ_TYPES = ["faceid_mlp", "resampler"]
TINY_DIM_HEAD = TINY_ID_PATCH_CONFIG.resampler_dim_head


def _outputs_equal(a: IDPatchProjector, b: IDPatchProjector) -> None:
    faces = torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(0))
    for x, y in zip(a(faces), b(faces), strict=True):
        assert torch.equal(x, y)


def test_official_key_names() -> None:
    mlp = to_official_state_dict(tiny_id_projector(proj_type="faceid_mlp"))
    expected = {"proj.0.weight", "proj.0.bias", "proj.2.weight", "proj.2.bias", "norm.weight", "norm.bias"}
    assert set(mlp["patch_proj"]) == set(mlp["prompt_proj"]) == expected
    resampler = to_official_state_dict(tiny_id_projector(proj_type="resampler"))["prompt_proj"]
    for key in ("latents", "proj_in.weight", "proj_out.bias", "norm_out.weight", "layers.0.0.norm1.weight",
                "layers.0.0.norm2.bias", "layers.0.0.to_q.weight", "layers.0.0.to_kv.weight",
                "layers.0.0.to_out.weight", "layers.1.1.0.weight", "layers.1.1.1.weight", "layers.1.1.3.weight"):  # fmt: skip
        assert key in resampler, key
    assert resampler["layers.0.0.to_kv.weight"].shape == (2 * 32, 32)
    assert not any(".attn." in k or ".ff." in k for k in resampler)


@pytest.mark.parametrize("proj_type", PROJ_TYPES)
def test_layout_and_type_detection(proj_type: str) -> None:
    projector = tiny_id_projector(proj_type=proj_type)
    official = to_official_state_dict(projector)
    for name in ("patch_proj", "prompt_proj"):
        assert detect_key_layout(official[name]) == "official"
        assert detect_key_layout(getattr(projector, name).state_dict()) == "diffusers"
        assert detect_projection_type(official[name]) == proj_type
        assert detect_projection_type(getattr(projector, name).state_dict()) == proj_type


@pytest.mark.parametrize("proj_type", PROJ_TYPES)
def test_round_trip_ours_official_ours(proj_type: str) -> None:
    projector = tiny_id_projector(seed=5, proj_type=proj_type)
    conversion = convert_official(to_official_state_dict(projector), dim_head=TINY_DIM_HEAD, expect_paper_shapes=False)
    assert all(report.is_exact for report in conversion.reports.values())
    converted, original = conversion.projector.id_patch_config, projector.id_patch_config
    prefix = "mlp_" if proj_type == "faceid_mlp" else "resampler_"
    for field in ("proj_type", "face_dim", "num_tokens", "token_dim", "patch_size"):
        assert getattr(converted, field) == getattr(original, field), field
    for field in (f for f in vars(original) if f.startswith(prefix)):
        assert getattr(converted, field) == getattr(original, field), field
    _outputs_equal(conversion.projector, projector)
    # a checkpoint already in diffusers naming passes through
    ours = {name: getattr(projector, name).state_dict() for name in ("patch_proj", "prompt_proj")}
    _outputs_equal(convert_official(ours, dim_head=TINY_DIM_HEAD, expect_paper_shapes=False).projector, projector)


@pytest.mark.parametrize("proj_type", PROJ_TYPES)
def test_matches_diffusers_ip_adapter_converter(proj_type: str) -> None:
    # diffusers' converter (used upstream) assumes dim_head 64, depth 4 and ffn_ratio 4 for the resampler
    torch.manual_seed(0)
    projector = IDPatchProjector(
        face_dim=16, num_tokens=2, token_dim=64, patch_size=8, proj_type=proj_type, resampler_hidden_dim=64,
        resampler_depth=4, resampler_heads=1, resampler_dim_head=64, resampler_ff_mult=4,
    )  # fmt: skip
    official = to_official_state_dict(projector)
    loader = UNet2DConditionLoadersMixin()
    for name in ("patch_proj", "prompt_proj"):
        reference = loader._convert_ip_adapter_image_proj_to_diffusers(official[name], low_cpu_mem_usage=False)
        ours, unmatched = official_to_diffusers(official[name])
        assert not unmatched
        expected = reference.state_dict()
        assert set(ours) == set(expected)
        for key, value in expected.items():
            assert torch.equal(ours[key], value), key
        faces = torch.randn(3, 1, 16)
        assert torch.equal(reference(faces), getattr(projector, name)(faces))


@pytest.mark.parametrize("proj_type", PROJ_TYPES)
def test_paper_shapes_are_asserted_on_meta(proj_type: str) -> None:
    with torch.device("meta"):
        paper = IDPatchProjector(proj_type=proj_type)
        wrong = IDPatchProjector(proj_type=proj_type, num_tokens=4)
    conversion = convert_official(to_official_state_dict(paper))
    projector = conversion.projector
    assert projector.device.type == "meta"
    config = projector.id_patch_config
    assert (config.num_tokens, config.token_dim, config.patch_size, config.face_dim) == (16, 2048, 64, 512)
    probe = torch.zeros(5, 1, 512, device="meta")
    assert projector.prompt_proj(probe).shape == (5, 16, 2048)
    assert projector.patch_proj(probe).shape == (5, 3, 4096)
    with pytest.raises(ValueError, match=r"prompt_proj \(4, 2048\).*expected \(16, 2048\) and \(3, 4096\)"):
        convert_official(to_official_state_dict(wrong))


def test_unknown_layouts_name_the_keys() -> None:
    with pytest.raises(ValueError, match=r"\['foo.bias', 'foo.weight'\]"):
        detect_projection_type({"foo.weight": torch.zeros(1), "foo.bias": torch.zeros(1)})
    with pytest.raises(ValueError, match="plain IP-Adapter"):
        detect_projection_type({"proj.weight": torch.zeros(1), "norm.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"missing \['prompt_proj'\]"):
        convert_official({"patch_proj": {}})


def test_unmatched_keys_are_reported() -> None:
    official = to_official_state_dict(tiny_id_projector())
    official["prompt_proj"]["proj.9.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"proj\.9\.weight"):
        convert_official(official, expect_paper_shapes=False)
    conversion = convert_official(official, expect_paper_shapes=False, strict=False)
    assert conversion.reports["prompt_proj"].unexpected_keys == ["proj.9.weight"]
    assert conversion.reports["patch_proj"].is_exact


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory):
    """A fake release folder built from the tiny pipeline: id-patch.bin (official naming) + ControlNetModel/."""
    pipe = tiny_id_patch_pipeline(seed=0)
    folder = tmp_path_factory.mktemp("release")
    torch.save(to_official_state_dict(pipe.id_projector), folder / "id-patch.bin")
    pipe.controlnet.save_pretrained(folder / "ControlNetModel")
    return pipe, folder


def test_release_files_convert_and_controlnet_loads_as_is(release, tmp_path) -> None:
    pipe, folder = release
    controlnet = load_official_controlnet(folder)
    for (name, a), b in zip(controlnet.state_dict().items(), pipe.controlnet.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    conversion = convert_release(folder, tmp_path, expect_paper_shapes=False)
    assert all(report.is_exact for report in conversion.reports.values())
    _outputs_equal(IDPatchProjector.from_pretrained(tmp_path / "id_projector"), pipe.id_projector)
    assert (tmp_path / "controlnet" / "diffusion_pytorch_model.safetensors").is_file()
    assert cli_main(["convert", "--checkpoint", str(folder), "--out", str(tmp_path / "cli"), "--any-shape"]) == 0
    _outputs_equal(IDPatchProjector.from_pretrained(tmp_path / "cli" / "id_projector"), pipe.id_projector)


def test_official_pipeline_reproduces_ours(release, tmp_path) -> None:
    pipe, folder = release
    base = StableDiffusionXLPipeline(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        text_encoder_2=pipe.text_encoder_2,
        tokenizer=pipe.tokenizer,
        tokenizer_2=pipe.tokenizer_2,
        unet=pipe.unet,
        scheduler=pipe.scheduler,
        add_watermarker=False,
    )
    base.save_pretrained(tmp_path / "base")
    loaded = load_official_pipeline(tmp_path / "base", folder, expect_paper_shapes=False)
    loaded.set_progress_bar_config(disable=True)
    kwargs = {
        "prompt": "two people",
        "face_embeds": torch.randn(2, 16, generator=torch.Generator().manual_seed(1)),
        "face_locations": [[20.0, 30.0], [44.0, 30.0]],
        "num_inference_steps": 2,
        "output_type": "np",
    }
    expected = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
    actual = loaded(**kwargs, generator=torch.Generator().manual_seed(0)).images
    assert np.array_equal(actual, expected)
