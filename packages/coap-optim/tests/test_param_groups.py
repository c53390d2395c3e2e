"""param_groups routing (default, target_modules, Tucker threshold) and the optimizer's own routing."""

from __future__ import annotations

import pytest
import torch
from coap_testing import TINY_PROJECTION, max_param_diff, tiny_batches, tiny_model, train
from torch import nn

import coap_optim
from coap_optim import CoapAdamW, param_groups
from coap_optim.optimizers.routing import route_for_shape


def names(group: dict) -> list[str]:
    return group["param_names"]


def test_default_routing_of_the_tiny_model() -> None:
    groups = param_groups(tiny_model(), rank_ratio=2, rank_ratio_conv=2, weight_decay=0.1)
    projected, plain = groups
    assert names(projected) == ["lin1.weight", "lin2.weight", "conv.weight"]
    assert projected["project"] is True and projected["rank_ratio"] == 2 and projected["rank_ratio_conv"] == 2
    assert names(plain) == [
        "lin1.bias",
        "lin2.bias",
        "conv.bias",
        "conv1.weight",  # 4-D with 64 <= 9216 elements
        "conv1.bias",
        "norm.weight",
        "norm.bias",
    ]
    assert plain["project"] is False
    assert projected["weight_decay"] == plain["weight_decay"] == 0.1


def test_rank_that_does_not_shrink_stays_plain() -> None:
    groups = param_groups(tiny_model(), rank=32)
    assert groups[0]["project"] is False  # rank 32 >= min(32, 64): nothing projected
    assert len(groups) == 1
    groups = param_groups(tiny_model(), rank=16, min_conv_numel=0)
    assert names(groups[0]) == ["lin1.weight", "lin2.weight"]  # no rank_ratio_conv: convolutions stay plain
    groups = param_groups(tiny_model(), rank_ratio_conv=2, min_conv_numel=10)
    assert names(groups[0]) == ["conv.weight", "conv1.weight"]


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.Linear(16, 16)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
        self.norm = nn.LayerNorm(16)


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.layers = nn.ModuleList([Block(), Block()])
        self.lm_head = nn.Linear(16, 50, bias=False)


def test_target_modules_projects_only_matching_linears() -> None:
    model = TinyLM()
    projected, plain = param_groups(model, rank=4, target_modules=("attn", "mlp"))
    assert names(projected) == [f"layers.{i}.{n}.weight" for i in range(2) for n in ("attn", "mlp.0", "mlp.2")]
    assert "embed.weight" in names(plain) and "lm_head.weight" in names(plain)
    # Without target_modules, the embedding and LM head are projected too (the official default).
    projected_all = param_groups(model, rank=4)[0]
    assert {"embed.weight", "lm_head.weight"} <= set(names(projected_all))
    # A single string works like a one-element tuple.
    assert names(param_groups(model, rank=4, target_modules="attn")[0]) == [
        "layers.0.attn.weight",
        "layers.1.attn.weight",
    ]


def test_target_modules_matching_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"target_modules=\('q_proj',\) matches no module of TinyLM"):
        param_groups(TinyLM(), rank=4, target_modules=("q_proj",))


def test_param_groups_bad_input() -> None:
    with pytest.raises(ValueError, match=r"rank=4 or rank_ratio=2"):
        param_groups(tiny_model(), rank=4, rank_ratio=2)
    with pytest.raises(ValueError, match=r"rank_ratio=0\.5"):
        param_groups(tiny_model(), rank_ratio=0.5)
    with pytest.raises(ValueError, match=r"target_modules"):
        param_groups(tiny_model(), rank=4, target_modules=("",))


def test_frozen_parameters_are_left_out() -> None:
    model = tiny_model()
    model.norm.requires_grad_(False)
    all_names = [n for g in param_groups(model, rank_ratio=2) for n in names(g)]
    assert "norm.weight" not in all_names and "lin1.weight" in all_names


def test_groups_drive_the_optimizer_like_flat_options() -> None:
    """param_groups(model, ratios) + CoapAdamW == CoapAdamW(model.parameters(), same ratios)."""
    batches = tiny_batches(6)
    grouped, flat = tiny_model(), tiny_model()
    schedule = {"update_interval": 2, "reproject_factor": 2}
    opt = CoapAdamW(param_groups(grouped, rank_ratio=2, rank_ratio_conv=2), lr=1e-2, **schedule)
    train(grouped, opt, batches)
    train(flat, CoapAdamW(flat.parameters(), lr=1e-2, **TINY_PROJECTION), batches)
    # Same math; the parameter indices differ, but seeds do not depend on them by default.
    assert max_param_diff(grouped, flat) < 1e-6
    assert "P0" in opt.state[grouped.conv.weight] and "P" not in opt.state[grouped.norm.weight]


def test_optimizer_routing_rules() -> None:
    common = {"project": True, "rank": None, "rank_ratio": None, "rank_ratio_conv": None, "min_conv_numel": 9216}
    assert route_for_shape((64,), **{**common, "rank": 4}).kind == "plain"
    assert route_for_shape((64, 32), **{**common, "rank": 4}).side == "right"
    assert route_for_shape((32, 64), **{**common, "rank": 4}).side == "left"
    assert route_for_shape((32, 64), **{**common, "rank": 32}).kind == "plain"
    assert route_for_shape((32, 64), **{**common, "rank_ratio": 3}).rank == 10
    assert route_for_shape((3, 4, 5), **{**common, "rank": 1}).kind == "plain"
    tucker = route_for_shape((64, 32, 3, 3), **{**common, "rank_ratio_conv": 2})
    assert (tucker.kind, tucker.modes, tucker.ranks) == ("tucker", (0, 1), (45, 22))
    pointwise = route_for_shape((128, 96, 1, 1), **{**common, "rank_ratio_conv": 2})
    assert (pointwise.kind, pointwise.modes, pointwise.ranks) == ("tucker", (0,), (64,))
    assert route_for_shape((64, 32, 3, 3), **{**common, "rank_ratio_conv": 2, "project": False}).kind == "plain"
    assert route_for_shape((32, 32, 3, 3), **{**common, "rank_ratio_conv": 2}).kind == "plain"  # 9216, not > 9216


def test_no_rank_applies_the_documented_default_rank_rule() -> None:
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16))
    groups = param_groups(model)
    projected = next(g for g in groups if g["project"])
    assert projected["rank_ratio"] == coap_optim.defaults.rank_ratio == coap_optim.DEFAULT_RANK_RATIO == 4.0
    optimizer = coap_optim.CoapAdamW(groups, lr=1e-2)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    low_rank = {tuple(p.shape): min(optimizer.state[p]["P"].shape) for p in projected["params"]}
    assert low_rank == {(64, 32): 8, (16, 64): 4}, low_rank  # min(m, n) // 4


def test_optimizer_weight_decay_applies_when_param_groups_gives_none() -> None:
    model = nn.Sequential(nn.Linear(32, 64), nn.Linear(64, 16))
    groups = param_groups(model, rank=4)
    assert all("weight_decay" not in g for g in groups)
    optimizer = coap_optim.CoapAdamW(groups, lr=0.1, weight_decay=0.05)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.05]
    bias = model[0].bias
    before = bias.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    torch.testing.assert_close(bias.detach(), before * (1 - 0.1 * 0.05))


def test_defaults_are_the_optimizer_constructor_defaults() -> None:
    import inspect

    signature = inspect.signature(coap_optim.CoapAdamW.__init__).parameters
    owned = coap_optim.defaults
    for name in (
        "lr",
        "betas",
        "eps",
        "weight_decay",
        "update_interval",
        "reproject_factor",
        "scale",
        "min_conv_numel",
    ):
        assert signature[name].default == getattr(owned, name), name
