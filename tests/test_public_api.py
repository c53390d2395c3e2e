"""Each member exports an explicit, tested ``__all__`` of public names (STYLE rule 13)."""

from __future__ import annotations

import importlib

import pytest

EXPECTED = {
    "genblocks": ["ConfigError", "__version__", "config_to_yaml", "load_config", "merge_config"],
    "coap_optim": [
        "CoapAdafactor",
        "CoapAdamW",
        "CoapAdamW8bit",
        "CoapDefaults",
        "DEFAULT_RANK_RATIO",
        "__version__",
        "convert_official_state",
        "defaults",
        "enable_layerwise",
        "param_groups",
        "state_nbytes",
    ],
    "diffportrait3d": [
        "DiffPortrait3DConfig",
        "DiffPortrait3DModel",
        "DiffPortrait3DPipeline",
        "DiffPortrait3DPipelineOutput",
        "DiffPortrait3DViewModules",
        "EG3DConditionRenderer",
        "EG3DNoisePrior",
        "__version__",
        "invert_portrait",
        "orbit_cameras",
        "yaw_sweep_cameras",
    ],
    "fg_net": [
        "AUScores",
        "BP4D_AUS",
        "CROSS_CORPUS_AUS",
        "DISFA_AUS",
        "DataConfig",
        "FGNet",
        "FGNetConfig",
        "FGNetOutput",
        "FGNetPipeline",
        "FGNetRunConfig",
        "LandmarkConfig",
        "PyramidInterpreter",
        "TrainingConfig",
        "__version__",
        "au_f1_scores",
        "au_heatmaps",
        "convert_original_checkpoint",
        "decode_heatmaps",
        "evaluate_model",
        "load_fg_net",
        "load_original_fg_net",
        "paper_config",
        "second_conv_feature_indices",
        "stylegan2_feature_index",
        "tiny_config",
    ],
    "id_patch": ["IDPatchConfig", "IDPatchPipeline", "IDPatchPipelineOutput", "IDPatchProjector", "__version__"],
    "x_portrait": [
        "XPortraitComponents",
        "XPortraitConfig",
        "XPortraitModel",
        "XPortraitMotionModules",
        "XPortraitPipeline",
        "XPortraitPipelineOutput",
        "__version__",
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_all_is_explicit_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    assert sorted(module.__all__) == EXPECTED[name]
    for attr in module.__all__:
        assert hasattr(module, attr), f"{name}.__all__ names {attr!r}, which does not exist"
        assert attr == "__version__" or not attr.startswith("_"), f"private name {attr!r} in {name}.__all__"
    assert isinstance(module.__version__, str) and module.__version__.count(".") == 2


SUBPACKAGES = [
    "genblocks.diffusion",
    "genblocks.faces",
    "genblocks.gan",
    "genblocks.metrics",
    "genblocks.media",
    "genblocks.render3d",
    "genblocks.testing",
    "genblocks.training",
    "coap_optim.kernels",
]


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackage_all_resolves(name: str) -> None:
    module = importlib.import_module(name)
    for attr in module.__all__:
        assert hasattr(module, attr), f"{name}.__all__ names {attr!r}, which does not exist"
        assert not attr.startswith("_"), f"private name {attr!r} in {name}.__all__"
