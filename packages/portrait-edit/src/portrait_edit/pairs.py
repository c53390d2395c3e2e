"""Training-pair generation (issue #18 item 4; spec §4 "Pair generation"): the paper's core idea, not released.

The paper trains on "reasonably good" pairs generated at low cost [PAPER Abstract]; the related patent generates them
with a second machine-learning model [PATENT]. Which model, which filters and how many pairs are unknown, so this module
is an interface plus an [unverified] default:

- `PairGenerator`: ``generator(source, prompt, source_prompt, seed) -> PairCandidate`` (a target image or none, and a
  JSON-ready report). Any callable of that shape plugs into `make_pairs`.
- `EditorPairGenerator`, the default (``data.pair_generator="editor"``): an off-the-shelf editor (`DiffusersEditor`:
  any diffusers image-to-image or instruction-editing pipeline loaded from a folder; a tiny random one for tests)
  edits the source, and the pair is kept only if every filter of `PairFilters` passes (`check_pair`): identity cosine
  similarity of target to source at least ``identity_threshold`` (and, for dlib's embeddings, their distance at most
  ``identity_max_distance``), mean landmark distance at most ``landmark_tolerance``
  of the image side, and PSNR outside the edit region (`edit_region_mask`) at least ``outside_psnr_min``.
- `make_pairs` runs a generator over source portraits and writes the authors' layout: ``condition/<name>.png``
  (sources), ``gt/<name>.png`` (targets), ``pairs.jsonl`` (``{"source", "target", "prompt", "source_prompt"}``, paths
  relative to the folder, the training manifest) and ``report.jsonl`` (one row per source with its filter numbers,
  kept or not). It is resumable: a source with a row in ``report.jsonl`` is not generated again.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image

from genblocks.errors import InputError
from genblocks.faces import Face, FaceAnalyzer
from portrait_edit.metrics import (
    face_identity_distance,
    face_identity_similarity,
    landmark_distance,
    outside_mask_scores,
)

__all__ = [
    "DiffusersEditor",
    "EditRegion",
    "Editor",
    "EditorPairGenerator",
    "FilterReport",
    "PairCandidate",
    "PairFilters",
    "PairGenerator",
    "PairsSummary",
    "SourceItem",
    "check_pair",
    "edit_region_mask",
    "make_pairs",
    "read_sources",
]

logger = logging.getLogger(__name__)

EditRegion = Literal["face", "outfit", "all"]
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def edit_region_mask(kind: EditRegion, shape: tuple[int, int], face: Face) -> np.ndarray:
    """Where an edit may change the portrait: 1 = may change, 0 = must be kept (the PSNR filter measures the 0 part).

    The face region is an ellipse around the 68 landmarks (their box, 1.2x as wide and 1.4x as tall, raised by a tenth
    of its height to take in the forehead) [unverified].

    Args:
        kind (`str`): ``"face"`` (expression / cartoon edits: the face ellipse may change), ``"outfit"`` (costume edits:
            everything but the face ellipse may change) or ``"all"`` (nothing is kept; the PSNR filter is off).
        shape (`tuple[int, int]`): (H, W) of the image.
        face (`Face`): the source face, with ``landmarks68`` (or ``landmarks5`` when there are none).

    Returns:
        `np.ndarray`: float32 of shape (H, W) with values 0 or 1.
    """
    height, width = shape
    if kind == "all":
        return np.ones((height, width), np.float32)
    if kind not in ("face", "outfit"):
        raise InputError(f"pairs.edit_region: expected face, outfit or all, got {kind!r}")
    points = face.landmarks68 if face.landmarks68 is not None else face.landmarks5
    lo, hi = np.asarray(points, np.float64).min(0), np.asarray(points, np.float64).max(0)
    half = np.maximum((hi - lo) / 2, 1.0) * np.array([1.2, 1.4])
    centre = (lo + hi) / 2 - np.array([0.0, 0.1 * (hi[1] - lo[1])])
    ys, xs = np.mgrid[0:height, 0:width]
    inside = ((xs - centre[0]) / half[0]) ** 2 + ((ys - centre[1]) / half[1]) ** 2 <= 1.0
    return (inside if kind == "face" else ~inside).astype(np.float32)


@dataclass(frozen=True)
class PairFilters:
    """The default generator's filters (all [unverified]; the authors' are unknown).

    The identity test has two forms, both applied when both are set. ``identity_threshold`` is a cosine similarity,
    the form papers report ("ID similarity", usually ArcFace: the same person ≈0.6-0.8). ``identity_max_distance`` is
    the Euclidean distance of the raw embeddings, dlib's own rule (same person below 0.6 for its 128-d face
    descriptor). dlib's descriptors are not unit vectors (norm ≈1.4-1.5 on FFHQ-aligned portraits), so for two
    descriptors of norm ``n`` the distance ``d`` maps to ``cos = 1 - d^2 / (2 n^2)``: dlib's 0.6 is a cosine of ≈0.91
    (the astronaut vs Grace Hopper: distance 0.70, cosine 0.88; the astronaut recoloured outside the face: 0.99).
    With another embedder (ArcFace) set ``identity_max_distance=None``: the distance scale is the embedder's.

    Args:
        identity_threshold: Minimum identity cosine similarity of the target to the source.
        landmark_tolerance: Maximum mean 68-landmark distance as a fraction of the image side.
        outside_psnr_min: Minimum PSNR (dB) of the target against the source outside the edit region.
        edit_region: What the edit may change (`edit_region_mask`).
        identity_max_distance: Maximum Euclidean distance of the two identity embeddings (``None``: not tested).
    """

    identity_threshold: float = 0.6
    landmark_tolerance: float = 0.05
    outside_psnr_min: float = 25.0
    edit_region: EditRegion = "outfit"
    identity_max_distance: float | None = None


@dataclass
class FilterReport:
    """The filter numbers of one candidate pair (NaN where not measured).

    Attributes:
        identity: Identity cosine similarity of the target to the source.
        identity_distance: Euclidean distance of the two identity embeddings.
        landmark_distance: Mean landmark distance, fraction of the image side.
        psnr_outside: PSNR outside the edit region (dB).
        checks: Each filter's verdict (``identity``, ``landmarks``, ``outside``, and ``target_face``).
        reason: Why the pair was rejected (``None`` when kept).
    """

    identity: float = math.nan
    identity_distance: float = math.nan
    landmark_distance: float = math.nan
    psnr_outside: float = math.nan
    checks: dict[str, bool] = field(default_factory=dict)
    reason: str | None = None

    @property
    def kept(self) -> bool:
        """Every filter passed."""
        return bool(self.checks) and all(self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN -> ``None``, ``inf`` -> ``"inf"``."""
        out = asdict(self)
        for key in ("identity", "identity_distance", "landmark_distance", "psnr_outside"):
            value = out[key]
            out[key] = None if math.isnan(value) else ("inf" if math.isinf(value) else value)
        out["kept"] = self.kept
        return out


def _largest(faces: list[Face]) -> Face | None:
    return max(faces, key=lambda face: face.area) if faces else None


def check_pair(
    source: np.ndarray,
    target: np.ndarray,
    analyzer: FaceAnalyzer,
    filters: PairFilters,
    source_face: Face | None = None,
) -> FilterReport:
    """Measure a candidate pair and apply the filters.

    Args:
        source (`np.ndarray`): uint8 (H, W, 3), the source portrait.
        target (`np.ndarray`): uint8 (H, W, 3), the edited portrait.
        analyzer (`FaceAnalyzer`): embeddings and 68 landmarks.
        filters (`PairFilters`): thresholds and the edit region.
        source_face (`Face`, *optional*): the analysed source face (analysed here when not given).

    Returns:
        `FilterReport`: the numbers and each filter's verdict.
    """
    if source_face is None:
        source_face = _largest(analyzer.analyze(source, embed=True))
        if source_face is None:
            raise InputError("source: no face found; expected a portrait")
    report = FilterReport()
    target_face = _largest(analyzer.analyze(target, embed=True))
    report.checks["target_face"] = target_face is not None
    if target_face is None:
        report.checks.update(identity=False, landmarks=False)
    else:
        report.identity = face_identity_similarity(target_face, source_face)
        report.identity_distance = face_identity_distance(target_face, source_face)
        report.checks["identity"] = report.identity >= filters.identity_threshold and (
            filters.identity_max_distance is None or report.identity_distance <= filters.identity_max_distance
        )
        if target_face.landmarks68 is not None and source_face.landmarks68 is not None:
            points, reference = target_face.landmarks68, source_face.landmarks68
        else:
            points, reference = target_face.landmarks5, source_face.landmarks5
        report.landmark_distance = landmark_distance(points, reference, float(max(source.shape[:2])))
        report.checks["landmarks"] = report.landmark_distance <= filters.landmark_tolerance
    region = edit_region_mask(filters.edit_region, source.shape[:2], source_face)
    report.psnr_outside, _ = outside_mask_scores(source, target, region)
    report.checks["outside"] = math.isnan(report.psnr_outside) or report.psnr_outside >= filters.outside_psnr_min
    failed = [name for name, ok in report.checks.items() if not ok]
    report.reason = None if not failed else "failed: " + ", ".join(failed)
    return report


class Editor(Protocol):
    """An off-the-shelf editor: ``editor(image, prompt, seed) -> edited image`` (uint8 (H, W, 3) in and out)."""

    def __call__(self, image: np.ndarray, prompt: str, seed: int) -> np.ndarray: ...


class DiffusersEditor:
    """Any diffusers image-to-image or instruction-editing pipeline as an `Editor`.

    The pipeline is called with ``prompt``, ``image`` (a PIL image at ``resolution``), ``generator``,
    ``num_inference_steps`` and ``output_type="np"``, plus those of ``strength`` (image-to-image), ``guidance_scale``
    and ``image_guidance_scale`` (InstructPix2Pix) that its ``__call__`` accepts.

    Args:
        pipeline: A diffusers pipeline (``StableDiffusionImg2ImgPipeline``, ``StableDiffusionInstructPix2PixPipeline``,
            ...).
        resolution: Side of the square image given to the pipeline; the result is resized back to the source size.
        num_inference_steps: Denoising steps.
        strength: Image-to-image noise strength (how much may change).
        guidance_scale: Text guidance.
        image_guidance_scale: Image guidance of instruction editors.
    """

    def __init__(
        self,
        pipeline: Any,
        resolution: int = 512,
        num_inference_steps: int = 30,
        strength: float = 0.6,
        guidance_scale: float = 7.5,
        image_guidance_scale: float = 1.5,
    ) -> None:
        if resolution <= 0 or resolution % 8:
            raise InputError(f"editor resolution: expected a positive multiple of 8, got {resolution}")
        self.pipeline = pipeline
        self.resolution = resolution
        self.num_inference_steps = num_inference_steps
        self.strength = strength
        self.guidance_scale = guidance_scale
        self.image_guidance_scale = image_guidance_scale
        self._accepts = set(inspect.signature(pipeline.__call__).parameters)

    @classmethod
    def from_pretrained(cls, path: str | Path, resolution: int = 512, **kwargs: Any) -> DiffusersEditor:
        """Load a local diffusers pipeline folder (any class its ``model_index.json`` names)."""
        folder = Path(path)
        if not (folder / "model_index.json").is_file():
            raise InputError(f"pairs.editor {folder}: expected a diffusers pipeline folder with model_index.json")
        from diffusers import DiffusionPipeline

        pipeline = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
        pipeline.set_progress_bar_config(disable=True)
        return cls(pipeline, resolution=resolution, **kwargs)

    @classmethod
    def tiny(cls, seed: int = 0, resolution: int = 64, num_inference_steps: int = 2) -> DiffusersEditor:
        """A seeded random tiny ``StableDiffusionImg2ImgPipeline`` (genblocks.tiny components; tests, no download)."""
        from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import (
            StableDiffusionImg2ImgPipeline,
        )

        from genblocks.tiny import tiny_sd15_components

        parts = tiny_sd15_components(seed)
        pipeline = StableDiffusionImg2ImgPipeline(
            vae=parts.vae,
            text_encoder=parts.text_encoder,
            tokenizer=parts.tokenizer,
            unet=parts.unet,
            scheduler=parts.scheduler,  # type: ignore[arg-type]
            safety_checker=None,  # type: ignore[arg-type]
            feature_extractor=None,  # type: ignore[arg-type]
            requires_safety_checker=False,
        )
        pipeline.set_progress_bar_config(disable=True)
        return cls(pipeline, resolution=resolution, num_inference_steps=num_inference_steps)

    def __call__(self, image: np.ndarray, prompt: str, seed: int) -> np.ndarray:
        """Edit one image.

        Args:
            image (`np.ndarray`): uint8 (H, W, 3).
            prompt (`str`): the edit (a target caption for image-to-image, an instruction for instruction editors).
            seed (`int`): seed of the pipeline's generator.

        Returns:
            `np.ndarray`: uint8 (H, W, 3), the edit at the input's size.
        """
        import torch

        height, width = image.shape[:2]
        pil = Image.fromarray(image).resize((self.resolution, self.resolution), Image.Resampling.BICUBIC)
        device = getattr(self.pipeline, "device", torch.device("cpu"))
        kwargs: dict[str, Any] = {
            "prompt": prompt,
            "image": pil,
            "num_inference_steps": self.num_inference_steps,
            "generator": torch.Generator(device=device).manual_seed(seed),
            "output_type": "np",
        }
        for name in ("strength", "guidance_scale", "image_guidance_scale"):
            if name in self._accepts:
                kwargs[name] = getattr(self, name)
        result = np.asarray(self.pipeline(**kwargs).images[0])
        edited = np.clip(np.round(result * 255.0), 0, 255).astype(np.uint8)
        if edited.shape[:2] != (height, width):
            edited = np.asarray(Image.fromarray(edited).resize((width, height), Image.Resampling.BICUBIC))
        return edited


@dataclass
class PairCandidate:
    """What a `PairGenerator` returns for one source.

    Attributes:
        target: uint8 (H, W, 3) edited portrait when the pair is kept, else ``None``.
        report: JSON-ready numbers explaining the decision (`FilterReport.to_dict` for the default).
    """

    target: np.ndarray | None
    report: dict[str, Any]

    @property
    def kept(self) -> bool:
        """A target was produced."""
        return self.target is not None


class PairGenerator(Protocol):
    """``generator(source, prompt, source_prompt, seed) -> PairCandidate`` for one aligned source portrait (uint8
    (H, W, 3)); `make_pairs` runs it over a folder."""

    def __call__(self, source: np.ndarray, prompt: str, source_prompt: str, seed: int) -> PairCandidate: ...


class EditorPairGenerator:
    """The default `PairGenerator`: edit with ``editor``, keep the first attempt that passes `check_pair`.

    Args:
        editor: The off-the-shelf editor (`DiffusersEditor` or any `Editor`).
        analyzer: Face analyzer for the filters (`genblocks.faces.DlibFaceAnalyzer` by default in the CLI).
        filters: The thresholds and the edit region.
        attempts: Editor seeds tried per source (``seed, seed + 1, ...``) before the source is given up.
    """

    def __init__(self, editor: Editor, analyzer: FaceAnalyzer, filters: PairFilters, attempts: int = 1) -> None:
        if attempts < 1:
            raise InputError(f"attempts: expected at least 1, got {attempts}")
        self.editor = editor
        self.analyzer = analyzer
        self.filters = filters
        self.attempts = attempts

    def __call__(self, source: np.ndarray, prompt: str, source_prompt: str, seed: int) -> PairCandidate:
        """Edit ``source`` towards ``prompt`` and filter (``source_prompt`` is not used by image editors)."""
        source_face = _largest(self.analyzer.analyze(source, embed=True))
        if source_face is None:
            return PairCandidate(None, {"kept": False, "reason": "no face in the source", "attempts": []})
        attempts = []
        for attempt in range(self.attempts):
            target = self.editor(source, prompt, seed + attempt)
            report = check_pair(source, target, self.analyzer, self.filters, source_face=source_face)
            attempts.append({"seed": seed + attempt, **report.to_dict()})
            if report.kept:
                return PairCandidate(target, {**report.to_dict(), "seed": seed + attempt, "attempts": attempts})
        return PairCandidate(None, {**attempts[-1], "kept": False, "attempts": attempts})


@dataclass(frozen=True)
class SourceItem:
    """One source portrait for `make_pairs`.

    Attributes:
        path: The image file.
        prompt: The target prompt (``"a man, santa claus costume"``).
        source_prompt: The source prompt (``"a man"``).
    """

    path: Path
    prompt: str
    source_prompt: str

    @property
    def name(self) -> str:
        """File stem used for ``condition/<name>.png`` and ``gt/<name>.png``."""
        return self.path.stem


def read_sources(path: str | Path, prompt: str | None = None, source_prompt: str | None = None) -> list[SourceItem]:
    """Source portraits from a folder of images (all sharing ``prompt`` / ``source_prompt``) or a JSONL file of
    ``{"source": path, "prompt": ..., "source_prompt": ...}`` rows (paths relative to the file; a missing prompt
    falls back to the arguments).

    Returns:
        `list[SourceItem]`: sorted by name for a folder, in file order for JSONL; names must be unique.
    """
    location = Path(path)
    items: list[SourceItem] = []
    if location.is_dir():
        files = sorted(p for p in location.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"--sources {location}: the folder holds no images ({', '.join(_IMAGE_SUFFIXES)})")
        if prompt is None or source_prompt is None:
            raise InputError("--prompt and --source-prompt: expected both for a folder of sources")
        items = [SourceItem(file, prompt, source_prompt) for file in files]
    elif location.is_file() and location.suffix == ".jsonl":
        for number, line in enumerate(location.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                file = location.parent / row["source"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise InputError(
                    f"--sources {location} line {number}: expected a JSON object with 'source'"
                ) from error
            row_prompt, row_source_prompt = row.get("prompt", prompt), row.get("source_prompt", source_prompt)
            if row_prompt is None or row_source_prompt is None:
                raise InputError(f"--sources {location} line {number}: no prompt / source_prompt (row or flags)")
            items.append(SourceItem(file, str(row_prompt), str(row_source_prompt)))
    else:
        raise InputError(f"--sources {location}: expected a folder of portraits or a .jsonl file")
    names = [item.name for item in items]
    if len(set(names)) != len(names):
        raise InputError(f"--sources {location}: source file names must be unique (they name the pair files)")
    return items


@dataclass
class PairsSummary:
    """What `make_pairs` did.

    Attributes:
        out_dir: The pairs folder.
        manifest: ``pairs.jsonl``, the training manifest.
        report: ``report.jsonl``, one row per source handled.
        kept: Pairs in the manifest (earlier runs included).
        rejected: Sources whose pair was rejected in this run.
        skipped: Sources already handled by an earlier run (resume).
    """

    out_dir: Path
    manifest: Path
    report: Path
    kept: int
    rejected: int
    skipped: int


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    temporary.replace(path)


def _load_source(item: SourceItem, image_size: int) -> np.ndarray:
    from genblocks.media import read_image

    image = read_image(item.path)
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = Image.fromarray(image[top : top + side, left : left + side])
    return np.asarray(square.resize((image_size, image_size), Image.Resampling.BICUBIC))


def make_pairs(
    sources: Sequence[SourceItem],
    generator: PairGenerator,
    out_dir: str | Path,
    image_size: int = 512,
    max_pairs: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> PairsSummary:
    """Generate training pairs from source portraits; resumable.

    Each source is centre-cropped to a square and resized to ``image_size``, handed to ``generator`` with the seed
    ``seed + its index``, and, when kept, written as ``condition/<name>.png`` + ``gt/<name>.png`` with a manifest row.
    Every handled source gets a row in ``report.jsonl`` (written last, so a run stopped mid-source redoes that one).

    Args:
        sources (`Sequence[SourceItem]`): the portraits and prompts (`read_sources`).
        generator (`PairGenerator`): makes and judges one pair.
        out_dir (`str` or `Path`): the pairs folder (created; an earlier run there is continued).
        image_size (`int`, defaults to 512): side of the written images.
        max_pairs (`int`, *optional*): stop once the manifest holds this many pairs.
        seed (`int`, defaults to 0): base seed.
        progress (`bool`, defaults to `True`): show a tqdm progress bar.

    Returns:
        `PairsSummary`: counts and file paths.
    """
    from tqdm.auto import tqdm

    from genblocks.media import write_image

    out = Path(out_dir)
    (out / "condition").mkdir(parents=True, exist_ok=True)
    (out / "gt").mkdir(parents=True, exist_ok=True)
    manifest_path, report_path = out / "pairs.jsonl", out / "report.jsonl"
    reports = _read_jsonl(report_path)
    done = {row["name"] for row in reports}
    kept_names = {row["name"] for row in reports if row.get("kept")}
    # keep only manifest rows whose source finished (a run stopped between the two writes left one behind)
    manifest = [row for row in _read_jsonl(manifest_path) if Path(row["source"]).stem in kept_names]
    _write_jsonl(manifest_path, manifest)
    kept, rejected, skipped = len(manifest), 0, 0
    with tqdm(total=len(sources), disable=not progress, desc="pairs", unit="source") as bar:
        for index, item in enumerate(sources):
            bar.update(1)
            if item.name in done:
                skipped += 1
                continue
            if max_pairs is not None and kept >= max_pairs:
                break
            source = _load_source(item, image_size)
            candidate = generator(source, item.prompt, item.source_prompt, seed + index)
            row: dict[str, Any] = {"name": item.name, "source_file": str(item.path), **candidate.report}
            row["kept"] = candidate.kept
            if candidate.target is not None:
                write_image(out / "condition" / f"{item.name}.png", source)
                write_image(out / "gt" / f"{item.name}.png", candidate.target)
                pair = {
                    "source": f"condition/{item.name}.png",
                    "target": f"gt/{item.name}.png",
                    "prompt": item.prompt,
                    "source_prompt": item.source_prompt,
                }
                with manifest_path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(pair) + "\n")
                kept += 1
            else:
                rejected += 1
            with report_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
            bar.set_postfix(kept=kept, rejected=rejected)
    logger.info("pairs: %d kept, %d rejected, %d already done (%s)", kept, rejected, skipped, out)
    return PairsSummary(out, manifest_path, report_path, kept, rejected, skipped)
