"""Converting an official coap_torch optimizer state (Python projector objects, int steps) to ours."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from coap_testing import TINY_PROJECTION, tiny_batches, tiny_model, train

from coap_optim import CoapAdamW, CoapAdamW8bit, convert_official_state
from coap_optim.convert_official_state import OfficialObject, load_official_state, official_param_order
from coap_optim.kernels import create_dynamic_map, dequantize_blockwise, quantize_blockwise


class COAPAdamProjector:
    """Stand-in for coap_torch's projector: only what the official state holds."""

    def __init__(self, ortho_matrix, rank) -> None:
        self.ortho_matrix = ortho_matrix
        self.rank = rank
        self.update_interval = 2
        self.reproject_factor = 2
        self.restore_state = False
        self.scale = 1.0


class QuantState:
    """Stand-in for bitsandbytes.functional.QuantState (blockwise, not nested)."""

    def __init__(self, absmax, code, blocksize) -> None:
        self.absmax, self.code, self.blocksize, self.nested, self.state2 = absmax, code, blocksize, False, None


OFFICIAL_ORDER = [
    # setup_params: 1-D tensors, then the other tensors, then projected 2-D, then projected 4-D (> 9216 elements).
    ["lin1.bias", "lin2.bias", "conv.bias", "conv1.bias", "norm.weight", "norm.bias"],
    ["conv1.weight"],
    ["lin1.weight", "lin2.weight"],
    ["conv.weight"],
]


def official_state_from(model, optimizer, *, quantize: bool = False) -> dict:
    """An official-format state dict (what `torch.save(official.state_dict())` holds) built from our state."""
    params = dict(model.named_parameters())
    qmap = create_dynamic_map(True)  # the official code uses the signed map for both moments
    state, groups, index = {}, [], 0
    for kind, group_names in zip(("dim_1", "other", "dim_2", "dim_4"), OFFICIAL_ORDER):
        group = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 0.0, "correct_bias": True}
        if kind == "dim_2":
            group.update(proj_method="coap", rank=None, rank_ratio_matrix=2, update_interval=2, reproject_factor=2)
        if kind == "dim_4":
            group.update(proj_method="coap", rank_ratio_cnn=2, update_interval=2, reproject_factor=2, dim=4)
        group["params"] = list(range(index, index + len(group_names)))
        groups.append(group)
        for name in group_names:
            ours = optimizer.state[params[name]]
            entry = {"step": int(ours["step"])}
            if "P" in ours:
                entry["projector"] = COAPAdamProjector(ours["P"].clone(), rank=min(ours["P"].shape))
            elif "P0" in ours:
                entry["projector"] = COAPAdamProjector([ours["P0"].clone(), ours["P1"].clone()], rank=None)
            for key in ("exp_avg", "exp_avg_sq"):
                if quantize:
                    codes, absmax = quantize_blockwise(ours[key], qmap, block_size=4096)
                    entry[key] = (codes.view(ours[key].shape), QuantState(absmax, qmap, 4096))
                else:
                    entry[key] = ours[key].clone()
            state[index] = entry
            index += 1
    return {"state": state, "param_groups": groups}


def test_official_param_order_reproduces_setup_params() -> None:
    model = tiny_model()
    opt = CoapAdamW(model.parameters(), **TINY_PROJECTION)
    train(model, opt, tiny_batches(1))
    official = official_state_from(model, opt)
    by_id = {id(p): n for n, p in model.named_parameters()}
    order = [by_id[id(p)] for p in official_param_order(official, list(model.parameters()))]
    assert order == [n for group in OFFICIAL_ORDER for n in group]
    with pytest.raises(ValueError, match=r"groups hold \[6, 1, 2, 1\] parameters"):
        official_param_order(official, list(model.parameters())[:-1])


def test_convert_loaded_state_and_resume_exactly() -> None:
    batches = tiny_batches(6)
    original = tiny_model()
    opt = CoapAdamW(original.parameters(), lr=1e-2, **TINY_PROJECTION)
    train(original, opt, batches[:3])
    official = official_state_from(original, opt)

    converted_model = tiny_model(seed=9)
    converted_model.load_state_dict(original.state_dict())
    target = CoapAdamW(converted_model.parameters(), lr=1e-2, **TINY_PROJECTION)
    target.load_state_dict(convert_official_state(official, target))
    for p, q in zip(original.parameters(), converted_model.parameters()):
        assert opt.state[p].keys() == target.state[q].keys()
        for key in opt.state[p]:
            assert torch.equal(opt.state[p][key], target.state[q][key]), key
        assert target.state[q]["step"].dtype == torch.int64

    train(original, opt, batches[3:])
    train(converted_model, target, batches[3:])
    for a, b in zip(original.parameters(), converted_model.parameters()):
        assert torch.equal(a, b)


def test_convert_8bit_official_state() -> None:
    """Official 8-bit moments ((codes, QuantState) on the signed map) into fp32 and into our 8-bit optimizer."""
    model = tiny_model()
    opt = CoapAdamW(model.parameters(), lr=1e-2, **TINY_PROJECTION)
    train(model, opt, tiny_batches(3))
    official = official_state_from(model, opt, quantize=True)

    fp32_target = CoapAdamW(model.parameters(), lr=1e-2, **TINY_PROJECTION)
    fp32_target.load_state_dict(convert_official_state(official, fp32_target))
    int8_target = CoapAdamW8bit(model.parameters(), lr=1e-2, min_8bit_size=64, **TINY_PROJECTION)
    int8_target.load_state_dict(convert_official_state(official, int8_target))
    qmap_m = create_dynamic_map(True)
    for p in model.parameters():
        exact = opt.state[p]["exp_avg"]
        tolerance = 0.02 * float(exact.abs().max())
        assert torch.allclose(fp32_target.state[p]["exp_avg"], exact, atol=tolerance, rtol=0)
        if "exp_avg_codes" in int8_target.state[p]:
            decoded = dequantize_blockwise(
                int8_target.state[p]["exp_avg_codes"],
                int8_target.state[p]["exp_avg_absmax"],
                qmap_m,
                block_size=4096,
                shape=exact.shape,
            )
            assert torch.allclose(decoded, exact, atol=2 * tolerance, rtol=0)
    assert "exp_avg_codes" in int8_target.state[model.lin1.weight]
    assert "exp_avg" in int8_target.state[model.lin1.bias]  # 32 elements < min_8bit_size


def test_convert_rejects_mismatched_rank() -> None:
    model = tiny_model()
    opt = CoapAdamW(model.parameters(), **TINY_PROJECTION)
    train(model, opt, tiny_batches(1))
    official = official_state_from(model, opt)
    other_rank = CoapAdamW(model.parameters(), **{**TINY_PROJECTION, "rank_ratio": 4})
    with pytest.raises(ValueError, match=r"parameter 0 of param group 0 \(shape \(32, 64\)\).*'P': \(32, 16\)"):
        convert_official_state(official, other_rank)
    unprojected = CoapAdamW(model.parameters())
    with pytest.raises(ValueError, match=r"uses plain moments for it"):
        convert_official_state(official, unprojected)


def test_official_file_needs_trust_pickle(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is a pickle of coap_torch objects; loading it needs trust_pickle=True but not coap_torch itself."""
    model = tiny_model()
    opt = CoapAdamW(model.parameters(), **TINY_PROJECTION)
    train(model, opt, tiny_batches(1))
    official = official_state_from(model, opt)
    # Make the projector pickle as coap_torch.optimizer.adamw.COAPAdamProjector, as the official file does.
    fake = types.ModuleType("coap_torch.optimizer.adamw")
    projector_cls = type("COAPAdamProjector", (COAPAdamProjector,), {"__module__": "coap_torch.optimizer.adamw"})
    fake.COAPAdamProjector = projector_cls
    for name in ("coap_torch", "coap_torch.optimizer", "coap_torch.optimizer.adamw"):
        monkeypatch.setitem(sys.modules, name, fake)
    for entry in official["state"].values():
        if "projector" in entry:
            entry["projector"].__class__ = projector_cls
    path = tmp_path / "official_optimizer.pt"
    torch.save(official, path)
    monkeypatch.undo()
    assert "coap_torch" not in sys.modules

    with pytest.raises(Exception, match=r"weights_only|Unsupported global"):
        torch.load(path, weights_only=True)
    with pytest.raises(ValueError, match=r"official_optimizer\.pt.*trust_pickle=True"):
        load_official_state(path)
    with pytest.raises(ValueError, match=r"trust_pickle=True"):
        convert_official_state(path, opt)
    loaded = load_official_state(path, trust_pickle=True)
    projector = loaded["state"][7]["projector"]
    assert isinstance(projector, OfficialObject) and type(projector).__name__ == "COAPAdamProjector"
    assert torch.equal(projector.ortho_matrix, opt.state[model.lin1.weight]["P"])
    converted = convert_official_state(path, CoapAdamW(model.parameters(), **TINY_PROJECTION), trust_pickle=True)
    assert torch.equal(converted["state"][0]["P"], opt.state[model.lin1.weight]["P"])
