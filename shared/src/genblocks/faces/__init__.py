"""Face analysis for the portrait packages: the `FaceAnalyzer` interface, FFHQ / ArcFace alignment and the ArcFace
IR-SE backbone. `DlibFaceAnalyzer` imports dlib only when constructed (``pip install genblocks[face]``)."""

from genblocks.faces.align import (
    ARCFACE_TEMPLATE_112,
    AlignedFace,
    align_ffhq,
    apply_affine,
    ffhq_quad,
    norm_crop,
    umeyama_similarity,
    warp_affine,
)
from genblocks.faces.analyzer import Face, FaceAnalyzer, landmarks5_from_68
from genblocks.faces.arcface import (
    ArcFaceEmbedder,
    IRSEBackbone,
    StateDictReport,
    ir_se_units,
    load_arcface_state_dict,
)
from genblocks.faces.dlib_backend import DlibFaceAnalyzer, face_recognition_models_dir

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "AlignedFace",
    "ArcFaceEmbedder",
    "DlibFaceAnalyzer",
    "Face",
    "FaceAnalyzer",
    "IRSEBackbone",
    "StateDictReport",
    "align_ffhq",
    "apply_affine",
    "face_recognition_models_dir",
    "ffhq_quad",
    "ir_se_units",
    "landmarks5_from_68",
    "load_arcface_state_dict",
    "norm_crop",
    "umeyama_similarity",
    "warp_affine",
]
