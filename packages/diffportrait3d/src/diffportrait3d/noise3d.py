"""3D-aware noise and camera condition images from an EG3D generator (ours; DiffPortrait3D spec §3 "3D-aware noise").

The authors did not release their noise model ("company IP policy"); their README points to GAN inversion (GOAE,
TriPlaneNet, EG3D). This module implements the plain EG3D variant on ``genblocks.gan.TriPlaneGenerator``:

1. **Inversion** (:func:`invert_portrait`): optimise one ``w`` (broadcast to all ``num_ws``) with Adam on an image
   loss (MSE, plus a low-resolution MSE term) against the portrait, starting from the mean ``w`` of random samples.
   The camera is given; or estimated from the face's 68 landmarks (``genblocks.render3d.estimate_camera``: the pose
   under which a generic head shows them, on EG3D's FFHQ rig), the portrait then being EG3D's crop of the photo
   (:func:`diffportrait3d.preprocessing.prepare_portrait`); or, without landmarks (no face analyzer installed, no
   face found), searched on a yaw/pitch grid (:func:`search_camera`: the candidate whose render of the starting
   ``w`` is closest to the portrait), which only tells a few coarse poses apart.
2. **Renders** at each target camera (:meth:`EG3DNoisePrior.renders`), in [0, 1].
3. **Start latents**: the pipeline VAE-encodes the renders and ``q_sample``-s them to ``start_timestep`` (999:
   sqrt(abar) ~ 0.068 keeps the coarse layout): pass ``noise_renders=`` to ``DiffPortrait3DPipeline`` or call
   :meth:`EG3DNoisePrior.start_latents`.

Condition images (a *different* subject at the target view, the view ControlNet's hint) come from
:class:`EG3DConditionRenderer`: a fixed random sample of the same kind of generator, rendered at the cameras.

**Using your own EG3D weights.** :func:`load_eg3d` (from :mod:`genblocks.gan.eg3d`) reads the authors'
``network-snapshot.pkl`` directly through a restricted unpickler that never runs its embedded code
(``G_ema`` by default), or a state dict (``torch.load(weights_only=True)`` / safetensors).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from diffportrait3d.cameras import cameras_at, check_cameras
from genblocks.gan.eg3d import TINY_EG3D, load_eg3d, tiny_eg3d
from genblocks.gan.triplane import TriPlaneGenerator
from genblocks.render3d import estimate_camera

__all__ = [
    "TINY_EG3D",
    "EG3DConditionRenderer",
    "EG3DNoisePrior",
    "InversionResult",
    "camera_from_landmarks",
    "invert_portrait",
    "load_eg3d",
    "search_camera",
    "tiny_eg3d",
]

logger = logging.getLogger(__name__)


@dataclass
class InversionResult:
    """An EG3D inversion of one portrait.

    Attributes:
        ws (`torch.Tensor` of shape `(1, num_ws, w_dim)`): The optimised latent.
        camera (`torch.Tensor` of shape `(1, 25)`): The camera used (given or estimated).
        camera_source (`str`): Where the camera came from: ``"given"``, ``"landmarks"`` or ``"grid"``.
        losses (`list[float]`): Image loss before each step, then the final loss.
        reconstruction (`torch.Tensor` of shape `(1, 3, R, R)`): Final render in [0, 1].
    """

    ws: torch.Tensor
    camera: torch.Tensor
    camera_source: Literal["given", "landmarks", "grid"] = "given"
    losses: list[float] = field(default_factory=list)
    reconstruction: torch.Tensor | None = None


def _prepare_target(image: Any, resolution: int) -> torch.Tensor:
    """One portrait, whatever the pipeline accepts (PIL, uint8 (H, W, 3), float (3, H, W) in [0, 1]): `(1, 3, R, R)`
    in [-1, 1]."""
    from diffportrait3d.pipeline_diffportrait3d import images_to_tensor

    target = images_to_tensor(image, "image", resolution)
    if target.shape[0] != 1:
        raise ValueError(f"image must be one RGB image, got {target.shape[0]}")
    return target * 2 - 1


def _image_loss(render: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    low = F.avg_pool2d(render, 4) - F.avg_pool2d(target, 4)
    return F.mse_loss(render, target) + low.pow(2).mean()


def _mean_w(generator: TriPlaneGenerator, camera: torch.Tensor, samples: int, seed: int) -> torch.Tensor:
    z = torch.randn(samples, generator.z_dim, generator=torch.Generator().manual_seed(seed)).to(camera)
    ws = generator.mapping(z, camera.expand(samples, -1))
    return ws.mean(dim=0, keepdim=True)


def _render(generator: TriPlaneGenerator, ws: torch.Tensor, cameras: torch.Tensor) -> torch.Tensor:
    return generator.synthesis(ws.expand(cameras.shape[0], -1, -1), cameras, noise_mode="const")["image"]


def search_camera(
    generator: TriPlaneGenerator,
    target: torch.Tensor,
    ws: torch.Tensor,
    yaws: tuple[float, ...] = (-0.6, -0.3, 0.0, 0.3, 0.6),
    pitches: tuple[float, ...] = (-0.15, 0.0, 0.15),
) -> torch.Tensor:
    """The fallback camera estimate without landmarks: the candidate camera (yaw/pitch offsets from frontal) whose
    render of ``ws`` is closest to ``target``.

    Args:
        generator (`TriPlaneGenerator`): The EG3D generator.
        target (`torch.Tensor` of shape `(1, 3, R, R)`): The portrait in [-1, 1] at the generator's resolution.
        ws (`torch.Tensor` of shape `(1, num_ws, w_dim)`): The latent rendered at each candidate.
        yaws (`tuple[float, ...]`): Candidate yaw offsets in radians.
        pitches (`tuple[float, ...]`): Candidate pitch offsets in radians.

    Returns:
        `torch.Tensor` of shape `(1, 25)`.
    """
    grid = [(y, p) for y in yaws for p in pitches]
    cams = cameras_at(torch.tensor([g[0] for g in grid]), torch.tensor([g[1] for g in grid])).to(target)
    with torch.no_grad():
        losses = [float(_image_loss(_render(generator, ws, cams[i : i + 1]), target)) for i in range(len(grid))]
    best = min(range(len(grid)), key=losses.__getitem__)
    logger.info("estimated camera: yaw %.2f, pitch %.2f", *grid[best])
    return cams[best : best + 1]


def camera_from_landmarks(landmarks: torch.Tensor) -> torch.Tensor:
    """The EG3D camera of a face from its 68 landmarks (``genblocks.render3d.estimate_camera`` on EG3D's FFHQ rig, the
    rig of :func:`diffportrait3d.cameras.cameras_at`): `(1, 25)`.

    Args:
        landmarks (`torch.Tensor` of shape `(68, 2)`): dlib / iBUG landmarks in pixels of any crop of the face.
    """
    camera, yaw, pitch = estimate_camera(torch.as_tensor(landmarks, dtype=torch.float32))
    logger.info("camera from landmarks: yaw %.3f, pitch %.3f", yaw, pitch)
    return camera[None]


def invert_portrait(
    generator: TriPlaneGenerator,
    image: Any,
    camera: torch.Tensor | None = None,
    num_steps: int = 200,
    lr: float = 0.01,
    num_w_samples: int = 64,
    seed: int = 0,
    landmarks: torch.Tensor | None = None,
) -> InversionResult:
    """Invert ``image`` into ``generator`` by optimising a single ``w`` (W space, broadcast to every layer).

    Args:
        generator (`TriPlaneGenerator`): The EG3D generator (not modified; its weights are frozen here).
        image (PIL image, uint8 array `(H, W, 3)` or `torch.Tensor` of shape `(3, H, W)` / `(1, 3, H, W)` in [0, 1]):
            The portrait, resized to the generator's output size.
        camera (`torch.Tensor` of shape `(1, 25)` or `(25,)`, *optional*): The portrait's camera. When not given it
            is estimated from ``landmarks`` (:func:`camera_from_landmarks`), or without them on a yaw/pitch grid of
            renders (:func:`search_camera`, the fallback).
        num_steps (`int`, defaults to 200): Adam steps.
        lr (`float`, defaults to 0.01): Adam learning rate.
        num_w_samples (`int`, defaults to 64): Random samples averaged for the starting ``w``.
        seed (`int`, defaults to 0): Seed of those samples.
        landmarks (`torch.Tensor` of shape `(68, 2)`, *optional*): The face's landmarks in pixels of ``image``
            (best: EG3D's crop, :func:`diffportrait3d.preprocessing.prepare_portrait`); used when ``camera`` is None.

    Returns:
        `InversionResult`.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    device = next(generator.parameters()).device
    target = _prepare_target(image, generator.img_resolution).to(device)
    generator.requires_grad_(False)
    source: Literal["given", "landmarks", "grid"] = "given"
    if camera is not None:
        camera = check_cameras(camera, "camera").to(device)
    elif landmarks is not None:
        camera, source = camera_from_landmarks(landmarks).to(device), "landmarks"
    frontal = cameras_at(torch.zeros(1), torch.zeros(1)).to(device)
    with torch.no_grad():
        start = _mean_w(generator, frontal if camera is None else camera, num_w_samples, seed)
    if camera is None:
        camera, source = search_camera(generator, target, start), "grid"
    w = start[:, :1].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([w], lr=lr, betas=(0.9, 0.999))
    losses: list[float] = []
    for step in range(num_steps):
        ws = w.expand(-1, generator.num_ws, -1)
        loss = _image_loss(_render(generator, ws, camera), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        logger.debug("inversion step %d: loss %.4f", step, losses[-1])
    with torch.no_grad():
        ws = w.expand(-1, generator.num_ws, -1).detach()
        final = _render(generator, ws, camera)
        losses.append(float(_image_loss(final, target)))
    reconstruction = ((final + 1) / 2).clamp(0, 1)
    return InversionResult(ws=ws, camera=camera, camera_source=source, losses=losses, reconstruction=reconstruction)


class EG3DNoisePrior:
    """DiffPortrait3D's 3D-aware noise, ours: EG3D inversion of the portrait rendered at each target camera.

    Args:
        generator (`TriPlaneGenerator`): The EG3D generator (e.g. :func:`load_eg3d`).
        num_steps (`int`, defaults to 200): Inversion steps.
        lr (`float`, defaults to 0.01): Inversion learning rate.
    """

    def __init__(self, generator: TriPlaneGenerator, num_steps: int = 200, lr: float = 0.01) -> None:
        self.generator = generator
        self.num_steps = num_steps
        self.lr = lr
        self.last_inversion: InversionResult | None = None

    def renders(
        self,
        image: Any,
        cameras: torch.Tensor,
        source_camera: torch.Tensor | None = None,
        landmarks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Invert ``image`` and render it at ``cameras``.

        Args:
            image (PIL image, uint8 array `(H, W, 3)` or `torch.Tensor` of shape `(3, H, W)` in [0, 1]): The portrait,
                in any form the pipeline takes.
            cameras (`torch.Tensor` of shape `(V, 25)`): Target cameras.
            source_camera (`torch.Tensor` of shape `(1, 25)`, *optional*): The portrait's camera (else estimated from
                ``landmarks``, or on a grid of renders without them).
            landmarks (`torch.Tensor` of shape `(68, 2)`, *optional*): The face's landmarks in ``image``'s pixels.

        Returns:
            `torch.Tensor` of shape `(V, 3, R, R)` in [0, 1], R the generator's output side.
        """
        cameras = check_cameras(cameras)
        result = invert_portrait(self.generator, image, source_camera, self.num_steps, self.lr, landmarks=landmarks)
        self.last_inversion = result
        with torch.no_grad():
            out = _render(self.generator, result.ws, cameras.to(result.ws.device))
        return ((out + 1) / 2).clamp(0, 1).cpu()

    def start_latents(
        self,
        pipeline: Any,
        image: torch.Tensor,
        cameras: torch.Tensor,
        start_timestep: int = 999,
        generator: torch.Generator | None = None,
        resolution: int | None = None,
    ) -> torch.Tensor:
        """``q_sample(vae.encode(render), start_timestep)`` for each camera: `(V, 4, h, w)` (``latents=`` of the
        pipeline).

        Args:
            pipeline (`DiffPortrait3DPipeline`): Provides the VAE and scheduler.
            image (`torch.Tensor` of shape `(3, H, W)`): The portrait in [0, 1].
            cameras (`torch.Tensor` of shape `(V, 25)`): Target cameras.
            start_timestep (`int`, defaults to 999): The q-sample timestep.
            generator (`torch.Generator`, *optional*): Seeds posterior samples and noise.
            resolution (`int`, *optional*): Render side before encoding; defaults to the pipeline's.
        """
        from diffportrait3d.pipeline_diffportrait3d import images_to_tensor
        from genblocks.diffusion import q_sample_start, vae_encode

        resolution = resolution if resolution is not None else pipeline.default_resolution
        renders = images_to_tensor(self.renders(image, cameras), "noise_renders", resolution)
        vae = pipeline.vae
        latents = vae_encode(vae, (renders * 2 - 1).to(device=vae.device, dtype=vae.dtype), generator=generator)
        noise = torch.randn(latents.shape, generator=generator, dtype=latents.dtype).to(latents.device)
        return q_sample_start(latents, pipeline.scheduler, timestep=start_timestep, noise=noise)


class EG3DConditionRenderer:
    """Camera condition images: one fixed random subject of an EG3D generator rendered at the requested cameras.

    Args:
        generator (`TriPlaneGenerator`): The EG3D generator.
        seed (`int`, defaults to 0): Picks the subject (``z``).
        truncation_psi (`float`, defaults to 0.7): Truncation towards the mean ``w``.
    """

    def __init__(self, generator: TriPlaneGenerator, seed: int = 0, truncation_psi: float = 0.7) -> None:
        self.generator = generator
        self.seed = seed
        self.truncation_psi = truncation_psi

    @torch.no_grad()
    def __call__(self, cameras: torch.Tensor) -> torch.Tensor:
        """Render at ``cameras`` (V, 25): (V, 3, R, R) in [0, 1]."""
        cameras = check_cameras(cameras)
        device = next(self.generator.parameters()).device
        cameras = cameras.to(device)
        z = torch.randn(1, self.generator.z_dim, generator=torch.Generator().manual_seed(self.seed)).to(device)
        frontal = cameras_at(torch.zeros(1), torch.zeros(1)).to(device)
        ws = self.generator.mapping(z, frontal, truncation_psi=self.truncation_psi)
        return ((_render(self.generator, ws, cameras) + 1) / 2).clamp(0, 1).cpu()
