"""Helpers shared by fg-net's tests (importable through the conftest's sys.path entry)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fg_net.heatmaps import DATASET_AUS
from fg_net.preprocessing import cached_landmarks_path
from fg_net.testing import REFERENCE_LANDMARKS_256

AUS = (1, 2, 6, 12)
SUBJECTS = ("F001", "F002", "M001", "M002")


def write_corpus(
    root: Path, rows_per_csv: int = 8, size: int = 64, dataset: str = "BP4D"
) -> dict[str, list[tuple[str, list[int]]]]:
    """A corpus in the authors' layout: 2 images per subject with cached landmarks; fold 0 trains on 3 subjects and
    tests on the fourth (BP4D-like ``F001/T1/00001.jpg`` paths, or DISFA-like ``SN001/00001.jpg``)."""
    rng = np.random.default_rng(0)
    aus = DATASET_AUS[dataset]
    subjects = SUBJECTS if dataset == "BP4D" else ("SN001", "SN002", "SN003", "SN004")
    images = []
    for subject in subjects:
        for frame in (1, 2):
            task = "T1/" if dataset == "BP4D" else ""
            rel = f"{dataset}/aligned_images/{subject}/{task}{frame:05d}.jpg"
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
            lm_path = cached_landmarks_path(path)
            lm_path.parent.mkdir(parents=True, exist_ok=True)
            np.save(lm_path, REFERENCE_LANDMARKS_256 * (size / 256) + rng.normal(0, 0.5, (68, 2)).astype(np.float32))
            images.append(rel)
    train_images = [p for p in images if subjects[-1] not in p]
    test_images = [p for p in images if subjects[-1] in p]
    folder = root / dataset / "labels/0"
    folder.mkdir(parents=True)
    tables = {}
    for name, pool, count in (("train", train_images, rows_per_csv), ("test", test_images, 4)):
        rows = [(pool[i % len(pool)], rng.integers(0, 2, len(aus)).tolist()) for i in range(count)]
        header = ",image_path," + ",".join(f"au{au}" for au in aus)
        lines = [header] + [f"{i},{p}," + ",".join(map(str, labels)) for i, (p, labels) in enumerate(rows)]
        (folder / f"{name}.csv").write_text("\n".join(lines) + "\n")
        tables[name] = rows
    return tables
