"""Manifest-driven datasets: a CSV or JSONL file whose rows name images, video frames, texts and keypoints.

A typed column spec says which columns to read and how::

    columns = [ColumnSpec("target", "image"), ColumnSpec("frames", "frames"), ColumnSpec("prompt", "text"),
               ColumnSpec("kps", "keypoints")]
    dm = ManifestDataModule("data/train.jsonl", columns, resolution=512, batch_size=4)

Relative paths resolve against the manifest's folder (or ``root``). In CSV files a ``frames`` or ``keypoints`` cell is
a JSON list (``["a.png", "b.png"]``, ``[[x, y], ...]``); a ``keypoints`` cell may also be a ``.npy`` path. Images are
resized (shorter side) and centre-cropped to the resolution and scaled to [-1, 1], channels first. :meth:`validate`
checks every row eagerly (the data module runs it in ``setup``) and raises :class:`ManifestError` naming the row and
column of each missing column, missing file or unreadable image.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Subset

__all__ = ["ColumnKind", "ColumnSpec", "ManifestDataModule", "ManifestDataset", "ManifestError", "load_image"]

logger = logging.getLogger(__name__)

ColumnKind = Literal["image", "frames", "text", "keypoints"]
_KINDS = ("image", "frames", "text", "keypoints")
_MAX_REPORTED = 20


class ManifestError(ValueError):
    """A manifest problem; the message names the manifest, the row and the column."""


@dataclass
class ColumnSpec:
    """One manifest column to load.

    Args:
        name: Column name in the manifest.
        kind: ``"image"`` -> (3, H, W) float in [-1, 1]; ``"frames"`` -> (F, 3, H, W); ``"text"`` -> ``str``;
            ``"keypoints"`` -> float32 tensor of the stored shape (JSON list or ``.npy`` file).
        key: Key of the value in the sample dict; ``None`` uses ``name``.
        optional: Allow an empty or absent cell; the sample then omits the key.
    """

    name: str
    kind: str = "image"
    key: str | None = None
    optional: bool = False

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"ColumnSpec({self.name!r}).kind: expected one of {_KINDS}, got {self.kind!r}")

    @property
    def sample_key(self) -> str:
        return self.key or self.name


def load_image(path: str | Path, size: tuple[int, int]) -> torch.Tensor:
    """Read an image as RGB, resize its shorter side and centre-crop to ``size`` = (H, W); return (3, H, W) in [-1, 1]."""
    with Image.open(path) as opened:
        image = opened.convert("RGB")
        height, width = size
        scale = max(height / image.height, width / image.width)
        new_w, new_h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
        left, top = (new_w - width) // 2, (new_h - height) // 2
        image = image.crop((left, top, left + width, top + height))
        array = np.asarray(image, dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ManifestError(f"manifest {path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            return [dict(row) for row in csv.DictReader(handle)]
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ManifestError(f"manifest {path}: line {number + 1} is not valid JSON ({error})") from error
            if not isinstance(row, dict):
                raise ManifestError(f"manifest {path}: line {number + 1} is not a JSON object")
            rows.append(row)
        return rows
    raise ManifestError(f"manifest {path}: expected a .csv or .jsonl file, got suffix {suffix!r}")


class ManifestDataset(Dataset):
    """Samples from a CSV/JSONL manifest, one dict per row, keyed by each column's ``sample_key``.

    Args:
        manifest: Path to the ``.csv`` or ``.jsonl`` manifest.
        columns: The columns to load.
        resolution: Output image size, an int (square) or (H, W).
        root: Folder relative paths resolve against; ``None`` is the manifest's folder.
    """

    def __init__(
        self,
        manifest: str | Path,
        columns: Sequence[ColumnSpec],
        resolution: int | tuple[int, int] = 512,
        root: str | Path | None = None,
    ) -> None:
        if not columns:
            raise ValueError("ManifestDataset: columns must name at least one column")
        self.manifest = Path(manifest)
        self.columns = list(columns)
        height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
        self.size = (height, width)
        self.root = Path(root) if root is not None else self.manifest.parent
        self.rows = _read_rows(self.manifest)

    def __len__(self) -> int:
        return len(self.rows)

    def _where(self, index: int, column: ColumnSpec) -> str:
        return f"manifest {self.manifest}, row {index}, column {column.name!r}"

    def _cell(self, index: int, column: ColumnSpec) -> Any:
        row = self.rows[index]
        if column.name not in row:
            raise ManifestError(f"{self._where(index, column)}: column missing (columns present: {sorted(row)})")
        value = row[column.name]
        if isinstance(value, str) and column.kind in ("frames", "keypoints") and value.lstrip().startswith("["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as error:
                raise ManifestError(f"{self._where(index, column)}: invalid JSON list ({error})") from error
        return value

    def _path(self, index: int, column: ColumnSpec, value: Any) -> Path:
        if not isinstance(value, str) or not value:
            raise ManifestError(f"{self._where(index, column)}: expected a file path, got {value!r}")
        path = Path(value)
        return path if path.is_absolute() else self.root / path

    def _paths(self, index: int, column: ColumnSpec, value: Any) -> list[Path]:
        if column.kind == "image":
            return [self._path(index, column, value)]
        if column.kind == "frames":
            if not isinstance(value, list) or not value:
                raise ManifestError(f"{self._where(index, column)}: expected a non-empty list of frame paths")
            return [self._path(index, column, v) for v in value]
        if column.kind == "keypoints" and isinstance(value, str):
            return [self._path(index, column, value)]
        return []

    def _is_empty(self, value: Any) -> bool:
        return value is None or value == "" or value == []

    def validate(self) -> None:
        """Check every row: columns present, files exist, images readable, keypoints parse.

        Raises:
            ManifestError: Listing (up to 20) problems, each naming the manifest, row and column.
        """
        problems: list[str] = []
        for index in range(len(self.rows)):
            for column in self.columns:
                try:
                    if column.optional and self._is_empty(self.rows[index].get(column.name)):
                        continue
                    value = self._cell(index, column)
                    for path in self._paths(index, column, value):
                        if not path.is_file():
                            raise ManifestError(f"{self._where(index, column)}: file not found: {path}")
                        if column.kind in ("image", "frames"):
                            try:
                                with Image.open(path) as image:
                                    image.verify()
                            except (UnidentifiedImageError, OSError) as error:
                                raise ManifestError(
                                    f"{self._where(index, column)}: unreadable image {path} ({error})"
                                ) from error
                    if column.kind == "keypoints":
                        self._load_keypoints(index, column, value)
                except ManifestError as error:
                    problems.append(str(error))
        if problems:
            shown = "\n  ".join(problems[:_MAX_REPORTED])
            more = f"\n  ... and {len(problems) - _MAX_REPORTED} more" if len(problems) > _MAX_REPORTED else ""
            raise ManifestError(f"{len(problems)} manifest problem(s):\n  {shown}{more}")

    def _load_image(self, index: int, column: ColumnSpec, path: Path) -> torch.Tensor:
        try:
            return load_image(path, self.size)
        except FileNotFoundError as error:
            raise ManifestError(f"{self._where(index, column)}: file not found: {path}") from error
        except (UnidentifiedImageError, OSError) as error:
            raise ManifestError(f"{self._where(index, column)}: unreadable image {path} ({error})") from error

    def _load_keypoints(self, index: int, column: ColumnSpec, value: Any) -> torch.Tensor:
        if isinstance(value, str):
            path = self._path(index, column, value)
            try:
                array = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as error:
                raise ManifestError(f"{self._where(index, column)}: cannot read keypoints {path} ({error})") from error
        else:
            try:
                array = np.asarray(value, dtype=np.float32)
            except (TypeError, ValueError) as error:
                raise ManifestError(f"{self._where(index, column)}: keypoints are not a numeric list") from error
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample: dict[str, Any] = {}
        for column in self.columns:
            if column.optional and self._is_empty(self.rows[index].get(column.name)):
                continue
            value = self._cell(index, column)
            if column.kind == "image":
                sample[column.sample_key] = self._load_image(index, column, self._path(index, column, value))
            elif column.kind == "frames":
                frames = [self._load_image(index, column, p) for p in self._paths(index, column, value)]
                sample[column.sample_key] = torch.stack(frames)
            elif column.kind == "text":
                sample[column.sample_key] = "" if value is None else str(value)
            else:
                sample[column.sample_key] = self._load_keypoints(index, column, value)
        return sample


class ManifestDataModule(L.LightningDataModule):
    """Train/val loaders over one manifest, split deterministically by ``seed``.

    Args:
        manifest: Path to the ``.csv`` or ``.jsonl`` manifest.
        columns: The columns to load.
        resolution: Output image size, an int or (H, W).
        batch_size: Samples per batch (per process).
        val_fraction: Fraction of rows held out for validation (0 disables validation).
        seed: Seed of the train/val split permutation.
        num_workers: DataLoader worker processes.
        root: Folder relative paths resolve against; ``None`` is the manifest's folder.
        validate: Check every row eagerly in ``setup`` (:meth:`ManifestDataset.validate`).
    """

    def __init__(
        self,
        manifest: str,
        columns: list[ColumnSpec],
        resolution: int | tuple[int, int] = 512,
        batch_size: int = 1,
        val_fraction: float = 0.0,
        seed: int = 0,
        num_workers: int = 0,
        root: str | None = None,
        validate: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction: expected a value in [0, 1), got {val_fraction}")
        # Only this class's arguments, given explicitly, so a subclass's extra constructor arguments (face encoders,
        # models) are not collected and deep-copied by Lightning; a subclass adds its plain ones itself.
        self.save_hyperparameters(
            {
                "manifest": manifest,
                "columns": [asdict(column) for column in columns],
                "resolution": resolution,
                "batch_size": batch_size,
                "val_fraction": val_fraction,
                "seed": seed,
                "num_workers": num_workers,
                "root": root,
                "validate": validate,
            }
        )
        self.manifest = manifest
        self.columns = columns
        self.resolution = resolution
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.num_workers = num_workers
        self.root = root
        self.validate = validate
        self.train_set: Subset | None = None
        self.val_set: Subset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        dataset = ManifestDataset(self.manifest, self.columns, self.resolution, self.root)
        if self.validate:
            dataset.validate()
        train_idx, val_idx = self.split_indices(len(dataset))
        self.train_set, self.val_set = Subset(dataset, train_idx), Subset(dataset, val_idx)
        logger.info("manifest %s: %d train / %d val rows", self.manifest, len(train_idx), len(val_idx))

    def split_indices(self, n: int) -> tuple[list[int], list[int]]:
        """Deterministic (train, val) row indices: a seeded permutation, the first ``round(n * val_fraction)`` val."""
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed)).tolist()
        n_val = round(n * self.val_fraction)
        return sorted(order[n_val:]), sorted(order[:n_val])

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None  # setup("fit") builds it
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("validate")
        assert self.val_set is not None  # setup("validate") builds it
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)
