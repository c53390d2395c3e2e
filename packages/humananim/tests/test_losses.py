"""The training loss: region masks on the keypoint boxes, the regional MSE in each space, the identity term and its
timestep gate, and the shifted-SNR schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from torch import nn

from genblocks.faces.arcface import IRSEBackbone
from genblocks.training.diffusion_module import weighted_mse
from humananim.keypoints import Keypoints, body_template, part_boxes, scripted_dance
from humananim.losses import (
    RegionalLoss,
    box_masks,
    crop_boxes,
    keypoint_region_masks,
    log_snr,
    predicted_x0,
    shifted_scheduler,
)

H, W = 64, 48  # frames; latents 8 x 6


def scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="linear")


def person(frames: int = 2) -> Keypoints:
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    face = np.stack([W / 2 + 4 * np.cos(angles), 12 + 5 * np.sin(angles)], 1)
    face[8], face[17:27, 1] = (W / 2, 17.0), 8.0
    return scripted_dance(body_template(face, W, H), frames)


def test_box_masks_cover_whole_cells_and_fractions_of_border_cells() -> None:
    boxes = torch.tensor([[8.0, 16.0, 23.0, 31.0], [4.0, 0.0, 11.0, 7.0], [0.0, 0.0, 63.0, 63.0]])
    valid = torch.tensor([True, True, False])
    masks = box_masks(boxes, valid, (64, 64), (8, 8))
    expected = torch.zeros(3, 8, 8)
    expected[0, 2:4, 1:3] = 1.0  # pixels 8..23 x 16..31 are cells 1..2 x 2..3 exactly
    expected[1, 0, 0:2] = 0.5  # pixels 4..11: half of cell 0 and half of cell 1
    torch.testing.assert_close(masks, expected)
    full = box_masks(boxes[:1], valid[:1], (64, 64), (64, 64))
    assert full.sum() == 16 * 16 and full[0, 16:32, 8:24].min() == 1.0


def test_keypoint_region_masks_land_on_the_face_and_hand_boxes() -> None:
    kp = person()
    face_mask, hand_mask, face_boxes, face_valid = keypoint_region_masks(kp, (H // 8, W // 8))
    assert face_mask.shape == hand_mask.shape == (2, 8, 6) and bool(face_valid.all())
    for name, mask in (("face", face_mask), ("left_hand", hand_mask), ("right_hand", hand_mask)):
        boxes, _ = part_boxes(kp, name)
        x0, y0, x1, y1 = boxes[0]
        centre = (int((y0 + y1) / 2) // 8, int((x0 + x1) / 2) // 8)
        assert mask[0][centre] > 0.4, name  # the cell holding the box centre is (mostly) covered
    face_area = (face_boxes[:, 2] - face_boxes[:, 0] + 1) * (face_boxes[:, 3] - face_boxes[:, 1] + 1)
    torch.testing.assert_close(face_mask.sum((1, 2)) * 64, face_area)  # coverage adds up to the box area
    pixel_face, _, _, _ = keypoint_region_masks(kp, (H, W))
    ys, xs = torch.nonzero(pixel_face[0] > 0, as_tuple=True)
    box = face_boxes[0]
    assert xs.min() >= math.floor(box[0]) and xs.max() <= math.ceil(box[2])
    assert ys.min() >= math.floor(box[1]) and ys.max() <= math.ceil(box[3])
    assert face_mask[0, -1].sum() == 0  # nothing at the feet


def _batch(seed: int = 0, frames: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 4, frames, H // 8, W // 8, generator=g)
    noise = torch.randn(latents.shape, generator=g)
    timesteps = torch.tensor([300])
    noisy = scheduler().add_noise(latents, noise, timesteps)
    face, hand, boxes, valid = keypoint_region_masks(person(frames), (H // 8, W // 8))
    return {
        "latents": latents,
        "noise": noise,
        "noisy": noisy,
        "timesteps": timesteps,
        "face_mask": face[None],
        "hand_mask": hand[None],
        "face_boxes": boxes[None],
        "face_valid": valid[None],
        "frames": torch.rand(1, 3, frames, H, W, generator=g) * 2 - 1,
    }


class Decoder(nn.Module):
    """A differentiable stand-in for the VAE decoder: latents (N, 4, h, w) -> frames (N, 3, 8h, 8w) in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(4, 3, 1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.tanh(self.conv(nn.functional.interpolate(x, scale_factor=8, mode="nearest")))


class CountingEmbedder(IRSEBackbone):
    """A random 16-d ArcFace IR-SE (16-px crops) that counts its calls."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__(units=(1, 1), channels=(8, 8), embedding_dim=16, input_size=16)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().forward(x)


def _loss(**kwargs: object) -> RegionalLoss:
    return RegionalLoss(scheduler().alphas_cumprod, **kwargs)  # type: ignore[arg-type]


def _call(loss: RegionalLoss, b: dict[str, torch.Tensor], output: torch.Tensor, decode: nn.Module | None = None):
    return loss(
        output,
        b["noise"],
        b["noisy"],
        b["latents"],
        b["timesteps"],
        b["face_mask"],
        b["hand_mask"],
        face_boxes=b["face_boxes"],
        face_valid=b["face_valid"],
        frames=b["frames"],
        decode=decode,
    )


def test_zero_region_weights_give_the_plain_loss_and_empty_masks_give_zero_terms() -> None:
    b = _batch()
    output = b["noise"] + 0.3 * torch.randn(b["noise"].shape, generator=torch.Generator().manual_seed(1))
    plain = weighted_mse(output, b["noise"])
    terms = _call(_loss(lambda_face=0.0, lambda_hand=0.0, lambda_id=0.0), b, output)
    assert torch.equal(terms.total, plain) and terms.face == 0 and terms.hand == 0
    empty = dict(b, face_mask=torch.zeros_like(b["face_mask"]), hand_mask=torch.zeros_like(b["hand_mask"]))
    terms = _call(_loss(lambda_id=0.0), empty, output)
    assert terms.face == 0 and terms.hand == 0 and torch.equal(terms.total, plain)
    # an error only inside the face region: the face term is the mean squared error over the region
    face_pixels = b["face_mask"][:, None].expand_as(output) > 0.5
    only_face = b["noise"] + 0.5 * face_pixels
    terms = _call(_loss(lambda_id=0.0), b, only_face)
    weight = b["face_mask"][:, None].expand_as(output)
    torch.testing.assert_close(terms.face, (weight * 0.25 * face_pixels).sum() / weight.sum())
    torch.testing.assert_close(terms.total, terms.plain + terms.face + terms.hand)
    assert terms.face > 5 * terms.plain  # the face error weighs more than in the plain mean
    print(f"regional loss: plain {terms.plain:.4f}, face {terms.face:.4f}, hand {terms.hand:.4f}")


@pytest.mark.parametrize("space", ["eps", "x0_latent", "pixel"])
def test_every_region_space_is_finite_and_differentiable(space: str) -> None:
    b = _batch()
    output = (b["noise"] + 0.1).requires_grad_(True)
    decoder = Decoder()
    terms = _call(_loss(region_space=space, lambda_id=0.0), b, output, decode=decoder)
    assert all(torch.isfinite(t) for t in (terms.total, terms.face, terms.hand))
    assert terms.face > 0 and terms.hand > 0
    terms.total.backward()
    assert output.grad is not None and torch.isfinite(output.grad).all() and output.grad.abs().sum() > 0
    assert decoder.calls == (1 if space == "pixel" else 0)


def test_predicted_x0_inverts_add_noise() -> None:
    b = _batch()
    x0 = predicted_x0(b["noisy"], b["noise"], scheduler().alphas_cumprod, b["timesteps"])
    torch.testing.assert_close(x0, b["latents"], atol=1e-4, rtol=1e-4)
    sched = scheduler()
    v = sched.get_velocity(b["latents"], b["noise"], b["timesteps"])
    x0_v = predicted_x0(b["noisy"], v, sched.alphas_cumprod, b["timesteps"], "v_prediction")
    torch.testing.assert_close(x0_v, b["latents"], atol=1e-4, rtol=1e-4)


def test_identity_term_applies_below_id_loss_max_t_only() -> None:
    b = _batch()
    embedder, decoder = CountingEmbedder(), Decoder()
    loss = _loss(lambda_face=0.0, lambda_hand=0.0, lambda_id=0.1, id_loss_max_t=500, face_embedder=embedder)
    late = dict(b, timesteps=torch.tensor([500]))
    output = (b["noise"] + 0.2).requires_grad_(True)
    terms = _call(loss, late, output, decode=decoder)
    assert terms.identity == 0 and terms.identity_samples == 0
    assert embedder.calls == 0 and decoder.calls == 0  # skipped: nothing decoded or embedded
    with torch.no_grad():  # ground truth = the decoded clean latents, so x0_hat == x0 gives identical faces
        truth = decoder(b["latents"][0].permute(1, 0, 2, 3)).permute(1, 0, 2, 3)[None]
    b["frames"] = truth
    exact = _call(loss, b, b["noise"].clone(), decode=decoder)
    assert exact.identity_samples == 2 and float(exact.identity.detach()) < 1e-4
    terms = _call(loss, b, output, decode=decoder)
    assert terms.identity > 1e-4 and terms.identity_samples == 2
    torch.testing.assert_close(terms.total, terms.plain + 0.1 * terms.identity)
    terms.total.backward()
    assert output.grad is not None and torch.isfinite(output.grad).all()
    assert all(p.grad is None for p in embedder.parameters())  # frozen
    no_face = dict(b, face_valid=torch.zeros_like(b["face_valid"]))
    assert _call(loss, no_face, output, decode=decoder).identity_samples == 0


def test_crop_boxes_takes_the_square_around_the_box() -> None:
    image = torch.arange(64 * 64, dtype=torch.float32).view(1, 1, 64, 64)
    crop = crop_boxes(image, torch.tensor([[16.0, 8.0, 31.0, 23.0]]), 16)
    torch.testing.assert_close(crop[0, 0], image[0, 0, 8:24, 16:32])  # a 16-px box at 16 px is the exact pixels


def test_shifted_snr_scale_one_is_the_identity_and_otherwise_moves_log_snr() -> None:
    base = scheduler()
    assert shifted_scheduler(base, 1.0) is base
    for scale in (1024 / 512, 768 / 512):
        shifted = shifted_scheduler(base, scale)
        delta = log_snr(shifted.alphas_cumprod) - log_snr(base.alphas_cumprod)
        torch.testing.assert_close(delta, torch.full_like(delta, -2 * math.log(scale)), atol=2e-3, rtol=0)
        print(
            f"shifted SNR scale {scale:.2f}: log-SNR moved by {delta.mean():.4f} (expected {-2 * math.log(scale):.4f})"
        )
    assert type(shifted) is DDPMScheduler
