"""EG3D dual discriminator and discriminator blur (genblocks.gan.dual_discriminator)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genblocks.gan.dual_discriminator import DualDiscriminator, blur_images, discriminator_blur_sigma
from genblocks.gan.stylegan2 import StyleGAN2Discriminator
from genblocks.render3d.cameras import LookAtCameraSampler


def tiny(**overrides) -> DualDiscriminator:
    torch.manual_seed(0)
    config = {"img_resolution": 32, "c_dim": 25, "channel_base": 256, "channel_max": 32, "mapping_layers": 2}
    config.update(overrides)
    return DualDiscriminator(**config)


def batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(2, 3, 32, 32, generator=generator)
    raw = torch.randn(2, 3, 16, 16, generator=generator)
    c = LookAtCameraSampler().sample_labels(2, yaw_std=0.3, generator=generator)
    return image, raw, c


def test_concatenates_image_and_resized_raw_into_six_channels():
    discriminator = tiny()
    image, raw, c = batch()
    logits = discriminator(image, raw, c)
    assert logits.shape == (2, 1) and discriminator.img_channels == 6
    upsampled = F.interpolate(raw, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    expected = StyleGAN2Discriminator.forward(discriminator, torch.cat([image, upsampled], dim=1), c)
    torch.testing.assert_close(logits, expected)
    # A raw image already at the final resolution is used as is.
    torch.testing.assert_close(discriminator(image, upsampled, c), expected)


def test_r1_gradients_reach_both_images_and_every_parameter():
    discriminator = tiny()
    image, raw, c = batch()
    image.requires_grad_(True)
    raw.requires_grad_(True)
    logits = discriminator(image, raw, c)
    grads = torch.autograd.grad(logits.sum(), [image, raw], create_graph=True)
    assert all(float(g.detach().abs().sum()) > 0 for g in grads)
    penalty = sum(g.square().sum(dim=(1, 2, 3)) for g in grads).mean()
    (penalty + logits.mean()).backward()
    missing = [
        name for name, p in discriminator.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)
    ]
    assert not missing, missing


def test_camera_conditioning_and_label_noise():
    discriminator = tiny(c_noise=0.5)
    image, raw, c = batch()
    _, _, other = batch(seed=1)
    discriminator.eval()
    clean = discriminator(image, raw, c)
    assert not torch.allclose(clean, discriminator(image, raw, other))  # projection conditioning on c
    torch.testing.assert_close(discriminator(image, raw, c), clean)  # eval: no label noise
    discriminator.train()
    noisy = discriminator(image, raw, c, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(noisy, clean)
    with pytest.raises(ValueError, match="c must have shape"):
        discriminator(image, raw, c[:, :24])


def test_blur_kernel_schedule_and_forward_blur():
    assert discriminator_blur_sigma(0) == 10.0 and discriminator_blur_sigma(100) == 5.0
    assert discriminator_blur_sigma(200) == 0.0 and discriminator_blur_sigma(500) == 0.0
    assert discriminator_blur_sigma(0, fade_kimg=0) == 0.0
    images = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    assert torch.equal(blur_images(images, 0.3), images)  # floor(3 * 0.3) = 0 taps each side
    sigma = 1.5
    taps = torch.exp2(-((torch.arange(-4, 5, dtype=torch.float32) / sigma) ** 2))
    kernel = torch.outer(taps, taps) / taps.sum() ** 2
    expected = F.conv2d(images.reshape(6, 1, 12, 12), kernel[None, None], padding=4).reshape(2, 3, 12, 12)
    torch.testing.assert_close(blur_images(images, sigma), expected, atol=1e-6, rtol=1e-5)
    constant = torch.full((1, 1, 20, 20), 0.7)
    torch.testing.assert_close(blur_images(constant, 1.0)[..., 3:-3, 3:-3], constant[..., 3:-3, 3:-3])
    discriminator = tiny().eval()
    image, raw, c = batch()
    torch.testing.assert_close(
        discriminator(image, raw, c, blur_sigma=sigma), discriminator(blur_images(image, sigma), raw, c)
    )


def test_bad_inputs_raise():
    discriminator = tiny()
    image, raw, c = batch()
    with pytest.raises(ValueError, match="image must have shape"):
        discriminator(image[:, :, :16, :16], raw, c)
    with pytest.raises(ValueError, match="image_raw must have shape"):
        discriminator(image, raw[:, :2], c)
    with pytest.raises(ValueError, match="c_noise"):
        tiny(c_noise=-1.0)
