"""IDPatchPipeline on tiny SDXL parts: runs for 1–3 subjects, hides the ID tokens from the UNet and the ControlNet for
the first steps, uses prompt_proj(zeros) as negative, orders subjects left to right, round-trips through
save/from_pretrained, and rejects bad input with errors naming the subject."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from genblocks.config import load_config
from genblocks.testing.controlnets import randomize_controlnet_outputs
from genblocks.testing.pipelines import PipelineTesterMixin
from id_patch.config import FaceSection, GenerateConfig, build_face_encoder, build_pipeline, generate
from id_patch.pipeline_id_patch import IDPatchPipeline, IDPatchPipelineOutput, context_schedule
from id_patch.testing import random_face_image, tiny_face_encoder, tiny_id_patch_pipeline

TEXT = 16  # the tiny tokenizer's model_max_length; 77 for SDXL's CLIP tokenizers
TOKENS = 2  # ID tokens per face in the tiny projector
LOCATIONS = [[40.0, 20.0], [10.0, 30.0], [56.0, 50.0]]


@pytest.fixture(scope="module")
def pipe() -> IDPatchPipeline:
    return tiny_id_patch_pipeline(seed=0)


def _faces(count: int, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(count, 16, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _run(pipe: IDPatchPipeline, count: int = 2, **overrides: object) -> IDPatchPipelineOutput:
    kwargs: dict = {
        "prompt": "two people",
        "face_embeds": _faces(count),
        "face_locations": LOCATIONS[:count],
        "num_inference_steps": 2,
        "id_injection_ratio": 0.5,
        "generator": torch.Generator().manual_seed(0),
        "output_type": "np",
    }
    kwargs.update(overrides)
    return pipe(**kwargs)


class Recorder:
    """Forward hooks on the UNet and the ControlNet recording what they receive (after the pipeline's pre-hooks)."""

    def __init__(self, pipe: IDPatchPipeline) -> None:
        self.calls: dict[str, list[dict[str, torch.Tensor]]] = {"unet": [], "controlnet": []}
        self.handles = [
            getattr(pipe, name).register_forward_hook(self._hook(name), with_kwargs=True) for name in self.calls
        ]

    def _hook(self, name: str):
        def hook(module, args, kwargs, output) -> None:
            self.calls[name].append({k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)})

        return hook

    def lengths(self, name: str) -> list[int]:
        return [call["encoder_hidden_states"].shape[1] for call in self.calls[name]]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@pytest.fixture
def recorder(pipe: IDPatchPipeline) -> Iterator[Recorder]:
    rec = Recorder(pipe)
    yield rec
    rec.remove()


@pytest.mark.parametrize("count", [1, 2, 3])
def test_runs_end_to_end_for_1_2_3_subjects(pipe: IDPatchPipeline, count: int) -> None:
    out = _run(pipe, count)
    assert out.images.shape == (1, 64, 64, 3) and np.isfinite(out.images).all()
    assert out.condition_images.shape == (1, 64, 64, 3)
    assert out.condition_images.min() >= 0.0 and out.condition_images.max() <= 1.0


def test_output_slice_and_faces_matter(pipe: IDPatchPipeline) -> None:
    image = _run(pipe, 2).images
    expected = [0.5308, 0.6128, 0.5856, 0.5626, 0.6092, 0.5704, 0.5532, 0.5242, 0.5452]
    np.testing.assert_allclose(image[0, -3:, -3:, -1].flatten(), expected, atol=1e-2)
    other = _run(pipe, 2, face_embeds=_faces(2, seed=7)).images
    assert np.abs(other - image).max() > 1e-4  # the ID tokens reach the UNet


def test_context_schedule_rule() -> None:
    assert context_schedule(5, 0.8) == [False, True, True, True, True]
    assert context_schedule(5, 1.0) == [True] * 5
    assert context_schedule(2, 0.5) == [False, True]
    assert context_schedule(50, 0.8).count(False) == 10
    assert context_schedule(4, 0.0) == [False] * 4
    with pytest.raises(ValueError, match="id_injection_ratio"):
        context_schedule(5, 1.5)


@pytest.mark.parametrize(
    ("steps", "ratio", "expected"),
    [
        (5, 0.8, [TEXT] + [TEXT + 3 * TOKENS] * 4),  # first 20 % of the steps: text tokens only
        (5, 1.0, [TEXT + 3 * TOKENS] * 5),  # from the first step
        (2, 0.5, [TEXT, TEXT + 3 * TOKENS]),  # spec §9
    ],
)
def test_unet_and_controlnet_see_id_tokens_after_the_cut(
    pipe: IDPatchPipeline, recorder: Recorder, steps: int, ratio: float, expected: list[int]
) -> None:
    _run(pipe, 3, num_inference_steps=steps, id_injection_ratio=ratio)
    assert recorder.lengths("unet") == expected
    assert recorder.lengths("controlnet") == expected
    assert all(call["encoder_hidden_states"].shape[0] == 2 for call in recorder.calls["unet"])  # CFG batch
    # no hooks are left behind
    assert not pipe.unet._forward_pre_hooks and not pipe.controlnet._forward_pre_hooks


def test_context_order_negative_tokens_and_condition(pipe: IDPatchPipeline, recorder: Recorder) -> None:
    faces = _faces(2)
    _run(pipe, 2, face_embeds=faces, id_injection_ratio=1.0)
    context = recorder.calls["unet"][0]["encoder_hidden_states"]  # (2, 16 + 4, 64): [negative; positive]
    projector = pipe.id_projector
    # subject 1 is left of subject 0 -> its tokens come first; the negative ID part is prompt_proj(zeros)
    torch.testing.assert_close(context[1:, TEXT:], projector.id_tokens(faces[[1, 0]][None]))
    torch.testing.assert_close(context[:1, TEXT:], projector.prompt_proj(torch.zeros(2, 1, 16)).reshape(1, -1, 64))
    assert torch.equal(context[0, :TEXT], torch.zeros(TEXT, 64))  # force_zeros_for_empty_prompt
    expected = pipe.prepare_id_condition(faces, torch.tensor(LOCATIONS[:2]), None, 64, 64)
    assert expected.order.tolist() == [1, 0]
    cond = recorder.calls["controlnet"][0]["controlnet_cond"]
    torch.testing.assert_close(cond, expected.condition_image.expand(2, -1, -1, -1))
    torch.testing.assert_close(
        cond[0, :, 16:24, 36:44], projector.patches(faces[:1])[0]
    )  # subject 0's patch at (40, 20)


def test_without_cfg_only_the_positive_context_runs(pipe: IDPatchPipeline, recorder: Recorder) -> None:
    _run(pipe, 2, guidance_scale=1.0)
    assert [c["encoder_hidden_states"].shape[:2] for c in recorder.calls["unet"]] == [(1, TEXT), (1, TEXT + 4)]


def test_face_images_keypoints_and_pose(pipe: IDPatchPipeline) -> None:
    encoder = tiny_face_encoder(seed=1)
    images = [random_face_image(i) for i in range(2)]
    keypoints = np.zeros((2, 17, 3), dtype=np.float32)
    keypoints[:, :, 2] = 1.0
    keypoints[0, :, :2] = [50.0, 30.0]  # person drawn as a dot cloud; nose at (50, 30)
    keypoints[1, :, :2] = [12.0, 40.0]
    keypoints[0, 10, :2] = [50.0, 60.0]
    keypoints[1, 10, :2] = [12.0, 60.0]
    out = pipe(
        "x",
        face_images=images,
        face_encoder=encoder,
        keypoints=keypoints,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    )
    condition = out.condition_images  # raw (1, 3, 64, 64)
    embeds = encoder.encode_subjects(images).embeds
    # persons sorted left to right: subject 0 goes to the nose at x=12, subject 1 to x=50
    patches = pipe.id_projector.patches(embeds)
    from id_patch.condition import draw_pose

    pose = draw_pose(keypoints, 64, 64)
    torch.testing.assert_close(condition[0, :, 36:44, 8:16], pose[:, 36:44, 8:16] + patches[0])
    torch.testing.assert_close(condition[0, :, 26:34, 46:54], pose[:, 26:34, 46:54] + patches[1])
    assert out.images.shape == (1, 3, 64, 64)


def test_resampler_variant_runs() -> None:
    out = _run(tiny_id_patch_pipeline(seed=1, proj_type="resampler"), 2, output_type="pil", return_dict=False)
    images, conditions = out
    assert images[0].size == (64, 64) and conditions[0].size == (64, 64)


def test_save_load_round_trip_reproduces_output(pipe: IDPatchPipeline, tmp_path) -> None:
    before = _run(pipe, 2).images
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["id_projector"] == ["id_patch.modeling_id_patch", "IDPatchProjector"]
    assert (tmp_path / "id_projector" / "patch_proj.safetensors").is_file()
    loaded = IDPatchPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    after = _run(loaded, 2).images
    assert np.array_equal(before, after)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"face_locations": LOCATIONS}, r"got 3 face positions \(face_locations\) for 2 faces"),
        ({"face_locations": LOCATIONS[:1]}, r"got 1 face positions \(face_locations\) for 2 faces"),
        ({"face_locations": [[10.0, 10.0], [64.0, 30.0]]}, r"subject 1: position \(64.0, 30.0\)"),
        ({"face_locations": [[-3.0, 10.0], [20.0, 30.0]]}, r"subject 0: position"),
        ({"face_images": [random_face_image(0)]}, "exactly one of `face_embeds`"),
        ({"face_embeds": None, "face_images": [random_face_image(0)] * 2}, "face_encoder"),
        ({"face_embeds": torch.randn(2, 15)}, r"\(F, 16\)"),
        ({"keypoints": np.zeros((2, 17, 3))}, "exactly one of `face_locations`"),
        ({"id_injection_ratio": 1.2}, "id_injection_ratio"),
        ({"pose_image": np.zeros((32, 64, 3), dtype=np.uint8), "height": 64}, "pose_image"),
    ],
)
def test_bad_input_is_rejected(pipe: IDPatchPipeline, overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _run(pipe, 2, **overrides)


def test_keypoint_positions_count_must_match(pipe: IDPatchPipeline) -> None:
    keypoints = np.full((3, 17, 3), 20.0, dtype=np.float32)
    with pytest.raises(ValueError, match=r"got 3 face positions \(keypoints.*for 2 faces"):
        _run(pipe, 2, face_locations=None, keypoints=keypoints)


CONFIGS = Path(__file__).resolve().parents[1] / "src" / "id_patch" / "configs"


def test_sdxl_config_holds_the_paper_settings() -> None:
    config = load_config(GenerateConfig, CONFIGS / "paper.yaml")
    sampling, id_patch = config.sampling, config.model.id_patch
    assert (sampling.num_inference_steps, sampling.guidance_scale, sampling.seed) == (50, 5.0, 1234)
    assert (sampling.controlnet_conditioning_scale, sampling.id_injection_ratio) == (0.8, 0.8)
    assert (id_patch.num_tokens, id_patch.token_dim, id_patch.patch_size, id_patch.face_dim) == (16, 2048, 64, 512)
    assert (id_patch.cond_clamp, id_patch.face_anchor) == (False, "nose")
    assert (config.face.backend, config.face.channel_order, config.model.dtype) == ("arcface", "bgr", "bfloat16")


def test_tiny_config_builds_and_generates() -> None:
    config = load_config(GenerateConfig, CONFIGS / "tiny.yaml", ["face.backend=tiny"])
    pipe = build_pipeline(config.model)
    encoder = build_face_encoder(config.face, pipe.id_projector.config.face_dim)
    out = generate(pipe, config, face_images=[random_face_image(0), random_face_image(1)], face_locations=LOCATIONS[:2],
                   face_encoder=encoder)  # fmt: skip
    assert out.images[0].size == (64, 64) and out.condition_images[0].size == (64, 64)
    again = generate(pipe, config, face_images=[random_face_image(0), random_face_image(1)],
                     face_locations=LOCATIONS[:2], face_encoder=encoder)  # fmt: skip
    assert np.array_equal(np.asarray(out.images[0]), np.asarray(again.images[0]))  # seeded from the config
    with pytest.raises(ValueError, match=r"face\.backend"):
        build_face_encoder(FaceSection(backend="mtcnn"), 16)


class TestIDPatchPipelineContract(PipelineTesterMixin):
    """genblocks' pipeline contract: save/load, dtype and device moves, determinism, progress and the step
    callback, a pinned slice."""

    pipeline_class = IDPatchPipeline
    output_field = "images"
    expected_slice: ClassVar[list[list[float]]] = [
        [0.5308, 0.6128, 0.5856],
        [0.5626, 0.6092, 0.5704],
        [0.5532, 0.5242, 0.5452],
    ]

    def get_pipeline(self) -> IDPatchPipeline:
        return tiny_id_patch_pipeline(seed=0)

    def get_inputs(self, seed: int = 0) -> dict:
        return {
            "prompt": "two people",
            "face_embeds": _faces(2),
            "face_locations": LOCATIONS[:2],
            "num_inference_steps": 2,
            "id_injection_ratio": 0.5,
            "generator": torch.Generator().manual_seed(seed),
            "output_type": "pt",
        }


def test_condition_image_reaches_the_output_through_a_randomised_controlnet() -> None:
    """One subject moved: the ID tokens stay the same, only the ID-patch condition image changes. With the tiny
    ControlNet's zero-initialised output convolutions that is invisible; with them randomised the image changes."""
    pipe = tiny_id_patch_pipeline(seed=0)
    here, there = (_run(pipe, 1, face_locations=[xy]).images for xy in ([16.0, 16.0], [48.0, 40.0]))
    np.testing.assert_array_equal(here, there)
    randomize_controlnet_outputs(pipe.controlnet, std=0.5, condition_embedding=True)
    here, there = (_run(pipe, 1, face_locations=[xy]).images for xy in ([16.0, 16.0], [48.0, 40.0]))
    assert np.abs(here - there).max() > 1e-4
