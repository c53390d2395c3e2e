"""ManifestDataset / ManifestDataModule on manifests written to tmp_path."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genblocks.training import ColumnSpec, ManifestDataModule, ManifestDataset, ManifestError

COLUMNS = [
    ColumnSpec("image", "image"),
    ColumnSpec("frames", "frames"),
    ColumnSpec("prompt", "text"),
    ColumnSpec("kps", "keypoints", key="keypoints"),
]


def _image(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (24, 16)) -> str:
    Image.new("RGB", size, color).save(path)
    return path.name


def _rows(tmp_path: Path, n: int = 5) -> list[dict]:
    rows = []
    for i in range(n):
        np.save(tmp_path / f"kps{i}.npy", np.full((3, 2), i, dtype=np.float32))
        rows.append(
            {
                "image": _image(tmp_path / f"img{i}.png", (255, 0, 10 * i)),
                "frames": [_image(tmp_path / f"f{i}_{k}.png", (0, 255, k)) for k in range(2)],
                "prompt": f"row {i}",
                "kps": [[i, i + 0.5]] if i % 2 else f"kps{i}.npy",
            }
        )
    return rows


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_sample_layout_and_values(tmp_path: Path) -> None:
    manifest = _jsonl(tmp_path / "m.jsonl", _rows(tmp_path))
    dataset = ManifestDataset(manifest, COLUMNS, resolution=8)
    dataset.validate()
    assert len(dataset) == 5
    sample = dataset[1]
    assert sample["image"].shape == (3, 8, 8) and sample["image"].dtype == torch.float32
    torch.testing.assert_close(sample["image"][:, 0, 0], torch.tensor([1.0, -1.0, 10 / 127.5 - 1.0]))
    assert sample["frames"].shape == (2, 3, 8, 8)
    torch.testing.assert_close(sample["frames"][1, :, 3, 3], torch.tensor([-1.0, 1.0, 1 / 127.5 - 1.0]))
    assert sample["prompt"] == "row 1"
    torch.testing.assert_close(sample["keypoints"], torch.tensor([[1.0, 1.5]]))
    torch.testing.assert_close(dataset[2]["keypoints"], torch.full((3, 2), 2.0))


def test_csv_manifest_with_json_cells(tmp_path: Path) -> None:
    rows = _rows(tmp_path, 2)
    path = tmp_path / "m.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "frames", "prompt", "kps"])
        writer.writeheader()
        for row in rows:
            kps = row["kps"] if isinstance(row["kps"], str) else json.dumps(row["kps"])
            writer.writerow({**row, "frames": json.dumps(row["frames"]), "kps": kps})
    dataset = ManifestDataset(path, COLUMNS, resolution=(4, 6))
    dataset.validate()
    assert dataset[0]["frames"].shape == (2, 3, 4, 6)
    torch.testing.assert_close(dataset[1]["keypoints"], torch.tensor([[1.0, 1.5]]))


def test_errors_name_row_and_column(tmp_path: Path) -> None:
    rows = _rows(tmp_path, 4)
    rows[1]["image"] = "missing.png"
    del rows[2]["prompt"]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    rows[3]["frames"] = ["f0_0.png", "broken.png"]
    dataset = ManifestDataset(_jsonl(tmp_path / "m.jsonl", rows), COLUMNS, resolution=8)
    with pytest.raises(ManifestError) as info:
        dataset.validate()
    message = str(info.value)
    assert "3 manifest problem(s)" in message
    assert "row 1, column 'image': file not found" in message and "missing.png" in message
    assert "row 2, column 'prompt': column missing" in message
    assert "row 3, column 'frames': unreadable image" in message and "broken.png" in message
    with pytest.raises(ManifestError, match=r"row 1, column 'image': file not found"):
        dataset[1]
    with pytest.raises(ManifestError, match=r"expected a \.csv or \.jsonl"):
        ManifestDataset(tmp_path / "kps0.npy", COLUMNS)
    with pytest.raises(ValueError, match="kind"):
        ColumnSpec("x", "audio")


def test_datamodule_validates_eagerly_and_splits_deterministically(tmp_path: Path) -> None:
    manifest = _jsonl(tmp_path / "m.jsonl", _rows(tmp_path, 10))
    dm = ManifestDataModule(str(manifest), COLUMNS[:3], resolution=8, batch_size=3, val_fraction=0.3, seed=5)
    dm.setup("fit")
    train, val = list(dm.train_set.indices), list(dm.val_set.indices)
    assert len(val) == 3 and sorted(train + val) == list(range(10))
    dm2 = ManifestDataModule(str(manifest), COLUMNS[:3], resolution=8, batch_size=3, val_fraction=0.3, seed=5)
    dm2.setup("fit")
    assert list(dm2.val_set.indices) == val
    other = ManifestDataModule(str(manifest), COLUMNS[:3], resolution=8, val_fraction=0.3, seed=6)
    assert other.split_indices(10)[1] != val
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (3, 3, 8, 8) and batch["frames"].shape == (3, 2, 3, 8, 8)
    assert len(batch["prompt"]) == 3
    rows = _rows(tmp_path, 3)
    rows[2]["image"] = "gone.png"
    bad = ManifestDataModule(str(_jsonl(tmp_path / "bad.jsonl", rows)), COLUMNS[:1], resolution=8)
    with pytest.raises(ManifestError, match=r"row 2, column 'image': file not found"):
        bad.setup("fit")
