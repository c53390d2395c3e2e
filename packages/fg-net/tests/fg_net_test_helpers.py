"""Helpers shared by fg-net's tests (importable through the conftest's sys.path entry)."""

from __future__ import annotations

from pathlib import Path

from fg_net.data import write_synthetic_corpus

AUS = (1, 2, 6, 12)


def write_corpus(
    root: Path, rows_per_csv: int = 8, size: int = 64, dataset: str = "BP4D"
) -> dict[str, list[tuple[str, list[int]]]]:
    """A small corpus in the authors' layout (`fg_net.data.write_synthetic_corpus`): 4 subjects of 2 faces with cached
    landmarks (BP4D-like ``F001/T1/00001.png`` paths, or DISFA-like ``SN001/00001.png``). Fold 0 tests on the first
    and the fourth subject (4 rows) and trains on the other two (``rows_per_csv`` rows); returns fold 0's rows."""
    tables = write_synthetic_corpus(
        root, dataset, subjects=4, frames=2, image_size=size, train_rows=rows_per_csv, test_rows=4
    )
    return tables[0]
