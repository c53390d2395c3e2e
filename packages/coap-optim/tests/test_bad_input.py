"""Invalid options, tensors and gradients: clear errors naming the input; non-finite gradients never reach P."""

from __future__ import annotations

import logging
import socket

import pytest
import torch
from coap_testing import TINY_PROJECTION, tiny_batches, tiny_model, train
from torch import nn

from coap_optim import CoapAdafactor, CoapAdamW, CoapAdamW8bit


def params() -> list[nn.Parameter]:
    return list(tiny_model().parameters())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": -1.0}, r"lr=-1\.0"),
        ({"lr": float("nan")}, r"lr=nan"),
        ({"betas": (0.9,)}, r"betas=\(0\.9,\)"),
        ({"betas": (1.0, 0.999)}, r"betas\[0\]=1\.0"),
        ({"betas": (0.9, -0.1)}, r"betas\[1\]=-0\.1"),
        ({"eps": -1e-8}, r"eps=-1e-08"),
        ({"weight_decay": -0.1}, r"weight_decay=-0\.1"),
        ({"rank": 0}, r"rank=0"),
        ({"rank": 2.5}, r"rank=2\.5"),
        ({"rank": True}, r"rank=True"),
        ({"rank_ratio": 1.0}, r"rank_ratio=1\.0"),
        ({"rank_ratio": 0.5}, r"rank_ratio=0\.5"),
        ({"rank": 8, "rank_ratio": 2}, r"rank=8 or rank_ratio=2"),
        ({"rank_ratio_conv": 1}, r"rank_ratio_conv=1"),
        ({"update_interval": 0}, r"update_interval=0"),
        ({"reproject_factor": 0}, r"reproject_factor=0"),
        ({"scale": 0.0}, r"scale=0\.0"),
        ({"projection": "galore"}, r"projection='galore'"),
        ({"convention": "hf"}, r"convention='hf'"),
        ({"proj_lr": -0.1}, r"proj_lr=-0\.1"),
        ({"proj_clip": 0.0}, r"proj_clip=0\.0"),
        ({"proj_sgd_steps": 0}, r"proj_sgd_steps=0"),
        ({"seed": -1}, r"seed=-1"),
        ({"min_conv_numel": -5}, r"min_conv_numel=-5"),
        ({"impl": "cuda"}, r"impl='cuda'"),
        ({"restore_state": "yes"}, r"restore_state='yes'"),
        ({"projection": "random", "rank_ratio_conv": 2}, r"projection='random'"),
    ],
)
def test_invalid_adamw_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CoapAdamW(params(), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"block_size": 0}, r"block_size=0"), ({"min_8bit_size": -1}, r"min_8bit_size=-1")],
)
def test_invalid_8bit_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CoapAdamW8bit(params(), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": 1e-30}, r"eps=1e-30"),
        ({"eps": (1e-30, -1.0)}, r"eps\[1\]=-1\.0"),
        ({"clip_threshold": 0.0}, r"clip_threshold=0\.0"),
        ({"decay_rate": 0.5}, r"decay_rate=0\.5"),
        ({"beta1": 1.5}, r"beta1=1\.5"),
        ({"scale_parameter": 1}, r"scale_parameter=1"),
    ],
)
def test_invalid_adafactor_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CoapAdafactor(params(), **kwargs)


def test_invalid_group_option_names_the_group() -> None:
    model = tiny_model()
    groups = [{"params": [model.lin1.weight]}, {"params": [model.lin2.weight], "update_interval": -3}]
    with pytest.raises(ValueError, match=r"update_interval=-3 in param group 1"):
        CoapAdamW(groups, rank=4)
    with pytest.raises(ValueError, match=r"'rank_ratio_matrix'.*'rank_ratio'"):
        CoapAdamW([{"params": [model.lin1.weight], "rank_ratio_matrix": 2}])
    opt = CoapAdamW([model.lin1.weight], rank=4)
    with pytest.raises(ValueError, match=r"rank=-2 in param group 1"):
        opt.add_param_group({"params": [model.lin2.weight], "rank": -2})
    assert len(opt.param_groups) == 1  # the rejected group was not kept


def test_complex_and_integer_parameters_are_rejected() -> None:
    complex_param = nn.Parameter(torch.zeros(4, 4, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"complex tensors: parameter 'z' \(shape \(4, 4\)\)"):
        CoapAdamW([("w", nn.Parameter(torch.zeros(3))), ("z", complex_param)])
    with pytest.raises(ValueError, match=r"floating-point tensors only: parameter 0 of param group 0"):
        CoapAdamW([torch.zeros(3, dtype=torch.int64)])


def test_sparse_gradient_names_the_parameter() -> None:
    embedding = nn.Embedding(10, 4, sparse=True)
    opt = CoapAdamW(list(embedding.named_parameters()))
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match=r"sparse gradients: parameter 'weight' \(shape \(10, 4\)\)"):
        opt.step()


@pytest.mark.parametrize("projection", ["coap", "svd", "random"])
@pytest.mark.parametrize("bad_step", [0, 2, 4])
def test_nonfinite_gradient_keeps_projection_finite(projection: str, bad_step: int, caplog) -> None:
    """A NaN/inf gradient at the initial projection (t=0), a refresh (t=2) or a re-projection (t=4)."""
    model = tiny_model()
    extra = {"rank_ratio_conv": None} if projection == "random" else {}
    opt = CoapAdamW(model.parameters(), lr=1e-2, projection=projection, **{**TINY_PROJECTION, **extra})
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def poison(step: int) -> None:
        snapshots[step] = {n: s["P"].clone() for n, s in named_states(model, opt) if "P" in s}
        if step == bad_step:
            model.lin1.weight.grad[0, 0] = float("nan")
            model.lin2.weight.grad[1, 1] = float("inf")
            model.conv.weight.grad[0, 0, 0, 0] = float("nan")

    with caplog.at_level(logging.WARNING):
        train(model, opt, tiny_batches(6), before_step=poison)
    for name in ("lin1.weight", "lin2.weight", "conv.weight"):
        state = opt.state[dict(model.named_parameters())[name]]
        for key in ("P", "P0", "P1"):
            if key in state:
                assert torch.isfinite(state[key]).all(), (name, key)
    if bad_step > 0 and projection != "random":
        # The projection scheduled at the bad step was skipped: P stayed as it was before that step.
        before = snapshots[bad_step]["lin2.weight"]
        after = snapshots[bad_step + 1]["lin2.weight"]
        assert torch.equal(before, after)
        assert sum("non-finite" in r.getMessage() for r in caplog.records if r.name.startswith("coap_optim")) >= 1


def named_states(model: nn.Module, opt: torch.optim.Optimizer):
    return [(n, opt.state[p]) for n, p in model.named_parameters() if p in opt.state]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sharded_setups_still_unsupported_are_named() -> None:
    """FSDP1 with a projection, Adafactor, Tucker or restore_state on FSDP2 shards, tensor-parallel placements."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    from coap_optim.sharding import UnsupportedShardingError

    flat = nn.Parameter(torch.zeros(16, 8))
    flat._is_flat_param = True
    with pytest.raises(UnsupportedShardingError, match=r"'flat' \(shape \(16, 8\)\) is a sharded FSDP1 FlatParameter"):
        CoapAdamW([("flat", flat)], rank=4)
    CoapAdamW([("flat", flat)])  # projection off: the plain path needs no layout

    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"tcp://127.0.0.1:{free_port()}")
    try:
        mesh = init_device_mesh("cpu", (1,))
        torch.manual_seed(0)
        full = torch.randn(16, 8)
        sharded = nn.Parameter(distribute_tensor(full.clone(), mesh, [Shard(0)]))
        with pytest.raises(UnsupportedShardingError, match=r"'w' \(shape \(16, 8\)\) is a sharded DTensor.*factored"):
            CoapAdafactor([("w", sharded)])
        with pytest.raises(UnsupportedShardingError, match=r"DTensor.*restore_state=True"):
            CoapAdamW([("w", sharded)], rank=4, restore_state=True)
        conv = nn.Parameter(distribute_tensor(torch.randn(64, 32, 3, 3), mesh, [Shard(0)]))
        with pytest.raises(UnsupportedShardingError, match=r"DTensor.*Tucker"):
            CoapAdamW([("conv", conv)], rank_ratio_conv=2)
        columns = nn.Parameter(distribute_tensor(full.clone(), mesh, [Shard(1)]))
        with pytest.raises(UnsupportedShardingError, match=r"placements \(Shard\(dim=1\),\).*not tensor-parallel"):
            CoapAdamW([("tp", columns)], rank=4)
        # Supported: a projected, an 8-bit projected and a plain row-sharded tensor equal the unsharded optimizer.
        for make in (
            lambda params: CoapAdamW(params, lr=1e-2, rank=4, update_interval=2, reproject_factor=2),
            lambda params: CoapAdamW8bit(params, lr=1e-2, rank=4, update_interval=2, reproject_factor=2),
            lambda params: CoapAdamW(params, lr=1e-2, weight_decay=0.1, convention="torch", eps=1e-8),
        ):
            dt = nn.Parameter(distribute_tensor(full.clone(), mesh, [Shard(0)]))
            reference = nn.Parameter(full.clone())
            ours, theirs = make([dt]), make([reference])
            for _ in range(5):
                grad = torch.randn(16, 8)
                dt.grad = distribute_tensor(grad, mesh, [Shard(0)])
                reference.grad = grad
                ours.step()
                theirs.step()
            assert torch.allclose(dt.full_tensor(), reference.detach(), atol=1e-6)
    finally:
        dist.destroy_process_group()


def test_a_nan_gradient_element_skips_the_projected_step_instead_of_poisoning_the_row(caplog) -> None:
    import logging

    import torch
    from torch import nn

    from coap_optim import CoapAdamW

    torch.manual_seed(0)
    layer = nn.Linear(32, 16, bias=False)
    optimizer = CoapAdamW([layer.weight], lr=1e-2, rank=4)
    layer.weight.grad = torch.randn(16, 32)
    optimizer.step()
    before = layer.weight.detach().clone()
    moments = {k: v.clone() for k, v in optimizer.state[layer.weight].items()}
    layer.weight.grad = torch.randn(16, 32)
    layer.weight.grad[3, 5] = float("nan")
    with caplog.at_level(logging.WARNING):
        optimizer.step()
    assert "non-finite gradient" in caplog.text
    assert torch.equal(layer.weight, before) and torch.isfinite(layer.weight).all()
    for key, value in optimizer.state[layer.weight].items():
        assert torch.equal(value, moments[key]), key
    layer.weight.grad = torch.randn(16, 32)
    optimizer.step()  # the next finite gradient trains again
    assert torch.isfinite(layer.weight).all() and not torch.equal(layer.weight, before)
    strict = CoapAdamW([nn.Parameter(torch.randn(16, 32))], lr=1e-2, rank=4, nonfinite_grad="raise")
    strict.param_groups[0]["params"][0].grad = torch.full((16, 32), float("inf"))
    with pytest.raises(FloatingPointError, match="non-finite gradient"):
        strict.step()
