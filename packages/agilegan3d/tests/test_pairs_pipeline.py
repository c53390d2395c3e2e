"""Pair synthesis (exact re-render, resume), inference shapes, style folders, configs, the EG3D pickle as the start,
the camera estimate."""

from __future__ import annotations

import copy
import json
import math
import pickle
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from agilegan3d.config import AgileGAN3DConfig, load_preset
from agilegan3d.convert_agilegan3d_original import convert_eg3d
from agilegan3d.demo import random_pipeline
from agilegan3d.modeling_agilegan3d import StylePrior, build_g3d, toon_filter
from agilegan3d.pairs import PairDataset, pair_draw, synthesize_pairs
from agilegan3d.pipeline_agilegan3d import AgileGAN3DPipeline, orbit_cameras, read_style_config
from genblocks.errors import InputError
from genblocks.gan import DualDiscriminator
from genblocks.media import read_image, to_uint8
from genblocks.render3d import estimate_camera
from genblocks.render3d.pose import GENERIC_FACE_POINTS, LANDMARK_68_INDICES, project_points


def test_pair_tuples_rerender_exactly_and_resume(tiny: AgileGAN3DConfig, tmp_path: Path) -> None:
    g3d = build_g3d(tiny.g3d)
    config = tiny.pairs
    folder = synthesize_pairs(g3d, StylePrior("toon"), config, tmp_path / "pairs")
    data = PairDataset(folder)
    assert len(data) == config.n == 8
    for index in (0, 5):
        item = data[index]
        assert item["image"].shape == item["real"].shape == (3, 32, 32)
        assert item["ws"].shape == (g3d.num_ws, g3d.w_dim) and item["c"].shape == (25,)
        with torch.no_grad():
            again = g3d.synthesis(item["ws"][None], item["c"][None], noise_mode="const")["image"]
        stored = read_image(folder / f"{index:05d}_real.png").astype(int)
        assert np.abs(to_uint8(again[0]).astype(int) - stored).max() <= 1  # G3D(w, c) is the stored real face
        styled = read_image(folder / f"{index:05d}.png").astype(int)
        expected = to_uint8(toon_filter(torch.from_numpy(stored).permute(2, 0, 1)[None].float() / 127.5 - 1)[0])
        assert np.abs(styled - expected.astype(int)).mean() < 8  # x_sty is the prior of x_real (up to PNG rounding)
        _, yaw, pitch = pair_draw(config, index, g3d.z_dim)
        assert abs(yaw) <= config.yaw and abs(pitch) <= config.pitch
    # resume: a deleted tuple is drawn again identically, finished ones are not rewritten
    before = (folder / "00003.png").read_bytes()
    kept = (folder / "00001.npz").stat().st_mtime_ns
    (folder / "00003.npz").unlink()
    (folder / "00003.png").unlink()
    synthesize_pairs(g3d, StylePrior("toon"), config, folder)
    assert (folder / "00003.png").read_bytes() == before
    assert (folder / "00001.npz").stat().st_mtime_ns == kept


def test_inference_renders_n_cameras(tiny: AgileGAN3DConfig) -> None:
    pipe = random_pipeline(tiny)
    out = pipe(torch.rand(1, 3, 32, 32) * 2 - 1, cameras=orbit_cameras(3))
    assert out.images.shape == (1, 3, 3, 32, 32)
    assert out.depths.shape == (1, 3, 1, 16, 16)
    assert out.ws.shape == (1, 8, 32)
    assert not torch.equal(out.images[0, 0], out.images[0, 1])  # different cameras, different views
    refined = pipe(torch.rand(1, 3, 32, 32) * 2 - 1, cameras=orbit_cameras(2), optimize_steps=2)
    assert refined.images.shape == (1, 2, 3, 32, 32)


def test_style_folder_round_trip_and_version_check(tiny: AgileGAN3DConfig, tmp_path: Path) -> None:
    pipe = random_pipeline(tiny)
    folder = pipe.save_pretrained(tmp_path / "style", exemplar_hashes=["abc"])
    payload = json.loads((folder / "config.json").read_text())
    assert payload["style"] == "tiny-toon" and payload["exemplar_hashes"] == ["abc"]
    assert read_style_config(folder) == tiny  # the stage settings round-trip through config.json
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(AgileGAN3DPipeline.from_pretrained(folder)(image).images, pipe(image).images)
    payload["format"] = "agilegan3d-style/0"
    (folder / "config.json").write_text(json.dumps(payload))
    with pytest.raises(InputError, match="another version"):
        AgileGAN3DPipeline.from_pretrained(folder)


def test_configs_load_and_refuse_unknown_keys() -> None:
    paper = load_preset("paper")
    assert (paper.pairs.n, paper.pairs.yaw, paper.pairs.pitch) == (20000, 0.6, 0.3)
    assert paper.g3d.img_resolution == 512 and paper.g3d.superresolution == "hybrid8xdc"
    assert paper.prior.freeze_layers == (4, 8, 16) and paper.transfer.freeze_mapping
    assert (paper.encoder.l2, paper.encoder.lpips, paper.encoder.id, paper.encoder.latent, paper.encoder.mv) == (
        1.0,
        0.8,
        0.1,
        0.01,
        1.0,
    )
    with pytest.raises(InputError, match=r"transfer\.lpipz"):
        load_preset("tiny", ["transfer.lpipz=1"])
    with pytest.raises(InputError, match="method"):
        load_preset("tiny", ["prior.method=cyclegan"])


PERSISTENCE = """
def _reconstruct_persistent_obj(meta):
    raise RuntimeError("pickled code ran")


class Persistent:
    def __init__(self, module, class_name):
        self.module, self.class_name = module, class_name

    def __reduce__(self):
        state = dict(self.module.__dict__)
        state["_init_args"], state["_init_kwargs"] = (), {}
        meta = dict(type="class", version=4, module_src="raise RuntimeError('source ran')", class_name=self.class_name,
                    state=state)
        return (_reconstruct_persistent_obj, (meta,))
"""


@pytest.fixture
def persistence(tmp_path: Path) -> Iterator[object]:
    """A throw-away ``torch_utils.persistence`` that pickles modules the way NVIDIA's does (and traps if executed)."""
    package = tmp_path / "site" / "torch_utils"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "persistence.py").write_text(textwrap.dedent(PERSISTENCE))
    sys.path.insert(0, str(package.parent))
    import torch_utils.persistence as module

    yield module
    sys.path.remove(str(package.parent))
    for name in [n for n in sys.modules if n.startswith("torch_utils")]:
        del sys.modules[name]


def test_official_eg3d_pickle_is_the_starting_generator(
    persistence: object, tiny: AgileGAN3DConfig, tmp_path: Path
) -> None:
    trained = build_g3d(dataclass_replace(tiny, seed=7).g3d)
    with torch.no_grad():
        next(trained.parameters()).add_(1.0)
    networks = {
        "G": trained,
        "G_ema": copy.deepcopy(trained),
        "D": DualDiscriminator(32, channel_base=256, channel_max=32),
    }
    wrapped = {name: persistence.Persistent(net, type(net).__name__) for name, net in networks.items()}  # type: ignore[attr-defined]
    path = tmp_path / "network-snapshot.pkl"
    path.write_bytes(pickle.dumps(wrapped, protocol=4))
    with pytest.raises(RuntimeError, match="ran"):
        pickle.loads(path.read_bytes())  # the trap is real
    loaded = build_g3d(tiny.g3d, weights=path)
    for (name, a), b in zip(trained.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    report = convert_eg3d(path, tmp_path / "converted", tiny.g3d)
    assert report["missing"] == report["unexpected"] == report["shape_mismatch"] == []
    from_safetensors = build_g3d(tiny.g3d, weights=tmp_path / "converted" / "g3d.safetensors")
    assert torch.equal(next(from_safetensors.parameters()), next(trained.parameters()))
    wrong = dataclass_replace(tiny, g3d_plane_channels=16).g3d
    with pytest.raises(InputError, match="do not fit"):
        convert_eg3d(path, tmp_path / "bad", wrong)


def dataclass_replace(
    config: AgileGAN3DConfig, seed: int | None = None, g3d_plane_channels: int | None = None
) -> AgileGAN3DConfig:
    import dataclasses

    g3d = config.g3d
    if seed is not None:
        g3d = dataclasses.replace(g3d, seed=seed)
    if g3d_plane_channels is not None:
        g3d = dataclasses.replace(g3d, plane_channels=g3d_plane_channels)
    return dataclasses.replace(config, g3d=g3d)


@pytest.mark.parametrize("yaw", [-0.4, 0.0, 0.3])
def test_camera_estimate_recovers_a_known_yaw(yaw: float) -> None:
    """Landmarks of the generic head seen from a known camera (in a 512-px image) give back its yaw within 0.02 rad."""
    points = project_points(GENERIC_FACE_POINTS, torch.tensor([yaw]), torch.tensor([0.1]))[0] * 512
    landmarks = torch.zeros(68, 2) + points.mean(dim=0)
    landmarks[list(LANDMARK_68_INDICES)] = points
    camera, found_yaw, found_pitch = estimate_camera(landmarks)
    assert camera.shape == (25,)
    assert abs(found_yaw - yaw) < 0.02 and abs(found_pitch - 0.1) < 0.03
    assert math.isfinite(found_yaw)
