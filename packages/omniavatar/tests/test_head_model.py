"""Head models: the procedural head's bases, FLAME files read without chumpy/scipy or running code, LBS."""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from genblocks.errors import InputError
from omniavatar.config import FlameLayout
from omniavatar.head_model import (
    FlameHead,
    HeadModel,
    ProceduralHead,
    load_flame,
    mesh_signed_distance,
)


def test_procedural_head_is_a_head_model(head: ProceduralHead) -> None:
    assert isinstance(head, HeadModel)
    params = torch.zeros(2, head.layout.feature_dim)
    assert torch.equal(head.vertices(params), head.template.expand(2, -1, -1))
    assert head.landmarks(head.vertices(params)).shape == (2, 68, 3)


def test_jaw_moves_only_the_lower_region(head: ProceduralHead) -> None:
    params = torch.zeros(1, head.layout.feature_dim)
    moved = params.clone()
    moved[0, -3:] = torch.tensor([0.3, 0.1, -0.2])
    delta = (head.vertices(moved) - head.vertices(params)).norm(dim=-1)[0]
    assert delta[~head.lower_region].max() == 0
    assert delta[head.lower_region].max() > 0.005


def test_shape_expression_and_neck_change_the_mesh(head: ProceduralHead) -> None:
    layout = head.layout
    base = head.vertices(torch.zeros(1, layout.feature_dim))
    for column in (0, layout.shape, layout.shape + layout.expression):
        params = torch.zeros(1, layout.feature_dim)
        params[0, column] = 1.0
        assert (head.vertices(params) - base).abs().max() > 1e-3


def test_bad_parameter_size_names_the_layout(head: ProceduralHead) -> None:
    with pytest.raises(InputError, match=r"shape 10 \| expression 10 \| neck 3 \| jaw 3"):
        head.vertices(torch.zeros(1, 7))


def test_signed_distance_sign(head: ProceduralHead) -> None:
    points = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.3]]])
    sdf = mesh_signed_distance(points, head.template[None], head.faces)[0, :, 0]
    assert sdf[0] < -0.05 and sdf[1] > 0.15


def test_head_signed_distance_is_the_posed_mesh_distance(head: ProceduralHead) -> None:
    params = torch.zeros(2, head.layout.feature_dim)
    params[1, -3] = 0.4  # open the jaw of the second head
    points = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.3], [0.0, -0.12, 0.05]]).expand(2, -1, -1)
    sdf = head.signed_distance(points, params)
    assert sdf.shape == (2, 3, 1)
    assert torch.equal(sdf, mesh_signed_distance(points, head.vertices(params), head.faces))
    assert sdf[0, 0, 0] < -0.05 and sdf[0, 1, 0] > 0.15  # the centre is inside, a point 0.3 in front outside
    assert torch.equal(sdf[:, :2], sdf[:1, :2].expand(2, -1, -1))  # the jaw moves nothing near these points
    assert sdf[0, 2, 0] > 0.005 and sdf[1, 2, 0] < -0.005  # but the opened jaw covers a point below the chin


def test_flame_signed_distance_sign(tmp_path: Path, head: ProceduralHead) -> None:
    arrays = _tiny_flame_arrays(vertices=len(head.template))
    arrays["v_template"], arrays["f"] = head.template.numpy(), head.faces.numpy()  # a closed ellipsoid
    np.savez(tmp_path / "flame.npz", **arrays)
    flame = FlameHead(load_flame(tmp_path / "flame.npz"), FlameLayout(shape=4, expression=3))
    params = torch.zeros(1, flame.layout.feature_dim)
    params[0, 0] = 1.0
    points = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.3]]])
    sdf = flame.signed_distance(points, params)
    assert torch.equal(sdf, mesh_signed_distance(points, flame.vertices(params), flame.faces))
    assert sdf[0, 0, 0] < -0.05 and sdf[0, 1, 0] > 0.15


def _tiny_flame_arrays(vertices: int = 12, joints: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.RandomState(0)
    kintree = np.array([[-1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)
    weights = rng.rand(vertices, joints)
    return {
        "v_template": rng.randn(vertices, 3) * 0.1,
        "shapedirs": rng.randn(vertices, 3, 400) * 1e-3,
        "posedirs": rng.randn(vertices, 3, 36) * 1e-3,
        "J_regressor": rng.rand(joints, vertices) / vertices,
        "kintree_table": kintree,
        "weights": weights / weights.sum(1, keepdims=True),
        "f": rng.randint(0, vertices, size=(8, 3)).astype(np.int64),
    }


class _Ch:
    """Stands for chumpy.ch.Ch: pickled through copy_reg with its array in ``x``."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x


class _CscMatrix:
    """Stands for scipy.sparse.csc.csc_matrix (its pickled state)."""

    def __init__(self, dense: np.ndarray) -> None:
        rows, cols = dense.shape
        data, indices, indptr = [], [], [0]
        for c in range(cols):
            nz = np.nonzero(dense[:, c])[0]
            data.extend(dense[nz, c])
            indices.extend(nz)
            indptr.append(len(data))
        self.data, self.indices, self.indptr = np.array(data), np.array(indices), np.array(indptr)
        self._shape = (rows, cols)


def _write_flame_pickle(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A protocol-2 pickle in FLAME's layout: chumpy arrays, a csc J_regressor, plain arrays for the rest."""
    modules = {name: types.ModuleType(name) for name in ("chumpy", "chumpy.ch", "scipy_stub", "scipy_stub.sparse")}
    _Ch.__module__, _Ch.__qualname__ = "chumpy.ch", "Ch"
    _CscMatrix.__module__, _CscMatrix.__qualname__ = "scipy_stub.sparse", "csc_matrix"
    modules["chumpy.ch"].Ch = _Ch  # type: ignore[attr-defined]
    modules["scipy_stub.sparse"].csc_matrix = _CscMatrix  # type: ignore[attr-defined]
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        data = {
            "v_template": _Ch(arrays["v_template"]),
            "shapedirs": _Ch(arrays["shapedirs"]),
            "posedirs": arrays["posedirs"],
            "J_regressor": _CscMatrix(arrays["J_regressor"]),
            "kintree_table": arrays["kintree_table"],
            "weights": _Ch(arrays["weights"]),
            "f": arrays["f"],
            "bs_style": "lbs",
        }
        path.write_bytes(pickle.dumps(data, protocol=2))
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def test_flame_pickle_read_without_chumpy(tmp_path: Path) -> None:
    arrays = _tiny_flame_arrays()
    path = tmp_path / "generic_model.pkl"
    _write_flame_pickle(path, arrays)
    assert "chumpy" not in sys.modules
    loaded = load_flame(path)
    for key, value in arrays.items():
        np.testing.assert_allclose(getattr(loaded, key), value, rtol=1e-6, atol=1e-7)
    npz = tmp_path / "flame.npz"
    np.savez(npz, **arrays)
    np.testing.assert_allclose(load_flame(npz).J_regressor, arrays["J_regressor"], rtol=1e-6)


def test_flame_head_lbs(tmp_path: Path) -> None:
    arrays = _tiny_flame_arrays()
    np.savez(tmp_path / "flame.npz", **arrays)
    layout = FlameLayout(shape=4, expression=3)
    flame = FlameHead(load_flame(tmp_path / "flame.npz"), layout)
    zero = torch.zeros(1, layout.feature_dim)
    np.testing.assert_allclose(flame.vertices(zero)[0].numpy(), arrays["v_template"], atol=1e-6)
    params = zero.clone()
    params[0, 0], params[0, 4] = 1.0, 1.0
    expected = arrays["v_template"] + arrays["shapedirs"][..., 0] + arrays["shapedirs"][..., 300]
    np.testing.assert_allclose(flame.vertices(params)[0].numpy(), expected, atol=1e-6)
    jaw = zero.clone()
    jaw[0, -3:] = torch.tensor([0.2, 0.0, 0.0])
    assert (flame.vertices(jaw) - flame.vertices(zero)).abs().max() > 1e-4


def test_not_flame_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": np.zeros(3)}, protocol=2))
    with pytest.raises(InputError, match="not FLAME, missing"):
        load_flame(path)
    (tmp_path / "text.pkl").write_text("hello")
    with pytest.raises(InputError, match="not a FLAME pickle"):
        load_flame(tmp_path / "text.pkl")
