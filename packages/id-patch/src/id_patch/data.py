"""Training data for ID-Patch: a manifest of multi-person photos with per-person face embeddings and keypoints.

The paper's dataset is unknown and no training code was released (spec id-patch §4, every item [unverified]). This
module reads any folder described by a CSV or JSONL manifest on the conventions of ``genblocks.training``
(:class:`~genblocks.training.ManifestDataset`: relative paths resolve against the manifest's folder; CSV cells hold
JSON lists; every problem is a :class:`~genblocks.training.ManifestError` naming the row and the column). One row is
one photo::

    {"image": "img/0001.jpg", "caption": "two friends at the beach",
     "keypoints": "kps/0001.npy",                       # (F, 17, 3) COCO-17 x, y, score in pixels of the image
     "face_embeddings": "emb/0001.npy"}                 # (F, D), one row per person, same order as the keypoints

- ``keypoints``: (F, 17, 2|3) COCO-17 body keypoints (RTMPose order; the pose is drawn and the face anchor is the
  nose, keypoint 0), or (F, 2) face positions only (no pose: the condition holds the patches on black). A ``.npy``
  path or an inline JSON list.
- ``face_embeddings``: (F, D) as a ``.npy`` path or an inline list, or a JSON list of one ``.npy`` path per person
  ((D,) or (1, D) each) — what ``id_patch.preprocessing`` precomputes.
- ``face_crops`` (instead of embeddings): a JSON list of one image path per person; embedded once, on first use, by
  the ``face_encoder`` given to the dataset (a frozen encoder, e.g. ``id_patch.preprocessing``'s).
- ``boxes`` (optional): (F, 4) face boxes, used when ``face_anchor="bbox_center"``.

A sample holds the image (3, H, W) in [-1, 1] (shorter side resized, centre-cropped), the caption, the pose image
(3, H, W) in [0, 1] drawn with :func:`id_patch.condition.draw_pose` at the training resolution, the face embeddings
(F, D) and positions (F, 2) in pixels of the crop sorted left to right (:func:`id_patch.condition.order_subjects`,
the subject order of inference), and SDXL's ``time_ids`` (6,): original size, crop top-left, target size. The ID patches
are not drawn here: they come from the trainable patch projection, so the training module renders them
(:func:`id_patch.condition.render_condition`) on the pose image. Faces whose anchor leaves the crop are dropped; a row
left with no face is an error. Photos hold 1 to ``max_faces`` (4) faces; batches group rows with the same face count
(:class:`FaceCountBatchSampler`) so the ID-token context has one length per batch, as at inference.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Sampler, Subset

from genblocks.training import ColumnSpec, ManifestDataModule, ManifestDataset, ManifestError
from id_patch.condition import draw_pose, face_anchors, order_subjects

if TYPE_CHECKING:
    from id_patch.preprocessing import FaceEncoder

__all__ = [
    "FaceCountBatchSampler",
    "IDPatchDataModule",
    "IDPatchDataset",
    "coco_keypoints_for_person",
    "write_synthetic_manifest",
]

logger = logging.getLogger(__name__)

_EMBEDDING_SUFFIXES = (".npy",)


def _crop_geometry(original: tuple[int, int], size: tuple[int, int]) -> tuple[float, float, int, int]:
    """Scale factors and crop offsets of ``genblocks.training.data.load_image`` for an (h0, w0) image -> (H, W)."""
    h0, w0 = original
    height, width = size
    scale = max(height / h0, width / w0)
    new_w, new_h = max(width, round(w0 * scale)), max(height, round(h0 * scale))
    left, top = (new_w - width) // 2, (new_h - height) // 2
    return new_w / w0, new_h / h0, left, top


class IDPatchDataset(ManifestDataset):
    """Multi-person samples for ID-Patch training (layout in the module docstring).

    Args:
        manifest: Path to the ``.csv`` or ``.jsonl`` manifest.
        resolution: Training image size, an int (square) or (H, W).
        root: Folder relative paths resolve against; ``None`` is the manifest's folder.
        face_dim: Expected embedding width (checked per row); ``None`` accepts any (consistent within a row).
        max_faces: Most faces per photo (spec §4: 1–4).
        face_anchor: ``"nose"`` (COCO keypoint 0) or ``"bbox_center"`` (needs the boxes column or COCO face points).
        face_encoder: A frozen ``id_patch.preprocessing.FaceEncoder`` that embeds the ``face_crops`` of rows without
            embeddings (``encode_subjects(crops).embeds``); ``None``: such rows are an error.
        image_column: Column of the photo path.
        caption_column: Column of the caption.
        keypoints_column: Column of the keypoints or face positions.
        embeddings_column: Column of the face embeddings.
        crops_column: Column of the face crop paths.
        boxes_column: Column of the face boxes.
    """

    def __init__(
        self,
        manifest: str | Path,
        resolution: int | tuple[int, int] = 1024,
        root: str | Path | None = None,
        face_dim: int | None = None,
        max_faces: int = 4,
        face_anchor: str = "nose",
        face_encoder: FaceEncoder | None = None,
        image_column: str = "image",
        caption_column: str = "caption",
        keypoints_column: str = "keypoints",
        embeddings_column: str = "face_embeddings",
        crops_column: str = "face_crops",
        boxes_column: str = "boxes",
    ) -> None:
        columns = [
            ColumnSpec(image_column, "image"),
            ColumnSpec(caption_column, "text"),
            ColumnSpec(keypoints_column, "keypoints"),
            ColumnSpec(boxes_column, "keypoints", optional=True),
        ]
        super().__init__(manifest, columns, resolution, root)
        if max_faces < 1:
            raise ValueError(f"max_faces: expected >= 1, got {max_faces}")
        if face_anchor not in ("nose", "bbox_center"):
            raise ValueError(f"face_anchor: expected 'nose' or 'bbox_center', got {face_anchor!r}")
        self.image_spec, self.caption_spec, self.keypoints_spec, self.boxes_spec = columns
        self.embeddings_spec = ColumnSpec(embeddings_column, "keypoints", optional=True)
        self.crops_spec = ColumnSpec(crops_column, "frames", optional=True)
        self.face_dim = face_dim
        self.max_faces = max_faces
        self.face_anchor = face_anchor
        self.face_encoder = face_encoder
        self._crop_embeddings: dict[int, torch.Tensor] = {}

    # ----------------------------------------------------------------- cells
    def _present(self, index: int, column: ColumnSpec) -> bool:
        return not self._is_empty(self.rows[index].get(column.name))

    def _raw_keypoints(self, index: int) -> np.ndarray:
        array = self._load_keypoints(index, self.keypoints_spec, self._cell(index, self.keypoints_spec)).numpy()
        valid = (array.ndim == 3 and array.shape[1] == 17 and array.shape[2] in (2, 3)) or (
            array.ndim == 2 and array.shape[1] == 2
        )
        if not valid:
            raise ManifestError(
                f"{self._where(index, self.keypoints_spec)}: expected COCO-17 keypoints (F, 17, 2|3) or face "
                f"positions (F, 2), got shape {tuple(array.shape)}"
            )
        return array

    def _raw_embeddings(self, index: int) -> np.ndarray:
        column = self.embeddings_spec
        value = self._cell(index, column)
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            rows = []
            for number, item in enumerate(value):
                path = self._path(index, column, item)
                try:
                    array = np.load(path, allow_pickle=False)
                except (OSError, ValueError) as error:
                    raise ManifestError(
                        f"{self._where(index, column)}: cannot read the embedding of person {number} at {path} ({error})"
                    ) from error
                rows.append(np.asarray(array, dtype=np.float32).reshape(-1))
            widths = {r.size for r in rows}
            if len(widths) != 1:
                raise ManifestError(f"{self._where(index, column)}: per-person embeddings differ in width: {widths}")
            array = np.stack(rows)
        else:
            array = self._load_keypoints(index, column, value).numpy()
        if array.ndim == 1:
            array = array[None]
        if array.ndim != 2:
            raise ManifestError(f"{self._where(index, column)}: expected (F, D) embeddings, got {tuple(array.shape)}")
        if self.face_dim is not None and array.shape[1] != self.face_dim:
            raise ManifestError(
                f"{self._where(index, column)}: embeddings are {array.shape[1]}-d, the model expects "
                f"face_dim={self.face_dim}"
            )
        if not np.all(np.isfinite(array)):
            raise ManifestError(f"{self._where(index, column)}: embeddings hold non-finite values")
        return array.astype(np.float32)

    def _crop_paths(self, index: int) -> list[Path]:
        value = self._cell(index, self.crops_spec)
        if not isinstance(value, list) or not value:
            raise ManifestError(f"{self._where(index, self.crops_spec)}: expected a JSON list of one crop per person")
        return [self._path(index, self.crops_spec, v) for v in value]

    def _embed_crops(self, index: int) -> np.ndarray:
        if index in self._crop_embeddings:
            return self._crop_embeddings[index].numpy()
        column = self.crops_spec
        if self.face_encoder is None:
            raise ManifestError(
                f"{self._where(index, column)}: the row has face crops but no embeddings, and the dataset has no "
                "face_encoder; precompute embeddings (id_patch.preprocessing) or pass face_encoder"
            )
        crops = []
        for path in self._crop_paths(index):
            try:
                with Image.open(path) as image:
                    crops.append(np.asarray(image.convert("RGB")).copy())
            except FileNotFoundError as error:
                raise ManifestError(f"{self._where(index, column)}: file not found: {path}") from error
            except (UnidentifiedImageError, OSError) as error:
                raise ManifestError(f"{self._where(index, column)}: unreadable image {path} ({error})") from error
        try:
            with torch.no_grad():
                embeds = self.face_encoder.encode_subjects(crops).embeds.detach().float().cpu()
        except ValueError as error:
            raise ManifestError(f"{self._where(index, column)}: the face encoder failed ({error})") from error
        if embeds.ndim != 2 or embeds.shape[0] != len(crops):
            raise ManifestError(
                f"{self._where(index, column)}: the face encoder returned {tuple(embeds.shape)} for {len(crops)} crops"
            )
        if self.face_dim is not None and embeds.shape[1] != self.face_dim:
            raise ManifestError(
                f"{self._where(index, column)}: the face encoder gives {embeds.shape[1]}-d embeddings, the model "
                f"expects face_dim={self.face_dim}"
            )
        self._crop_embeddings[index] = embeds
        return embeds.numpy()

    def _embeddings(self, index: int) -> tuple[np.ndarray, ColumnSpec]:
        if self._present(index, self.embeddings_spec):
            return self._raw_embeddings(index), self.embeddings_spec
        if self._present(index, self.crops_spec):
            return self._embed_crops(index), self.crops_spec
        raise ManifestError(
            f"manifest {self.manifest}, row {index}: neither column {self.embeddings_spec.name!r} nor "
            f"{self.crops_spec.name!r} is filled; every person needs a face embedding or a face crop"
        )

    def num_faces(self, index: int) -> int:
        """Faces of row ``index`` in its sample (those whose anchor falls inside the crop)."""
        return int(self._sample_faces(index)["face_embeds"].shape[0])

    def _original_size(self, index: int) -> tuple[int, int]:
        path = self._path(index, self.image_spec, self._cell(index, self.image_spec))
        try:
            with Image.open(path) as image:
                return image.height, image.width
        except FileNotFoundError as error:
            raise ManifestError(f"{self._where(index, self.image_spec)}: file not found: {path}") from error
        except (UnidentifiedImageError, OSError) as error:
            raise ManifestError(f"{self._where(index, self.image_spec)}: unreadable image {path} ({error})") from error

    # ----------------------------------------------------------------- checks and samples
    def validate(self) -> None:
        """Check every row: files, shapes, face counts (1..max_faces, equal across columns), embedding widths.

        Raises:
            ManifestError: Listing (up to 20) problems, each naming the manifest, row and column.
        """
        super().validate()
        problems = []
        for index in range(len(self.rows)):
            try:
                self._sample_faces(index)
            except ManifestError as error:
                problems.append(str(error))
        if problems:
            shown = "\n  ".join(problems[:20])
            more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise ManifestError(f"{len(problems)} manifest problem(s):\n  {shown}{more}")

    def _sample_faces(self, index: int) -> dict[str, torch.Tensor]:
        """Keypoints, anchors and embeddings of row ``index`` in crop pixels, left to right, outside faces dropped."""
        keypoints = self._raw_keypoints(index)
        count = keypoints.shape[0]
        if not 1 <= count <= self.max_faces:
            raise ManifestError(
                f"{self._where(index, self.keypoints_spec)}: {count} people; expected 1 to {self.max_faces}"
            )
        embeds, embed_spec = self._embeddings(index)
        if embeds.shape[0] != count:
            raise ManifestError(
                f"{self._where(index, embed_spec)}: {embeds.shape[0]} faces, but column "
                f"{self.keypoints_spec.name!r} lists {count} people; expected one per person, in the same order"
            )
        boxes = None
        if self._present(index, self.boxes_spec):
            boxes = self._load_keypoints(index, self.boxes_spec, self._cell(index, self.boxes_spec)).numpy()
            if boxes.shape != (count, 4):
                raise ManifestError(
                    f"{self._where(index, self.boxes_spec)}: expected ({count}, 4) face boxes, got {boxes.shape}"
                )
        height, width = self.size
        sx, sy, left, top = _crop_geometry(self._original_size(index), (height, width))
        keypoints = keypoints.astype(np.float64).copy()
        keypoints[..., 0] = keypoints[..., 0] * sx - left
        keypoints[..., 1] = keypoints[..., 1] * sy - top
        if boxes is not None:
            boxes = boxes.astype(np.float64) * np.array([sx, sy, sx, sy]) - np.array([left, top, left, top])
        body = keypoints.ndim == 3
        if self.face_anchor == "bbox_center" and boxes is not None:
            anchors = face_anchors(boxes, "bbox_center")
        elif body:
            anchors = face_anchors(keypoints, self.face_anchor)
        elif self.face_anchor == "bbox_center":
            raise ManifestError(
                f"{self._where(index, self.boxes_spec)}: face_anchor='bbox_center' needs face boxes or COCO-17 "
                "keypoints; the row has face positions only"
            )
        else:
            anchors = torch.from_numpy(keypoints.astype(np.float32))
        inside = (anchors[:, 0] >= 0) & (anchors[:, 0] < width) & (anchors[:, 1] >= 0) & (anchors[:, 1] < height)
        if not bool(inside.any()):
            raise ManifestError(
                f"{self._where(index, self.keypoints_spec)}: no face position falls inside the {width}x{height} crop"
            )
        keep = torch.nonzero(inside).flatten()
        if len(keep) < count:
            logger.debug("manifest row %d: dropping %d face(s) outside the crop", index, count - len(keep))
        anchors = anchors[keep]
        order = keep[order_subjects(anchors)]
        faces = {
            "face_embeds": torch.from_numpy(embeds[order.numpy()]),
            "face_locations": anchors[order_subjects(anchors)].float(),
        }
        if body:
            faces["keypoints"] = torch.from_numpy(keypoints[order.numpy()].astype(np.float32))
        return faces

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One training sample.

        Returns:
            ``image`` (3, H, W) in [-1, 1]; ``caption`` str; ``pose_image`` (3, H, W) in [0, 1]; ``face_embeds``
            (F, D); ``face_locations`` (F, 2) xy pixels, left to right; ``time_ids`` (6,) SDXL micro-conditioning
            ``(orig_h, orig_w, crop_top, crop_left, H, W)``.
        """
        image_path = self._path(index, self.image_spec, self._cell(index, self.image_spec))
        image = self._load_image(index, self.image_spec, image_path)
        caption = self._cell(index, self.caption_spec)
        faces = self._sample_faces(index)
        height, width = self.size
        pose = draw_pose(faces["keypoints"], height, width) if "keypoints" in faces else torch.zeros(3, height, width)
        h0, w0 = self._original_size(index)
        _, _, left, top = _crop_geometry((h0, w0), (height, width))
        return {
            "image": image,
            "caption": "" if caption is None else str(caption),
            "pose_image": pose,
            "face_embeds": faces["face_embeds"],
            "face_locations": faces["face_locations"],
            "time_ids": torch.tensor([h0, w0, top, left, height, width], dtype=torch.float32),
        }


class FaceCountBatchSampler(Sampler[list[int]]):
    """Batches of rows with the same face count (so a batch's ID-token context has one length).

    Rows are grouped by count, each group is shuffled and cut into batches, and the batch order is shuffled, all from
    ``seed + epoch`` (Lightning calls :meth:`set_epoch`), so an epoch's order is reproducible.

    Args:
        face_counts: Face count of each row (position ``i`` describes dataset index ``i``).
        batch_size: Rows per batch.
        shuffle: Shuffle rows within groups and the batch order.
        seed: Base seed of the shuffles.
        drop_last: Drop each group's last incomplete batch.
    """

    def __init__(
        self,
        face_counts: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        self.face_counts = list(face_counts)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of epoch ``epoch``."""
        self.epoch = epoch

    def _groups(self) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = {}
        for index, count in enumerate(self.face_counts):
            groups.setdefault(count, []).append(index)
        return groups

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        batches: list[list[int]] = []
        for count in sorted(self._groups()):
            members = self._groups()[count]
            if self.shuffle:
                members = [members[i] for i in torch.randperm(len(members), generator=generator).tolist()]
            for start in range(0, len(members), self.batch_size):
                batch = members[start : start + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        yield from batches

    def __len__(self) -> int:
        total = 0
        for members in self._groups().values():
            full, rest = divmod(len(members), self.batch_size)
            total += full + (1 if rest and not self.drop_last else 0)
        return total


class IDPatchDataModule(ManifestDataModule):
    """Train/val loaders over an ID-Patch manifest, batches grouped by face count.

    Args:
        manifest: Path to the ``.csv`` or ``.jsonl`` manifest.
        resolution: Training image size, an int or (H, W) (spec §4: 1024 [unverified]).
        batch_size: Samples per batch (per process) (spec §4: 8 [unverified]).
        val_fraction: Fraction of rows held out for validation.
        seed: Seed of the split and of the batch shuffles.
        num_workers: DataLoader worker processes.
        root: Folder relative paths resolve against; ``None`` is the manifest's folder.
        validate: Check every row in ``setup`` (:meth:`IDPatchDataset.validate`).
        face_dim: Expected embedding width; ``None`` accepts any.
        max_faces: Most faces per photo.
        face_anchor: ``"nose"`` or ``"bbox_center"``.
        face_encoder: Embeds ``face_crops`` of rows without embeddings.
    """

    def __init__(
        self,
        manifest: str,
        resolution: int | tuple[int, int] = 1024,
        batch_size: int = 1,
        val_fraction: float = 0.0,
        seed: int = 0,
        num_workers: int = 0,
        root: str | None = None,
        validate: bool = True,
        face_dim: int | None = None,
        max_faces: int = 4,
        face_anchor: str = "nose",
        face_encoder: FaceEncoder | None = None,
    ) -> None:
        super().__init__(
            manifest,
            [],
            resolution=resolution,
            batch_size=batch_size,
            val_fraction=val_fraction,
            seed=seed,
            num_workers=num_workers,
            root=root,
            validate=validate,
        )
        self.face_dim = face_dim
        self.max_faces = max_faces
        self.face_anchor = face_anchor
        self.face_encoder = face_encoder
        self.dataset: IDPatchDataset | None = None
        self.face_counts: list[int] = []

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        dataset = IDPatchDataset(
            self.manifest,
            self.resolution,
            self.root,
            face_dim=self.face_dim,
            max_faces=self.max_faces,
            face_anchor=self.face_anchor,
            face_encoder=self.face_encoder,
        )
        if self.validate:
            dataset.validate()
        self.dataset = dataset
        self.face_counts = [dataset.num_faces(i) for i in range(len(dataset))]
        train_idx, val_idx = self.split_indices(len(dataset))
        self.train_set, self.val_set = Subset(dataset, train_idx), Subset(dataset, val_idx)
        logger.info("manifest %s: %d train / %d val rows", self.manifest, len(train_idx), len(val_idx))

    def _loader(self, subset: Subset, shuffle: bool) -> DataLoader:
        counts = [self.face_counts[i] for i in subset.indices]
        sampler = FaceCountBatchSampler(counts, self.batch_size, shuffle=shuffle, seed=self.seed)
        return DataLoader(subset, batch_sampler=sampler, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("validate")
        return self._loader(self.val_set, shuffle=False)


# --------------------------------------------------------------------------- synthetic data for tests and the demo
# A front-facing stick figure in head-size units around the nose; "left" joints are on the image right (COCO-17 order:
# nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles).
_TEMPLATE = np.array(
    [
        (0.0, 0.0), (0.35, -0.3), (-0.35, -0.3), (0.7, -0.1), (-0.7, -0.1), (1.4, 1.6), (-1.4, 1.6),
        (1.8, 3.4), (-1.8, 3.4), (2.0, 5.0), (-2.0, 5.0), (0.9, 5.2), (-0.9, 5.2), (1.0, 7.4), (-1.0, 7.4),
        (1.0, 9.6), (-1.0, 9.6),
    ]
)  # fmt: skip


def coco_keypoints_for_person(nose: tuple[float, float], head: float) -> np.ndarray:
    """COCO-17 keypoints (17, 3) of a front-facing stick figure whose nose is at ``nose`` with head size ``head`` px."""
    xy = np.asarray(nose, dtype=np.float64) + _TEMPLATE * head
    return np.concatenate([xy, np.ones((17, 1))], axis=1).astype(np.float32)


def write_synthetic_manifest(
    out_dir: str | Path,
    num_images: int = 4,
    resolution: int = 64,
    face_dim: int = 16,
    faces_per_image: Sequence[int] = (1, 2),
    seed: int = 0,
    with_crops: bool = False,
) -> Path:
    """Write a tiny synthetic ID-Patch dataset (images it draws) and its JSONL manifest, for tests and the demo.

    Each image shows 1..4 "people" on a grey background: a disc (the head, coloured from the person's embedding) above
    a rectangle body, at random, non-overlapping horizontal slots. Keypoints are a stick figure around each nose;
    embeddings are random unit vectors saved as ``.npy`` (F, D); with ``with_crops`` the head crops are saved too and
    listed in ``face_crops`` (rows then still have embeddings; drop that column to test the crop path).

    Args:
        out_dir: Folder to write into (created).
        num_images: Rows.
        resolution: Square image side in pixels.
        face_dim: Embedding width.
        faces_per_image: Face counts, cycled over the rows (each 1..4).
        seed: Seed of positions, colours and embeddings.
        with_crops: Also write per-person head crops.

    Returns:
        The manifest path (``out_dir/manifest.jsonl``).
    """
    if not faces_per_image or any(not 1 <= n <= 4 for n in faces_per_image):
        raise ValueError(f"faces_per_image: expected counts in 1..4, got {list(faces_per_image)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(num_images):
        count = int(faces_per_image[index % len(faces_per_image)])
        embeds = rng.standard_normal((count, face_dim)).astype(np.float32)
        embeds /= np.linalg.norm(embeds, axis=1, keepdims=True)
        head = resolution / 16
        slot = resolution / count
        noses = [
            (slot * (i + 0.5) + rng.uniform(-0.15, 0.15) * slot, resolution * rng.uniform(0.25, 0.4))
            for i in range(count)
        ]
        canvas = np.full((resolution, resolution, 3), 110, dtype=np.uint8)
        yy, xx = np.mgrid[0:resolution, 0:resolution]
        crops = []
        for person, (x, y) in enumerate(noses):
            colour = (128 + 127 * np.tanh(2 * embeds[person, :3])).astype(np.uint8)
            body = (np.abs(xx - x) < 1.4 * head) & (yy > y + 1.6 * head) & (yy < y + 9.6 * head)
            canvas[body] = colour // 2 + 40
            canvas[(xx - x) ** 2 + (yy - y) ** 2 < (1.2 * head) ** 2] = colour
            if with_crops:
                r = math.ceil(2 * head)
                y0, x0 = max(0, round(y) - r), max(0, round(x) - r)
                crop_name = f"crop_{index:03d}_{person}.png"
                Image.fromarray(canvas[y0 : round(y) + r, x0 : round(x) + r].copy()).save(out / crop_name)
                crops.append(crop_name)
        keypoints = np.stack([coco_keypoints_for_person(nose, head) for nose in noses])
        Image.fromarray(canvas).save(out / f"image_{index:03d}.png")
        np.save(out / f"keypoints_{index:03d}.npy", keypoints)
        np.save(out / f"embeddings_{index:03d}.npy", embeds)
        row = {
            "image": f"image_{index:03d}.png",
            "caption": f"{count} {'person' if count == 1 else 'people'}",
            "keypoints": f"keypoints_{index:03d}.npy",
            "face_embeddings": f"embeddings_{index:03d}.npy",
        }
        if with_crops:
            row["face_crops"] = crops
        rows.append(row)
    manifest = out / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return manifest
