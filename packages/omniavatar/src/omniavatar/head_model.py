"""Parametric head models behind OmniAvatar's geometry prior: a :class:`HeadModel` protocol (shape, expression, neck and
jaw pose -> vertices, landmarks, signed distance), a :class:`ProceduralHead` for tests and demos, and a FLAME loader
for users who have the MPI-licensed files (never bundled).

**FLAME files** (Li et al., "Learning a model of facial shape and expression from 4D scans", SIGGRAPH Asia 2017).
``generic_model.pkl`` is a Python 2 pickle of chumpy arrays and a ``scipy.sparse`` matrix. :func:`load_flame` reads it
with a restricted unpickler: only numpy's array rebuilders are resolved; every other class (chumpy's ``Ch``, scipy's
``csc_matrix``, ``copy_reg._reconstructor``) becomes an inert record whose state is read as data. Nothing is imported
from the file and no code in it runs, so neither chumpy nor scipy is needed. The ``.npz`` form holds the same arrays.
Keys used: ``v_template`` (V, 3), ``shapedirs`` (V, 3, 300 + 100), ``posedirs`` (V, 3, 36), ``J_regressor`` (5, V),
``kintree_table`` (2, 5), ``weights`` (V, 5), ``f`` (F, 3). The layout takes the first ``shape`` of the 300 shape
components and the first ``expression`` of the 100 expression ones (spec §3, as the authors).

**Procedural head** (spec §9): an ellipsoid template (radii 0.1, 0.13, 0.1) meshed as a UV sphere, random smooth
shape and expression displacements along the normal, and linearised rotations for the pose: the neck turns the whole
head about a point below it, the jaw turns only the lower region (``y < jaw_height``), so a jaw change moves nothing
above that height.
"""

from __future__ import annotations

import math
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from genblocks.errors import InputError
from omniavatar.config import FlameLayout

__all__ = [
    "FLAME_KEYS",
    "FlameArrays",
    "FlameHead",
    "HeadModel",
    "ProceduralHead",
    "load_flame",
    "mesh_signed_distance",
    "sample_surface",
    "vertex_normals",
]

FLAME_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights", "f")
"""The arrays a FLAME file must hold."""

_FLAME_EXPRESSION_TOTAL = 100
"""Expression components of FLAME 2017-2020: the last 100 columns of ``shapedirs`` (the shape ones come first)."""


@runtime_checkable
class HeadModel(Protocol):
    """A parametric head: the 3DMM feature vector F (:class:`~omniavatar.config.FlameLayout`) -> geometry.

    Attributes:
        layout: The feature layout.
        faces: Triangles (T, 3), int64.
        template: Neutral vertices (V, 3).
    """

    layout: FlameLayout
    faces: Tensor
    template: Tensor

    def vertices(self, params: Tensor) -> Tensor:
        """Vertices (N, V, 3) of parameters (N, F)."""
        ...

    def landmarks(self, vertices: Tensor) -> Tensor:
        """Landmarks (N, L, 3) of vertices (N, V, 3)."""
        ...

    def signed_distance(self, points: Tensor, params: Tensor) -> Tensor:
        """Signed distance (N, P, 1) of points (N, P, 3) to the heads of parameters (N, F): negative inside, positive
        outside (the convention of :func:`mesh_signed_distance` and of the semantic SDF's s)."""
        ...


def _check_params(params: Tensor, layout: FlameLayout) -> None:
    if params.dim() != 2 or params.shape[1] != layout.feature_dim:
        raise InputError(
            f"head parameters: expected shape (N, {layout.feature_dim}) laid out as {layout.describe()}, "
            f"got {tuple(params.shape)}"
        )


def _split(params: Tensor, layout: FlameLayout) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    a, b = layout.shape, layout.shape + layout.expression
    return params[:, :a], params[:, a:b], params[:, b : b + 3], params[:, b + 3 : b + 6]


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals (N, V, 3) of vertices (N, V, 3) and triangles (T, 3)."""
    a, b, c = (vertices[:, faces[:, k]] for k in range(3))
    face_normals = torch.linalg.cross(b - a, c - a, dim=-1)
    normals = torch.zeros_like(vertices)
    for k in range(3):
        normals.index_add_(1, faces[:, k], face_normals)
    return normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def sample_surface(
    vertices: Tensor, faces: Tensor, count: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Area-weighted random surface points of a batch of meshes that share their triangles.

    Args:
        vertices (`torch.Tensor` of shape `(N, V, 3)`).
        faces (`torch.Tensor` of shape `(T, 3)`).
        count (`int`): points per mesh.
        generator (`torch.Generator`, *optional*).

    Returns:
        `(face_index (N, count), barycentric (N, count, 3), points (N, count, 3))`; the same face index and
        barycentric weights applied to another mesh of the same topology give the corresponding points.
    """
    a, b, c = (vertices[:, faces[:, k]] for k in range(3))
    areas = torch.linalg.cross(b - a, c - a, dim=-1).norm(dim=-1)
    index = torch.multinomial(areas, count, replacement=True, generator=generator)
    u = torch.rand(vertices.shape[0], count, 2, generator=generator, dtype=vertices.dtype)
    flip = u.sum(-1, keepdim=True) > 1
    u = torch.where(flip, 1 - u, u)
    bary = torch.cat([1 - u.sum(-1, keepdim=True), u], dim=-1)
    return index, bary, barycentric_points(vertices, faces, index, bary)


def barycentric_points(vertices: Tensor, faces: Tensor, index: Tensor, bary: Tensor) -> Tensor:
    """Points (N, P, 3) at barycentric weights `bary` (N, P, 3) of triangles `index` (N, P) of each mesh."""
    corners = faces[index]  # (N, P, 3)
    gathered = torch.stack(
        [torch.gather(vertices, 1, corners[..., k : k + 1].expand(-1, -1, 3)) for k in range(3)], dim=2
    )
    return (gathered * bary.unsqueeze(-1)).sum(dim=2)


def mesh_signed_distance(points: Tensor, vertices: Tensor, faces: Tensor, chunk: int = 4096) -> Tensor:
    """Approximate signed distance (N, P, 1) of points (N, P, 3) to closed meshes (N, V, 3): the distance to the
    nearest vertex, negative when the point lies behind that vertex's normal (accurate near dense meshes)."""
    normals = vertex_normals(vertices, faces)
    out = []
    for start in range(0, points.shape[1], chunk):
        part = points[:, start : start + chunk]
        distance = torch.cdist(part, vertices)
        nearest = distance.argmin(dim=-1)
        near_vertices = torch.gather(vertices, 1, nearest.unsqueeze(-1).expand(-1, -1, 3))
        near_normals = torch.gather(normals, 1, nearest.unsqueeze(-1).expand(-1, -1, 3))
        offset = part - near_vertices
        sign = torch.sign((offset * near_normals).sum(-1, keepdim=True))
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        out.append(sign * offset.norm(dim=-1, keepdim=True))
    return torch.cat(out, dim=1)


class _MeshSignedDistance:
    """:meth:`HeadModel.signed_distance` of a head from its own mesh, by :func:`mesh_signed_distance`."""

    faces: Tensor

    def vertices(self, params: Tensor) -> Tensor:
        raise NotImplementedError

    def signed_distance(self, points: Tensor, params: Tensor) -> Tensor:
        """Approximate signed distance (N, P, 1) of points (N, P, 3) to the meshes of parameters (N, F): negative
        inside, positive outside (:func:`mesh_signed_distance` on :meth:`vertices`)."""
        vertices = self.vertices(params)
        return mesh_signed_distance(points.to(vertices), vertices, self.faces)


def _uv_sphere(rings: int, segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit UV sphere: two poles plus ``rings - 1`` latitude rings of ``segments`` vertices, outward-wound faces."""
    vertices = [(0.0, 1.0, 0.0)]
    for i in range(1, rings):
        theta = math.pi * i / rings
        for j in range(segments):
            phi = 2 * math.pi * j / segments
            vertices.append((math.sin(theta) * math.sin(phi), math.cos(theta), math.sin(theta) * math.cos(phi)))
    vertices.append((0.0, -1.0, 0.0))
    faces = []
    bottom = len(vertices) - 1

    def ring(i: int, j: int) -> int:
        return 1 + (i - 1) * segments + (j % segments)

    for j in range(segments):
        faces.append((0, ring(1, j), ring(1, j + 1)))
    for i in range(1, rings - 1):
        for j in range(segments):
            a, b, c, d = ring(i, j), ring(i, j + 1), ring(i + 1, j), ring(i + 1, j + 1)
            faces.append((a, c, b))
            faces.append((b, c, d))
    for j in range(segments):
        faces.append((bottom, ring(rings - 1, j + 1), ring(rings - 1, j)))
    return np.asarray(vertices, dtype=np.float32), np.asarray(faces, dtype=np.int64)


def _axis_displacements(points: Tensor, pivot: Tensor, weight: Tensor) -> Tensor:
    """Linearised rotations about the x, y, z axes through `pivot`: (V, 3, 3), column k = weight · e_k × (p − pivot)."""
    arm = points - pivot
    columns = [weight[:, None] * torch.linalg.cross(torch.eye(3)[k].expand_as(arm), arm, dim=-1) for k in range(3)]
    return torch.stack(columns, dim=-1)


class ProceduralHead(_MeshSignedDistance):
    """A FLAME stand-in: ellipsoid template plus random linear shape, expression and pose bases (module docstring).

    Args:
        layout (`FlameLayout`): feature layout (the tiny config uses 10 shape + 10 expression + 3 + 3).
        radii (`tuple[float, float, float]`, defaults to `(0.1, 0.13, 0.1)`): ellipsoid semi-axes (x, y, z).
        rings, segments (`int`): UV-sphere resolution.
        jaw_height (`float`, defaults to -0.02): the jaw moves only vertices below this height.
        scale (`float`, defaults to 0.006): displacement of one unit of a shape or expression coefficient.
        seed (`int`, defaults to 0): seed of the random bases.
    """

    def __init__(
        self,
        layout: FlameLayout,
        radii: tuple[float, float, float] = (0.1, 0.13, 0.1),
        rings: int = 16,
        segments: int = 24,
        jaw_height: float = -0.02,
        scale: float = 0.006,
        seed: int = 0,
    ) -> None:
        self.layout = layout
        self.radii = radii
        self.jaw_height = jaw_height
        unit, faces = _uv_sphere(rings, segments)
        self.faces = torch.from_numpy(faces)
        self.template = torch.from_numpy(unit) * torch.tensor(radii)
        normals = vertex_normals(self.template[None], self.faces)[0]
        generator = torch.Generator().manual_seed(seed)

        def smooth_fields(count: int, mask: Tensor) -> Tensor:
            frequency = torch.randn(count, 3, generator=generator) * 12.0
            phase = torch.rand(count, generator=generator) * 2 * math.pi
            values = torch.sin(self.template @ frequency.T + phase) * mask[:, None]
            return normals[:, :, None] * values[:, None, :] * scale  # (V, 3, count)

        self.shape_basis = smooth_fields(layout.shape, torch.ones(len(self.template)))
        front = (self.template[:, 2] > -0.02).float()
        self.expression_basis = smooth_fields(layout.expression, front)
        y = self.template[:, 1]
        self.lower_region = y < jaw_height
        jaw_weight = ((jaw_height - y) / 0.03).clamp(0, 1)
        self.jaw_basis = _axis_displacements(self.template, torch.tensor([0.0, jaw_height, -0.03]), jaw_weight)
        self.neck_basis = _axis_displacements(self.template, torch.tensor([0.0, -0.2, 0.0]), torch.ones_like(y))
        self.landmark_index = torch.linspace(0, len(self.template) - 1, 68).long()

    def vertices(self, params: Tensor) -> Tensor:
        """Vertices (N, V, 3): template + shape, expression, neck and jaw displacements, all linear in ``params``."""
        _check_params(params, self.layout)
        shape, expression, neck, jaw = _split(params.float(), self.layout)
        offsets = (
            torch.einsum("vck,nk->nvc", self.shape_basis, shape)
            + torch.einsum("vck,nk->nvc", self.expression_basis, expression)
            + torch.einsum("vck,nk->nvc", self.neck_basis, neck)
            + torch.einsum("vck,nk->nvc", self.jaw_basis, jaw)
        )
        return self.template.to(offsets) + offsets

    def landmarks(self, vertices: Tensor) -> Tensor:
        """68 fixed vertices (N, 68, 3), a stand-in for FLAME's landmark embedding."""
        return vertices[:, self.landmark_index]

    def template_sdf(self, points: Tensor) -> Tensor:
        """Approximate signed distance (..., 1) to the template ellipsoid: (‖p / r‖ − 1) · min(r)."""
        radii = torch.tensor(self.radii, dtype=points.dtype, device=points.device)
        return ((points / radii).norm(dim=-1, keepdim=True) - 1) * radii.min()


@dataclass
class FlameArrays:
    """The arrays of a FLAME model file, as float32 / int64 numpy arrays (module docstring for their shapes)."""

    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    kintree_table: np.ndarray
    weights: np.ndarray
    f: np.ndarray


class _Record:
    """An inert stand-in for a class the FLAME unpickler does not resolve (chumpy ``Ch``, scipy sparse matrices)."""

    qualified_name = ""

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _reconstructor(cls: Any, base: Any = None, state: Any = None) -> Any:
    """``copy_reg._reconstructor`` without running anything: an instance of the stand-in class."""
    if isinstance(cls, type) and issubclass(cls, _Record):
        return cls()
    raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r}")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """How protocol-2 pickles written by Python 3 store ``bytes``."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _FlameUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return _reconstructor
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
            try:
                import numpy._core.multiarray as multiarray
            except ImportError:  # numpy 1.x
                import numpy.core.multiarray as multiarray  # type: ignore[no-redef]
            return getattr(multiarray, name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module in ("__builtin__", "builtins") and name == "object":
            return object
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        return type(name, (_Record,), {"qualified_name": f"{module}.{name}"})


def _as_array(value: Any, key: str, path: Path) -> np.ndarray:
    """A numpy array from a plain array, a chumpy record (its ``x``) or a scipy sparse record (made dense)."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, _Record) and isinstance(value.state, dict):
        state = value.state
        if "x" in state:
            return _as_array(state["x"], key, path)
        if {"data", "indices", "indptr"} <= set(state):
            shape = state.get("_shape", state.get("shape"))
            if shape is None:
                raise InputError(f"FLAME model {path}: {key!r} is a sparse matrix without a shape")
            rows, cols = (int(v) for v in shape)
            dense = np.zeros((rows, cols), dtype=np.float64)
            data, indices, indptr = (np.asarray(state[k]) for k in ("data", "indices", "indptr"))
            compressed_columns = "csc" in value.qualified_name
            for outer in range(len(indptr) - 1):
                for position in range(indptr[outer], indptr[outer + 1]):
                    if compressed_columns:
                        dense[indices[position], outer] = data[position]
                    else:
                        dense[outer, indices[position]] = data[position]
            return dense
    raise InputError(f"FLAME model {path}: {key!r} is not an array (got {type(value).__name__})")


def load_flame(path: str | os.PathLike) -> FlameArrays:
    """Read a FLAME model (``generic_model.pkl`` or ``.npz``) without chumpy, scipy or running pickled code.

    Raises:
        InputError: The file is missing, not a pickle / npz, or lacks one of :data:`FLAME_KEYS` or their shapes.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"FLAME model {path}: file not found (expected FLAME's generic_model.pkl or an .npz)")
    try:
        if zipfile.is_zipfile(path):
            with np.load(path, allow_pickle=False) as archive:
                data: dict[str, Any] = {key: archive[key] for key in archive.files}
        else:
            with open(path, "rb") as handle:
                data = _FlameUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, OSError) as error:
        raise InputError(f"FLAME model {path}: not a FLAME pickle or npz ({error})") from None
    if not isinstance(data, dict):
        raise InputError(f"FLAME model {path}: expected a dict of arrays with keys {list(FLAME_KEYS)}")
    missing = [key for key in FLAME_KEYS if key not in data]
    if missing:
        raise InputError(f"FLAME model {path}: not FLAME, missing {missing} (expected keys {list(FLAME_KEYS)})")
    arrays = {key: _as_array(data[key], key, path) for key in FLAME_KEYS}
    v = arrays["v_template"].shape[0]
    checks = {
        "v_template": arrays["v_template"].shape == (v, 3),
        "shapedirs": arrays["shapedirs"].ndim == 3 and arrays["shapedirs"].shape[:2] == (v, 3),
        "posedirs": arrays["posedirs"].ndim == 3 and arrays["posedirs"].shape[:2] == (v, 3),
        "J_regressor": arrays["J_regressor"].ndim == 2 and arrays["J_regressor"].shape[1] == v,
        "weights": arrays["weights"].ndim == 2 and arrays["weights"].shape[0] == v,
        "f": arrays["f"].ndim == 2 and arrays["f"].shape[1] == 3,
        "kintree_table": arrays["kintree_table"].ndim == 2 and arrays["kintree_table"].shape[0] == 2,
    }
    bad = [key for key, ok in checks.items() if not ok]
    if bad:
        shapes = {key: arrays[key].shape for key in bad}
        raise InputError(f"FLAME model {path}: arrays of unexpected shape {shapes} (V = {v} vertices)")
    return FlameArrays(
        v_template=arrays["v_template"].astype(np.float32),
        shapedirs=arrays["shapedirs"].astype(np.float32),
        posedirs=arrays["posedirs"].astype(np.float32),
        J_regressor=arrays["J_regressor"].astype(np.float32),
        kintree_table=arrays["kintree_table"].astype(np.int64),
        weights=arrays["weights"].astype(np.float32),
        f=arrays["f"].astype(np.int64),
    )


def _rodrigues(axis_angle: Tensor) -> Tensor:
    """Rotation matrices (..., 3, 3) of axis-angle vectors (..., 3)."""
    angle = axis_angle.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    axis = axis_angle / angle
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*axis.shape[:-1], 3, 3)
    sin, cos = torch.sin(angle)[..., None], torch.cos(angle)[..., None]
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + sin * skew + (1 - cos) * (skew @ skew)


class FlameHead(_MeshSignedDistance):
    """FLAME as a :class:`HeadModel`: blend shapes, pose correctives and linear blend skinning of the five joints
    (global, neck, jaw, left eye, right eye); the global rotation and the eyes stay at zero.

    Args:
        arrays (`FlameArrays`): from :func:`load_flame`.
        layout (`FlameLayout`): how many shape / expression components to use.
    """

    def __init__(self, arrays: FlameArrays, layout: FlameLayout) -> None:
        total_shape = arrays.shapedirs.shape[-1] - _FLAME_EXPRESSION_TOTAL
        if layout.shape > total_shape or layout.expression > arrays.shapedirs.shape[-1] - total_shape:
            raise InputError(
                f"FLAME model: layout {layout.describe()} needs more components than the file has "
                f"({total_shape} shape, {arrays.shapedirs.shape[-1] - total_shape} expression)"
            )
        self.layout = layout
        self.template = torch.from_numpy(arrays.v_template)
        self.faces = torch.from_numpy(arrays.f)
        dirs = torch.from_numpy(arrays.shapedirs)
        self.shape_basis = dirs[..., : layout.shape]
        self.expression_basis = dirs[..., total_shape : total_shape + layout.expression]
        self.posedirs = torch.from_numpy(arrays.posedirs)
        self.joint_regressor = torch.from_numpy(arrays.J_regressor)
        self.parents = torch.from_numpy(arrays.kintree_table[0]).long()
        self.skin_weights = torch.from_numpy(arrays.weights)
        self.landmark_index = torch.linspace(0, len(self.template) - 1, 68).long()

    def vertices(self, params: Tensor) -> Tensor:
        """Posed vertices (N, V, 3) of parameters (N, F)."""
        _check_params(params, self.layout)
        shape, expression, neck, jaw = _split(params.float(), self.layout)
        n = params.shape[0]
        shaped = (
            self.template
            + torch.einsum("vck,nk->nvc", self.shape_basis, shape)
            + torch.einsum("vck,nk->nvc", self.expression_basis, expression)
        )
        joints = torch.einsum("jv,nvc->njc", self.joint_regressor, shaped)
        num_joints = joints.shape[1]
        pose = torch.zeros(n, num_joints, 3, dtype=shaped.dtype)
        pose[:, 1], pose[:, 2] = neck, jaw
        rotations = _rodrigues(pose)
        eye = torch.eye(3, dtype=shaped.dtype)
        corrective = (rotations[:, 1:] - eye).reshape(n, -1)
        count = min(corrective.shape[1], self.posedirs.shape[-1])
        posed = shaped + torch.einsum("vck,nk->nvc", self.posedirs[..., :count], corrective[:, :count])
        transforms: list[Tensor] = []
        for j in range(num_joints):
            local = torch.eye(4, dtype=shaped.dtype).repeat(n, 1, 1)
            local[:, :3, :3] = rotations[:, j]
            parent = int(self.parents[j]) if j > 0 else -1
            local[:, :3, 3] = joints[:, j] - (joints[:, parent] if parent >= 0 else 0)
            transforms.append(local if parent < 0 else transforms[parent] @ local)
        world = torch.stack(transforms, dim=1)  # (N, J, 4, 4)
        rest = torch.einsum("njab,njb->nja", world[..., :3, :3], joints)
        world = world.clone()
        world[..., :3, 3] = world[..., :3, 3] - rest
        blended = torch.einsum("vj,njab->nvab", self.skin_weights, world)
        homogeneous = torch.cat([posed, torch.ones_like(posed[..., :1])], dim=-1)
        return torch.einsum("nvab,nvb->nva", blended, homogeneous)[..., :3]

    def landmarks(self, vertices: Tensor) -> Tensor:
        """68 evenly spread vertices (N, 68, 3) (FLAME's landmark embedding is a separate file, not read here)."""
        return vertices[:, self.landmark_index]
