"""Installed-wheel smoke check: ``python -m id_patch.smoke`` (or ``id-patch smoke``) exits 0 when ID-Patch works.

On the tiny random components of spec §9 (no downloads, a few seconds on one CPU core) it checks that the pipeline
generates a 64-px image for two subjects; that the condition image holds each subject's ID patch centred at its
position; that the ID tokens reach the UNet only in the steps ``id_injection_ratio`` allows; that a few training steps
change the ControlNet and both projections but not the frozen UNet; and that the association metric scores a swap of
two of three identities as 1/3.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from genblocks.smoke import SmokeError, run_smoke

__all__ = ["SmokeError", "main", "run_checks"]


def run_checks() -> list[str]:
    """Run the smoke checks.

    Returns:
        One line per check that passed.

    Raises:
        SmokeError: The first check that failed.
    """
    from genblocks.training import OptimizerConfig
    from id_patch.data import IDPatchDataModule, write_synthetic_manifest
    from id_patch.evaluation import association_accuracy
    from id_patch.testing import tiny_id_patch_pipeline
    from id_patch.training import IDPatchTrainingModule

    passed = []
    pipe = tiny_id_patch_pipeline(seed=0)
    embeds = torch.nn.functional.normalize(torch.randn(2, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    positions = torch.tensor([[44.0, 20.0], [16.0, 24.0]])  # given right to left: the pipeline orders them
    context_lengths: list[int] = []
    # inside the UNet (after the pipeline's own pre-hook has cut the context): the mid block's cross-attention
    hook = pipe.unet.mid_block.attentions[0].register_forward_pre_hook(
        lambda module, args, kwargs: context_lengths.append(int(kwargs["encoder_hidden_states"].shape[1])),
        with_kwargs=True,
    )
    output = pipe(
        "two friends",
        face_embeds=embeds,
        face_locations=positions,
        num_inference_steps=4,
        height=64,
        width=64,
        id_injection_ratio=0.5,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    hook.remove()
    image = np.asarray(output.images)
    if image.shape != (1, 64, 64, 3) or not np.isfinite(image).all():
        raise SmokeError(f"generated image has shape {image.shape} or non-finite values; expected (1, 64, 64, 3)")
    passed.append("the tiny pipeline generates a 64x64 image for 2 subjects")
    text = pipe.tokenizer.model_max_length
    expected = [text, text, text + 4, text + 4]  # one (CFG-batched) UNet call per step
    if context_lengths != expected:
        raise SmokeError(f"UNet context lengths per step {context_lengths}, expected {expected} (ratio 0.5)")
    passed.append(f"UNet context per step {context_lengths}: ID tokens only in the last half of the steps")

    condition = pipe.prepare_id_condition(embeds, positions, None, 64, 64).condition_image[0]
    patches = pipe.id_projector.patches(embeds[[1, 0]])
    for subject, (x, y) in enumerate([(16, 24), (44, 20)]):
        window = condition[:, y - 4 : y + 4, x - 4 : x + 4]
        if not torch.allclose(window, patches[subject], atol=1e-6):
            raise SmokeError(f"the condition image does not hold subject {subject}'s patch centred at ({x}, {y})")
    passed.append("the condition image holds each subject's 8x8 patch centred at its position, left to right")

    with tempfile.TemporaryDirectory() as folder:
        manifest = write_synthetic_manifest(Path(folder), num_images=2, faces_per_image=(2,))
        data = IDPatchDataModule(str(manifest), resolution=64, batch_size=2, face_dim=16)
        data.setup("fit")
        batch = next(iter(data.train_dataloader()))
    module = IDPatchTrainingModule(
        unet=pipe.unet,
        controlnet=pipe.controlnet,
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        text_encoder_2=pipe.text_encoder_2,
        tokenizer=pipe.tokenizer,
        tokenizer_2=pipe.tokenizer_2,
        id_projector=pipe.id_projector,
        optimizer=OptimizerConfig(lr=1e-3, weight_decay=0.0),
    )
    module.setup("fit")
    optimizer = module.configure_optimizers()
    unet_before = [p.detach().clone() for p in pipe.unet.parameters()]
    projector_before = [p.detach().clone() for p in pipe.id_projector.parameters()]
    controlnet_before = [p.detach().clone() for p in pipe.controlnet.parameters()]
    losses = []
    for _ in range(3):
        loss = module.compute_loss(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    if not all(np.isfinite(losses)):
        raise SmokeError(f"non-finite training loss: {losses}")
    if not all(torch.equal(a, b) for a, b in zip(unet_before, pipe.unet.parameters(), strict=True)):
        raise SmokeError("a training step changed the frozen UNet")
    for name, before, module_part in (
        ("ControlNet", controlnet_before, pipe.controlnet),
        ("ID projector", projector_before, pipe.id_projector),
    ):
        if all(torch.equal(a, b) for a, b in zip(before, module_part.parameters(), strict=True)):
            raise SmokeError(f"three training steps left the {name} unchanged")
    passed.append(f"3 training steps (losses {', '.join(f'{v:.3f}' for v in losses)}) trained ControlNet + projector")

    identities = np.eye(3, 8)
    targets = np.array([[10.0, 30.0], [32.0, 30.0], [54.0, 30.0]])
    result = association_accuracy(identities[[0, 2, 1]], targets, identities, targets)
    if abs(result.accuracy - 1 / 3) > 1e-9:
        raise SmokeError(f"association accuracy of one swap of three is {result.accuracy}, expected 1/3")
    passed.append("ID-position association accuracy scores a swap of two of three identities as 1/3")
    return passed


def main() -> int:
    """Run :func:`run_checks` through genblocks' smoke runner (report on stderr).

    Returns:
        0 when every check passed, 1 otherwise.
    """
    return run_smoke("id-patch", run_checks)


if __name__ == "__main__":
    sys.exit(main())
