"""Training data (spec §4): the authors' JSON-lines manifest of pairs, read with genblocks' manifest data module.

Each row is ``{"source", "target", "prompt", "source_prompt"}`` with image paths relative to the manifest's folder
(upstream: ``condition/`` and ``gt/``; ``portrait-edit make-pairs`` writes that layout). A batch holds ``source`` and
``target`` as (B, 3, H, W) in [-1, 1] and the two prompts as lists of strings. For the tiny configuration,
`write_synthetic_pairs` writes a small manifest of random "portraits" and their "edits" (the target is the source
with its lower half recoloured), so training runs end to end without data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genblocks.errors import InputError

if TYPE_CHECKING:
    from genblocks.training.data import ColumnSpec, ManifestDataModule
    from portrait_edit.config import PortraitEditConfig

__all__ = ["pair_columns", "pair_datamodule", "write_synthetic_pairs"]


def pair_columns() -> list[ColumnSpec]:
    """The manifest columns: ``source`` and ``target`` images, ``prompt`` and ``source_prompt`` texts."""
    from genblocks.training.data import ColumnSpec

    return [
        ColumnSpec("source", "image"),
        ColumnSpec("target", "image"),
        ColumnSpec("prompt", "text"),
        ColumnSpec("source_prompt", "text"),
    ]


def write_synthetic_pairs(folder: str | Path, count: int, image_size: int, seed: int = 0) -> Path:
    """Write ``count`` random pairs in the authors' layout and return the manifest path.

    Args:
        folder (`str` or `Path`): where ``condition/``, ``gt/`` and ``pairs.jsonl`` go (created).
        count (`int`): number of pairs.
        image_size (`int`): side of the square images.
        seed (`int`, defaults to 0): NumPy seed of the pixels.

    Returns:
        `Path`: ``<folder>/pairs.jsonl``.
    """
    from genblocks.media import write_image

    if count < 1 or image_size < 8:
        raise InputError(f"synthetic pairs: expected count >= 1 and image_size >= 8, got {count} and {image_size}")
    out = Path(folder)
    (out / "condition").mkdir(parents=True, exist_ok=True)
    (out / "gt").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        source = rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
        target = source.copy()
        target[image_size // 2 :] = (target[image_size // 2 :] // 2 + np.array([120, 0, 0], np.uint8)).astype(np.uint8)
        write_image(out / "condition" / f"{index:04d}.png", source)
        write_image(out / "gt" / f"{index:04d}.png", target)
        rows.append(
            {
                "source": f"condition/{index:04d}.png",
                "target": f"gt/{index:04d}.png",
                "prompt": "a person, red costume",
                "source_prompt": "a person",
            }
        )
    manifest = out / "pairs.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return manifest


def pair_datamodule(config: PortraitEditConfig, run_dir: str | Path) -> ManifestDataModule:
    """The data module of ``config.data``: its manifest, or synthetic pairs written into ``<run_dir>/data`` (the
    folder a run folder may hold before training starts) when ``data.manifest`` is unset."""
    from genblocks.training.data import ManifestDataModule

    data = config.data
    if data.manifest is None:
        manifest = write_synthetic_pairs(
            Path(run_dir) / "data", data.synthetic_pairs, data.image_size, seed=config.model.seed
        )
    else:
        manifest = Path(data.manifest)
        if not manifest.is_file():
            raise InputError(f"data.manifest {manifest}: file not found (expected the pairs.jsonl of make-pairs)")
    return ManifestDataModule(
        str(manifest),
        pair_columns(),
        resolution=data.image_size,
        batch_size=config.train.batch_size,
        seed=config.model.seed,
        num_workers=config.train.num_workers,
    )
