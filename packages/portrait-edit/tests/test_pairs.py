"""Pair generation: the filters on numbers (a swapped identity is rejected), the editor wrapper, make_pairs' files and
resume."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pe_faces import FixedFaceAnalyzer, synthetic_landmarks68

from genblocks.errors import InputError
from genblocks.media import write_image
from portrait_edit.pairs import (
    DiffusersEditor,
    EditorPairGenerator,
    PairCandidate,
    PairFilters,
    check_pair,
    edit_region_mask,
    make_pairs,
    read_sources,
)

SIZE = 64
LANDMARKS = synthetic_landmarks68(32, 26, 8)  # face box about x 20..44, y 22..43 (margin 4)


def _portrait(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def _outfit_edit(image: np.ndarray) -> np.ndarray:
    edited = image.copy()
    edited[52:] = (edited[52:] // 2 + 100).astype(np.uint8)  # "a costume": below the face only
    return edited


def _swap_identity(image: np.ndarray) -> np.ndarray:
    edited = _outfit_edit(image)
    edited[14:50, 14:50] = _portrait(99)[14:50, 14:50]  # another person's face
    return edited


FILTERS = PairFilters(identity_threshold=0.9, landmark_tolerance=0.02, outside_psnr_min=30.0, edit_region="outfit")


def test_edit_region_mask_kinds() -> None:
    analyzer = FixedFaceAnalyzer(LANDMARKS)
    face = analyzer.analyze(_portrait(0))[0]
    face_region = edit_region_mask("face", (SIZE, SIZE), face)
    assert face_region.shape == (SIZE, SIZE) and set(np.unique(face_region)) == {0.0, 1.0}
    assert face_region[26, 32] == 1 and face_region[2, 2] == 0 and face_region[60, 32] == 0
    np.testing.assert_array_equal(edit_region_mask("outfit", (SIZE, SIZE), face), 1 - face_region)
    assert (edit_region_mask("all", (SIZE, SIZE), face) == 1).all()
    with pytest.raises(InputError, match="edit_region"):
        edit_region_mask("hair", (SIZE, SIZE), face)  # type: ignore[arg-type]


def test_check_pair_keeps_a_faithful_edit_and_rejects_a_swapped_identity() -> None:
    analyzer = FixedFaceAnalyzer(LANDMARKS)
    source = _portrait(0)
    kept = check_pair(source, _outfit_edit(source), analyzer, FILTERS)
    assert kept.kept and kept.reason is None
    assert kept.identity == pytest.approx(1.0, abs=1e-6) and kept.landmark_distance == 0.0
    assert kept.psnr_outside == float("inf")  # the face ellipse is untouched
    swapped = check_pair(source, _swap_identity(source), analyzer, FILTERS)
    assert not swapped.kept
    assert swapped.identity < 0.5 and not swapped.checks["identity"]
    assert swapped.psnr_outside < 15.0 and not swapped.checks["outside"]
    assert swapped.reason is not None and "identity" in swapped.reason
    # the same swap passes the identity filter only if the threshold is below its similarity: the filter is the cause
    lenient = check_pair(source, _swap_identity(source), analyzer, PairFilters(identity_threshold=-1.0))
    assert lenient.checks["identity"]
    # the distance form of the identity test: the swap's embedding lies far from the source's
    assert kept.identity_distance == pytest.approx(0.0, abs=1e-5)
    distance = PairFilters(identity_threshold=-1.0, identity_max_distance=0.5 * swapped.identity_distance)
    assert not check_pair(source, _swap_identity(source), analyzer, distance).checks["identity"]
    assert check_pair(source, _outfit_edit(source), analyzer, distance).checks["identity"]


def test_check_pair_rejects_moved_landmarks_and_a_missing_face() -> None:
    source = _portrait(0)
    moved = FixedFaceAnalyzer(LANDMARKS, shift=lambda image: (3.0, 0.0) if image[0, 0, 0] == 7 else (0.0, 0.0))
    target = _outfit_edit(source)
    target[0, 0, 0] = 7
    report = check_pair(source, target, moved, FILTERS, source_face=FixedFaceAnalyzer(LANDMARKS).analyze(source)[0])
    assert report.landmark_distance == pytest.approx(3.0 / SIZE)
    assert not report.checks["landmarks"] and not report.kept
    faceless = FixedFaceAnalyzer(None)
    source_face = FixedFaceAnalyzer(LANDMARKS).analyze(source)[0]
    report = check_pair(source, target, faceless, FILTERS, source_face=source_face)
    assert report.checks["target_face"] is False and not report.kept
    assert report.to_dict()["identity"] is None


def test_swapped_identity_is_rejected_on_real_portraits_with_dlib() -> None:
    skimage_data = pytest.importorskip("skimage.data")
    try:
        from genblocks.faces import DlibFaceAnalyzer, align_ffhq

        analyzer = DlibFaceAnalyzer()
    except ImportError as error:
        pytest.skip(f"dlib face models not installed: {error}")
    import matplotlib.cbook

    from genblocks.media import read_image

    def aligned(image: np.ndarray) -> np.ndarray:
        return align_ffhq(image, analyzer.get_face(image, embed=False).landmarks68, output_size=256).image

    source = aligned(skimage_data.astronaut())
    other = aligned(read_image(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    # a faithful "costume" edit: a red-blue recolouring of everything outside the face ellipse
    region = edit_region_mask("outfit", (256, 256), analyzer.get_face(source))[..., None] > 0
    costume = np.where(region, source.astype(np.int32) * [1, 0, 0] + [0, 0, 160], source).astype(np.uint8)
    filters = PairFilters(identity_threshold=0.93, landmark_tolerance=0.03, outside_psnr_min=30.0)
    generator = EditorPairGenerator(lambda image, prompt, seed: costume, analyzer, filters)
    kept = generator(source, "a man, red costume", "a man", 0)
    assert kept.kept and kept.report["identity"] > 0.97, kept.report
    swap = EditorPairGenerator(lambda image, prompt, seed: other, analyzer, filters)(source, "a man", "a man", 0)
    assert not swap.kept and swap.target is None
    # dlib 128-d: the same person ~0.98, Grace Hopper ~0.88; landmarks of two aligned faces also differ
    assert swap.report["identity"] < 0.9 and swap.report["checks"]["identity"] is False, swap.report
    # dlib's own rule, distance < 0.6 for the same person, tells them apart with no cosine bound at all
    by_distance = PairFilters(identity_threshold=-1.0, landmark_tolerance=1.0, outside_psnr_min=0.0)
    by_distance = replace(by_distance, identity_max_distance=0.6)
    assert EditorPairGenerator(lambda image, prompt, seed: costume, analyzer, by_distance)(source, "a", "a", 0).kept
    swap = EditorPairGenerator(lambda image, prompt, seed: other, analyzer, by_distance)(source, "a", "a", 0)
    assert swap.report["identity_distance"] > 0.6 and swap.report["checks"]["identity"] is False, swap.report
    # the documented mapping: cos = 1 - d^2 / (2 n^2) for descriptors of norm n (here 1.4-1.5)
    norms = [float(np.linalg.norm(analyzer.get_face(image).embedding)) for image in (source, other)]
    assert min(norms) > 1.3 and max(norms) < 1.6, norms
    mapped = 1 - swap.report["identity_distance"] ** 2 / (2 * norms[0] * norms[1])
    assert mapped == pytest.approx(swap.report["identity"], abs=0.01)


def test_diffusers_editor_tiny_img2img_is_seeded_and_keeps_the_size() -> None:
    editor = DiffusersEditor.tiny(seed=0, resolution=32)
    image = _portrait(0)[:48, :40]
    first, again, other = editor(image, "a man", 1), editor(image, "a man", 1), editor(image, "a man", 2)
    assert first.shape == image.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other).mean() > 1.0
    with pytest.raises(InputError, match="model_index"):
        DiffusersEditor.from_pretrained("/nonexistent/editor")


def _write_sources(folder: Path, count: int) -> None:
    folder.mkdir()
    for index in range(count):
        write_image(folder / f"p{index}.png", _portrait(index))


def test_make_pairs_writes_the_manifest_and_report_and_resumes(tmp_path: Path) -> None:
    _write_sources(tmp_path / "sources", 4)
    sources = read_sources(tmp_path / "sources", "a man, santa claus costume", "a man")
    assert [item.name for item in sources] == ["p0", "p1", "p2", "p3"]
    seen: list[int] = []

    def editor(image: np.ndarray, prompt: str, seed: int) -> np.ndarray:
        seen.append(seed)
        return _swap_identity(image) if seed == 11 else _outfit_edit(image)  # the second source gets swapped

    generator = EditorPairGenerator(editor, FixedFaceAnalyzer(LANDMARKS), FILTERS)
    out = tmp_path / "pairs"
    first = make_pairs(sources, generator, out, image_size=SIZE, max_pairs=1, seed=10, progress=False)
    assert (first.kept, first.rejected, first.skipped) == (1, 0, 0) and seen == [10]
    second = make_pairs(sources, generator, out, image_size=SIZE, seed=10, progress=False)
    assert (second.kept, second.rejected, second.skipped) == (3, 1, 1) and seen == [10, 11, 12, 13]
    manifest = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert [row["source"] for row in manifest] == ["condition/p0.png", "condition/p2.png", "condition/p3.png"]
    assert set(manifest[0]) == {"source", "target", "prompt", "source_prompt"}
    assert manifest[0]["prompt"] == "a man, santa claus costume" and manifest[0]["source_prompt"] == "a man"
    report = [json.loads(line) for line in (out / "report.jsonl").read_text().splitlines()]
    assert [(row["name"], row["kept"]) for row in report] == [("p0", True), ("p1", False), ("p2", True), ("p3", True)]
    assert report[1]["identity"] < 0.5 and "identity" in report[1]["reason"]
    assert not (out / "gt" / "p1.png").exists() and (out / "gt" / "p3.png").is_file()
    from genblocks.media import read_image

    np.testing.assert_array_equal(read_image(out / "condition" / "p2.png"), _portrait(2))
    np.testing.assert_array_equal(read_image(out / "gt" / "p2.png"), _outfit_edit(_portrait(2)))
    third = make_pairs(sources, generator, out, image_size=SIZE, seed=10, progress=False)  # nothing left to do
    assert (third.kept, third.skipped) == (3, 4) and len(seen) == 4


def test_make_pairs_drops_a_manifest_row_left_by_an_interrupted_source(tmp_path: Path) -> None:
    _write_sources(tmp_path / "sources", 2)
    sources = read_sources(tmp_path / "sources", "a", "b")
    out = tmp_path / "pairs"
    out.mkdir()
    (out / "pairs.jsonl").write_text(json.dumps({"source": "condition/p0.png", "target": "gt/p0.png"}) + "\n")

    def generator(source: np.ndarray, prompt: str, source_prompt: str, seed: int) -> PairCandidate:
        return PairCandidate(source[::-1].copy(), {"note": "flip"})

    summary = make_pairs(sources, generator, out, image_size=SIZE, progress=False)
    assert summary.kept == 2
    rows = (out / "pairs.jsonl").read_text().splitlines()
    assert len(rows) == 2 and json.loads(rows[0])["prompt"] == "a"


def test_read_sources_jsonl_and_errors(tmp_path: Path) -> None:
    _write_sources(tmp_path / "sources", 2)
    listing = tmp_path / "sources.jsonl"
    listing.write_text(
        json.dumps({"source": "sources/p0.png", "prompt": "a man, santa"})
        + "\n\n"
        + json.dumps({"source": "sources/p1.png", "prompt": "a woman, santa", "source_prompt": "a woman"})
        + "\n"
    )
    items = read_sources(listing, source_prompt="a man")
    assert [(i.path, i.prompt, i.source_prompt) for i in items] == [
        (tmp_path / "sources/p0.png", "a man, santa", "a man"),
        (tmp_path / "sources/p1.png", "a woman, santa", "a woman"),
    ]
    with pytest.raises(InputError, match="prompt"):
        read_sources(tmp_path / "sources")
    with pytest.raises(InputError, match="expected a folder"):
        read_sources(tmp_path / "missing")
    (tmp_path / "bad.jsonl").write_text("{not json}\n")
    with pytest.raises(InputError, match="line 1"):
        read_sources(tmp_path / "bad.jsonl", "a", "b")
