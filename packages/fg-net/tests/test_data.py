"""Fold-CSV datasets on a tiny corpus the test writes: samples, subject-exclusive splits, subsets, select-on-test,
clear errors, and on-the-fly alignment of a real face."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fg_net_test_helpers import AUS, write_corpus
from PIL import Image

from fg_net.config import FGNetRunConfig, tiny_config
from fg_net.data import AUDataModule, AUFoldDataset, read_fold_csv, split_by_subject, subject_folds, subject_id
from fg_net.heatmaps import au_heatmaps, decode_heatmaps
from fg_net.preprocessing import cached_landmarks_path
from fg_net.testing import REFERENCE_LANDMARKS_256


def test_subject_ids() -> None:
    assert subject_id("BP4D/aligned_images/F015/T6/01406.jpg") == "F015"
    assert subject_id("DISFA/aligned_images/SN028/00126.jpg") == "SN028"
    assert subject_id("other/aligned_images/alice/0001.png") == "alice"
    assert subject_id("people/bob/0001.png") == "bob"


def test_read_fold_csv_and_sample(tmp_path: Path) -> None:
    tables = write_corpus(tmp_path)
    paths, labels = read_fold_csv(tmp_path / "BP4D/labels/0/train.csv", AUS)
    columns = [0, 1, 3, 6]  # au1, au2, au6, au12 among the 12 BP4D columns
    assert paths == [p for p, _ in tables["train"]]
    assert labels.tolist() == [[row[c] for c in columns] for _, row in tables["train"]]
    dataset = AUFoldDataset(
        tmp_path / "BP4D/labels/0/train.csv", tmp_path, AUS, input_size=32, heatmap_size=16, sigma=2.5
    )
    sample = dataset[2]
    assert sample["image"].shape == (3, 32, 32) and -1.0 <= sample["image"].min() <= sample["image"].max() <= 1.0
    assert torch.equal(sample["labels"], torch.tensor(labels[2]))
    landmarks = np.load(cached_landmarks_path(dataset.path(2)))
    expected = au_heatmaps(
        torch.from_numpy(landmarks).double(), sample["labels"], AUS, 16, 2.5, landmark_scale=16 / 64
    )
    torch.testing.assert_close(sample["heatmap"], expected)
    assert torch.equal(decode_heatmaps(sample["heatmap"]), sample["labels"])
    assert "heatmap" not in dataset.evaluation_view()[2]
    assert dataset.subjects[:2] == ["M001", "M001"]


def test_errors_name_file_row_and_column(tmp_path: Path) -> None:
    write_corpus(tmp_path)
    train_csv = tmp_path / "BP4D/labels/0/train.csv"
    with pytest.raises(ValueError, match=r"train\.csv: missing column\(s\) \['au9'\]"):
        read_fold_csv(train_csv, (1, 9))
    text = train_csv.read_text().splitlines()
    text[2] = text[2].rsplit(",", 1)[0] + ",2"  # au24 of the second data row
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match=r"bad\.csv, line 3, column 'au24': expected a 0/1 label, got '2'"):
        read_fold_csv(bad_csv, (1, 24))
    (tmp_path / "BP4D/aligned_images/F002/T1/00002.png").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"train\.csv, row \d+ \(image_path 'BP4D/aligned_images/F002/T1/00002\.png'\)"
    ):
        AUFoldDataset(train_csv, tmp_path, AUS)
    with pytest.raises(FileNotFoundError, match="fold CSV not found"):
        read_fold_csv(tmp_path / "nope.csv", AUS)


def test_split_by_subject_is_exclusive() -> None:
    subjects = ["a", "a", "b", "c", "c", "c", "d", "e"]
    train, val = split_by_subject(subjects, 0.4, seed=0)
    assert sorted(train + val) == list(range(8))
    assert not {subjects[i] for i in train} & {subjects[i] for i in val}
    assert len({subjects[i] for i in val}) == 2
    assert split_by_subject(subjects, 0.4, seed=0) == (train, val)
    with pytest.raises(ValueError, match="2 subjects"):
        split_by_subject(["a", "a"], 0.5)


def test_subject_folds_are_exclusive_and_balanced() -> None:
    subjects = [f"S{i % 7}" for i in range(70)] + ["S0"] * 5
    folds = subject_folds(subjects, 3, seed=1)
    assert sorted(i for fold in folds for i in fold) == list(range(75))
    owners = [{subjects[i] for i in fold} for fold in folds]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    assert max(map(len, folds)) - min(map(len, folds)) <= 15
    with pytest.raises(ValueError, match="subjects"):
        subject_folds(["a", "b"], 3)


def test_datamodule_validation_protocols_and_subsets(tmp_path: Path) -> None:
    write_corpus(tmp_path, rows_per_csv=120)
    run = FGNetRunConfig(model=tiny_config())
    run.data.root = str(tmp_path)
    run.data.val_fraction = 0.34
    module = AUDataModule.from_run_config(run)
    module.setup()
    train_subjects = {module.train_set.dataset.subjects[i] for i in module.train_set.indices}
    val_subjects = {module.val_set.dataset.subjects[i] for i in module.val_set.indices}
    assert len(val_subjects) == 1 and not train_subjects & val_subjects
    assert "M002" not in train_subjects | val_subjects  # the test subject never leaks into training or validation
    batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape == (16, 3, 32, 32) and batch["heatmap"].shape == (16, 4, 16, 16)
    assert set(next(iter(module.val_dataloader()))) == {"image", "labels"}

    run.training.select_on_test = True
    authors = AUDataModule.from_run_config(run)
    authors.setup()
    assert authors.val_set is authors.test_set and len(authors.test_set) == 4

    run.training.select_on_test = False
    run.data.subset = 100
    sampled = AUDataModule.from_run_config(run)  # no train_100.csv: 100 of train.csv's 120 rows, seeded
    sampled.setup()
    assert len(sampled.train_set) + len(sampled.val_set) == 100
    lines = (tmp_path / "BP4D/labels/0/train.csv").read_text().splitlines()
    (tmp_path / "BP4D/labels/0/train_100.csv").write_text("\n".join(lines[:11]) + "\n")
    authors_subset = AUDataModule.from_run_config(run)  # the authors' train_100.csv when it exists
    authors_subset.setup()
    assert len(authors_subset.train_set) + len(authors_subset.val_set) == 10


def test_unaligned_images_are_aligned_on_the_fly(tmp_path: Path, face_image: Any, face_analyzer: Any) -> None:
    path = tmp_path / "raw/astronaut.png"
    path.parent.mkdir()
    Image.fromarray(face_image).save(path)
    (tmp_path / "raw.csv").write_text("image_path,au1,au2,au6,au12\nraw/astronaut.png,1,0,0,1\n")
    dataset = AUFoldDataset(
        tmp_path / "raw.csv",
        tmp_path,
        AUS,
        input_size=32,
        heatmap_size=16,
        sigma=2.5,
        aligned=False,
        analyzer=face_analyzer,
    )
    aligned, landmarks = dataset.face(0)
    assert aligned.shape == (256, 256, 3)
    np.testing.assert_allclose(landmarks, REFERENCE_LANDMARKS_256, atol=1.0)
    sample = dataset[0]
    assert sample["image"].shape == (3, 32, 32)
    assert decode_heatmaps(sample["heatmap"]).tolist() == [1, 0, 0, 1]
