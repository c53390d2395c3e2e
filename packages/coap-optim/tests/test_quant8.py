"""Blockwise 8-bit quantisation and the 8-bit Adam update: maps, error bounds, Triton == torch == reference.

Run alone with ``TRITON_INTERPRET=1`` exported (the root conftest sets it when there is no GPU).
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from coap_optim.kernels import (
    adam_update_8bit,
    create_dynamic_map,
    dequantize_blockwise,
    has_triton,
    quantize_blockwise,
)
from coap_optim.kernels import quant8 as q8

# The kernels read TRITON_INTERPRET when their module is first imported (lazily, by the first triton-path call).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

requires_triton = pytest.mark.skipif(not has_triton(), reason="triton is not installed")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
IMPLS = ["torch", pytest.param("triton", marks=[pytest.mark.triton, requires_triton])]
HYPER = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "denom_scale": 1.0}


def _qmaps():
    return create_dynamic_map(signed=True).to(DEVICE), create_dynamic_map(signed=False).to(DEVICE)


def _half_max_gap(qmap: torch.Tensor) -> float:
    return qmap.diff().max().item() / 2


def _blocks(flat: torch.Tensor, block_size: int) -> torch.Tensor:
    """(n_blocks, block_size) view of a flat tensor, zero-padded."""
    n_blocks = math.ceil(flat.numel() / block_size)
    return torch.nn.functional.pad(flat, (0, n_blocks * block_size - flat.numel())).view(n_blocks, block_size)


def _empty_state(numel: int, block_size: int, qmap_m: torch.Tensor, qmap_v: torch.Tensor):
    zeros = torch.zeros(numel, device=DEVICE)
    codes_m, absmax_m = quantize_blockwise(zeros, qmap_m, block_size=block_size, impl="torch")
    codes_v, absmax_v = quantize_blockwise(zeros, qmap_v, block_size=block_size, impl="torch")
    return [codes_m, absmax_m, codes_v, absmax_v]


# ------------------------------------------------------------------------------------------------------------------
# maps
# ------------------------------------------------------------------------------------------------------------------


def test_dynamic_maps():
    signed, unsigned = create_dynamic_map(signed=True), create_dynamic_map(signed=False)
    for qmap in (signed, unsigned):
        assert qmap.shape == (256,) and qmap.dtype == torch.float32
        assert bool((qmap.diff() > 0).all())  # strictly increasing: 256 distinct codes
        assert qmap.max().item() == 1.0 and 0.0 in qmap.tolist()
    assert signed.min().item() == -1.0
    assert unsigned.min().item() == 0.0 and bool((unsigned >= 0).all())
    negatives = -signed[signed < 0]
    positives = signed[signed > 0]
    assert negatives.numel() == 127 and positives.numel() == 128
    assert set(negatives.tolist()) <= set(positives.tolist())  # symmetric up to one extra positive code
    # Dynamic range 1e-7 .. 1, and the unsigned map halves the top-decade gap of the signed one.
    assert positives.min().item() == pytest.approx(1e-7) and unsigned[1].item() == pytest.approx(1e-7)
    assert _half_max_gap(signed) == pytest.approx(0.9 / 64 / 2, rel=1e-5)
    assert _half_max_gap(unsigned) == pytest.approx(0.9 / 128 / 2, rel=1e-5)
    # Decade structure: 64 signed / 128 unsigned codes in (0.1, 1].
    assert int(((signed > 0.1 + 1e-6) & (signed <= 1)).sum()) == 64
    assert int(((unsigned > 0.1 + 1e-6) & (unsigned <= 1)).sum()) == 128


# ------------------------------------------------------------------------------------------------------------------
# quantize / dequantize
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize(("shape", "block_size"), [((1000,), 64), ((37, 11), 32), ((5, 70), 100), ((16,), 16)])
def test_roundtrip_error_bound(impl, signed, shape, block_size):
    qmap = create_dynamic_map(signed=signed).to(DEVICE)
    gen = torch.Generator().manual_seed(sum(shape) + block_size)
    x = torch.randn(shape, generator=gen) * 3.0
    x = (x if signed else x**2).to(DEVICE)
    codes, absmax = quantize_blockwise(x, qmap, block_size=block_size, impl=impl)
    n_blocks = math.ceil(x.numel() / block_size)
    assert codes.dtype == torch.uint8 and codes.shape == (x.numel(),)
    assert absmax.dtype == torch.float32 and absmax.shape == (n_blocks,)
    torch.testing.assert_close(absmax, _blocks(x.reshape(-1), block_size).abs().amax(dim=1), atol=0, rtol=0)
    restored = dequantize_blockwise(codes, absmax, qmap, block_size=block_size, shape=x.shape, impl=impl)
    assert restored.shape == x.shape and restored.dtype == torch.float32
    err = _blocks((restored - x).abs().reshape(-1), block_size).amax(dim=1)
    bound = _half_max_gap(qmap) * absmax * (1 + 1e-5) + 1e-12
    assert bool((err <= bound).all()), (err / absmax).max()
    # Each code is the nearest: no other code is closer to x / absmax.
    normalized = x.reshape(-1) / absmax.repeat_interleave(block_size)[: x.numel()]
    chosen = (qmap[codes.long()] - normalized).abs()
    best = (qmap[None, :] - normalized[:, None]).abs().amin(dim=1)
    assert bool((chosen <= best + 1e-6).all())
    if not signed:
        assert bool((restored >= 0).all())


@pytest.mark.triton
@requires_triton
@pytest.mark.parametrize(("numel", "block_size"), [(1000, 64), (407, 100), (70, 32)])
def test_quantize_triton_matches_torch(numel, block_size):
    qmap_m, qmap_v = _qmaps()
    x = torch.randn(numel, generator=torch.Generator().manual_seed(numel)).to(DEVICE)
    for qmap, values in ((qmap_m, x), (qmap_v, x.abs())):
        want_codes, want_absmax = q8._quantize_blockwise_torch(values, qmap, block_size=block_size)
        codes, absmax = q8._quantize_blockwise_triton(values, qmap, block_size=block_size)
        assert torch.equal(codes, want_codes)
        assert torch.equal(absmax, want_absmax)
        want = q8._dequantize_blockwise_torch(codes, absmax, qmap, block_size=block_size, shape=(numel,))
        got = q8._dequantize_blockwise_triton(codes, absmax, qmap, block_size=block_size, shape=(numel,))
        assert torch.equal(got, want)


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_block_is_exact(impl):
    qmap_m, qmap_v = _qmaps()
    x = torch.randn(96, device=DEVICE)
    x[32:64] = 0.0
    for qmap in (qmap_m, qmap_v):
        values = x if qmap is qmap_m else x.abs()
        codes, absmax = quantize_blockwise(values, qmap, block_size=32, impl=impl)
        assert absmax[1].item() == 0.0
        restored = dequantize_blockwise(codes, absmax, qmap, block_size=32, shape=(96,), impl=impl)
        assert bool(torch.isfinite(restored).all())
        assert bool((restored[32:64] == 0).all())


def test_quant_bad_arguments():
    qmap_m, _ = _qmaps()
    x = torch.randn(10, device=DEVICE)
    with pytest.raises(ValueError, match="block_size"):
        quantize_blockwise(x, qmap_m, block_size=0)
    with pytest.raises(ValueError, match="256"):
        quantize_blockwise(x, qmap_m[:128], block_size=4)
    codes, absmax = quantize_blockwise(x, qmap_m, block_size=4)
    with pytest.raises(ValueError, match="absmax"):
        dequantize_blockwise(codes, absmax[:2], qmap_m, block_size=4, shape=(10,))
    with pytest.raises(ValueError, match="codes"):
        dequantize_blockwise(codes.int(), absmax, qmap_m, block_size=4, shape=(10,))


# ------------------------------------------------------------------------------------------------------------------
# 8-bit Adam
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "block_size"), [((37, 11), 64), ((16, 16), 32), ((5, 70), 100)])
def test_adam8bit_torch_matches_reference(shape, block_size):
    """Plain torch: dequantise by hand, Adam formula, N from the fp32 moments, requantised state near fp32."""
    qmap_m, qmap_v = _qmaps()
    gen = torch.Generator().manual_seed(1)
    numel = math.prod(shape)
    codes_m, absmax_m = quantize_blockwise(
        torch.randn(numel, generator=gen).to(DEVICE) * 0.1, qmap_m, block_size=block_size
    )
    codes_v, absmax_v = quantize_blockwise(
        torch.rand(numel, generator=gen).to(DEVICE) * 0.01, qmap_v, block_size=block_size
    )
    grad = torch.randn(shape, generator=gen).to(DEVICE)
    scale_m = absmax_m.repeat_interleave(block_size)[:numel]
    scale_v = absmax_v.repeat_interleave(block_size)[:numel]
    exp_avg = (qmap_m[codes_m.long()] * scale_m).view(shape)
    exp_avg_sq = (qmap_v[codes_v.long()] * scale_v).view(shape)
    want_m = 0.9 * exp_avg + 0.1 * grad
    want_v = 0.999 * exp_avg_sq + 0.001 * grad**2
    want_n = want_m / (want_v.sqrt() * 1.5 + 1e-8)

    state = [codes_m, absmax_m, codes_v, absmax_v]
    hyper = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "denom_scale": 1.5}
    got_n = adam_update_8bit(grad, *state, qmap_m, qmap_v, block_size=block_size, impl="torch", **hyper)
    assert got_n.shape == shape and got_n.dtype == torch.float32
    torch.testing.assert_close(got_n, want_n, atol=1e-5, rtol=1e-5)
    for want, codes, absmax, qmap in ((want_m, codes_m, absmax_m, qmap_m), (want_v, codes_v, absmax_v, qmap_v)):
        flat = want.reshape(-1)
        torch.testing.assert_close(absmax, _blocks(flat, block_size).abs().amax(dim=1), atol=1e-9, rtol=1e-6)
        restored = qmap[codes.long()] * absmax.repeat_interleave(block_size)[:numel]
        bound = _half_max_gap(qmap) * absmax.repeat_interleave(block_size)[:numel] * (1 + 1e-5) + 1e-9
        assert bool(((restored - flat).abs() <= bound).all())


@pytest.mark.triton
@requires_triton
@pytest.mark.parametrize(("shape", "block_size"), [((37, 11), 64), ((16, 16), 32), ((5, 70), 100)])
def test_adam8bit_triton_matches_torch(shape, block_size):
    qmap_m, qmap_v = _qmaps()
    numel = math.prod(shape)
    gen = torch.Generator().manual_seed(2)
    state_torch = _empty_state(numel, block_size, qmap_m, qmap_v)
    state_triton = [t.clone() for t in state_torch]
    for _ in range(3):
        grad = torch.randn(shape, generator=gen).to(DEVICE)
        want = q8._adam_update_8bit_torch(grad, *state_torch, qmap_m, qmap_v, block_size=block_size, **HYPER)
        got = q8._adam_update_8bit_triton(grad, *state_triton, qmap_m, qmap_v, block_size=block_size, **HYPER)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        for got_state, want_state in zip(state_triton, state_torch):
            assert got_state.dtype == want_state.dtype
            torch.testing.assert_close(got_state, want_state, atol=0, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_adam8bit_tracks_fp32_adam(impl):
    """Over 5 steps the 8-bit moments stay within the accumulated quantisation error of fp32 Adam.

    With e_t = M8_t - M32_t: e_t = b1 * e_{t-1} + (requantisation error), so |e_t| <= sum_s b1^(t-s) q_s where
    q_s = half the largest map gap * the block's absmax at step s (likewise for V with b2).
    """
    qmap_m, qmap_v = _qmaps()
    shape, block_size, steps = (24, 20), 64, 5  # 7.5 blocks
    numel = math.prod(shape)
    b1, b2 = HYPER["beta1"], HYPER["beta2"]
    state = _empty_state(numel, block_size, qmap_m, qmap_v)
    exp_avg, exp_avg_sq = torch.zeros(shape, device=DEVICE), torch.zeros(shape, device=DEVICE)
    bound_m = torch.zeros(numel, device=DEVICE)
    bound_v = torch.zeros(numel, device=DEVICE)
    gen = torch.Generator().manual_seed(3)
    for _ in range(steps):
        grad = torch.randn(shape, generator=gen).to(DEVICE)
        update8 = adam_update_8bit(grad, *state, qmap_m, qmap_v, block_size=block_size, impl=impl, **HYPER)
        exp_avg = b1 * exp_avg + (1 - b1) * grad
        exp_avg_sq = b2 * exp_avg_sq + (1 - b2) * grad**2
        update32 = exp_avg / (exp_avg_sq.sqrt() + HYPER["eps"])
        bound_m = b1 * bound_m + _half_max_gap(qmap_m) * state[1].repeat_interleave(block_size)[:numel]
        bound_v = b2 * bound_v + _half_max_gap(qmap_v) * state[3].repeat_interleave(block_size)[:numel]
        restored_m = dequantize_blockwise(state[0], state[1], qmap_m, block_size=block_size, shape=(numel,))
        restored_v = dequantize_blockwise(state[2], state[3], qmap_v, block_size=block_size, shape=(numel,))
        assert bool(((restored_m - exp_avg.reshape(-1)).abs() <= bound_m * (1 + 1e-4) + 1e-9).all())
        assert bool(((restored_v - exp_avg_sq.reshape(-1)).abs() <= bound_v * (1 + 1e-4) + 1e-12).all())
        assert bool((restored_v >= 0).all())  # the unsigned map never yields a negative second moment
        cosine = torch.nn.functional.cosine_similarity(update8.reshape(-1), update32.reshape(-1), dim=0)
        rel = ((update8 - update32).norm() / update32.norm()).item()
        assert cosine.item() > 0.999 and rel < 0.05, (cosine.item(), rel)


def test_adam8bit_bad_arguments():
    qmap_m, qmap_v = _qmaps()
    state = _empty_state(100, 32, qmap_m, qmap_v)
    grad = torch.randn(10, 10, device=DEVICE)
    with pytest.raises(ValueError, match="exp_avg absmax"):
        adam_update_8bit(grad, state[0], state[1][:2], *state[2:], qmap_m, qmap_v, block_size=32, **HYPER)
    with pytest.raises(ValueError, match="contiguous uint8"):
        adam_update_8bit(
            grad, state[0], state[1], state[2].view(10, 10).T, state[3], qmap_m, qmap_v, block_size=32, **HYPER
        )


def test_quant_custom_ops_eager():
    qmap_m, qmap_v = _qmaps()
    x = torch.randn(70, device=DEVICE)
    codes, absmax = torch.ops.coap_optim.quantize_blockwise(x, qmap_m, 32, "torch")
    want_codes, want_absmax = q8._quantize_blockwise_torch(x, qmap_m, block_size=32)
    assert torch.equal(codes, want_codes) and torch.equal(absmax, want_absmax)
    restored = torch.ops.coap_optim.dequantize_blockwise(codes, absmax, qmap_m, 32, [7, 10], "torch")
    assert restored.shape == (7, 10)
    state = _empty_state(70, 32, qmap_m, qmap_v)
    want_state = [t.clone() for t in state]
    want = q8._adam_update_8bit_torch(x, *want_state, qmap_m, qmap_v, block_size=32, **HYPER)
    got = torch.ops.coap_optim.adam_update_8bit(x, *state, qmap_m, qmap_v, 0.9, 0.999, 1e-8, 1.0, 32, "torch")
    assert torch.equal(got, want)
    assert all(torch.equal(a, b) for a, b in zip(state, want_state))


@pytest.mark.slow
def test_quant_custom_ops_opcheck_and_compile():
    qmap_m, qmap_v = _qmaps()
    x = torch.randn(70)
    codes, absmax = quantize_blockwise(x, qmap_m, block_size=32)
    torch.library.opcheck(torch.ops.coap_optim.quantize_blockwise.default, (x, qmap_m, 32, "torch"))
    torch.library.opcheck(
        torch.ops.coap_optim.dequantize_blockwise.default, (codes, absmax, qmap_m, 32, [70], "torch")
    )
    state = _empty_state(70, 32, qmap_m, qmap_v)
    torch.library.opcheck(
        torch.ops.coap_optim.adam_update_8bit.default,
        (x, *[t.clone() for t in state], qmap_m, qmap_v, 0.9, 0.999, 1e-8, 1.0, 32, "torch"),
    )

    def step(grad, codes_m, absmax_m, codes_v, absmax_v):
        return adam_update_8bit(grad, codes_m, absmax_m, codes_v, absmax_v, qmap_m, qmap_v, block_size=32, **HYPER)

    eager = [t.clone() for t in state]
    want = step(x, *eager)
    got = torch.compile(step, backend="aot_eager", fullgraph=True)(x, *state)
    assert torch.equal(got, want)
    assert all(torch.equal(a, b) for a, b in zip(state, eager))
