"""R_patch / R_token: both projection types give the spec's shapes, the MLP's LayerNorm acts per patch channel, the
token layout is face-major, negative tokens come from a zero embedding, and the folder format round-trips."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers.models.embeddings import IPAdapterFaceIDImageProjection, IPAdapterPlusImageProjection

from id_patch.modeling_id_patch import IDPatchConfig, IDPatchProjector
from id_patch.testing import TINY_ID_PATCH_CONFIG, tiny_id_projector

PROJ_TYPES = ["faceid_mlp", "resampler"]


def test_config_dict_round_trip_and_unknown_key() -> None:
    config = IDPatchConfig(proj_type="resampler", num_tokens=4)
    assert IDPatchConfig.from_dict(config.to_dict()) == config
    assert IDPatchConfig.from_dict({**config.to_dict(), "_class_name": "IDPatchProjector"}) == config
    with pytest.raises(ValueError, match="num_token"):
        IDPatchConfig.from_dict({"num_token": 4})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("proj_type", "mlp", "proj_type"),
        ("patch_size", 7, "even"),
        ("face_anchor", "eyes", "face_anchor"),
        ("face_dim", 0, "face_dim"),
    ],
)
def test_config_rejects_bad_values(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IDPatchConfig(**{field: value})


@pytest.mark.parametrize("proj_type", PROJ_TYPES)
def test_projection_shapes(proj_type: str) -> None:
    projector = tiny_id_projector(proj_type=proj_type)
    expected = IPAdapterFaceIDImageProjection if proj_type == "faceid_mlp" else IPAdapterPlusImageProjection
    assert isinstance(projector.patch_proj, expected) and isinstance(projector.prompt_proj, expected)
    faces = torch.randn(3, TINY_ID_PATCH_CONFIG.face_dim)
    # raw projections: (N, 1, D) -> (N, 3, p*p) and (N, num_tokens, token_dim)
    assert projector.patch_proj(faces[:, None]).shape == (3, 3, 8 * 8)
    assert projector.prompt_proj(faces[:, None]).shape == (3, 2, 64)
    assert projector.patches(faces).shape == (3, 3, 8, 8)
    assert projector.patches(faces[:, None]).shape == (3, 3, 8, 8)
    batch = torch.randn(2, 3, TINY_ID_PATCH_CONFIG.face_dim)
    out = projector(batch)
    assert out.patches.shape == (2, 3, 3, 8, 8)
    assert out.id_tokens.shape == (2, 3 * 2, 64)
    assert projector.id_tokens(faces).shape == (1, 6, 64)
    with pytest.raises(ValueError, match="face_dim=16"):
        projector.patches(torch.randn(3, 15))


@pytest.mark.parametrize("proj_type", PROJ_TYPES)
def test_paper_size_shapes_on_meta(proj_type: str) -> None:
    with torch.device("meta"):
        projector = IDPatchProjector(proj_type=proj_type)
        faces = torch.randn(2, 512)
        assert projector.patch_proj(faces[:, None]).shape == (2, 3, 4096)
        assert projector.prompt_proj(faces[:, None]).shape == (2, 16, 2048)
        assert projector.patches(faces).shape == (2, 3, 64, 64)
        assert projector.id_tokens(faces[None]).shape == (1, 2 * 16, 2048)


def test_mlp_patch_layernorm_is_per_channel() -> None:
    projector = tiny_id_projector(proj_type="faceid_mlp")
    norm = projector.patch_proj.norm
    assert norm.normalized_shape == (8 * 8,)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    faces = torch.randn(4, 16)
    raw = projector.patch_proj.ff(faces[:, None]).reshape(4, 3, 64)
    mean = raw.mean(-1, keepdim=True)
    var = raw.var(-1, unbiased=False, keepdim=True)
    expected = (raw - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias
    torch.testing.assert_close(projector.patches(faces).reshape(4, 3, 64), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("proj_type", PROJ_TYPES)
def test_id_tokens_are_face_major_and_negative_uses_zeros(proj_type: str) -> None:
    projector = tiny_id_projector(proj_type=proj_type)
    faces = torch.randn(2, 3, 16)
    tokens = projector.id_tokens(faces)
    per_face = [projector.prompt_proj(faces[:, f : f + 1]) for f in range(3)]  # (B, 2, 64) each
    torch.testing.assert_close(tokens, torch.cat(per_face, dim=1))
    negative = projector.negative_id_tokens(num_faces=3, batch_size=2)
    zero_tokens = projector.prompt_proj(torch.zeros(1, 1, 16))
    torch.testing.assert_close(negative, zero_tokens.repeat(2, 3, 1))


@pytest.mark.parametrize("proj_type", PROJ_TYPES)
def test_save_load_round_trip(proj_type: str, tmp_path) -> None:
    projector = tiny_id_projector(seed=3, proj_type=proj_type)
    projector.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json",
        "patch_proj.safetensors",
        "prompt_proj.safetensors",
    ]
    saved = json.loads((tmp_path / "config.json").read_text())
    assert {saved[k] for k in ("proj_type", "num_tokens", "token_dim", "patch_size")} >= {proj_type, 2, 64, 8}
    loaded = IDPatchProjector.from_pretrained(tmp_path)
    assert loaded.id_patch_config == projector.id_patch_config
    faces = torch.randn(2, 3, 16)
    for a, b in zip(loaded(faces), projector(faces), strict=True):
        assert torch.equal(a, b)
    assert IDPatchProjector.from_pretrained(tmp_path, torch_dtype=torch.float16).dtype == torch.float16
    with pytest.raises(ValueError, match="device_map"):
        IDPatchProjector.from_pretrained(tmp_path, device_map="auto")
