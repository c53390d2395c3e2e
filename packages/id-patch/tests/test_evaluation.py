"""Evaluation metrics on hand-made embeddings and positions whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from id_patch.evaluation import (
    association_accuracy,
    detect_generated_faces,
    match_positions,
    positional_resemblance,
    summarize,
    timed,
)

# three orthogonal identities and three positions in a 64-px image, left to right
IDS = np.eye(3, 8)
POSITIONS = np.array([[10.0, 30.0], [32.0, 30.0], [54.0, 30.0]])


def test_match_positions_is_hungarian_on_distance() -> None:
    detected = np.array([[53.0, 31.0], [11.0, 29.0], [33.0, 33.0]])
    assert match_positions(detected, POSITIONS).tolist() == [1, 2, 0]
    # greedy nearest would give both targets the face at x=20; the assignment gives each its own
    assert match_positions(np.array([[20.0, 0.0], [40.0, 0.0]]), np.array([[19.0, 0.0], [21.0, 0.0]])).tolist() == [
        0,
        1,
    ]
    # too far: unmatched; fewer faces than targets: -1
    assert match_positions(detected[:1], POSITIONS, max_distance=5.0).tolist() == [-1, -1, 0]
    assert match_positions(np.zeros((0, 2)), POSITIONS).tolist() == [-1, -1, -1]
    with pytest.raises(ValueError, match="target_positions"):
        match_positions(detected, np.zeros((3, 3)))


def test_correct_identities_score_one() -> None:
    result = association_accuracy(IDS, POSITIONS + 1.0, IDS, POSITIONS)
    assert result.accuracy == 1.0 and result.hits.tolist() == [True, True, True]
    assert result.resemblance == pytest.approx(1.0)
    assert result.num_detected == 3


def test_swapped_identities_score_zero() -> None:
    # two people, generated with their identities swapped
    result = association_accuracy(IDS[[1, 0]], POSITIONS[:2], IDS[:2], POSITIONS[:2])
    assert result.accuracy == 0.0
    assert result.identity_assignment.tolist() == [1, 0] and result.position_assignment.tolist() == [0, 1]
    assert result.resemblance == pytest.approx(0.0)  # orthogonal identities


def test_one_swap_of_three_scores_one_third() -> None:
    # identity 0 at its place; identities 1 and 2 swapped; detection order shuffled
    generated = IDS[[2, 0, 1]]
    positions = POSITIONS[[1, 0, 2]] + np.array([[1.0, -2.0]])
    for matching in ("hungarian", "argmax"):
        result = association_accuracy(generated, positions, IDS, POSITIONS, identity_matching=matching)
        assert result.accuracy == pytest.approx(1 / 3), matching
        assert result.hits.tolist() == [True, False, False]
        np.testing.assert_allclose(result.per_identity_resemblance, [1.0, 0.0, 0.0], atol=1e-12)


def test_partial_similarity_and_missing_face() -> None:
    # identity 1's face looks 0.6 like itself, 0.8 like identity 0; identity 0 has no face at all
    generated = np.array([[0.8, 0.6, 0, 0, 0, 0, 0, 0]])
    result = association_accuracy(generated, POSITIONS[1:2], IDS[:2], POSITIONS[:2], identity_matching="argmax")
    assert result.position_assignment.tolist() == [-1, 0]
    assert math.isnan(result.per_identity_resemblance[0]) and result.per_identity_resemblance[1] == pytest.approx(0.6)
    assert result.resemblance == pytest.approx(0.6)
    # by arg-max both identities pick the one face; only identity 1 sits there
    assert result.identity_assignment.tolist() == [0, 0] and result.accuracy == 0.5
    hungarian = association_accuracy(generated, POSITIONS[1:2], IDS[:2], POSITIONS[:2])
    # one-to-one: the face goes to identity 0 (cosine 0.8 > 0.6), which is not at that position
    assert hungarian.identity_assignment.tolist() == [0, -1] and hungarian.accuracy == 0.0
    empty = association_accuracy(np.zeros((0, 8)), np.zeros((0, 2)), IDS[:2], POSITIONS[:2])
    assert empty.accuracy == 0.0 and math.isnan(empty.resemblance) and empty.to_dict()["resemblance"] is None


def test_positional_resemblance_and_input_errors() -> None:
    sims = positional_resemblance(torch.tensor(IDS[[1, 0]]), torch.tensor(IDS[:2]), np.array([1, -1]))
    assert sims[0] == pytest.approx(1.0) and math.isnan(sims[1])
    with pytest.raises(ValueError, match="2 reference embeddings but 3 target positions"):
        association_accuracy(IDS, POSITIONS, IDS[:2], POSITIONS)
    with pytest.raises(ValueError, match=r"generated_embeds.*\(N, 8\)"):
        association_accuracy(np.ones((3, 4)), POSITIONS, IDS, POSITIONS)
    with pytest.raises(ValueError, match="identity_matching"):
        association_accuracy(IDS, POSITIONS, IDS, POSITIONS, identity_matching="greedy")  # type: ignore[arg-type]


def test_summary_and_timing() -> None:
    good = association_accuracy(IDS, POSITIONS, IDS, POSITIONS)
    bad = association_accuracy(IDS[[1, 0]], POSITIONS[:2], IDS[:2], POSITIONS[:2])
    summary = summarize([good, bad], seconds=[1.0, 3.0])
    assert summary.accuracy == 0.5 and summary.seconds_per_image == 2.0
    assert summary.resemblance == pytest.approx(0.5) and summary.detection_rate == 1.0
    assert summary.to_dict()["per_image"][1]["hits"] == [False, False]
    value, seconds = timed(lambda: 7)
    assert value == 7 and seconds >= 0.0


class _FakeFace:
    def __init__(self, x: float, embedding: np.ndarray) -> None:
        self.box = np.array([x - 5, 20, x + 5, 40], dtype=np.float32)
        self.landmarks5 = np.array([[x - 2, 28], [x + 2, 28], [x, 31], [x - 2, 35], [x + 2, 35]], dtype=np.float32)
        self.embedding = embedding


class _FakeAnalyzer:
    def analyze(self, image: np.ndarray, boxes: np.ndarray | None = None, embed: bool = True) -> list[_FakeFace]:
        return [_FakeFace(50.0, IDS[1]), _FakeFace(12.0, IDS[0])]


def test_detect_generated_faces_anchor() -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    embeds, positions = detect_generated_faces(image, _FakeAnalyzer())  # type: ignore[arg-type]
    np.testing.assert_array_equal(positions, [[50.0, 31.0], [12.0, 31.0]])
    np.testing.assert_array_equal(embeds, IDS[[1, 0]])
    _, centres = detect_generated_faces(image, _FakeAnalyzer(), face_anchor="bbox_center")  # type: ignore[arg-type]
    np.testing.assert_array_equal(centres, [[50.0, 30.0], [12.0, 30.0]])
    result = association_accuracy(embeds, positions, IDS[:2], POSITIONS[[0, 2]])
    assert result.accuracy == 1.0
