"""Evaluation of a generator (spec §6's likely metrics; the paper's tables could not be read):

- **control error**: mean |(β̂, θ̂) − (β, θ)| of a :class:`~omniavatar.training.ControlEstimator` (or any callable
  image -> values) on images rendered at random expressions and poses;
- **identity consistency**: mean cosine similarity between a face embedder's features (any callable
  images `(N, 3, H, W)` in [−1, 1] -> `(N, D)`, e.g. ArcFace weights you have) of one head across expressions and
  views, against different heads;
- **depth consistency**: symmetric Chamfer distance between the surface points two views of one head unproject
  (depth · ray, opacity > 0.5);
- **FID / KID** (:func:`fid_kid`) between the features of real images (:func:`read_real_images`: an FFHQ-style folder)
  and of images rendered from random seeds with, when the real folder's ``dataset.json`` has labels, EG3D's protocol:
  each generated head takes a label row (25 camera values + FLAME values) drawn with replacement from the real data,
  for the mapping and the rendering, without truncation (:func:`labelled_samples`); else random cameras and FLAME
  values (:func:`random_samples`). Through a feature
  extractor you give (:func:`genblocks.metrics.load_feature_extractor`: a TorchScript file, e.g. an Inception export,
  called on `(N, 3, R, R)` images in [−1, 1]). KID averages 100 random subsets of ``min(100, N)`` images. Real and
  generated images share the generator's output resolution R; the paper's protocol (50k samples, its label sampling) is
  not known, so read the numbers relative to each other, not against the paper's tables.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from genblocks.errors import InputError
from genblocks.metrics import extract_features, frechet_distance, kernel_inception_distance
from genblocks.render3d.cameras import split_camera_label
from genblocks.render3d.rays import sample_rays
from omniavatar.pipeline_omniavatar import OmniAvatarOutput, OmniAvatarPipeline

__all__ = [
    "chamfer_distance",
    "control_error",
    "depth_consistency",
    "fid_kid",
    "frechet_distance",
    "identity_consistency",
    "kernel_inception_distance",
    "labelled_samples",
    "random_samples",
    "read_real_images",
    "real_image_files",
    "real_labels",
    "surface_points",
]

Embedder = Callable[[Tensor], Tensor]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _random_features(pipeline: OmniAvatarPipeline, count: int, generator: torch.Generator) -> Tensor:
    """`(count, F)` FLAME values as the demo draws them: neutral shape, N(0, 1) expression, small neck and jaw noise."""
    layout = pipeline.layout
    features = torch.zeros(count, layout.feature_dim)
    start = layout.shape
    features[:, start : start + layout.expression] = torch.randn(count, layout.expression, generator=generator)
    features[:, -6:] = torch.randn(count, 6, generator=generator) * torch.tensor(
        [0.02] * 3 + list(pipeline.config.render.jaw_noise)
    )
    return features


@torch.no_grad()
def control_error(
    pipeline: OmniAvatarPipeline, estimator: Embedder, count: int = 8, seed: int = 0
) -> dict[str, float]:
    """Mean absolute error of re-estimated expression and pose against the inputs, over `count` heads."""
    features = _random_features(pipeline, count, torch.Generator().manual_seed(seed))
    out = pipeline(list(range(seed, seed + count)), features)
    estimate = estimator(out.images)
    target = features[:, -pipeline.layout.pose_dim :]
    error = (estimate.cpu() - target).abs()
    e = pipeline.layout.expression
    return {"expression": float(error[:, :e].mean()), "pose": float(error[:, e:].mean())}


@torch.no_grad()
def identity_consistency(
    pipeline: OmniAvatarPipeline, embedder: Embedder, heads: int = 4, variations: int = 3, seed: int = 0
) -> dict[str, float]:
    """Cosine similarity of embeddings: the same head over expressions and views (``same``) and different heads at the
    neutral frontal view (``different``)."""
    same = []
    neutral = []
    for head in range(heads):
        features = _random_features(pipeline, variations, torch.Generator().manual_seed(seed + head))
        features[0] = 0
        yaw = torch.linspace(-pipeline.config.render.yaw_range, pipeline.config.render.yaw_range, variations)
        out = pipeline([seed + head] * variations, features, yaw=yaw)
        embedding = torch.nn.functional.normalize(embedder(out.images).float(), dim=-1)
        similarity = embedding @ embedding.T
        same.append(float(similarity[~torch.eye(variations, dtype=torch.bool)].mean()))
        neutral.append(embedding[0])
    stacked = torch.stack(neutral)
    cross = stacked @ stacked.T
    different = float(cross[~torch.eye(heads, dtype=torch.bool)].mean()) if heads > 1 else float("nan")
    return {"same": float(np.mean(same)), "different": different}


def surface_points(output: OmniAvatarOutput, index: int = 0, threshold: float = 0.5) -> Tensor:
    """World points `(P, 3)` of the rendered surface of sample `index`: depth × ray where the opacity > threshold."""
    labels = output.labels[index : index + 1, :25]
    cam2world, intrinsics = split_camera_label(labels)
    resolution = output.depth.shape[-1]
    origins, directions = sample_rays(cam2world, intrinsics, resolution)
    depth = output.depth[index].reshape(-1, 1)
    mask = output.mask[index].reshape(-1) > threshold
    return (origins[0] + depth * directions[0])[mask]


def chamfer_distance(a: Tensor, b: Tensor) -> float:
    """Symmetric mean nearest-neighbour distance between point sets `(P, 3)` and `(Q, 3)` (inf when one is empty)."""
    if len(a) == 0 or len(b) == 0:
        return float("inf")
    distances = torch.cdist(a, b)
    return float(0.5 * (distances.min(dim=1).values.mean() + distances.min(dim=0).values.mean()))


@torch.no_grad()
def depth_consistency(pipeline: OmniAvatarPipeline, seed: int = 0, yaw: float = 0.25, threshold: float = 0.5) -> float:
    """Chamfer distance between the surfaces one head shows from yaw −`yaw` and +`yaw` (same ws and features)."""
    features = torch.zeros(2, pipeline.layout.feature_dim)
    out = pipeline([seed, seed], features, yaw=torch.tensor([-yaw, yaw]))
    return chamfer_distance(surface_points(out, 0, threshold), surface_points(out, 1, threshold))


def real_image_files(folder: str | Path, option: str = "--real") -> list[Path]:
    """The images of an FFHQ-style folder, sorted: the files ``dataset.json`` lists (EG3D's layout, as training reads
    it) when there is one, else every image under the folder (subfolders such as FFHQ's ``00000/`` included,
    ``masks/`` excluded).

    Raises:
        InputError: Not a folder, a ``dataset.json`` that is not EG3D's layout or lists missing files, or no images.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{option} {root}: folder not found (expected an FFHQ-style folder of images)")
    manifest = root / "dataset.json"
    if manifest.is_file():
        try:
            entries = json.loads(manifest.read_text(encoding="utf-8")).get("labels") or []
            files = sorted(root / str(entry[0]) for entry in entries)
        except (ValueError, AttributeError, TypeError, IndexError) as error:
            raise InputError(
                f"{option} {manifest}: expected EG3D's {{'labels': [[file, [values]], ...]}} ({error})"
            ) from None
        missing = [path.name for path in files if not path.is_file()]
        if missing:
            raise InputError(f"{option} {manifest}: lists {len(missing)} missing files, e.g. {missing[0]}")
    else:
        files = sorted(
            path
            for path in root.rglob("*")
            if path.suffix.lower() in IMAGE_SUFFIXES and "masks" not in path.relative_to(root).parts[:-1]
        )
    if not files:
        raise InputError(f"{option} {root}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def read_real_images(folder: str | Path, resolution: int, count: int, option: str = "--real") -> Tensor:
    """The first `count` images of :func:`real_image_files` (all when fewer), each resized on its shorter side and
    centre-cropped to `resolution` by training's reader (:func:`genblocks.training.data.load_image`).

    Returns:
        `(N, 3, resolution, resolution)` in [−1, 1], N = min(count, images in the folder) >= 2.

    Raises:
        InputError: As :func:`real_image_files`; fewer than 2 images; an unreadable image.
    """
    from genblocks.training.data import load_image

    files = real_image_files(folder, option)[:count]
    if len(files) < 2:
        raise InputError(f"{option} {folder}: FID / KID need at least 2 real images, found {len(files)}")
    images = []
    for path in files:
        try:
            images.append(load_image(path, (resolution, resolution)))
        except OSError as error:
            raise InputError(f"{option} {path}: not a readable image ({error})") from None
    return torch.stack(images)


@torch.no_grad()
def random_samples(pipeline: OmniAvatarPipeline, count: int, seed: int = 0, batch_size: int = 8) -> Tensor:
    """`count` heads from seeds ``seed, seed + 1, ...`` (the demo's z), FLAME values drawn as the demo draws its
    variations (neutral shape, N(0, 1) expression, neck and jaw noise) and cameras uniform within
    ±``render.yaw_range`` / ±``render.pitch_range`` of the demo's view.

    Returns:
        `(count, 3, R, R)` images clamped to [−1, 1].
    """
    generator = torch.Generator().manual_seed(seed)
    features = _random_features(pipeline, count, generator)
    r = pipeline.config.render
    yaw = (torch.rand(count, generator=generator) * 2 - 1) * r.yaw_range
    pitch = (torch.rand(count, generator=generator) * 2 - 1) * r.pitch_range
    images = []
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        out = pipeline(
            list(range(seed + start, seed + stop)), features[start:stop], yaw[start:stop], pitch[start:stop]
        )
        images.append(out.images.clamp(-1, 1).cpu())
    return torch.cat(images)


def real_labels(folder: str | Path, label_dim: int, option: str = "--real") -> Tensor | None:
    """The label rows of an FFHQ-style folder's ``dataset.json`` (EG3D's layout), or None when it has none.

    Returns:
        `(M, label_dim)` float32: 25 camera values (cam2world 16, intrinsics 9) then the FLAME values per image.

    Raises:
        InputError: A row of another length (the message gives the expected layout) or with non-numbers.
    """
    manifest = Path(folder) / "dataset.json"
    if not manifest.is_file():
        return None
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8")).get("labels") or []
        rows = [entry[1] for entry in entries]
    except (ValueError, AttributeError, TypeError, IndexError) as error:
        raise InputError(
            f"{option} {manifest}: expected EG3D's {{'labels': [[file, [values]], ...]}} ({error})"
        ) from None
    if not rows or all(row is None for row in rows):
        return None
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != label_dim:
            length = len(row) if isinstance(row, list) else type(row).__name__
            raise InputError(
                f"{option} {manifest}: label row {index} has {length} values, expected {label_dim} "
                f"(25 camera values: cam2world 16 + intrinsics 9, then the FLAME values)"
            )
    try:
        return torch.tensor(rows, dtype=torch.float32)
    except (TypeError, ValueError) as error:
        raise InputError(f"{option} {manifest}: label rows must hold numbers ({error})") from None


@torch.no_grad()
def labelled_samples(
    pipeline: OmniAvatarPipeline,
    labels: Tensor,
    count: int,
    seed: int = 0,
    batch_size: int = 8,
    truncation_psi: float = 1.0,
) -> Tensor:
    """`count` heads from seeds ``seed, seed + 1, ...``, head i conditioned (mapping and rendering) on a label row
    drawn with replacement from `labels` `(M, 25 + F)` (EG3D's FID protocol; no truncation by default).

    Returns:
        `(count, 3, R, R)` images clamped to [−1, 1].
    """
    generator = torch.Generator().manual_seed(seed)
    rows = labels[torch.randint(len(labels), (count,), generator=generator)]
    images = []
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        z = pipeline.latents(list(range(seed + start, seed + stop)))
        ws = pipeline.generator.mapping(
            z,
            rows[start:stop],
            truncation_psi=truncation_psi,
            truncation_cutoff=pipeline.config.render.truncation_cutoff,
        )
        images.append(pipeline.render(ws, rows[start:stop]).images.clamp(-1, 1).cpu())
    return torch.cat(images)


def fid_kid(
    pipeline: OmniAvatarPipeline,
    extractor: Embedder,
    real: Tensor,
    count: int,
    seed: int = 0,
    batch_size: int = 8,
    kid_subsets: int = 100,
    labels: Tensor | None = None,
) -> dict[str, float | int | str]:
    """FID and KID between `real` images and `count` generated ones: :func:`labelled_samples` on `labels` when given
    (the real data's label rows), else :func:`random_samples`.

    Args:
        pipeline: The generator.
        extractor: Features `(B, 3, R, R)` in [−1, 1] -> `(B, D)`.
        real: `(M, 3, R, R)` in [−1, 1], M >= 2.
        count: Generated images, >= 2.
        seed: First z seed (and the seed of the FLAME values and cameras).
        batch_size: Images per render and per extractor call.
        kid_subsets: KID is the mean over this many random subsets of ``min(100, M, count)`` images of each set.
        labels: `(L, 25 + F)` label rows of the real data, *optional*.

    Returns:
        ``{"fid", "kid", "real_images", "generated_images", "conditioning"}`` (``"dataset labels"`` or ``"random"``).
    """
    if count < 2 or len(real) < 2:
        raise InputError(f"FID / KID: need at least 2 real and 2 generated images, got {len(real)} and {count}")
    if labels is None:
        fake = random_samples(pipeline, count, seed, batch_size)
    else:
        fake = labelled_samples(pipeline, labels, count, seed, batch_size)
    real_features = extract_features(extractor, real, batch_size)
    fake_features = extract_features(extractor, fake, batch_size)
    return {
        "fid": frechet_distance(real_features, fake_features),
        "kid": kernel_inception_distance(
            real_features, fake_features, subsets=kid_subsets, subset_size=min(100, count), seed=seed
        ),
        "real_images": len(real),
        "generated_images": count,
        "conditioning": "random" if labels is None else "dataset labels",
    }
