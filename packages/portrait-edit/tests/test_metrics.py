"""Edit metrics: PSNR/SSIM outside the mask, landmark distance, identity similarity, CLIP score (user-given CLIP)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pe_faces import FixedFaceAnalyzer, synthetic_landmarks68

from genblocks.errors import InputError
from portrait_edit.metrics import ClipScorer, evaluate_edit, landmark_distance, outside_mask_scores


def _photo(seed: int = 0, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_outside_mask_scores_ignore_the_edited_region() -> None:
    source = _photo()
    edited = source.copy()
    edited[:, 40:] = 255 - edited[:, 40:]  # the right part changes
    mask = np.zeros((8, 8), np.float32)  # a latent-sized mask: columns 5..7 = pixels 40..63
    mask[:, 5:] = 1.0
    psnr_out, ssim_out = outside_mask_scores(source, edited, mask)
    # bilinear resizing softens the mask edge over ~8 px; the weighted error there is small but not zero
    assert psnr_out > 20.0 and ssim_out > 0.8
    hard = np.zeros((64, 64), np.float32)
    hard[:, 28:] = 1.0
    psnr_hard, _ = outside_mask_scores(source, edited, hard)
    assert math.isinf(psnr_hard)
    psnr_all, ssim_all = outside_mask_scores(source, edited, None)
    assert psnr_all < 10.0 and ssim_all < 0.7
    assert all(math.isnan(v) for v in outside_mask_scores(source, edited, np.ones((8, 8), np.float32)))
    with pytest.raises(InputError, match="mask"):
        outside_mask_scores(source, edited, np.full((8, 8), 2.0, np.float32))


def test_landmark_distance_is_a_fraction_of_the_side() -> None:
    points = synthetic_landmarks68(50, 40, 10)
    assert landmark_distance(points + np.array([3.0, 4.0]), points, 100.0) == pytest.approx(0.05)
    assert landmark_distance(points, points, 100.0) == 0.0
    with pytest.raises(InputError):
        landmark_distance(points[:5], points, 100.0)


def test_evaluate_edit_identity_landmarks_and_notes() -> None:
    source = _photo(1)
    analyzer = FixedFaceAnalyzer(synthetic_landmarks68(32, 28, 8))
    same = source.copy()
    same[56:] = 0  # below the face box (y up to ~45)
    kept = evaluate_edit(source, same, prompt="a man", analyzer=analyzer)
    assert kept.identity == pytest.approx(1.0, abs=1e-6)
    assert kept.landmark_distance == 0.0
    assert any("CLIP score skipped" in note for note in kept.notes)
    swapped = source.copy()
    swapped[10:50, 10:54] = _photo(2)[10:50, 10:54]  # another "person" in the face box
    assert evaluate_edit(source, swapped, analyzer=analyzer).identity < 0.5
    no_face = evaluate_edit(source, same)
    assert math.isnan(no_face.identity) and any("no face analyzer" in note for note in no_face.notes)
    assert no_face.to_dict()["identity"] is None


def _tiny_clip() -> ClipScorer:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from genblocks.tiny import tiny_clip_tokenizer

    torch.manual_seed(0)
    tokenizer = tiny_clip_tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": tokenizer.vocab_size,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    return ClipScorer(CLIPModel(config), processor)


def test_clip_score_equals_the_models_own_logits() -> None:
    scorer = _tiny_clip()
    images = [_photo(3), _photo(4)]
    prompts = ["a man, santa claus costume", "a woman"]
    scores = scorer(images, prompts)
    inputs = scorer.processor(text=prompts, images=images, return_tensors="pt", padding=True, truncation=True)
    with torch.no_grad():
        logits = scorer.model(**inputs).logits_per_image  # exp(logit_scale) * cos, (images, texts)
    cosine = torch.diagonal(logits) / scorer.model.logit_scale.exp()
    torch.testing.assert_close(scores, 100 * cosine.clamp_min(0), atol=1e-4, rtol=1e-4)
    assert scores.shape == (2,) and ((scores >= 0) & (scores <= 100)).all()
    metrics = evaluate_edit(images[0], images[0], prompt=prompts[0], clip=scorer)
    assert metrics.clip_score == pytest.approx(float(scores[0]), abs=1e-4)
    assert math.isinf(metrics.psnr_outside) and metrics.to_dict()["psnr_outside"] == "inf"
