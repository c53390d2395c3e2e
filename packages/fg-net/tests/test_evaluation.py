"""AU metrics against sklearn, cross-corpus AU mapping, and the fold / protocol paths."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from fg_net.evaluation import (
    AUScores,
    au_f1_scores,
    average_scores,
    cross_corpus_split,
    evaluate_model,
    fold_csv_path,
    shared_au_indices,
    within_corpus_splits,
)
from fg_net.heatmaps import BP4D_AUS, DISFA_AUS

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def test_f1_equals_sklearn_on_fixed_predictions() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (200, 12))
    predictions = np.where(rng.random((200, 12)) < 0.7, labels, 1 - labels)  # 70 % agreement
    labels[:, 10] = 0  # no positives at all, none predicted: sklearn's zero_division case
    predictions[:, 10] = 0
    predictions[:, 11] = 1  # always predicting "active"
    scores = au_f1_scores(labels, predictions, BP4D_AUS)
    expected = [
        100.0 * sklearn_metrics.f1_score(labels[:, i], predictions[:, i], zero_division=0.0) for i in range(12)
    ]
    np.testing.assert_allclose(scores.f1, expected, atol=1e-9)
    assert scores.mean == pytest.approx(float(np.mean(expected)))
    assert scores.support == tuple(int(v) for v in labels.sum(0)) and scores.count == 200
    assert scores.f1[10] == 0.0
    with warnings.catch_warnings():  # the authors' call: sklearn's default zero_division ("warn") scores 0 too
        warnings.simplefilter("ignore")
        assert sklearn_metrics.f1_score(labels[:, 10], predictions[:, 10]) == 0.0
    torch_scores = au_f1_scores(torch.from_numpy(labels), torch.from_numpy(predictions), BP4D_AUS)
    assert torch_scores == scores
    assert scores.as_dict()["avg"] == scores.mean and "AU24" in scores.table()


def test_f1_bad_inputs() -> None:
    with pytest.raises(ValueError, match="same shape"):
        au_f1_scores(np.zeros((4, 2)), np.zeros((5, 2)), (1, 2))
    with pytest.raises(ValueError, match="0/1"):
        au_f1_scores(np.full((4, 2), 2), np.zeros((4, 2)), (1, 2))
    with pytest.raises(ValueError, match="columns"):
        au_f1_scores(np.zeros((4, 2)), np.zeros((4, 2)), (1, 2, 4))


def test_average_scores_over_folds() -> None:
    a = AUScores((1, 2), (50.0, 70.0), (3, 4), 10)
    b = AUScores((1, 2), (30.0, 90.0), (1, 2), 8)
    avg = average_scores([a, b])
    assert avg.f1 == (40.0, 80.0) and avg.support == (4, 6) and avg.count == 18 and avg.mean == 60.0
    with pytest.raises(ValueError, match="same AUs"):
        average_scores([a, AUScores((1, 4), (1.0, 1.0), (0, 0), 1)])


def test_shared_au_indices() -> None:
    assert shared_au_indices(BP4D_AUS, DISFA_AUS) == ((0, 1, 2, 3, 6), (0, 1, 2, 3, 5))
    assert shared_au_indices(DISFA_AUS, BP4D_AUS) == ((0, 1, 2, 3, 5), (0, 1, 2, 3, 6))
    with pytest.raises(ValueError, match=r"\[9\]"):
        shared_au_indices(BP4D_AUS, DISFA_AUS, shared=(1, 9))


class _FixedModel(nn.Module):
    """Returns stored heatmaps batch by batch (positive = active)."""

    def __init__(self, active: Tensor) -> None:
        super().__init__()
        self.active = active
        self.cursor = 0
        self.weight = nn.Parameter(torch.zeros(1))

    def au_heatmaps(self, images: Tensor) -> Tensor:
        rows = self.active[self.cursor : self.cursor + images.shape[0]]
        self.cursor += images.shape[0]
        return (rows.float() * 2 - 1)[:, :, None, None].expand(-1, -1, 4, 4)


def test_evaluate_model_within_and_cross_corpus() -> None:
    rng = np.random.default_rng(1)
    bp4d_pred = torch.from_numpy(rng.integers(0, 2, (20, 12)))
    disfa_labels = torch.from_numpy(rng.integers(0, 2, (20, 8)))
    batches = [{"image": torch.zeros(10, 3, 8, 8), "labels": disfa_labels[i : i + 10]} for i in (0, 10)]
    scores = evaluate_model(_FixedModel(bp4d_pred), batches, BP4D_AUS, DISFA_AUS)
    assert scores.aus == (1, 2, 4, 6, 12)
    expected = [
        100 * sklearn_metrics.f1_score(disfa_labels[:, j], bp4d_pred[:, i], zero_division=0.0)
        for i, j in zip((0, 1, 2, 3, 6), (0, 1, 2, 3, 5), strict=True)
    ]
    np.testing.assert_allclose(scores.f1, expected)
    bp4d_labels = torch.from_numpy(rng.integers(0, 2, (20, 12)))
    batches = [{"image": torch.zeros(20, 3, 8, 8), "labels": bp4d_labels}]
    within = evaluate_model(_FixedModel(bp4d_pred), batches, BP4D_AUS)
    assert within == au_f1_scores(bp4d_labels, bp4d_pred, BP4D_AUS)


def test_fold_paths_and_protocols(tmp_path: Path) -> None:
    assert fold_csv_path(tmp_path, "BP4D", 1) == tmp_path / "BP4D/labels/1/train.csv"
    assert fold_csv_path(tmp_path, "DISFA", 2, "train", 1000) == tmp_path / "DISFA/labels/2/train_1000.csv"
    assert fold_csv_path(tmp_path, "DISFA", 0, "test") == tmp_path / "DISFA/labels/0/test.csv"
    splits = within_corpus_splits(tmp_path, "BP4D", subset=100)
    assert [s.fold for s in splits] == [0, 1, 2]
    assert all(s.train_csv.name == "train_100.csv" and s.test_csv.name == "test.csv" for s in splits)
    assert all(s.train_csv.parent == s.test_csv.parent for s in splits)
    cross = cross_corpus_split(tmp_path, "BP4D", "DISFA")
    assert cross.train_csv == tmp_path / "BP4D/labels/0/train.csv"
    assert cross.test_csv == tmp_path / "DISFA/labels/0/test.csv"
    with pytest.raises(ValueError, match="subset"):
        fold_csv_path(tmp_path, "BP4D", 0, "train", 200)
    with pytest.raises(ValueError, match="fold"):
        fold_csv_path(tmp_path, "BP4D", 3)
    with pytest.raises(ValueError, match="differ"):
        cross_corpus_split(tmp_path, "BP4D", "BP4D")
