"""CoapAdamW8bit: blockwise 8-bit moments stay within quantisation error of the fp32 CoapAdamW."""

from __future__ import annotations

import math

import pytest
import torch
from coap_testing import TINY_PROJECTION, max_param_diff, tiny_batches, tiny_model, train
from torch import nn

from coap_optim import CoapAdamW, CoapAdamW8bit
from coap_optim.kernels import create_dynamic_map, dequantize_blockwise

SHAPES = [(32, 64), (64, 32), (64, 32, 3, 3), (64,), (8, 8, 1, 1)]


def run_synthetic(optimizer_cls, steps: int = 6, **kwargs):
    """The tiny model's tensor shapes, fed a fixed sequence of well-conditioned gradients.

    Fixed gradients keep the range finder's input identical for both runs: with gradients from the model, the ~1e-3
    weight differences of 8-bit moments change G, and the trailing singular vectors picked at the re-projection
    amplify that far beyond the quantisation error.
    """
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(shape) * 0.1) for shape in SHAPES]
    start = [p.detach().clone() for p in params]
    optimizer = optimizer_cls(params, **kwargs)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            row_scale = 1 + torch.rand(p.shape[0], *([1] * (p.dim() - 1)), generator=generator)
            p.grad = torch.randn(p.shape, generator=generator) * row_scale
        optimizer.step()
    return params, start, optimizer


@pytest.mark.parametrize("restore_state", [False, True])
def test_8bit_tracks_fp32_within_quantisation_error(restore_state: bool) -> None:
    """Six steps through init, refresh and re-projection (restore_state=True: rotations at two refreshes)."""
    projection = {**TINY_PROJECTION, "reproject_factor": 3 if restore_state else 2}
    kwargs = {"lr": 1e-2, "weight_decay": 0.1, "restore_state": restore_state, **projection}
    p32, start, opt32 = run_synthetic(CoapAdamW, **kwargs)
    p8, _, opt8 = run_synthetic(CoapAdamW8bit, min_8bit_size=32, **kwargs)
    for a, b, s in zip(p32, p8, start):
        moved = float((a.detach() - s).abs().max())
        assert moved > 3e-2
        assert float((a.detach() - b.detach()).abs().max()) < 0.05 * moved
    # Quantised moments decode to the fp32 moments within the map's resolution (relative to each block's absmax).
    qmap_m, qmap_v = create_dynamic_map(True), create_dynamic_map(False)
    for a, b in zip(p32, p8):
        s32, s8 = opt32.state[a], opt8.state[b]
        assert s8["exp_avg_codes"].dtype == torch.uint8 and s8["exp_avg_absmax"].dtype == torch.float32
        for name, qmap in (("exp_avg", qmap_m), ("exp_avg_sq", qmap_v)):
            decoded = dequantize_blockwise(
                s8[f"{name}_codes"], s8[f"{name}_absmax"], qmap, block_size=4096, shape=s32[name].shape
            )
            scale = float(s32[name].abs().max())
            assert float((decoded - s32[name]).abs().max()) < 0.05 * scale, name


def test_8bit_unprojected_model_tracks_fp32() -> None:
    batches = tiny_batches(6)
    start, fp32, int8 = tiny_model(), tiny_model(), tiny_model()
    train(fp32, CoapAdamW(fp32.parameters(), lr=1e-2), batches)
    train(int8, CoapAdamW8bit(int8.parameters(), lr=1e-2, min_8bit_size=32), batches)
    moved = max_param_diff(fp32, start)
    assert moved > 3e-2
    assert max_param_diff(fp32, int8) < 0.1 * moved


def test_8bit_routes_and_thresholds() -> None:
    model = tiny_model()
    opt = CoapAdamW8bit(model.parameters(), lr=1e-2, min_8bit_size=64, **TINY_PROJECTION)
    train(model, opt, tiny_batches(2))
    quantised = {n for n, p in model.named_parameters() if "exp_avg_codes" in opt.state[p]}
    # Projected tensors are always quantised; plain ones only from min_8bit_size=64 elements on.
    projected = {"lin1.weight", "lin2.weight", "conv.weight"}
    assert quantised == projected | {"lin2.bias", "conv.bias", "conv1.weight", "norm.weight", "norm.bias"}
    assert opt.state[model.conv1.bias]["exp_avg"].dtype == torch.float32  # 8 elements < 64
    assert opt.state[model.lin1.bias]["exp_avg"].shape == (32,)  # 32 elements < 64
    assert opt.state[model.lin1.weight]["exp_avg_codes"].shape == (16, 64)  # codes keep the moment's shape
    assert opt.state[model.lin1.weight]["exp_avg_absmax"].shape == (1,)
    assert opt.state[model.conv.weight]["exp_avg_absmax"].shape == (math.ceil(45 * 22 * 9 / 4096),)


def test_8bit_plain_large_tensor_matches_fp32_adam() -> None:
    """A plain tensor above min_8bit_size follows AdamW up to the quantisation error of its moments."""
    torch.manual_seed(0)
    w8 = nn.Parameter(torch.randn(64, 96))
    w32 = nn.Parameter(w8.detach().clone())
    start = w8.detach().clone()
    opt8 = CoapAdamW8bit([w8], lr=1e-2, block_size=256, min_8bit_size=1024, convention="torch")
    opt32 = torch.optim.AdamW([w32], lr=1e-2, eps=1e-6, weight_decay=0.0)
    for _ in range(5):
        g = torch.randn(64, 96)
        w8.grad, w32.grad = g.clone(), g.clone()
        opt8.step()
        opt32.step()
    assert opt8.state[w8]["exp_avg_absmax"].shape == (64 * 96 // 256,)
    moved = float((w32.detach() - start).abs().max())
    assert float((w8.detach() - w32.detach()).abs().max()) < 0.05 * moved


def test_8bit_tucker_without_restore_state_refreshes() -> None:
    """The official 8-bit + Tucker + restore_state=False path crashes (spec §5.6); here the refresh uses dequantised M."""
    model = tiny_model()
    opt = CoapAdamW8bit(model.parameters(), lr=1e-2, restore_state=False, **TINY_PROJECTION)
    history = []
    for batch in tiny_batches(4):
        train(model, opt, [batch], loss_scale=1000.0)
        history.append(opt.state[model.conv.weight]["P0"].clone())
    assert not torch.equal(history[1], history[2])  # refreshed at t=2
    assert all(torch.isfinite(h).all() for h in history)


def test_flat_codes_of_older_checkpoints_load_and_resume_identically() -> None:
    """Codes keep the moment shape now; a state dict with the former flat codes loads into that shape and resumes."""
    batches = tiny_batches(4)
    model = tiny_model()
    opt = CoapAdamW8bit(model.parameters(), lr=1e-2, min_8bit_size=64, **TINY_PROJECTION)
    train(model, opt, batches[:2])
    saved = opt.state_dict()
    flat = {
        index: {k: v.reshape(-1) if k.endswith("_codes") else v for k, v in state.items()}
        for index, state in saved["state"].items()
    }
    resumed = tiny_model()
    resumed.load_state_dict(model.state_dict())
    opt_resumed = CoapAdamW8bit(resumed.parameters(), lr=1e-2, min_8bit_size=64, **TINY_PROJECTION)
    opt_resumed.load_state_dict({**saved, "state": flat})
    assert opt_resumed.state[resumed.lin1.weight]["exp_avg_codes"].shape == (16, 64)
    train(model, opt, batches[2:])
    train(resumed, opt_resumed, batches[2:])
    assert max_param_diff(model, resumed) == 0.0
