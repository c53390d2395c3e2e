"""Layer-wise mode: per-parameter optimizers stepped in the backward hooks, honouring gradient accumulation."""

from __future__ import annotations

import io

import pytest
import torch
from coap_testing import TINY_PROJECTION, max_param_diff, tiny_batches, tiny_model

from coap_optim import CoapAdamW, enable_layerwise, state_nbytes

OPTIONS = {"lr": 1e-2, "weight_decay": 0.01, **TINY_PROJECTION}


def factory(name: str, param: torch.nn.Parameter) -> CoapAdamW:
    return CoapAdamW([param], **OPTIONS)


@pytest.mark.parametrize("accumulation_steps", [1, 2])
def test_layerwise_equals_normal_optimizer(accumulation_steps: int) -> None:
    """k backward passes per step: layer-wise == the normal optimizer stepped every k backward passes (1e-6)."""
    batches = tiny_batches(8)
    normal, layerwise = tiny_model(), tiny_model()
    opt = CoapAdamW(normal.parameters(), **OPTIONS)
    for i, (x, img, target) in enumerate(batches):
        (normal(x, img, target) / accumulation_steps).backward()
        if (i + 1) % accumulation_steps == 0:
            opt.step()
            opt.zero_grad(set_to_none=True)

    handle = enable_layerwise(layerwise, factory, accumulation_steps=accumulation_steps)
    for x, img, target in batches:
        (layerwise(x, img, target) / accumulation_steps).backward()
    handle.remove()

    assert max_param_diff(normal, layerwise) < 1e-6
    assert max_param_diff(normal, tiny_model()) > 1e-2
    assert all(p.grad is None for p in layerwise.parameters())  # freed by the hooks after the last step
    steps = {int(o.state[p]["step"]) for o in handle.optimizers.values() for p in o.state}
    assert steps == {len(batches) // accumulation_steps}
    assert state_nbytes(handle.optimizers.values()) == state_nbytes(opt)


def test_layerwise_ignoring_accumulation_would_differ() -> None:
    """GaLore#78: stepping on every backward pass is not gradient accumulation (the test above can fail)."""
    batches = tiny_batches(4)
    accumulated, every_backward = tiny_model(), tiny_model()
    handle = enable_layerwise(accumulated, factory, accumulation_steps=2)
    other = enable_layerwise(every_backward, factory, accumulation_steps=1)
    for x, img, target in batches:
        (accumulated(x, img, target) / 2).backward()
        (every_backward(x, img, target) / 2).backward()
    handle.remove()
    other.remove()
    assert max_param_diff(accumulated, every_backward) > 1e-3


def test_layerwise_state_dict_resumes_mid_accumulation() -> None:
    batches = tiny_batches(6)
    straight = tiny_model()
    handle = enable_layerwise(straight, factory, accumulation_steps=2)
    for x, img, target in batches:
        straight(x, img, target).backward()
    handle.remove()

    first = tiny_model()
    handle = enable_layerwise(first, factory, accumulation_steps=2)
    for x, img, target in batches[:3]:  # stops after one backward of the second accumulation window
        first(x, img, target).backward()
    buffer = io.BytesIO()
    torch.save(
        {"model": first.state_dict(), "grads": [p.grad for p in first.parameters()], "opt": handle.state_dict()},
        buffer,
    )
    handle.remove()
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)

    resumed = tiny_model(seed=5)
    resumed.load_state_dict(checkpoint["model"])
    for p, g in zip(resumed.parameters(), checkpoint["grads"]):
        p.grad = g
    handle = enable_layerwise(resumed, factory, accumulation_steps=2)
    handle.load_state_dict(checkpoint["opt"])
    for x, img, target in batches[3:]:
        resumed(x, img, target).backward()
    handle.remove()
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_layerwise_bad_input() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match=r"accumulation_steps=0"):
        enable_layerwise(model, factory, accumulation_steps=0)
    with pytest.raises(ValueError, match=r"exactly the parameter 'lin1.weight'"):
        enable_layerwise(model, lambda name, p: CoapAdamW(model.parameters()))
    frozen = tiny_model().requires_grad_(False)
    with pytest.raises(ValueError, match=r"no trainable parameter"):
        enable_layerwise(frozen, factory)
