"""Differentiable volume rendering for 3-D-aware GANs (EG3D, arXiv 2112.07945), in plain PyTorch.

Modules: `cameras` (LookAt camera sampler, intrinsics, the 25-d EG3D camera label), `pose` (the camera of a face
from its landmarks), `crop` (EG3D's crop of an ordinary photo from its landmarks), `rays` (pinhole ray sampler),
`renderer` (stratified + importance sampling and the MipRayMarcher2 compositor over any density/feature field) and
`mesh` (a marching-cubes mesh of any density field, OBJ export). The renderer knows nothing about tri-planes: the
field is a callable, so EG3D's planes, OmniAvatar's feature volumes and canonical-space warps plug in without copies
(spec genblocks §3 "render3d").
"""

from genblocks.render3d.cameras import (
    CAMERA_LABEL_DIM,
    FFHQ_CAMERA,
    CameraPreset,
    LookAtCameraSampler,
    camera_label,
    intrinsics_matrix,
    look_at,
    normalize_intrinsics,
    orbit_cam2world,
    split_camera_label,
)
from genblocks.render3d.crop import (
    EG3DCrop,
    EG3DCropBox,
    eg3d_canonical_points,
    eg3d_crop,
    eg3d_crop_box,
    eg3d_five_points,
)
from genblocks.render3d.mesh import PointDensity, density_grid, marching_cubes_mesh, write_obj
from genblocks.render3d.pose import estimate_camera
from genblocks.render3d.rays import (
    pixel_centers,
    sample_rays,
)
from genblocks.render3d.renderer import (
    DensityField,
    ImportanceRenderer,
    MipRayMarcher2,
    PointWarp,
    RenderOutput,
    sample_importance,
    sample_pdf,
    sample_stratified,
)

__all__ = [
    "CAMERA_LABEL_DIM",
    "FFHQ_CAMERA",
    "CameraPreset",
    "DensityField",
    "EG3DCrop",
    "EG3DCropBox",
    "ImportanceRenderer",
    "LookAtCameraSampler",
    "MipRayMarcher2",
    "PointDensity",
    "PointWarp",
    "RenderOutput",
    "camera_label",
    "density_grid",
    "eg3d_canonical_points",
    "eg3d_crop",
    "eg3d_crop_box",
    "eg3d_five_points",
    "estimate_camera",
    "intrinsics_matrix",
    "look_at",
    "marching_cubes_mesh",
    "normalize_intrinsics",
    "orbit_cam2world",
    "pixel_centers",
    "sample_importance",
    "sample_pdf",
    "sample_rays",
    "sample_stratified",
    "split_camera_label",
    "write_obj",
]
