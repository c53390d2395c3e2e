"""AU detection metrics and the evaluation protocols of FG-Net (spec fg-net §4, §6).

- **Metric.** Per-AU binary F1 (the positive class is "active"), times 100, and its average over AUs: what the
  authors compute with ``sklearn.metrics.f1_score(gt[:, i], pred[:, i])`` (ihp-lab/FG-Net@6067ab2
  ``code/train_interpreter.py``, ``val``). `au_f1_scores` computes it from counts, equal to sklearn (an AU with no
  positive label and no positive prediction scores ``zero_division``, 0 as sklearn's default does).
- **Within-corpus.** Three subject-exclusive folds per corpus: train on ``labels/{k}/train*.csv``, test on
  ``labels/{k}/test.csv``, average the per-AU F1 over the folds (`within_corpus_splits`, `average_scores`).
- **Cross-corpus.** Train on one corpus, test on the other's test CSV, scoring only the shared AUs 1, 2, 4, 6 and 12:
  BP4D channels [0, 1, 2, 3, 6] against DISFA channels [0, 1, 2, 3, 5] (upstream ``eval_interpreter.py``;
  `shared_au_indices`, `cross_corpus_split`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from fg_net.heatmaps import CROSS_CORPUS_AUS, DATASET_AUS, decode_heatmaps

__all__ = [
    "AUScores",
    "FoldSplit",
    "au_f1_scores",
    "average_scores",
    "cross_corpus_split",
    "evaluate_model",
    "fold_csv_path",
    "predict_batches",
    "shared_au_indices",
    "within_corpus_splits",
]


@dataclass(frozen=True)
class AUScores:
    """Per-AU F1 x 100 and the average.

    Args:
        aus (`tuple[int, ...]`): the scored AUs.
        f1 (`tuple[float, ...]`): F1 x 100 of each AU, in ``aus`` order.
        support (`tuple[int, ...]`): positive labels of each AU.
        count (`int`): samples scored.
    """

    aus: tuple[int, ...]
    f1: tuple[float, ...]
    support: tuple[int, ...]
    count: int

    @property
    def mean(self) -> float:
        """The average F1 x 100 over AUs (the paper's "Avg.")."""
        return float(np.mean(self.f1))

    def as_dict(self) -> dict[str, float]:
        """``{"AU1": f1, ..., "avg": mean}``."""
        return {**{f"AU{au}": value for au, value in zip(self.aus, self.f1, strict=True)}, "avg": self.mean}

    def table(self) -> str:
        """A one-line summary: ``AU1 45.20 | AU2 ... | avg 50.10``."""
        cells = [f"AU{au} {value:.2f}" for au, value in zip(self.aus, self.f1, strict=True)]
        return " | ".join([*cells, f"avg {self.mean:.2f}"])


def _as_binary(values: Tensor | np.ndarray, name: str) -> np.ndarray:
    array = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"`{name}` must have shape (N, K), got {array.shape}.")
    if not np.isin(array, (0, 1)).all():
        raise ValueError(f"`{name}` must hold 0/1 values, got {np.unique(array)[:10].tolist()}.")
    return array.astype(np.int64)


def au_f1_scores(
    labels: Tensor | np.ndarray,
    predictions: Tensor | np.ndarray,
    aus: Sequence[int],
    zero_division: float = 0.0,
) -> AUScores:
    """Per-AU binary F1 x 100: ``200 TP / (2 TP + FP + FN)`` per column.

    Args:
        labels (`Tensor` or `np.ndarray` of shape `(N, K)`): ground truth, 0/1.
        predictions (`Tensor` or `np.ndarray` of shape `(N, K)`): decoded predictions, 0/1.
        aus (`Sequence[int]`): the K AU numbers.
        zero_division (`float`, defaults to 0.0): F1 (in [0, 1]) of a column with no positive label and no positive
            prediction (sklearn's ``zero_division``; its default warns and gives 0).

    Returns:
        `AUScores`.
    """
    y_true = _as_binary(labels, "labels")
    y_pred = _as_binary(predictions, "predictions")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"`labels` {y_true.shape} and `predictions` {y_pred.shape} must have the same shape.")
    if y_true.shape[1] != len(aus):
        raise ValueError(f"`aus` names {len(aus)} AUs but the labels have {y_true.shape[1]} columns.")
    tp = (y_true & y_pred).sum(0)
    fp = ((1 - y_true) & y_pred).sum(0)
    fn = (y_true & (1 - y_pred)).sum(0)
    denominator = 2 * tp + fp + fn
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), zero_division)
    return AUScores(
        aus=tuple(int(au) for au in aus),
        f1=tuple(float(v) * 100.0 for v in f1),
        support=tuple(int(v) for v in y_true.sum(0)),
        count=int(y_true.shape[0]),
    )


def average_scores(scores: Sequence[AUScores]) -> AUScores:
    """Average per-AU F1 over runs (the 3 folds of the within-corpus protocol).

    Args:
        scores (`Sequence[AUScores]`): runs over the same AUs.

    Returns:
        `AUScores` with the mean F1 per AU, summed support and count.
    """
    if not scores:
        raise ValueError("`scores` must hold at least one AUScores.")
    aus = scores[0].aus
    if any(s.aus != aus for s in scores):
        raise ValueError(f"every entry of `scores` must score the same AUs, got {[s.aus for s in scores]}.")
    return AUScores(
        aus=aus,
        f1=tuple(float(np.mean([s.f1[k] for s in scores])) for k in range(len(aus))),
        support=tuple(sum(s.support[k] for s in scores) for k in range(len(aus))),
        count=sum(s.count for s in scores),
    )


def shared_au_indices(
    source_aus: Sequence[int], target_aus: Sequence[int], shared: Sequence[int] = CROSS_CORPUS_AUS
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Channel indices of the shared AUs in a model's AU list and in the target corpus' AU list.

    Args:
        source_aus (`Sequence[int]`): the model's AUs (its heatmap channels).
        target_aus (`Sequence[int]`): the target corpus' AUs (its label columns).
        shared (`Sequence[int]`, defaults to `CROSS_CORPUS_AUS`): the AUs to score, in output order.

    Returns:
        `tuple[tuple[int, ...], tuple[int, ...]]`: (source indices, target indices); BP4D -> DISFA gives
        ``((0, 1, 2, 3, 6), (0, 1, 2, 3, 5))``.
    """
    missing = [au for au in shared if au not in source_aus or au not in target_aus]
    if missing:
        raise ValueError(
            f"shared AUs {missing} are not in both AU lists (source {tuple(source_aus)}, target {tuple(target_aus)})."
        )
    return tuple(list(source_aus).index(au) for au in shared), tuple(list(target_aus).index(au) for au in shared)


@torch.no_grad()
def predict_batches(
    model: nn.Module, batches: Iterable[Mapping[str, Tensor]], device: str | torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """Run an FG-Net model over batches and decode its AU heatmaps.

    Args:
        model (`nn.Module`): an `fg_net.FGNet` (anything with ``au_heatmaps(images) -> (B, K, H, W)``); put in eval
            mode for the call and restored afterwards.
        batches (`Iterable[Mapping[str, Tensor]]`): dicts with ``"image"`` (B, 3, S, S) and ``"labels"`` (B, K').
        device (`str` or `torch.device`, *optional*): where to run; defaults to the model's device.

    Returns:
        `tuple[Tensor, Tensor]`: labels (N, K') and predictions (N, K), int64 on CPU.
    """
    was_training = model.training
    model.eval()
    device = device if device is not None else next(model.parameters()).device
    labels, predictions = [], []
    try:
        for batch in batches:
            heatmaps = model.au_heatmaps(batch["image"].to(device))
            predictions.append(decode_heatmaps(heatmaps).cpu())
            labels.append(torch.as_tensor(batch["labels"]).long().cpu())
    finally:
        model.train(was_training)
    if not labels:
        raise ValueError("`batches` is empty.")
    return torch.cat(labels), torch.cat(predictions)


def evaluate_model(
    model: nn.Module,
    batches: Iterable[Mapping[str, Tensor]],
    model_aus: Sequence[int],
    target_aus: Sequence[int] | None = None,
    shared: Sequence[int] = CROSS_CORPUS_AUS,
    device: str | torch.device | None = None,
) -> AUScores:
    """F1 of a model on labelled batches, within-corpus or cross-corpus.

    Args:
        model (`nn.Module`): an `fg_net.FGNet`.
        batches (`Iterable[Mapping[str, Tensor]]`): dicts with ``"image"`` and ``"labels"``.
        model_aus (`Sequence[int]`): the model's AUs (heatmap channel order).
        target_aus (`Sequence[int]`, *optional*): the label columns' AUs; `None` or equal to ``model_aus`` scores
            every AU (within-corpus), otherwise only ``shared`` (cross-corpus).
        shared (`Sequence[int]`, defaults to `CROSS_CORPUS_AUS`): AUs scored across corpora.
        device (`str` or `torch.device`, *optional*): where to run.

    Returns:
        `AUScores`.
    """
    labels, predictions = predict_batches(model, batches, device)
    model_aus = tuple(model_aus)
    if target_aus is None or tuple(target_aus) == model_aus:
        return au_f1_scores(labels, predictions, model_aus)
    source_index, target_index = shared_au_indices(model_aus, target_aus, shared)
    return au_f1_scores(labels[:, list(target_index)], predictions[:, list(source_index)], shared)


@dataclass(frozen=True)
class FoldSplit:
    """The CSVs of one run of a protocol.

    Args:
        train_dataset (`str`): corpus trained on (``"BP4D"`` or ``"DISFA"``).
        test_dataset (`str`): corpus tested on.
        fold (`int`): fold index.
        train_csv (`Path`): training rows.
        test_csv (`Path`): test rows (subjects unseen in ``train_csv`` within a corpus).
    """

    train_dataset: str
    test_dataset: str
    fold: int
    train_csv: Path
    test_csv: Path


def fold_csv_path(root: str | Path, dataset: str, fold: int, split: str = "train", subset: int | None = None) -> Path:
    """Path of an authors' fold CSV: ``{root}/{dataset}/labels/{fold}/{split}[_{subset}].csv``.

    Args:
        root (`str` or `Path`): the data root.
        dataset (`str`): ``"BP4D"`` or ``"DISFA"``.
        fold (`int`): 0, 1 or 2.
        split (`str`, defaults to `"train"`): ``"train"`` or ``"test"``.
        subset (`int`, *optional*): 100, 1000, 5000 or 10000 for the authors' training subsets.

    Returns:
        `Path` (not checked for existence).
    """
    if dataset not in DATASET_AUS:
        raise ValueError(f"`dataset` must be one of {sorted(DATASET_AUS)}, got {dataset!r}.")
    if fold not in (0, 1, 2):
        raise ValueError(f"`fold` must be 0, 1 or 2, got {fold}.")
    if split not in ("train", "test"):
        raise ValueError(f"`split` must be 'train' or 'test', got {split!r}.")
    if subset is not None and (split != "train" or subset not in (100, 1000, 5000, 10000)):
        raise ValueError(f"`subset` must be 100, 1000, 5000 or 10000 with split='train', got {subset} ({split}).")
    name = f"{split}_{subset}.csv" if subset is not None else f"{split}.csv"
    return Path(root) / dataset / "labels" / str(fold) / name


def within_corpus_splits(root: str | Path, dataset: str, subset: int | None = None) -> list[FoldSplit]:
    """The 3 subject-exclusive folds of one corpus.

    Args:
        root (`str` or `Path`): the data root.
        dataset (`str`): ``"BP4D"`` or ``"DISFA"``.
        subset (`int`, *optional*): train on the authors' subset CSVs.

    Returns:
        `list[FoldSplit]`: folds 0, 1 and 2.
    """
    return [
        FoldSplit(
            dataset,
            dataset,
            k,
            fold_csv_path(root, dataset, k, "train", subset),
            fold_csv_path(root, dataset, k, "test"),
        )
        for k in range(3)
    ]


def cross_corpus_split(
    root: str | Path, source: str, target: str, fold: int = 0, subset: int | None = None
) -> FoldSplit:
    """Train on ``source`` fold ``fold``, test on ``target``'s fold-``fold`` test CSV (upstream ``eval_b2d.json``:
    a BP4D fold-0 model on ``DISFA/labels/0/test.csv``).

    Args:
        root (`str` or `Path`): the data root.
        source (`str`): corpus trained on.
        target (`str`): the other corpus.
        fold (`int`, defaults to 0): fold index on both sides.
        subset (`int`, *optional*): train on the authors' subset CSVs.

    Returns:
        `FoldSplit`.
    """
    if source == target:
        raise ValueError(f"`source` and `target` must differ for the cross-corpus protocol, got {source!r} twice.")
    return FoldSplit(
        source,
        target,
        fold,
        fold_csv_path(root, source, fold, "train", subset),
        fold_csv_path(root, target, fold, "test"),
    )
