"""The training loss of humananim: epsilon MSE + face and hand region-weighted MSE + an identity cosine loss, and the
shifted-SNR schedule of the high-resolution stage (humananim spec §4; issue 19 item 3).

::

    L = |eps - eps_hat|^2 + lambda_f |M_f (.) (eps - eps_hat)|^2 + lambda_h |M_h (.) (eps - eps_hat)|^2
        + lambda_id (1 - cos(phi(crop_face(x0_hat)), phi(crop_face(x0))))            [only for t < id_loss_max_t]

- The masks are the face and hand boxes from 2-D keypoints, rasterised with their fractional coverage of each cell
  of the grid the loss lives on (:func:`box_masks`); each regional term is the mean squared error over its region
  (a weighted mean, :func:`genblocks.training.weighted_mse`), so an empty mask gives exactly 0 and weights 0 give the
  plain loss.
- ``region_space`` [unverified]: ``eps`` (the noise prediction), ``x0_latent`` (the predicted clean latent
  ``x0_hat = (x_t - sqrt(1 - abar) eps_hat) / sqrt(abar)`` against the clean latent) or ``pixel`` (``x0_hat`` decoded
  by the VAE against the ground-truth frames).
- The identity term crops the face box (a square around it, differentiably by ``grid_sample``) of the decoded
  ``x0_hat`` and of the ground truth and compares their embeddings by a frozen face network (genblocks' ArcFace
  IR-SE with user-given weights; a random one in tests), only for samples with ``t < id_loss_max_t`` and a face:
  with none, the VAE and the embedder are not even called.
- Shifted SNR (arXiv 2301.11093, "simple diffusion"): ``log SNR'(t) = log SNR(t) - 2 log(resolution /
  base_resolution)``, through :func:`genblocks.diffusion.sampling.shift_snr` [unverified as the paper's form].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genblocks.diffusion.sampling import shift_snr
from genblocks.errors import InputError
from genblocks.training.diffusion_module import weighted_mse
from humananim.keypoints import Keypoints, part_boxes

__all__ = [
    "LossTerms",
    "RegionSpace",
    "RegionalLoss",
    "box_masks",
    "crop_boxes",
    "identity_loss",
    "keypoint_region_masks",
    "log_snr",
    "predicted_x0",
    "shifted_scheduler",
]

RegionSpace = Literal["eps", "x0_latent", "pixel"]
SchedulerT = TypeVar("SchedulerT")


def box_masks(
    boxes: torch.Tensor, valid: torch.Tensor, image_size: tuple[int, int], grid: tuple[int, int]
) -> torch.Tensor:
    """Rasterise pixel boxes on a grid by the fraction of each cell they cover.

    Args:
        boxes: (..., 4) ``(x0, y0, x1, y1)`` in pixel-centre coordinates of an ``image_size`` frame; the box covers
            the continuous area ``[x0 - 0.5, x1 + 0.5] x [y0 - 0.5, y1 + 0.5]`` (whole pixels).
        valid: (...) bool; invalid boxes give an empty mask.
        image_size: ``(H, W)`` of the frame the boxes are in.
        grid: ``(h, w)`` of the output (the latent grid, or ``image_size`` for pixels).

    Returns:
        (..., h, w) float32 in [0, 1]: 1 on cells inside the box, the covered fraction on its border cells, 0 outside.
    """
    height, width = image_size
    rows, cols = grid
    boxes = boxes.float()
    cell_h, cell_w = height / rows, width / cols
    # cell edges in continuous pixel coordinates [0, W] x [0, H]
    xs = torch.arange(cols + 1, dtype=torch.float32, device=boxes.device) * cell_w
    ys = torch.arange(rows + 1, dtype=torch.float32, device=boxes.device) * cell_h
    # pixel j spans [j, j + 1) in edge coordinates, so the box's pixels x0..x1 span [x0, x1 + 1)
    left, top = boxes[..., 0:1], boxes[..., 1:2]
    right, bottom = boxes[..., 2:3] + 1.0, boxes[..., 3:4] + 1.0
    overlap_x = (torch.minimum(xs[1:], right) - torch.maximum(xs[:-1], left)).clamp_min(0) / cell_w
    overlap_y = (torch.minimum(ys[1:], bottom) - torch.maximum(ys[:-1], top)).clamp_min(0) / cell_h
    mask = overlap_y[..., :, None] * overlap_x[..., None, :]
    return mask * valid.to(mask.dtype)[..., None, None]


def keypoint_region_masks(
    keypoints: Keypoints, grid: tuple[int, int], margin: float = 0.25, min_confidence: float = 0.3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Face and hand masks of a keypoint sequence on a grid, and the face boxes for the identity term.

    Args:
        keypoints: (F, 128, 3) sequence.
        grid: ``(h, w)`` output grid.
        margin: Box padding (see :func:`humananim.keypoints.part_boxes`).
        min_confidence: Confidence at which a keypoint counts as present.

    Returns:
        ``face_mask`` (F, h, w), ``hand_mask`` (F, h, w) (the union of both hands), ``face_boxes`` (F, 4) pixels and
        ``face_valid`` (F,) bool.
    """
    size = (keypoints.height, keypoints.width)
    masks = {}
    boxes_valid = {}
    for name in ("face", "left_hand", "right_hand"):
        boxes, valid = part_boxes(keypoints, name, margin, min_confidence)
        boxes_t, valid_t = torch.from_numpy(boxes), torch.from_numpy(valid)
        masks[name] = box_masks(boxes_t, valid_t, size, grid)
        boxes_valid[name] = (boxes_t, valid_t)
    hands = torch.maximum(masks["left_hand"], masks["right_hand"])
    return masks["face"], hands, boxes_valid["face"][0], boxes_valid["face"][1]


def crop_boxes(images: torch.Tensor, boxes: torch.Tensor, size: int, square: bool = True) -> torch.Tensor:
    """Differentiable crops of boxes resized to ``size`` x ``size`` (bilinear ``grid_sample``, zeros outside).

    Args:
        images: (N, C, H, W).
        boxes: (N, 4) ``(x0, y0, x1, y1)`` pixel-centre coordinates.
        size: Output side.
        square: Crop the square of the box's longer side around its centre (faces keep their aspect).

    Returns:
        (N, C, size, size).
    """
    n, _, height, width = images.shape
    boxes = boxes.to(device=images.device, dtype=images.dtype)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    extent = boxes[:, 2:] - boxes[:, :2] + 1.0
    if square:
        extent = extent.max(dim=1, keepdim=True).values.expand(-1, 2)
    # normalised coordinates (align_corners=False): x_n = (x + 0.5) / W * 2 - 1
    scale = torch.stack([extent[:, 0] / width, extent[:, 1] / height], 1)
    shift = torch.stack([(centre[:, 0] + 0.5) / width * 2 - 1, (centre[:, 1] + 0.5) / height * 2 - 1], 1)
    theta = torch.zeros(n, 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0], theta[:, 1, 1] = scale[:, 0], scale[:, 1]
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, [n, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def identity_loss(
    predicted: torch.Tensor, target: torch.Tensor, boxes: torch.Tensor, embedder: nn.Module, input_size: int
) -> torch.Tensor:
    """Mean ``1 - cos`` between the embeddings of the predicted and ground-truth face crops.

    Args:
        predicted: (N, 3, H, W) decoded predicted frames in [-1, 1] (gradients flow through).
        target: (N, 3, H, W) ground-truth frames in [-1, 1] (no gradient).
        boxes: (N, 4) face boxes in pixels.
        embedder: Frozen face network ``(N, 3, s, s) -> (N, D)``.
        input_size: The embedder's crop side ``s``.

    Returns:
        A scalar; 0 for N = 0.
    """
    if predicted.shape[0] == 0:
        return predicted.new_zeros(())
    fake = embedder(crop_boxes(predicted, boxes, input_size))
    with torch.no_grad():
        real = embedder(crop_boxes(target.to(predicted.dtype), boxes, input_size))
    return (1.0 - F.cosine_similarity(fake.float(), real.float(), dim=-1)).mean()


def predicted_x0(
    noisy: torch.Tensor,
    model_output: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    timesteps: torch.Tensor,
    prediction_type: str = "epsilon",
) -> torch.Tensor:
    """The predicted clean latent of one denoising step.

    Args:
        noisy: (B, C, ...) noisy latents ``x_t``.
        model_output: Same shape: epsilon, v or the sample itself, per ``prediction_type``.
        alphas_cumprod: (T,) the schedule's cumulative alphas.
        timesteps: (B,) integer timesteps.
        prediction_type: ``epsilon``, ``v_prediction`` or ``sample``.

    Returns:
        ``x0_hat`` of the shape of ``noisy``: ``(x_t - sqrt(1 - abar) eps) / sqrt(abar)`` for epsilon,
        ``sqrt(abar) x_t - sqrt(1 - abar) v`` for v-prediction.
    """
    abar = alphas_cumprod.to(device=noisy.device, dtype=torch.float32)[timesteps.long()]
    abar = abar.view(-1, *([1] * (noisy.ndim - 1)))
    if prediction_type == "epsilon":
        return (noisy.float() - (1 - abar).sqrt() * model_output.float()) / abar.sqrt()
    if prediction_type == "v_prediction":
        return abar.sqrt() * noisy.float() - (1 - abar).sqrt() * model_output.float()
    if prediction_type == "sample":
        return model_output.float()
    raise InputError(f"prediction_type: expected epsilon, v_prediction or sample, got {prediction_type!r}")


@dataclass(frozen=True)
class LossTerms:
    """The terms of one loss evaluation (scalars) and how many samples the identity term used.

    Args:
        total: The weighted sum that is optimised.
        plain: The plain MSE of the model output against its target.
        face: The face-region MSE (before ``lambda_face``).
        hand: The hand-region MSE (before ``lambda_hand``).
        identity: The identity loss (before ``lambda_id``); 0 when skipped.
        identity_samples: Frames that entered the identity term.
    """

    total: torch.Tensor
    plain: torch.Tensor
    face: torch.Tensor
    hand: torch.Tensor
    identity: torch.Tensor
    identity_samples: int


def _frames(x: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) -> (B * F, C, H, W); (B, C, H, W) unchanged."""
    if x.ndim == 5:
        return x.permute(0, 2, 1, 3, 4).reshape(-1, x.shape[1], x.shape[3], x.shape[4])
    return x


class RegionalLoss(nn.Module):
    """humananim's loss (module docstring), for image (B, C, h, w) or video (B, C, F, h, w) latents.

    Args:
        alphas_cumprod: (T,) the training schedule's cumulative alphas (for ``x0_hat``).
        lambda_face: Weight of the face-region MSE (``loss.lambda_face``).
        lambda_hand: Weight of the hand-region MSE (``loss.lambda_hand``).
        lambda_id: Weight of the identity term (``loss.lambda_id``).
        id_loss_max_t: The identity term uses samples with ``t < id_loss_max_t`` only.
        region_space: ``eps``, ``x0_latent`` or ``pixel`` (``loss.region_space``).
        face_embedder: Frozen face network ``(N, 3, s, s) -> (N, D)`` (genblocks ``IRSEBackbone``); ``None`` disables
            the identity term.
        prediction_type: The model's prediction type.
    """

    def __init__(
        self,
        alphas_cumprod: torch.Tensor,
        lambda_face: float = 1.0,
        lambda_hand: float = 1.0,
        lambda_id: float = 0.1,
        id_loss_max_t: int = 500,
        region_space: RegionSpace = "eps",
        face_embedder: nn.Module | None = None,
        prediction_type: str = "epsilon",
    ) -> None:
        super().__init__()
        if region_space not in ("eps", "x0_latent", "pixel"):
            raise InputError(f"loss.region_space: expected eps, x0_latent or pixel, got {region_space!r}")
        self.alphas_cumprod: torch.Tensor
        self.register_buffer("alphas_cumprod", alphas_cumprod.detach().float().clone(), persistent=False)
        self.lambda_face, self.lambda_hand, self.lambda_id = lambda_face, lambda_hand, lambda_id
        self.id_loss_max_t = id_loss_max_t
        self.region_space: RegionSpace = region_space
        self.prediction_type = prediction_type
        self.face_embedder = face_embedder
        if face_embedder is not None:
            face_embedder.requires_grad_(False).eval()
        self.embedder_input_size = int(getattr(face_embedder, "input_size", 112))

    def train(self, mode: bool = True) -> RegionalLoss:
        super().train(mode)
        if self.face_embedder is not None:
            self.face_embedder.eval()  # frozen: BatchNorm statistics and dropout stay in inference mode
        return self

    @property
    def needs_pixels(self) -> bool:
        """Whether :meth:`forward` decodes (``pixel`` space or an active identity term)."""
        return self.region_space == "pixel" or (self.face_embedder is not None and self.lambda_id > 0)

    def forward(
        self,
        model_output: torch.Tensor,
        target: torch.Tensor,
        noisy: torch.Tensor,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        face_mask: torch.Tensor,
        hand_mask: torch.Tensor,
        face_boxes: torch.Tensor | None = None,
        face_valid: torch.Tensor | None = None,
        frames: torch.Tensor | None = None,
        decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> LossTerms:
        """Evaluate the loss.

        Args:
            model_output: (B, C, [F,] h, w) the denoiser's output.
            target: Same shape: its regression target (the noise for epsilon prediction).
            noisy: Same shape: the noisy latents ``x_t``.
            latents: Same shape: the clean latents ``x_0``.
            timesteps: (B,) integer timesteps.
            face_mask: (B, [F,] H', W') face region weights at any resolution (resized by area to the loss's grid).
            hand_mask: Same layout: hand region weights.
            face_boxes: (B, [F,] 4) face boxes in pixels of ``frames`` (identity term).
            face_valid: (B, [F]) bool, frames with a face (identity term).
            frames: (B, 3, [F,] H, W) ground-truth frames in [-1, 1] (``pixel`` space and identity term).
            decode: Latents (N, C, h, w) -> frames (N, 3, H, W) in [-1, 1], differentiable (the VAE decoder with its
                scaling factor), for ``pixel`` space and the identity term.

        Returns:
            :class:`LossTerms`.
        """
        plain = weighted_mse(model_output, target)
        zero = plain.new_zeros(())
        use_regions = self.lambda_face > 0 or self.lambda_hand > 0
        use_identity = (
            self.face_embedder is not None and self.lambda_id > 0 and face_boxes is not None and face_valid is not None
        )
        x0_hat = None
        if (use_regions and self.region_space != "eps") or use_identity:
            x0_hat = predicted_x0(noisy, model_output, self.alphas_cumprod, timesteps, self.prediction_type)
        face = hand = zero
        if use_regions:
            if self.region_space == "eps":
                pred, ref = model_output, target
            elif self.region_space == "x0_latent":
                assert x0_hat is not None
                pred, ref = x0_hat, latents
            else:
                if decode is None or frames is None:
                    raise InputError("loss.region_space=pixel needs the VAE decoder and the ground-truth frames")
                assert x0_hat is not None
                pred = self._decode(x0_hat, decode)
                ref = frames
            face = weighted_mse(pred, ref, face_mask.unsqueeze(1)) if self.lambda_face > 0 else zero
            hand = weighted_mse(pred, ref, hand_mask.unsqueeze(1)) if self.lambda_hand > 0 else zero
        identity, used = zero, 0
        if use_identity:
            assert face_boxes is not None and face_valid is not None and x0_hat is not None
            identity, used = self._identity(x0_hat, timesteps, face_boxes, face_valid, frames, decode)
        total = plain + self.lambda_face * face + self.lambda_hand * hand + self.lambda_id * identity
        return LossTerms(total, plain, face, hand, identity, used)

    @staticmethod
    def _decode(x0_hat: torch.Tensor, decode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        if x0_hat.ndim == 4:
            return decode(x0_hat)
        b, _, f = x0_hat.shape[:3]
        pixels = decode(_frames(x0_hat))
        return pixels.reshape(b, f, *pixels.shape[1:]).permute(0, 2, 1, 3, 4)

    def _identity(
        self,
        x0_hat: torch.Tensor,
        timesteps: torch.Tensor,
        face_boxes: torch.Tensor,
        face_valid: torch.Tensor,
        frames: torch.Tensor | None,
        decode: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> tuple[torch.Tensor, int]:
        early = (timesteps.to(face_valid.device) < self.id_loss_max_t).view(-1, *([1] * (face_valid.ndim - 1)))
        keep = (face_valid.bool() & early).reshape(-1)  # per frame, (B * F,)
        if not bool(keep.any()):
            return x0_hat.new_zeros(()), 0  # skipped: no decode, no embedder call
        if decode is None or frames is None or self.face_embedder is None:
            raise InputError("the identity loss needs the VAE decoder, the ground-truth frames and a face embedder")
        latents = _frames(x0_hat)[keep.to(x0_hat.device)]
        truth = _frames(frames)[keep.to(frames.device)]
        boxes = face_boxes.reshape(-1, 4)[keep.to(face_boxes.device)]
        predicted = decode(latents.to(x0_hat.dtype))
        loss = identity_loss(predicted, truth, boxes, self.face_embedder, self.embedder_input_size)
        return loss, int(keep.sum())


def shifted_scheduler(scheduler: SchedulerT, scale: float) -> SchedulerT:
    """``scheduler`` with log SNR moved by ``-2 log(scale)`` at every timestep (the same object for scale 1).

    Args:
        scheduler: A diffusers scheduler with ``alphas_cumprod`` that accepts ``trained_betas`` (DDPM, DDIM).
        scale: > 0; ``resolution / base_resolution`` for the "simple diffusion" rule (``TrainConfig.snr_scale``).
    """
    if scale <= 0 or not math.isfinite(scale):
        raise InputError(f"snr scale: expected a positive value, got {scale}")
    if scale == 1.0:
        return scheduler
    return shift_snr(scheduler, scale)  # type: ignore[arg-type,return-value]


def log_snr(alphas_cumprod: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(T,) ``log(abar / (1 - abar))`` in float64."""
    abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    return torch.log(abar) - torch.log1p(-abar)
