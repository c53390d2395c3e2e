"""Installed-wheel smoke check: ``python -m fg_net.smoke`` exits 0 when FG-Net works (CPU, no downloads, no dlib).

Checks: target heatmaps of a known landmark set decode back to their labels; the tiny model's forward shape; one
training step lowers the heatmap loss on a synthetic batch; ``save_pretrained`` / ``from_pretrained`` and the
authors' ``model.pth`` layout round-trip through ``torch.load(weights_only=True)`` with identical outputs.
"""

from __future__ import annotations

import io
import sys
import tempfile

import torch

from genblocks.smoke import SmokeError, run_smoke

__all__ = ["SmokeError", "main", "run_checks"]


def run_checks() -> list[str]:
    """Run the smoke checks.

    Returns:
        One line per check that passed.

    Raises:
        SmokeError: the first check that failed.
    """
    from fg_net.convert_fg_net_original import fg_net_to_original, load_original_fg_net
    from fg_net.heatmaps import decode_heatmaps
    from fg_net.modeling_fg_net import FGNet
    from fg_net.testing import synthetic_au_task, tiny_fg_net
    from fg_net.training import heatmap_loss

    passed = []
    task = synthetic_au_task(8, seed=0)
    if not torch.equal(decode_heatmaps(task.heatmaps), task.labels):
        raise SmokeError("target heatmaps do not decode back to their labels")
    passed.append("target heatmaps decode to their labels")

    model = tiny_fg_net(seed=0)
    with torch.no_grad():
        heatmaps = model(task.images)
    if heatmaps.shape != (8, 8, 16, 16):
        raise SmokeError(f"tiny model output {tuple(heatmaps.shape)}, expected (8, 8, 16, 16)")
    passed.append("tiny model gives (8, 8, 16, 16) heatmaps")

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=5e-4)
    losses = []
    for _ in range(2):
        loss = heatmap_loss(model(task.images), task.heatmaps)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        losses.append(loss.item())
    if not losses[1] < losses[0]:
        raise SmokeError(f"the heatmap loss did not fall after one step: {losses}")
    passed.append(f"heatmap loss fell from {losses[0]:.4f} to {losses[1]:.4f} after one step")

    model.eval()
    with torch.no_grad():
        reference = model(task.images)
    with tempfile.TemporaryDirectory() as folder:
        loaded = FGNet.from_pretrained(model.save_pretrained(folder, source="smoke"))
        with torch.no_grad():
            if not torch.equal(loaded(task.images), reference):
                raise SmokeError("save_pretrained / from_pretrained changed the outputs")
    passed.append("save_pretrained / from_pretrained round trip is exact")

    model_pth, encoder_pt = fg_net_to_original(model)
    buffers = []
    for content in (model_pth, encoder_pt):
        buffer = io.BytesIO()
        torch.save(content, buffer)
        buffer.seek(0)
        buffers.append(torch.load(buffer, weights_only=True))
    target = tiny_fg_net(seed=1)
    report = load_original_fg_net(target, buffers[0], buffers[1])
    with torch.no_grad():
        if not report.is_exact or not torch.equal(target(task.images), reference):
            raise SmokeError(f"the authors' model.pth layout did not round-trip:\n{report.summary()}")
    passed.append("authors' model.pth layout round-trips through torch.load(weights_only=True)")
    return passed


def main() -> int:
    """Run :func:`run_checks` through genblocks' smoke runner (report on stderr).

    Returns:
        0 when every check passed, 1 otherwise.
    """
    return run_smoke("fg-net", run_checks)


if __name__ == "__main__":
    sys.exit(main())
