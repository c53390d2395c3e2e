from __future__ import annotations

import torch

from diffportrait3d.config import tiny_config
from diffportrait3d.modeling_diffportrait3d import DiffPortrait3DModel, build_random_components


def _model(zero_init: bool = True) -> tuple[DiffPortrait3DModel, torch.Tensor]:
    config = tiny_config()
    parts = build_random_components(config.model, config.random, seed=0)
    if not zero_init:
        torch.manual_seed(1)
        for module in parts.view_modules.view_modules.values():
            torch.nn.init.normal_(module.proj_out.weight, std=0.5)
    model = DiffPortrait3DModel(parts.unet, parts.reference_unet, parts.view_controlnet, parts.view_modules)
    text = torch.randn(1, 4, config.random.cross_attention_dim)
    return model, text


def test_placement_matches_diffportrait3d_preset() -> None:
    model, _ = _model()
    names = model.view_modules.placement.module_names()
    # tiny UNet: input blocks 1 (layer), 2 (downsampler), 3 (layer); middle; output 0, 1 (+ second after the
    # upsampler), 2, 3
    assert names == [
        "input_blocks_1",
        "input_blocks_2",
        "input_blocks_3",
        "middle_block",
        "output_blocks_0",
        "output_blocks_1",
        "output_blocks_1_1",
        "output_blocks_2",
        "output_blocks_3",
    ]
    assert model.view_modules.placement.middle_uncond_only


def _run(model: DiffPortrait3DModel, text: torch.Tensor, x: torch.Tensor, cond: torch.Tensor, views: int) -> tuple:
    t = torch.tensor(500)
    source = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    model.write_reference(source, t, text)
    n = x.shape[0]
    eps_c = model(x, t, text.expand(n, -1, -1), num_views=views, view_image=cond)
    eps_u = model.unconditional(x, t, text.expand(n, -1, -1), num_views=views)
    return eps_c, eps_u


def test_zero_init_views_equal_single_view_runs() -> None:
    model, text = _model(zero_init=True)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 4, 8, 8, generator=gen)
    cond = torch.rand(4, 3, 64, 64, generator=gen) * 2 - 1
    with torch.no_grad():
        eps_c, eps_u = _run(model, text, x, cond, views=4)
        assert eps_c.shape == (4, 4, 8, 8) and eps_u.shape == (4, 4, 8, 8)
        for v in range(4):
            single_c, single_u = _run(model, text, x[v : v + 1], cond[v : v + 1], views=1)
            torch.testing.assert_close(eps_c[v : v + 1], single_c, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(eps_u[v : v + 1], single_u, atol=1e-5, rtol=1e-5)


def test_trained_view_modules_couple_views() -> None:
    model, text = _model(zero_init=False)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 4, 8, 8, generator=gen)
    cond = torch.rand(4, 3, 64, 64, generator=gen) * 2 - 1
    with torch.no_grad():
        eps_c, _ = _run(model, text, x, cond, views=4)
        single_c, _ = _run(model, text, x[:1], cond[:1], views=1)
    assert (eps_c[:1] - single_c).abs().max() > 1e-3


def test_middle_module_runs_only_in_unconditional_pass() -> None:
    model, text = _model(zero_init=True)
    middle = model.view_modules.view_modules["middle_block"]
    calls: list[int] = []
    handle = middle.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        model.write_reference(torch.randn(1, 4, 8, 8), 10, text)
        model(x, 10, text.expand(2, -1, -1), num_views=2)
        assert calls == []
        model.unconditional(x, 10, text.expand(2, -1, -1), num_views=2)
        assert calls == [1]
    handle.remove()
