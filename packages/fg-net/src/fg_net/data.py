"""BP4D / DISFA data in the authors' fold-CSV layout, with subject-exclusive splits and target heatmaps.

Layout (ihp-lab/FG-Net@6067ab2 ``data/{BP4D,DISFA}/labels/{0,1,2}/``, spec fg-net §4): per fold ``train.csv``,
``test.csv`` and the subsets ``train_{100,1000,5000,10000}.csv``, each with a header ``[index,]image_path,au1,...``
(the first, unnamed column is pandas' index). ``image_path`` is relative to the data root, e.g.
``BP4D/aligned_images/F015/T6/01406.jpg`` or ``DISFA/aligned_images/SN028/00126.jpg``: 256-px FFHQ-aligned faces, with
the dlib landmarks of the aligned image cached under ``aligned_landmarks/...npy`` (``code/data_utils.py``,
``au2heatmap``). The three folds are subject-exclusive: a fold's test subjects never appear in its training CSV.

`AUFoldDataset` reads one CSV and yields ``{"image", "labels"[, "heatmap"]}``: the face resized to the encoder's input
in [-1, 1] (upstream ``ToTensor`` + ``Normalize(0.5, 0.5)``), the AU labels in the model's AU order, and for training
the target heatmaps of `fg_net.heatmaps.au_heatmaps`. Raw (unaligned) frames are aligned on the fly with the authors'
preprocessing (`fg_net.preprocessing.align_face`). Problems fail early with the file, row and column named.

`AUDataModule` builds the training, validation and test sets of one fold. By default validation is a seeded
hold-out of training *subjects* (`split_by_subject`); ``select_on_test=True`` reproduces the authors' protocol, whose
validation loader reads the test CSV.
"""

from __future__ import annotations

import copy
import csv
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from fg_net.config import FGNetRunConfig, LandmarkConfig
from fg_net.evaluation import fold_csv_path
from fg_net.heatmaps import DATASET_AUS, au_heatmaps, check_aus
from fg_net.preprocessing import (
    align_face,
    build_face_analyzer,
    cached_landmarks_path,
    detect_landmarks,
    load_cached_landmarks,
)
from genblocks.faces.analyzer import FaceAnalyzer

__all__ = [
    "AUDataModule",
    "AUFoldDataset",
    "read_fold_csv",
    "split_by_subject",
    "subject_folds",
    "subject_id",
    "synthetic_subject_names",
    "write_synthetic_corpus",
]

logger = logging.getLogger(__name__)

_SUBJECT = re.compile(r"(?:^|/)([FM]\d{3}|SN\d{3})(?:/|$)")
_MAX_REPORTED = 10


def subject_id(image_path: str) -> str:
    """The subject of an image path: a BP4D (``F015``, ``M009``) or DISFA (``SN028``) id anywhere in the path,
    else the folder after ``aligned_images``, else the parent folder.

    Args:
        image_path (`str`): a CSV ``image_path``.

    Returns:
        `str`.
    """
    posix = image_path.replace("\\", "/")
    match = _SUBJECT.search(posix)
    if match:
        return match.group(1)
    parts = posix.split("/")
    if "aligned_images" in parts[:-1]:
        return parts[parts.index("aligned_images") + 1]
    return parts[-2] if len(parts) > 1 else ""


def read_fold_csv(path: str | Path, aus: Sequence[int]) -> tuple[list[str], np.ndarray]:
    """Read a fold CSV: the image paths and the 0/1 labels of ``aus`` (columns ``au{N}``).

    Args:
        path (`str` or `Path`): the CSV.
        aus (`Sequence[int]`): the AUs to read, in output column order.

    Returns:
        `tuple[list[str], np.ndarray]`: image paths and int64 labels of shape (N, K).

    Raises:
        `FileNotFoundError`: no such file.
        `ValueError`: a missing ``image_path`` or AU column (naming the file and the columns present), an empty file,
            or a label that is not 0/1 (naming the file, the line and the column).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fold CSV not found: {path}")
    aus = check_aus(aus)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        columns = [f"au{au}" for au in aus]
        missing = [c for c in ["image_path", *columns] if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; the header has {header}.")
        paths: list[str] = []
        labels: list[list[int]] = []
        for line, row in enumerate(reader, start=2):
            values = []
            for column in columns:
                cell = (row.get(column) or "").strip()
                try:
                    number = float(cell)
                except ValueError:
                    number = float("nan")
                if number not in (0.0, 1.0):
                    raise ValueError(f"{path}, line {line}, column {column!r}: expected a 0/1 label, got {cell!r}.")
                values.append(int(number))
            image_path = (row.get("image_path") or "").strip()
            if not image_path:
                raise ValueError(f"{path}, line {line}, column 'image_path': empty.")
            paths.append(image_path)
            labels.append(values)
    if not paths:
        raise ValueError(f"{path}: no rows.")
    return paths, np.asarray(labels, dtype=np.int64)


def split_by_subject(subjects: Sequence[str], val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Hold out a seeded share of the *subjects* (all their rows) for validation.

    Args:
        subjects (`Sequence[str]`): the subject of every row.
        val_fraction (`float`): share of the subjects held out, in (0, 1); at least one subject goes to each side.
        seed (`int`, defaults to 0): permutation seed.

    Returns:
        `tuple[list[int], list[int]]`: sorted (train, validation) row indices.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"`val_fraction` must be in (0, 1), got {val_fraction}.")
    unique = sorted(set(subjects))
    if len(unique) < 2:
        raise ValueError(
            f"a subject-exclusive validation split needs >= 2 subjects, got {unique}; use select_on_test or more data."
        )
    order = torch.randperm(len(unique), generator=torch.Generator().manual_seed(seed)).tolist()
    count = min(max(round(len(unique) * val_fraction), 1), len(unique) - 1)
    held_out = {unique[i] for i in order[:count]}
    train = [i for i, s in enumerate(subjects) if s not in held_out]
    val = [i for i, s in enumerate(subjects) if s in held_out]
    return train, val


def subject_folds(subjects: Sequence[str], folds: int = 3, seed: int = 0) -> list[list[int]]:
    """Partition rows into ``folds`` subject-exclusive folds of similar size (for corpora without the authors' CSVs).

    Subjects are shuffled with ``seed``, then each goes to the fold with the fewest rows so far (largest subjects
    first).

    Args:
        subjects (`Sequence[str]`): the subject of every row.
        folds (`int`, defaults to 3): number of folds (the paper's protocol uses 3).
        seed (`int`, defaults to 0): shuffle seed (breaks ties between equal-sized subjects).

    Returns:
        `list[list[int]]`: sorted row indices of each fold; no subject is in two folds.
    """
    unique = sorted(set(subjects))
    if folds < 2 or len(unique) < folds:
        raise ValueError(
            f"need >= 2 folds and at least as many subjects, got {folds} folds and {len(unique)} subjects."
        )
    rows: dict[str, list[int]] = {s: [] for s in unique}
    for index, subject in enumerate(subjects):
        rows[subject].append(index)
    order = [unique[i] for i in torch.randperm(len(unique), generator=torch.Generator().manual_seed(seed)).tolist()]
    order.sort(key=lambda s: -len(rows[s]))  # stable: the shuffle decides among equal sizes
    parts: list[list[int]] = [[] for _ in range(folds)]
    for subject in order:
        min(parts, key=len).extend(rows[subject])
    return [sorted(part) for part in parts]


CorpusTables = dict[int, dict[str, list[tuple[str, list[int]]]]]
"""Per fold, the rows written to ``train.csv`` and ``test.csv``: ``(image_path, labels of every column)``."""


def synthetic_subject_names(dataset: str, count: int) -> list[str]:
    """Subject ids in the corpus' style: BP4D ``F001, M001, F002, ...``, DISFA ``SN001, SN002, ...``."""
    if dataset == "DISFA":
        return [f"SN{i + 1:03d}" for i in range(count)]
    return [f"{'FM'[i % 2]}{i // 2 + 1:03d}" for i in range(count)]


def write_synthetic_corpus(
    root: str | Path,
    dataset: str = "BP4D",
    aus: Sequence[int] | None = None,
    subjects: int = 6,
    frames: int = 8,
    image_size: int = 64,
    train_rows: int | None = None,
    test_rows: int | None = None,
    seed: int = 0,
) -> CorpusTables:
    """Write a synthetic corpus in the authors' layout (see the module docstring) under ``root``, readable by
    `AUFoldDataset` / `AUDataModule` with ``aligned=True``: a training smoke run with no dataset.

    Every face is a sample of `fg_net.testing.synthetic_au_task` (a jittered reference landmark set, random labels,
    one Gaussian blob per active AU painted at its landmark centres), saved as a PNG with its landmarks cached in the
    authors' ``aligned_landmarks/.../*.npy``. The CSVs hold a label column for every AU of ``dataset``; the AUs not in
    ``aus`` are not painted and labelled 0. Subject ``i`` is a test subject of fold ``i % 3``: the three folds are
    subject-exclusive, each training on the other subjects.

    Args:
        root (`str` or `Path`): the data root (created).
        dataset (`str`, defaults to `"BP4D"`): ``"BP4D"`` (paths ``BP4D/aligned_images/F001/T1/00001.png``) or
            ``"DISFA"`` (``DISFA/aligned_images/SN001/00001.png``).
        aus (`Sequence[int]`, *optional*): the AUs painted into the faces (a subset of the dataset's); `None`: all.
        subjects (`int`, defaults to 6): subjects, at least 3.
        frames (`int`, defaults to 8): faces per subject.
        image_size (`int`, defaults to 64): side of the faces.
        train_rows (`int`, *optional*): rows of each ``train.csv``, cycling over the fold's training faces; `None`:
            each face once.
        test_rows (`int`, *optional*): rows of each ``test.csv``, likewise.
        seed (`int`, defaults to 0): seed of the faces, labels and landmarks.

    Returns:
        `CorpusTables`: the rows of every fold's CSVs.
    """
    from fg_net.testing import synthetic_au_task  # it imports the model

    if dataset not in DATASET_AUS:
        raise ValueError(f"`dataset` must be one of {sorted(DATASET_AUS)}, got {dataset!r}.")
    if subjects < 3 or frames < 1:
        raise ValueError(f"a 3-fold corpus needs >= 3 subjects and >= 1 frame, got {subjects} and {frames}.")
    columns = DATASET_AUS[dataset]
    painted = check_aus(aus if aus is not None else columns)
    unknown = sorted(set(painted) - set(columns))
    if unknown:
        raise ValueError(f"`aus` {unknown} are not {dataset} AUs {list(columns)}.")
    root = Path(root)
    task = synthetic_au_task(subjects * frames, aus=painted, image_size=image_size, seed=seed)
    names = synthetic_subject_names(dataset, subjects)
    images: list[tuple[str, list[int]]] = []
    for index in range(subjects * frames):
        subject, frame = names[index // frames], index % frames + 1
        task_folder = "T1/" if dataset == "BP4D" else ""
        relative = f"{dataset}/aligned_images/{subject}/{task_folder}{frame:05d}.png"
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = ((task.images[index].permute(1, 2, 0) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        Image.fromarray(pixels.numpy()).save(path)
        landmarks_path = cached_landmarks_path(path)
        landmarks_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(landmarks_path, (task.landmarks[index] * (image_size / 256)).numpy().astype(np.float32))
        labels = dict(zip(painted, task.labels[index].tolist(), strict=True))
        images.append((relative, [int(labels.get(au, 0)) for au in columns]))
    header = ",image_path," + ",".join(f"au{au}" for au in columns)
    tables: CorpusTables = {}
    for fold in range(3):
        test_subjects = {names[i] for i in range(subjects) if i % 3 == fold}
        pools = {
            "train": [row for row in images if subject_id(row[0]) not in test_subjects],
            "test": [row for row in images if subject_id(row[0]) in test_subjects],
        }
        folder = root / dataset / "labels" / str(fold)
        folder.mkdir(parents=True, exist_ok=True)
        tables[fold] = {}
        for split, count in (("train", train_rows), ("test", test_rows)):
            pool = pools[split]
            rows = [pool[i % len(pool)] for i in range(count if count is not None else len(pool))]
            lines = [header] + [f"{i},{p}," + ",".join(map(str, labels)) for i, (p, labels) in enumerate(rows)]
            (folder / f"{split}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
            tables[fold][split] = rows
    return tables


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB")).copy()
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"unreadable image {path} ({error})") from error


def _to_tensor(image: np.ndarray, size: int) -> Tensor:
    """uint8 (H, W, 3) -> float (3, size, size) in [-1, 1] (bicubic resize when needed)."""
    if image.shape[:2] != (size, size):
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))
    return torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0


class AUFoldDataset(Dataset):
    """One fold CSV as samples ``{"image": (3, S, S), "labels": (K,), "heatmap": (K, T, T)}``.

    Args:
        csv_path (`str` or `Path`): the fold CSV.
        image_root (`str` or `Path`): folder the CSV's ``image_path`` values are relative to.
        aus (`Sequence[int]`): the AUs, in the model's channel order.
        input_size (`int`, defaults to 256): side of the returned image (the encoder input).
        heatmap_size (`int`, defaults to 128): side of the target heatmaps.
        sigma (`float`, defaults to 20.0): target Gaussian sigma in heatmap pixels.
        threshold (`float`, defaults to 0.01): target Gaussian cut-off.
        with_heatmaps (`bool`, defaults to `True`): add ``"heatmap"`` (training); evaluation needs only labels.
        aligned (`bool`, defaults to `True`): images are aligned faces; otherwise they are aligned on the fly.
        image_size (`int`, defaults to 256): side of the aligned face (on-the-fly alignment output).
        landmarks (`LandmarkConfig`, *optional*): landmark backend and whether to read the authors' ``.npy`` cache.
        analyzer (`FaceAnalyzer`, *optional*): a ready backend (built from ``landmarks`` on first use otherwise).
        rows (`Sequence[int]`, *optional*): keep only these CSV rows (0-based), e.g. a subset.
        check_files (`bool`, defaults to `True`): check at construction that every image exists.
    """

    def __init__(
        self,
        csv_path: str | Path,
        image_root: str | Path,
        aus: Sequence[int],
        input_size: int = 256,
        heatmap_size: int = 128,
        sigma: float = 20.0,
        threshold: float = 0.01,
        with_heatmaps: bool = True,
        aligned: bool = True,
        image_size: int = 256,
        landmarks: LandmarkConfig | None = None,
        analyzer: FaceAnalyzer | None = None,
        rows: Sequence[int] | None = None,
        check_files: bool = True,
    ) -> None:
        self.csv_path = Path(csv_path)
        self.image_root = Path(image_root)
        self.aus = check_aus(aus)
        self.input_size = input_size
        self.heatmap_size = heatmap_size
        self.sigma = sigma
        self.threshold = threshold
        self.with_heatmaps = with_heatmaps
        self.aligned = aligned
        self.image_size = image_size
        self.landmark_config = landmarks if landmarks is not None else LandmarkConfig()
        self._analyzer = analyzer
        paths, labels = read_fold_csv(self.csv_path, self.aus)
        if rows is not None:
            rows = list(rows)
            bad = [r for r in rows if not 0 <= r < len(paths)]
            if bad:
                raise ValueError(f"`rows` {bad[:5]} are out of range for {self.csv_path} ({len(paths)} rows).")
            paths = [paths[r] for r in rows]
            labels = labels[rows]
        self.image_paths = paths
        self.labels = torch.from_numpy(labels)
        self.subjects = [subject_id(p) for p in paths]
        if check_files:
            self.check_files()

    def __len__(self) -> int:
        return len(self.image_paths)

    def _where(self, index: int) -> str:
        return f"{self.csv_path}, row {index} (image_path {self.image_paths[index]!r})"

    def path(self, index: int) -> Path:
        """The image file of row ``index``."""
        return self.image_root / self.image_paths[index]

    def check_files(self) -> None:
        """Raise `FileNotFoundError` listing (up to 10) rows whose image file is missing."""
        missing = [i for i in range(len(self)) if not self.path(i).is_file()]
        if missing:
            shown = "\n  ".join(f"{self._where(i)}: not found at {self.path(i)}" for i in missing[:_MAX_REPORTED])
            more = f"\n  ... and {len(missing) - _MAX_REPORTED} more" if len(missing) > _MAX_REPORTED else ""
            raise FileNotFoundError(f"{len(missing)} image(s) missing:\n  {shown}{more}")

    def analyzer(self) -> FaceAnalyzer:
        """The landmark backend, built on first use."""
        if self._analyzer is None:
            self._analyzer = build_face_analyzer(self.landmark_config)
        return self._analyzer

    def face(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The aligned face of row ``index`` (uint8 (S, S, 3)) and, when training needs them, its landmarks (68, 2)
        in the face's pixel coordinates."""
        path = self.path(index)
        if not path.is_file():
            raise FileNotFoundError(f"{self._where(index)}: not found at {path}")
        image = _read_rgb(path)
        if not self.aligned:
            result = align_face(self.analyzer(), image, self.image_size, name=str(path))
            return result.image, result.landmarks
        if not self.with_heatmaps:
            return image, None
        landmarks = load_cached_landmarks(path) if self.landmark_config.cache else None
        if landmarks is None:
            landmarks = detect_landmarks(self.analyzer(), image, name=str(path))
        return image, landmarks

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, landmarks = self.face(index)
        sample: dict[str, Any] = {"image": _to_tensor(image, self.input_size), "labels": self.labels[index]}
        if self.with_heatmaps:
            sample["heatmap"] = au_heatmaps(
                torch.from_numpy(np.asarray(landmarks, dtype=np.float64)),
                self.labels[index],
                self.aus,
                size=self.heatmap_size,
                sigma=self.sigma,
                landmark_scale=self.heatmap_size / image.shape[1],
                threshold=self.threshold,
            )
        return sample

    def evaluation_view(self) -> AUFoldDataset:
        """The same rows without target heatmaps (no landmarks needed)."""
        view = copy.copy(self)
        view.with_heatmaps = False
        return view


class AUDataModule(L.LightningDataModule):
    """Training, validation and test sets of one fold of one corpus.

    Training reads ``labels/{fold}/train.csv`` (or ``train_{subset}.csv``; if a subset CSV is absent, ``subset`` rows
    are drawn from ``train.csv`` with ``split_seed``), testing ``labels/{fold}/test.csv``. Validation is a
    subject-exclusive hold-out of ``val_fraction`` of the training subjects, or the test CSV itself with
    ``select_on_test`` (the authors' protocol).

    Args:
        root (`str` or `Path`): the data root (CSV ``image_path`` values are relative to it).
        dataset (`str`): ``"BP4D"`` or ``"DISFA"``.
        fold (`int`): 0, 1 or 2.
        aus (`Sequence[int]`): the model's AUs (label columns read from the CSVs).
        subset (`int`, *optional*): 100, 1000, 5000 or 10000 training rows.
        input_size (`int`, defaults to 256): encoder input side.
        heatmap_size (`int`, defaults to 128): target side.
        sigma (`float`, defaults to 20.0): target sigma in heatmap pixels.
        threshold (`float`, defaults to 0.01): target Gaussian cut-off.
        aligned (`bool`, defaults to `True`): images are aligned faces.
        image_size (`int`, defaults to 256): aligned face side.
        batch_size (`int`, defaults to 16): training batch.
        eval_batch_size (`int`, defaults to 32): validation and test batch.
        val_fraction (`float`, defaults to 0.2): share of training subjects held out.
        split_seed (`int`, defaults to 0): seed of the hold-out and of subset sampling.
        select_on_test (`bool`, defaults to `False`): validate on the test CSV (authors' protocol).
        num_workers (`int`, defaults to 0): loader workers.
        landmarks (`LandmarkConfig`, *optional*): landmark backend settings.
        check_files (`bool`, defaults to `True`): check every image exists in ``setup``.
    """

    def __init__(
        self,
        root: str | Path,
        dataset: str,
        fold: int,
        aus: Sequence[int],
        subset: int | None = None,
        input_size: int = 256,
        heatmap_size: int = 128,
        sigma: float = 20.0,
        threshold: float = 0.01,
        aligned: bool = True,
        image_size: int = 256,
        batch_size: int = 16,
        eval_batch_size: int = 32,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        select_on_test: bool = False,
        num_workers: int = 0,
        landmarks: LandmarkConfig | None = None,
        check_files: bool = True,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.dataset = dataset
        self.fold = fold
        self.aus = check_aus(aus)
        self.subset = subset
        self.input_size = input_size
        self.heatmap_size = heatmap_size
        self.sigma = sigma
        self.threshold = threshold
        self.aligned = aligned
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.select_on_test = select_on_test
        self.num_workers = num_workers
        self.landmarks = landmarks if landmarks is not None else LandmarkConfig()
        self.check_files = check_files
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @classmethod
    def from_run_config(cls, run: FGNetRunConfig) -> AUDataModule:
        """The data module of a run config (model AUs, sizes and sigma; data paths; batch sizes; selection)."""
        return cls(
            root=run.data.root,
            dataset=run.data.dataset,
            fold=run.data.fold,
            aus=run.model.aus,
            subset=run.data.subset,
            input_size=run.model.input_size,
            heatmap_size=run.model.heatmap_size,
            sigma=run.model.heatmap_sigma,
            threshold=run.model.heatmap_threshold,
            aligned=run.data.aligned,
            image_size=run.data.image_size,
            batch_size=run.training.batch_size,
            eval_batch_size=run.training.eval_batch_size,
            val_fraction=run.data.val_fraction,
            split_seed=run.data.split_seed,
            select_on_test=run.training.select_on_test,
            num_workers=run.data.num_workers,
            landmarks=run.landmarks,
        )

    def _dataset(self, csv_path: Path, with_heatmaps: bool, rows: Sequence[int] | None = None) -> AUFoldDataset:
        return AUFoldDataset(
            csv_path,
            self.root,
            self.aus,
            input_size=self.input_size,
            heatmap_size=self.heatmap_size,
            sigma=self.sigma,
            threshold=self.threshold,
            with_heatmaps=with_heatmaps,
            aligned=self.aligned,
            image_size=self.image_size,
            landmarks=self.landmarks,
            rows=rows,
            check_files=self.check_files,
        )

    def _train_csv_and_rows(self) -> tuple[Path, list[int] | None]:
        if self.subset is None:
            return fold_csv_path(self.root, self.dataset, self.fold, "train"), None
        subset_csv = fold_csv_path(self.root, self.dataset, self.fold, "train", self.subset)
        if subset_csv.is_file():
            return subset_csv, None
        full = fold_csv_path(self.root, self.dataset, self.fold, "train")
        count = len(read_fold_csv(full, self.aus)[0])
        if count < self.subset:
            raise ValueError(f"{full} has {count} rows, fewer than the requested subset of {self.subset}.")
        logger.warning(
            "%s not found: drawing %d rows of %s with seed %d", subset_csv, self.subset, full, self.split_seed
        )
        generator = torch.Generator().manual_seed(self.split_seed)
        return full, sorted(torch.randperm(count, generator=generator)[: self.subset].tolist())

    def setup(self, stage: str | None = None) -> None:
        """Read the CSVs (and check the images) once."""
        if self.train_set is not None:
            return
        train_csv, rows = self._train_csv_and_rows()
        train_full = self._dataset(train_csv, with_heatmaps=True, rows=rows)
        test = self._dataset(fold_csv_path(self.root, self.dataset, self.fold, "test"), with_heatmaps=False)
        shared = sorted(set(train_full.subjects) & set(test.subjects))
        if shared:
            logger.warning("fold %d of %s: training and test CSVs share subjects %s", self.fold, self.dataset, shared)
        if self.select_on_test:
            self.train_set, self.val_set = train_full, test
        else:
            train_idx, val_idx = split_by_subject(train_full.subjects, self.val_fraction, self.split_seed)
            self.train_set = Subset(train_full, train_idx)
            self.val_set = Subset(train_full.evaluation_view(), val_idx)
        self.test_set = test
        logger.info(
            "%s fold %d: %d train / %d val / %d test rows (select_on_test=%s)",
            self.dataset,
            self.fold,
            len(self.train_set),
            len(self.val_set),
            len(test),
            self.select_on_test,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.split_seed),
        )

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return DataLoader(self.val_set, batch_size=self.eval_batch_size, shuffle=False, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        self.setup("test")
        return DataLoader(self.test_set, batch_size=self.eval_batch_size, shuffle=False, num_workers=self.num_workers)
