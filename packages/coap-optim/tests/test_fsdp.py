"""COAP under FSDP2 (``fully_shard``, DTensor ``Shard(0)`` parameters) on 2 and 4 CPU processes over gloo.

After six steps (range finder at t=0, refresh at t=2, re-projection at t=4) the sharded optimizer's parameters equal
the single-process optimizer's on the same global batch to fp32 tolerance, for COAP, COAP 8-bit and the svd
projection; gradient accumulation and the layer-wise mode step at the accumulation boundary; a
``torch.distributed.checkpoint`` saved on 2 ranks loads on 1 process and on 4 ranks with the state intact and
resumes on the same trajectory (bit for bit on the same world size).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from fsdp_testing import (
    PROJECTION,
    STEPS,
    batches,
    full_params,
    full_state,
    local_rows,
    loss_of,
    net,
    run_ranks,
    shard,
)
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from coap_optim import CoapAdamW, CoapAdamW8bit, enable_layerwise

pytestmark = pytest.mark.distributed

# The sharded run sums some products over rows in another order (all-reduces of per-rank partial sums), and FSDP
# averages the gradients over ranks: fp32 round-off, carried through six Adam steps and three projection updates
# (measured: parameters within 5e-7, P within 8e-6 on 2 and 4 ranks).
ATOL = 1e-5
# 8-bit moments: the same global blocks and arithmetic, but a value that lies on a rounding boundary between two codes
# flips under that round-off (measured: 1 or 2 of the 336 codes of the (42, 8) moments), moving that row's update by
# one quantisation step (measured: parameters within 9e-5, P within 1.1e-4).
ATOL_8BIT = 3e-4

TOLERANCE = {"coap": ATOL, "coap_8bit": ATOL_8BIT, "svd": ATOL, "coap_right": ATOL}
VARIANTS = {
    "coap": partial(CoapAdamW, lr=1e-2, **PROJECTION),
    "coap_8bit": partial(CoapAdamW8bit, lr=1e-2, block_size=64, min_8bit_size=32, **PROJECTION),
    "svd": partial(CoapAdamW, lr=1e-2, projection="svd", **PROJECTION),
    # every matrix projected on the right: the plain step needs no collective under row sharding
    "coap_right": partial(CoapAdamW, lr=1e-2, side="right", **PROJECTION),
}


def _train_single(make, steps: int, accumulate: int = 1) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = net()
    optimizer = make(model.parameters())
    data = batches(steps * accumulate)
    for step in range(steps):
        group = data[step * accumulate : (step + 1) * accumulate]
        x = torch.cat([b[0] for b in group])
        y = torch.cat([b[1] for b in group])
        loss_of(model, (x, y)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model, optimizer


def _sharded_variants(rank: int, world: int, out: str) -> None:
    results = {}
    for name, make in VARIANTS.items():
        model = shard(net(), world)
        optimizer = make(model.parameters())
        for batch in batches(STEPS):
            loss_of(model, local_rows(batch, rank, world)).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        results[name] = {"params": full_params(model), "state": full_state(model, optimizer)}
    if rank == 0:
        torch.save(results, Path(out) / "variants.pt")


@pytest.mark.parametrize("world", [2, 4])
def test_fsdp2_matches_single_process(tmp_path, world: int) -> None:
    run_ranks(_sharded_variants, world, tmp_path, str(tmp_path))
    results = torch.load(tmp_path / "variants.pt", weights_only=True)
    start = full_params(net())
    for name, make in VARIANTS.items():
        model, optimizer = _train_single(make, STEPS)
        reference = full_state(model, optimizer)
        for key, value in full_params(model).items():
            assert (value - start[key]).abs().max() > 1e-3, f"{name}: {key} never moved"
            torch.testing.assert_close(results[name]["params"][key], value, rtol=0, atol=TOLERANCE[name])
        projections = [k for k in reference if k.endswith("/P")]
        assert len(projections) == 3, projections
        for key in projections:
            torch.testing.assert_close(results[name]["state"][key], reference[key], rtol=0, atol=5 * TOLERANCE[name])
        assert results[name]["state"].keys() == reference.keys()
        for key, value in reference.items():
            if key.endswith("_codes"):  # 8-bit: the same global blocks, so (almost) every code agrees
                agree = (results[name]["state"][key] == value).float().mean()
                assert agree > 0.98, f"{name} {key}: {agree:.3f} of the codes agree"


def test_tolerance_is_tighter_than_a_changed_schedule() -> None:
    """Guard: another update interval moves the parameters by far more than the tolerances."""
    a, _ = _train_single(VARIANTS["coap"], STEPS)
    b, _ = _train_single(partial(CoapAdamW, lr=1e-2, rank_ratio=2, update_interval=3, reproject_factor=2), STEPS)
    worst = max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))
    assert worst > 10 * ATOL_8BIT


def _accumulate_and_layerwise(rank: int, world: int, out: str) -> None:
    data = batches(STEPS * 2)
    model = shard(net(), world)
    optimizer = VARIANTS["coap"](model.parameters())
    for step in range(STEPS):
        for micro in data[2 * step : 2 * step + 2]:
            (loss_of(model, local_rows(micro, rank, world)) / 2).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    layerwise = shard(net(), world)
    handle = enable_layerwise(layerwise, lambda _, p: VARIANTS["coap"]([p]), accumulation_steps=2)
    for micro in data:
        (loss_of(layerwise, local_rows(micro, rank, world)) / 2).backward()
    assert all(p.grad is None for p in layerwise.parameters())  # every hook stepped and freed its gradient
    counts = [int(o.state[p]["step"]) for o in handle.optimizers.values() for p in o.state]
    results = {"accumulated": full_params(model), "layerwise": full_params(layerwise), "counts": counts}
    if rank == 0:
        torch.save(results, Path(out) / "accumulate.pt")


def test_fsdp2_gradient_accumulation_and_layerwise_mode(tmp_path) -> None:
    run_ranks(_accumulate_and_layerwise, 2, tmp_path, str(tmp_path))
    results = torch.load(tmp_path / "accumulate.pt", weights_only=True)
    reference, _ = _train_single(VARIANTS["coap"], STEPS, accumulate=2)
    assert results["counts"] == [STEPS] * 6
    for key, value in full_params(reference).items():
        torch.testing.assert_close(results["accumulated"][key], value, rtol=0, atol=ATOL)
        torch.testing.assert_close(results["layerwise"][key], value, rtol=0, atol=ATOL)


# ---------------------------------------------------------------------------------------- checkpoint re-sharding

SAVE_AT = 3  # the checkpoint sits between the refresh (t=2) and the re-projection (t=4)


def _steps(model, optimizer, data, rank: int, world: int) -> None:
    for batch in data:
        loss_of(model, local_rows(batch, rank, world) if world else batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def _state_dicts(model, optimizer) -> dict:
    return {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)}


def _load(model, optimizer, checkpoint: str) -> None:
    state = _state_dicts(model, optimizer)
    dcp.load(state, checkpoint_id=checkpoint)
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, state["optim"])


def _save_then_continue(rank: int, world: int, out: str) -> None:
    data = batches(STEPS)
    model = shard(net(), world)
    optimizer = VARIANTS["coap_8bit"](model.parameters())
    _steps(model, optimizer, data[:SAVE_AT], rank, world)
    dcp.save(_state_dicts(model, optimizer), checkpoint_id=str(Path(out) / "ckpt"))
    saved = {"params": full_params(model), "state": full_state(model, optimizer)}
    _steps(model, optimizer, data[SAVE_AT:], rank, world)
    results = {"saved": saved, "final": full_params(model)}
    if rank == 0:
        torch.save(results, Path(out) / "uninterrupted.pt")


def _load_then_continue(rank: int, world: int, out: str) -> None:
    model = shard(net(seed=123), world)  # other weights: everything must come from the checkpoint
    optimizer = VARIANTS["coap_8bit"](model.parameters())
    _load(model, optimizer, str(Path(out) / "ckpt"))
    loaded = {"params": full_params(model), "state": full_state(model, optimizer)}
    _steps(model, optimizer, batches(STEPS)[SAVE_AT:], rank, world)
    results = {"loaded": loaded, "final": full_params(model)}
    if rank == 0:
        torch.save(results, Path(out) / f"resumed{world}.pt")


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_dcp_checkpoint_saved_on_2_ranks_resumes_on_1_2_and_4(tmp_path) -> None:
    run_ranks(_save_then_continue, 2, tmp_path, str(tmp_path))
    uninterrupted = torch.load(tmp_path / "uninterrupted.pt", weights_only=True)
    saved = uninterrupted["saved"]
    assert any(k.endswith("exp_avg_codes") for k in saved["state"])

    # One process, no process group: plain tensors filled from the sharded checkpoint.
    model = net(seed=123)
    optimizer = VARIANTS["coap_8bit"](model.parameters())
    _load(model, optimizer, str(tmp_path / "ckpt"))
    _assert_same(full_params(model), saved["params"])
    _assert_same(full_state(model, optimizer), saved["state"])
    _steps(model, optimizer, batches(STEPS)[SAVE_AT:], 0, 0)
    for key, value in full_params(model).items():
        torch.testing.assert_close(value, uninterrupted["final"][key], rtol=0, atol=ATOL_8BIT)

    for world in (4, 2):
        run_ranks(_load_then_continue, world, tmp_path, str(tmp_path))
        resumed = torch.load(tmp_path / f"resumed{world}.pt", weights_only=True)
        _assert_same(resumed["loaded"]["params"], saved["params"])
        _assert_same(resumed["loaded"]["state"], saved["state"])
        if world == 2:
            _assert_same(resumed["final"], uninterrupted["final"])  # same world size: bit for bit
        for key, value in resumed["final"].items():
            torch.testing.assert_close(value, uninterrupted["final"][key], rtol=0, atol=ATOL_8BIT)


def test_side_right_projects_wide_matrices_on_the_right() -> None:
    model, optimizer = _train_single(VARIANTS["coap_right"], 1)
    assert optimizer.state[model[2].weight]["P"].shape == (13, 42)  # (26, 42) is left-projected by default
    assert optimizer.state[model[2].weight]["exp_avg"].shape == (26, 13)
    with pytest.raises(ValueError, match=r"Invalid side='top'.*must be one of \('auto', 'right', 'left'\)"):
        CoapAdamW(model.parameters(), rank=2, side="top")
