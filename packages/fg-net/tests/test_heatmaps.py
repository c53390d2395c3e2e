"""Landmark-to-AU heatmaps: hand-built landmark sets (exact centres, signs, IOD offsets, clipping, threshold), an
independent NumPy re-implementation of the upstream formula, decoding, and real dlib landmarks on a real face."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from fg_net.heatmaps import (
    AU_LANDMARK_RULES,
    BP4D_AUS,
    CROSS_CORPUS_AUS,
    DATASET_AUS,
    DISFA_AUS,
    au_centres,
    au_heatmaps,
    check_aus,
    decode_heatmaps,
    heatmap_scores,
    inter_ocular_distance,
)
from fg_net.testing import REFERENCE_LANDMARKS_256


def _far_landmarks() -> torch.Tensor:
    """Every landmark parked outside a 128-px grid (so untouched points contribute nothing)."""
    return torch.full((68, 2), -1000.0, dtype=torch.float64)


def _reference_heatmaps(landmarks: np.ndarray, labels: np.ndarray, aus: tuple[int, ...], size: int, sigma: float):
    """An independent NumPy version of upstream ``au2heatmap`` (landmarks in 256-px coordinates, halved for 128)."""
    lmk = landmarks * (size / 256.0)
    iod = np.linalg.norm(lmk[42] - lmk[39])
    down, half_down = np.array([0.0, iod]), np.array([0.0, 0.5 * iod])
    eye_l, eye_r = lmk[36:42].mean(0), lmk[42:48].mean(0)
    brow_l, brow_r = lmk[17:22].mean(0), lmk[22:27].mean(0)
    centres = {
        1: (lmk[21], lmk[22]),
        2: (lmk[17], lmk[26]),
        4: (brow_l, brow_r),
        6: (eye_l + down, eye_r + down),
        7: (lmk[38], lmk[43]),
        9: (lmk[39], lmk[42]),
        10: (lmk[50], lmk[52]),
        12: (lmk[48], lmk[54]),
        14: (lmk[48], lmk[54]),
        15: (lmk[48], lmk[54]),
        17: (lmk[56] + half_down, lmk[58] + half_down),
        23: (lmk[51], lmk[57]),
        24: (lmk[51], lmk[57]),
        25: (lmk[51], lmk[57]),
        26: (lmk[56], lmk[58]),
    }
    heat = np.zeros((len(aus), size, size))
    y, x = np.mgrid[0:size, 0:size]  # row index y, column index x, as upstream's np.fromfunction(lambda y, x: ...)
    for k, au in enumerate(aus):
        for cx, cy in centres[au]:
            g = np.exp(((x - cx) ** 2 + (y - cy) ** 2) / -(2.0 * sigma**2))
            g[g < 0.01] = 0
            heat[k] += g if labels[k] == 1 else -g
    return np.clip(heat, -1.0, 1.0)


def test_au_lists() -> None:
    assert BP4D_AUS == (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
    assert DISFA_AUS == (1, 2, 4, 6, 9, 12, 25, 26)
    assert dict(DATASET_AUS) == {"BP4D": BP4D_AUS, "DISFA": DISFA_AUS}
    assert [BP4D_AUS.index(au) for au in CROSS_CORPUS_AUS] == [0, 1, 2, 3, 6]
    assert [DISFA_AUS.index(au) for au in CROSS_CORPUS_AUS] == [0, 1, 2, 3, 5]
    assert set(BP4D_AUS) | set(DISFA_AUS) == set(AU_LANDMARK_RULES)


@pytest.mark.parametrize(("au", "first", "second"), [(1, 21, 22), (2, 17, 26), (7, 38, 43), (9, 39, 42), (10, 50, 52)])
def test_gaussian_centred_exactly_at_named_landmark(au: int, first: int, second: int) -> None:
    landmarks = _far_landmarks()
    landmarks[first] = torch.tensor([60.0, 100.0])  # -> (30, 50) on the 128 grid
    landmarks[second] = torch.tensor([180.0, 150.0])  # -> (90, 75)
    heat = au_heatmaps(landmarks, torch.tensor([1]), (au,), size=128, sigma=4.0)[0]
    assert heat[50, 30] == 1.0 and heat[75, 90] == 1.0  # exp(0) at (row y, column x)
    assert heat[50, 31] == pytest.approx(np.exp(-1 / 32), abs=1e-6)  # one pixel right: exp(-1 / 2 sigma^2)
    top2 = torch.topk(heat.flatten(), 2).indices
    assert sorted((int(i) // 128, int(i) % 128) for i in top2) == [(50, 30), (75, 90)]


def test_matches_independent_numpy_reference() -> None:
    landmarks = REFERENCE_LANDMARKS_256.astype(np.float64)
    rng = np.random.default_rng(0)
    for aus in (BP4D_AUS, DISFA_AUS):
        labels = rng.integers(0, 2, len(aus))
        ours = au_heatmaps(torch.from_numpy(landmarks), torch.from_numpy(labels), aus, size=128, sigma=20.0)
        expected = _reference_heatmaps(landmarks, labels, aus, 128, 20.0)
        np.testing.assert_allclose(ours.numpy(), expected, atol=1e-6)


def test_sign_flips_with_activation() -> None:
    landmarks = torch.from_numpy(REFERENCE_LANDMARKS_256).double()
    active = au_heatmaps(landmarks, torch.ones(12, dtype=torch.long), BP4D_AUS)
    inactive = au_heatmaps(landmarks, torch.zeros(12, dtype=torch.long), BP4D_AUS)
    assert torch.equal(inactive, -active)
    assert (active >= 0).all() and active.amax() == 1.0
    mixed = au_heatmaps(landmarks, torch.tensor([1, 0] * 6), BP4D_AUS)
    assert torch.equal(mixed[0::2], active[0::2]) and torch.equal(mixed[1::2], inactive[1::2])


def test_iod_offsets() -> None:
    landmarks = torch.from_numpy(REFERENCE_LANDMARKS_256).double()
    iod = float(inter_ocular_distance(landmarks))
    assert iod == pytest.approx(float(np.linalg.norm(REFERENCE_LANDMARKS_256[42] - REFERENCE_LANDMARKS_256[39])))
    centres = au_centres(landmarks, (6, 17, 26, 4))
    eyes = torch.stack([landmarks[36:42].mean(0), landmarks[42:48].mean(0)])
    torch.testing.assert_close(centres[0], eyes + torch.tensor([0.0, iod], dtype=torch.float64))
    torch.testing.assert_close(centres[1], landmarks[[56, 58]] + torch.tensor([0.0, 0.5 * iod], dtype=torch.float64))
    torch.testing.assert_close(centres[2], landmarks[[56, 58]])
    torch.testing.assert_close(centres[3], torch.stack([landmarks[17:22].mean(0), landmarks[22:27].mean(0)]))

    # the peak of AU6 sits one IOD below the eye centre, on the heatmap grid
    hand = _far_landmarks()
    hand[36:42] = torch.tensor([40.0, 60.0])  # left eye collapsed to one point -> (20, 30) on the grid
    hand[42:48] = torch.tensor([200.0, 60.0])  # right eye
    hand[39], hand[42] = torch.tensor([40.0, 60.0]), torch.tensor([80.0, 60.0])  # inner corners 40 px apart
    heat = au_heatmaps(hand, torch.tensor([1]), (6,), size=128, sigma=3.0)[0]
    # IOD on the grid is (80 - 40) / 2 = 20 px; left eye mean x = (5 * 40 + 40) / 6 = 40 -> 20; y = 30 + 20
    assert heat[50, 20] == 1.0
    assert heat[30, 20] == 0.0  # nothing at the eye itself


def test_clipping_and_threshold() -> None:
    landmarks = _far_landmarks()
    landmarks[48] = landmarks[54] = torch.tensor([128.0, 128.0])  # both mouth corners at one point: 2 before clipping
    heat = au_heatmaps(landmarks.expand(2, 68, 2), torch.tensor([[1], [0]]), (12,), sigma=20.0)
    assert heat.shape == (2, 1, 128, 128)
    assert heat[0, 0, 64, 64] == 1.0 and heat[1, 0, 64, 64] == -1.0
    unclipped = 2 * np.exp(-(10**2) / (2 * 20.0**2))  # 10 px away: 1.77 before clipping
    assert heat[0, 0, 64, 74] == 1.0 and unclipped > 1
    far = 2 * np.exp(-(50**2) / (2 * 20.0**2))
    assert heat[0, 0, 64, 114] == pytest.approx(far, abs=1e-6)  # 50 px away: below 1, kept
    nonzero = heat[0, 0][heat[0, 0] != 0]
    assert nonzero.min() >= 0.02 - 1e-6  # two Gaussians each >= 0.01 where non-zero
    assert heat[0, 0, 0, 0] == 0.0  # exp(-(64^2 * 2) / 800) < 0.01 -> zeroed
    assert heat.abs().max() <= 1.0


def test_decoding_recovers_labels() -> None:
    generator = torch.Generator().manual_seed(0)
    landmarks = torch.from_numpy(REFERENCE_LANDMARKS_256).double() + torch.randn(16, 68, 2, generator=generator) * 2
    for aus in (BP4D_AUS, DISFA_AUS):
        labels = (torch.rand(16, len(aus), generator=generator) < 0.5).long()
        heat = au_heatmaps(landmarks, labels, aus)
        assert heat.shape == (16, len(aus), 128, 128)
        assert torch.equal(decode_heatmaps(heat), labels)
        scores = heatmap_scores(heat)
        assert ((scores > 0) == labels.bool()).all() and (scores != 0).all()
    wide = torch.full((1, 2, 4, 4), 5.0)
    wide[0, 1] = -0.5
    wide[0, 1, 0, 0] = 100.0  # clamped to 1 before the mean: (1 - 15 * 0.5) / 16 < 0
    assert decode_heatmaps(wide).tolist() == [[1, 0]]


def test_heatmap_size_and_scale_generalise() -> None:
    landmarks = torch.from_numpy(REFERENCE_LANDMARKS_256).double()
    small = au_heatmaps(landmarks, torch.tensor([1]), (1,), size=16, sigma=2.5, landmark_scale=16 / 256)
    big = au_heatmaps(landmarks, torch.tensor([1]), (1,), size=128, sigma=20.0)
    assert small.shape == (1, 16, 16)
    # the same Gaussian in units of the grid: pixel (y, x) at 16 px is pixel (8 y, 8 x) at 128 px
    torch.testing.assert_close(small[0], big[0, ::8, ::8], atol=1e-6, rtol=0)


def test_bad_inputs_name_the_input() -> None:
    landmarks = torch.from_numpy(REFERENCE_LANDMARKS_256)
    with pytest.raises(ValueError, match="landmarks"):
        au_heatmaps(landmarks[:60], torch.tensor([1]), (1,))
    with pytest.raises(ValueError, match="labels"):
        au_heatmaps(landmarks, torch.tensor([1, 0]), (1,))
    with pytest.raises(ValueError, match="0 \\(inactive\\) or 1"):
        au_heatmaps(landmarks, torch.tensor([9]), (1,))
    with pytest.raises(ValueError, match="landmark rule"):
        check_aus((1, 5))
    with pytest.raises(ValueError, match="repeat"):
        check_aus((1, 1))
    with pytest.raises(ValueError, match="sigma"):
        au_heatmaps(landmarks, torch.tensor([1]), (1,), sigma=0.0)


def test_reference_landmarks_are_the_astronauts(aligned_astronaut: Any) -> None:
    np.testing.assert_allclose(aligned_astronaut.landmarks, REFERENCE_LANDMARKS_256, atol=1.0)


def test_real_dlib_landmarks_on_astronaut(aligned_astronaut: Any) -> None:
    assert aligned_astronaut.image.shape == (256, 256, 3)
    landmarks = torch.from_numpy(aligned_astronaut.landmarks).double()
    iod = float(inter_ocular_distance(landmarks))
    assert 25 < iod < 55  # FFHQ alignment puts a 256-px face's inner eye corners ~37 px apart
    labels = torch.tensor([1, 0] * 6)
    heat = au_heatmaps(landmarks, labels, BP4D_AUS)
    assert torch.equal(decode_heatmaps(heat), labels)
    # with a narrow Gaussian, each active AU's peak is where its rule says, halved to the 128 grid
    sharp = au_heatmaps(landmarks, torch.ones(12, dtype=torch.long), BP4D_AUS, sigma=2.0)
    centres = au_centres(landmarks * 0.5, BP4D_AUS)
    for k in range(12):
        peak = torch.nonzero(sharp[k] == sharp[k].max())[0]
        distances = (centres[k].flip(-1) - peak.double()).norm(dim=-1)  # centres are (x, y), peaks (row, column)
        assert distances.min() <= 1.0, f"AU{BP4D_AUS[k]} peak {peak.tolist()} far from {centres[k].tolist()}"
    # the anatomy is sane: brows above eyes above the AU6 cheek points above the mouth corners
    ys = {au: float(c[:, 1].mean()) for au, c in zip(BP4D_AUS, centres, strict=True)}
    assert ys[1] < ys[7] < ys[6] < ys[12] < ys[17]
