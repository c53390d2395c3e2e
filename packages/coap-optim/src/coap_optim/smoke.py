"""Installed-wheel smoke check: ``python -m coap_optim.smoke`` exits 0 when :class:`~coap_optim.CoapAdamW` works.

It builds a tiny model (one LEFT-projected and one RIGHT-projected Linear, a LayerNorm), runs six CoapAdamW steps with
``update_interval=2`` and ``reproject_factor=2`` (so the steps hit the initial range finder, a correlation-aware
refresh and a re-projection, per §3 of the spec / ``coap_torch/optimizer/adamw.py`` of bytedance/coap), and checks
that the loss falls, that P changed at the refresh, that the state holds tensors only, and that the state dict
round-trips through ``torch.load(weights_only=True)`` and resumes bit-for-bit.
"""

from __future__ import annotations

import copy
import io
import sys
import traceback

import torch
from torch import Tensor, nn

__all__ = ["SmokeError", "main", "run_checks"]


class SmokeError(RuntimeError):
    """A smoke check failed; the message says which."""


def _tiny_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 64), nn.LayerNorm(64))


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def run_checks() -> list[str]:
    """Run the smoke checks.

    Returns:
        One line per check that passed.

    Raises:
        SmokeError: the first check that failed.
    """
    from coap_optim import CoapAdamW, param_groups

    def make(model: nn.Module) -> torch.optim.Optimizer:
        return CoapAdamW(param_groups(model, rank=8), lr=1e-2, update_interval=2, reproject_factor=2)

    model = _tiny_model()
    optimizer = make(model)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(16, 64, generator=generator)
    y = torch.randn(16, 64, generator=generator)
    weights = [layer.weight for layer in model if isinstance(layer, nn.Linear)]  # the two Linear layers
    passed = []

    losses = [_step(model, optimizer, x, y)]
    projections = [optimizer.state[w]["P"].clone() for w in weights]
    expected = [(32, 8), (8, 32)]  # Linear(64, 32).weight is (32, 64): LEFT, P (m, r); Linear(32, 64): RIGHT, P (r, n)
    if [tuple(p.shape) for p in projections] != expected:
        raise SmokeError(f"projection shapes {[tuple(p.shape) for p in projections]}, expected {expected}")
    passed.append(f"initial projections have shapes {expected}")
    losses += [_step(model, optimizer, x, y) for _ in range(2)]  # the third step (t = 2) refreshes P
    for weight, before in zip(weights, projections, strict=True):
        if torch.equal(optimizer.state[weight]["P"], before):
            raise SmokeError("P did not change at the correlation-aware refresh (step 3)")
    passed.append("P changed at the refresh step")
    losses += [_step(model, optimizer, x, y) for _ in range(3)]  # the fifth step (t = 4) re-projects
    if not all(torch.isfinite(torch.tensor(losses))):
        raise SmokeError(f"non-finite loss: {losses}")
    if not losses[-1] < losses[0]:
        raise SmokeError(f"loss did not fall over 6 steps: {losses}")
    passed.append(f"loss fell from {losses[0]:.4f} to {losses[-1]:.4f} over 6 steps")

    for param, state in optimizer.state.items():
        bad = {key: type(value).__name__ for key, value in state.items() if not isinstance(value, Tensor)}
        if bad:
            raise SmokeError(f"state of a {tuple(param.shape)} parameter holds non-tensors: {bad}")
    passed.append("optimizer state holds tensors only")

    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    try:
        loaded = torch.load(buffer, weights_only=True)
    except Exception as error:
        raise SmokeError(f"torch.load(weights_only=True) rejected the state dict: {error}") from error
    resumed_model = copy.deepcopy(model)
    resumed_model.load_state_dict(loaded["model"])
    resumed = make(resumed_model)
    resumed.load_state_dict(loaded["optimizer"])
    for _ in range(2):
        _step(model, optimizer, x, y)
        _step(resumed_model, resumed, x, y)
    for (name, a), b in zip(model.named_parameters(), resumed_model.parameters(), strict=True):
        if not torch.equal(a, b):
            raise SmokeError(f"resumed run differs from the original at {name}: max |diff| {(a - b).abs().max():.3g}")
    passed.append("state dict round-trips through torch.load(weights_only=True) and resumes bit-for-bit")
    return passed


def main() -> int:
    """Run :func:`run_checks`; report on stderr.

    Returns:
        0 when every check passed, 1 otherwise.
    """
    try:
        passed = run_checks()
    except SmokeError as error:
        sys.stderr.write(f"coap-optim smoke: FAILED: {error}\n")
        return 1
    except Exception:
        sys.stderr.write(f"coap-optim smoke: FAILED with an unexpected error:\n{traceback.format_exc()}")
        return 1
    sys.stderr.write("".join(f"coap-optim smoke: ok: {line}\n" for line in passed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
