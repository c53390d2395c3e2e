"""The ID-Patch manifest dataset: sample layout, crop geometry, left-to-right order, errors naming row and column,
face crops through a frozen encoder, and batches grouped by face count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genblocks.training import ManifestError
from id_patch.condition import draw_pose
from id_patch.data import (
    FaceCountBatchSampler,
    IDPatchDataModule,
    IDPatchDataset,
    coco_keypoints_for_person,
    write_synthetic_manifest,
)
from id_patch.testing import tiny_face_encoder


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_synthetic_sample_layout(tmp_path: Path) -> None:
    manifest = write_synthetic_manifest(tmp_path, num_images=3, faces_per_image=(1, 2, 3))
    dataset = IDPatchDataset(manifest, resolution=64, face_dim=16)
    dataset.validate()
    sample = dataset[2]
    assert sample["image"].shape == (3, 64, 64) and -1.0 <= sample["image"].min() <= sample["image"].max() <= 1.0
    assert sample["caption"] == "3 people"
    assert sample["face_embeds"].shape == (3, 16) and sample["face_locations"].shape == (3, 2)
    assert torch.all(sample["face_locations"][1:, 0] >= sample["face_locations"][:-1, 0])  # left to right
    torch.testing.assert_close(sample["face_embeds"].norm(dim=1), torch.ones(3))
    assert sample["pose_image"].shape == (3, 64, 64) and sample["pose_image"].max() > 0.5
    assert sample["time_ids"].tolist() == [64.0, 64.0, 0.0, 0.0, 64.0, 64.0]


def test_crop_geometry_sorting_and_pose(tmp_path: Path) -> None:
    # a 128 x 96 (W x H) photo trained at 64: scale 2/3 -> 85 x 64, centre crop from x = 10
    Image.new("RGB", (128, 96), (200, 10, 10)).save(tmp_path / "wide.png")
    right = coco_keypoints_for_person((100.0, 30.0), 6.0)
    left = coco_keypoints_for_person((40.0, 30.0), 6.0)
    np.save(tmp_path / "kps.npy", np.stack([right, left]))  # listed right person first
    embeds = np.stack([np.full(16, 1.0), np.full(16, -1.0)]).astype(np.float32)
    np.save(tmp_path / "emb.npy", embeds)
    row = {"image": "wide.png", "caption": "two", "keypoints": "kps.npy", "face_embeddings": "emb.npy"}
    sample = IDPatchDataset(_jsonl(tmp_path / "m.jsonl", [row]), resolution=64, face_dim=16)[0]
    sx, sy, left_offset = 85 / 128, 64 / 96, 10
    expected = torch.tensor([[40 * sx - left_offset, 30 * sy], [100 * sx - left_offset, 30 * sy]])
    torch.testing.assert_close(sample["face_locations"], expected)
    # the embeddings follow their people into left-to-right order
    assert torch.equal(sample["face_embeds"], torch.from_numpy(embeds[[1, 0]]))
    assert sample["time_ids"].tolist() == [96.0, 128.0, 0.0, 10.0, 64.0, 64.0]
    kps = np.stack([left, right]).astype(np.float64)
    kps[..., 0] = kps[..., 0] * sx - left_offset
    kps[..., 1] = kps[..., 1] * sy
    torch.testing.assert_close(sample["pose_image"], draw_pose(kps.astype(np.float32), 64, 64))


def test_positions_only_per_person_files_and_box_anchor(tmp_path: Path) -> None:
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    for i in range(2):
        np.save(tmp_path / f"p{i}.npy", np.full((1, 16), float(i + 1), dtype=np.float32))
    row = {
        "image": "a.png",
        "caption": "",
        "keypoints": [[50.0, 20.0], [10.0, 30.0]],
        "face_embeddings": ["p0.npy", "p1.npy"],
        "boxes": [[40, 10, 60, 34], [2, 20, 22, 36]],
    }
    manifest = _jsonl(tmp_path / "m.jsonl", [row])
    sample = IDPatchDataset(manifest, resolution=64)[0]
    assert sample["pose_image"].abs().sum() == 0  # no body keypoints: black pose
    torch.testing.assert_close(sample["face_locations"], torch.tensor([[10.0, 30.0], [50.0, 20.0]]))
    assert sample["face_embeds"][:, 0].tolist() == [2.0, 1.0]
    boxed = IDPatchDataset(manifest, resolution=64, face_anchor="bbox_center")[0]
    torch.testing.assert_close(boxed["face_locations"], torch.tensor([[12.0, 28.0], [50.0, 22.0]]))


def test_face_crops_through_a_frozen_encoder(tmp_path: Path) -> None:
    manifest = write_synthetic_manifest(tmp_path, num_images=2, faces_per_image=(2,), with_crops=True)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for row in rows:
        del row["face_embeddings"]
    manifest = _jsonl(tmp_path / "crops.jsonl", rows)
    with pytest.raises(ManifestError, match=r"row 0, column 'face_crops'.*no face_encoder"):
        IDPatchDataset(manifest, resolution=64)[0]
    encoder = tiny_face_encoder(0)
    dataset = IDPatchDataset(manifest, resolution=64, face_dim=16, face_encoder=encoder)
    dataset.validate()
    sample = dataset[1]
    crops = [np.asarray(Image.open(tmp_path / name).convert("RGB")) for name in rows[1]["face_crops"]]
    expected = encoder.encode_subjects(crops).embeds
    order = [0, 1] if sample["face_locations"][0, 0] <= sample["face_locations"][1, 0] else [1, 0]
    torch.testing.assert_close(sample["face_embeds"], expected[order])
    with pytest.raises(ManifestError, match="face_dim=8"):
        IDPatchDataset(manifest, resolution=64, face_dim=8, face_encoder=encoder)[0]


def test_errors_name_row_and_column(tmp_path: Path) -> None:
    manifest = write_synthetic_manifest(tmp_path, num_images=5, faces_per_image=(2,))
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    np.save(tmp_path / "five.npy", np.stack([coco_keypoints_for_person((10.0 * i + 5, 20.0), 2.0) for i in range(5)]))
    rows[0]["keypoints"] = "five.npy"
    np.save(tmp_path / "three.npy", np.ones((3, 16), np.float32))
    rows[1]["face_embeddings"] = "three.npy"
    np.save(tmp_path / "wide.npy", np.ones((2, 12), np.float32))
    rows[2]["face_embeddings"] = "wide.npy"
    rows[3]["image"] = "missing.png"
    rows[4]["keypoints"] = [[[-50.0, -50.0, 1.0]] * 17, [[-40.0, 500.0, 1.0]] * 17]
    dataset = IDPatchDataset(_jsonl(tmp_path / "bad.jsonl", rows), resolution=64, face_dim=16)
    with pytest.raises(ManifestError) as info:
        dataset.validate()
    message = str(info.value)
    assert "row 3, column 'image': file not found" in message  # genblocks' checks come first
    problems = []
    for index in (0, 1, 2, 4):
        with pytest.raises(ManifestError) as error:
            dataset[index]
        problems.append(str(error.value))
    assert "row 0, column 'keypoints': 5 people; expected 1 to 4" in problems[0]
    assert "row 1, column 'face_embeddings': 3 faces, but column 'keypoints' lists 2 people" in problems[1]
    assert "row 2, column 'face_embeddings': embeddings are 12-d, the model expects face_dim=16" in problems[2]
    assert "row 4, column 'keypoints': no face position falls inside the 64x64 crop" in problems[3]
    del rows[3]["image"]
    with pytest.raises(ManifestError, match="row 3, column 'image': column missing"):
        IDPatchDataset(_jsonl(tmp_path / "bad2.jsonl", rows), resolution=64)[3]


def test_face_outside_the_crop_is_dropped(tmp_path: Path) -> None:
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    np.save(tmp_path / "e.npy", np.eye(2, 16, dtype=np.float32))
    row = {"image": "a.png", "caption": "x", "keypoints": [[30.0, 30.0], [80.0, 10.0]], "face_embeddings": "e.npy"}
    sample = IDPatchDataset(_jsonl(tmp_path / "m.jsonl", [row]), resolution=64)[0]
    assert sample["face_locations"].tolist() == [[30.0, 30.0]]
    assert torch.equal(sample["face_embeds"], torch.eye(2, 16)[:1])


def test_face_count_batch_sampler() -> None:
    counts = [1, 2, 2, 1, 3, 2, 1, 2]
    sampler = FaceCountBatchSampler(counts, batch_size=2, seed=4)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5  # ones: 2 + 1, twos: 2, three: 1
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert all(len({counts[i] for i in b}) == 1 for b in batches)
    assert list(sampler) == batches  # same epoch, same order
    sampler.set_epoch(1)
    assert list(sampler) != batches
    fixed = FaceCountBatchSampler(counts, batch_size=2, shuffle=False, drop_last=True)
    assert list(fixed) == [[0, 3], [1, 2], [5, 7]] and len(fixed) == 3


def test_datamodule_batches_share_a_face_count(tmp_path: Path) -> None:
    manifest = write_synthetic_manifest(tmp_path, num_images=6, faces_per_image=(1, 2, 3))
    data = IDPatchDataModule(str(manifest), resolution=64, batch_size=2, face_dim=16, val_fraction=0.34, seed=1)
    data.setup("fit")
    assert data.face_counts == [1, 2, 3, 1, 2, 3]
    assert len(data.val_set) == 2 and len(data.train_set) == 4
    for batch in data.train_dataloader():
        faces = batch["face_embeds"].shape[1]
        assert batch["face_locations"].shape == (len(batch["caption"]), faces, 2)
    assert sum(len(b["caption"]) for b in data.val_dataloader()) == 2
    with pytest.raises(ValueError, match="faces_per_image"):
        write_synthetic_manifest(tmp_path / "x", faces_per_image=(5,))
