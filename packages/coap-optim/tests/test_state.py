"""State dicts: tensors only, weights_only loading, bit-exact resume, and the state byte count."""

from __future__ import annotations

import io
import math

import pytest
import torch
from coap_testing import TINY_PROJECTION, tiny_batches, tiny_model, train

from coap_optim import CoapAdafactor, CoapAdamW, CoapAdamW8bit, param_groups, state_nbytes

CASES = {
    "adamw": (CoapAdamW, {}),
    "adamw-restore": (CoapAdamW, {"restore_state": True}),
    "adamw-svd": (CoapAdamW, {"projection": "svd", "rank_ratio_conv": None}),
    "adamw-random": (CoapAdamW, {"projection": "random", "rank_ratio_conv": None}),
    "adamw8bit": (CoapAdamW8bit, {"min_8bit_size": 32}),
    "adafactor": (CoapAdafactor, {"beta1": 0.9}),
    "adafactor-no-beta1": (CoapAdafactor, {}),
}


def save_load(obj) -> dict:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_exact_resume_from_weights_only_checkpoint(case: str) -> None:
    """6 steps == 3 steps, save, load into a fresh model + optimizer, 3 steps (torch.equal on every parameter)."""
    cls, extra = CASES[case]
    kwargs = {"lr": 1e-2, "weight_decay": 0.01, **TINY_PROJECTION, **extra}
    batches = tiny_batches(6)

    straight = tiny_model()
    train(straight, cls(straight.parameters(), **kwargs), batches)

    first = tiny_model()
    opt = cls(first.parameters(), **kwargs)
    train(first, opt, batches[:3])
    checkpoint = save_load({"model": first.state_dict(), "optimizer": opt.state_dict()})
    for state in checkpoint["optimizer"]["state"].values():
        assert all(isinstance(v, torch.Tensor) for v in state.values())

    resumed = tiny_model(seed=123)
    resumed.load_state_dict(checkpoint["model"])
    opt2 = cls(resumed.parameters(), **kwargs)
    opt2.load_state_dict(checkpoint["optimizer"])
    for p1, p2 in zip(first.parameters(), resumed.parameters()):
        for key, value in opt.state[p1].items():
            assert opt2.state[p2][key].dtype == value.dtype and torch.equal(opt2.state[p2][key], value), key
    train(resumed, opt2, batches[3:])
    for (name, a), b in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name


def test_load_keeps_fp32_state_of_bf16_parameters() -> None:
    """torch.optim.Optimizer.load_state_dict would cast the fp32 moments (and uint8 codes) to the parameter dtype."""
    model = tiny_model(dtype=torch.bfloat16)
    opt = CoapAdamW8bit(model.parameters(), lr=1e-2, min_8bit_size=32, **TINY_PROJECTION)
    train(model, opt, tiny_batches(2))
    fresh = CoapAdamW8bit(model.parameters(), lr=1e-2, min_8bit_size=32, **TINY_PROJECTION)
    fresh.load_state_dict(save_load(opt.state_dict()))
    dtypes = {key: value.dtype for state in fresh.state.values() for key, value in state.items()}
    assert dtypes["exp_avg_codes"] == torch.uint8
    assert dtypes["exp_avg"] == torch.float32 and dtypes["P"] == torch.float32
    assert dtypes["step"] == torch.int64
    assert fresh.state[model.lin1.weight]["step"].device.type == "cpu"


def test_param_groups_hold_scalars_only() -> None:
    model = tiny_model()
    opt = CoapAdamW(param_groups(model, rank_ratio=2, rank_ratio_conv=2), lr=1e-3)
    loaded = save_load(opt.state_dict())
    for group in loaded["param_groups"]:
        for key, value in group.items():
            if key not in ("params", "param_names", "betas"):
                assert value is None or isinstance(value, (bool, int, float, str)), key
    assert loaded["param_groups"][0]["param_names"][0] == "lin1.weight"


def test_state_nbytes_matches_hand_count() -> None:
    model = tiny_model()
    opt = CoapAdamW(model.parameters(), lr=1e-3, **TINY_PROJECTION)
    train(model, opt, tiny_batches(1))
    f32, step = 4, 8
    lin1 = 32 * 16 * f32 + 2 * 16 * 64 * f32  # LEFT: P (32, 16), moments (16, 64)
    lin2 = 16 * 32 * f32 + 2 * 64 * 16 * f32  # RIGHT: P (16, 32), moments (64, 16)
    conv = (64 * 45 + 32 * 22) * f32 + 2 * 45 * 22 * 3 * 3 * f32  # Tucker: P0 (64, 45), P1 (32, 22), core moments
    plain = 2 * f32 * (32 + 64 + 64 + 8 * 8 + 8 + 64 + 64)  # biases, 1x1 conv, LayerNorm: full-size moments
    assert state_nbytes(opt) == lin1 + lin2 + conv + plain + 10 * step == 109_056

    model8 = tiny_model()
    opt8 = CoapAdamW8bit(model8.parameters(), lr=1e-3, min_8bit_size=64, **TINY_PROJECTION)
    train(model8, opt8, tiny_batches(1))
    q = lambda n: 2 * (n + f32 * math.ceil(n / 4096))  # noqa: E731  codes + absmax, for M and V
    expected = (32 * 16 + 16 * 32 + 64 * 45 + 32 * 22) * f32 + q(16 * 64) + q(64 * 16) + q(45 * 22 * 9)
    expected += 5 * q(64) + 2 * f32 * (32 + 8) + 10 * step  # 64-element tensors quantised, lin1.bias/conv1.bias not
    assert state_nbytes(opt8) == expected
    assert state_nbytes([opt, opt8]) == 109_056 + expected
