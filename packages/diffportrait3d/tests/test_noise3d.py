from __future__ import annotations

import torch

from diffportrait3d.cameras import orbit_cameras
from diffportrait3d.config import tiny_config
from diffportrait3d.noise3d import EG3DConditionRenderer, EG3DNoisePrior, invert_portrait, tiny_eg3d
from diffportrait3d.pipeline_diffportrait3d import load_pipeline


def _target() -> torch.Tensor:
    # a render of another sample of the same generator: reachable by the inversion
    generator = tiny_eg3d(seed=0)
    return EG3DConditionRenderer(generator, seed=7, truncation_psi=0.5)(orbit_cameras(1))[0]


def test_inversion_loss_falls() -> None:
    result = invert_portrait(tiny_eg3d(seed=0), _target(), num_steps=8, lr=0.05)
    assert len(result.losses) == 9
    assert result.losses[-1] < 0.8 * result.losses[0]
    assert result.ws.shape == (1, tiny_eg3d().num_ws, 32) and result.camera.shape == (1, 25)
    assert result.reconstruction.shape == (1, 3, 32, 32)


def test_start_latents_shape_and_pipeline_path() -> None:
    pipe = load_pipeline(tiny_config())
    prior = EG3DNoisePrior(tiny_eg3d(seed=0), num_steps=2, lr=0.05)
    cams = orbit_cameras(4)
    image = _target()
    latents = prior.start_latents(pipe, image, cams, generator=torch.Generator().manual_seed(0))
    assert latents.shape == (4, 4, 8, 8) and torch.isfinite(latents).all()
    renderer = EG3DConditionRenderer(tiny_eg3d(seed=1))
    conditions = renderer(cams)
    assert conditions.shape == (4, 3, 32, 32) and conditions.min() >= 0 and conditions.max() <= 1
    out = pipe(
        image, cameras=cams, condition_renderer=renderer, latents=latents, num_inference_steps=2, output_type="pt"
    )
    assert out.images.shape == (4, 3, 64, 64)


def test_load_eg3d_round_trip(tmp_path) -> None:
    import pytest
    from safetensors.torch import save_file

    from diffportrait3d.noise3d import load_eg3d

    source = tiny_eg3d(seed=3)
    torch.save(source.state_dict(), tmp_path / "g.pt")
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "g.safetensors"))
    cams = orbit_cameras(2)
    expected = EG3DConditionRenderer(source)(cams)
    for name in ("g.pt", "g.safetensors"):
        loaded = load_eg3d(tmp_path / name, tiny_eg3d(seed=4))
        torch.testing.assert_close(EG3DConditionRenderer(loaded)(cams), expected)
    with pytest.raises(ValueError, match="not found"):
        load_eg3d(tmp_path / "missing.pt", tiny_eg3d())


def test_inversion_with_given_camera_and_bad_image() -> None:
    import pytest

    cam = orbit_cameras(1)
    result = invert_portrait(tiny_eg3d(seed=0), _target(), camera=cam, num_steps=2, lr=0.05)
    torch.testing.assert_close(result.camera, cam)
    with pytest.raises(ValueError, match="image"):
        invert_portrait(tiny_eg3d(seed=0), torch.rand(2, 3, 8, 8), num_steps=1)
