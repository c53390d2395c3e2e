"""Section 3 (pipelines at paper size) and section 4 (the newer packages), random weights, random inputs.

Every pipeline is built with its parameters on the meta device (``common.parameters_on_meta``: no CPU init, no host
memory), then materialised on the GPU in bf16 with seeded random values (``common.materialise``), and called on random
inputs of the paper's sizes. The dry run builds the packages' tiny sizes through exactly the same path on the CPU.

Section 3, paper sizes (GPU):

- **x-portrait**: SD1.5-shaped UNet (320, 640, 1280, 1280), reference UNet, motion + local ControlNets, temporal
  modules (8 heads); one 16-frame window at 512 x 512, 2 DDIM steps (the authors report ~58 GB peak at 16 frames).
- **diffportrait3d**: SD1.5-shaped, 8 views at 512 x 512 in one batch, 2 DDIM steps.
- **id-patch**: SDXL-shaped UNet (2.6B), ControlNet from it, CLIP-L + bigG text encoders, SDXL VAE, ID projector at
  paper sizes (512 -> 16 x 2048 tokens, 64-px patches); 2 faces, 1024 x 1024, 2 Euler steps, CFG 5.
- **fg-net**: ``paper_config("BP4D")`` (pSp IR-SE-50 encoder, 1024-px StyleGAN2, pyramid interpreter), fp32 forward
  (``au_heatmaps``) at batch 32.

Section 4: portrait-edit (SD1.5-shaped MCDM at 512, 2 UniPC steps, no edit mask) and humananim (SD1.5-shaped, 16
frames at 512, 2 DDIM steps) through their public builders; omniavatar (8 heads from seeds, ``paper.yaml``),
agilegan3d (one photo -> the paper preset's orbit views, feed-forward) and dream-talk (4 windows of motion, 10 steps)
in fp32 through theirs. Where a package's API is missing the row is skipped with the reason.

Reported per pipeline: parameters, build seconds, call seconds (after one untimed warm-up call on the GPU), seconds
per sampling step, peak memory during the call (CUDA ``max_memory_allocated``, weights included).
"""

from __future__ import annotations

import importlib
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.gpu.common import (
    Context,
    count_parameters,
    free_memory,
    materialise,
    parameters_on_meta,
    peak_memory,
    sync,
)

SD15_UNET = {"block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2, "attention_head_dim": 8,
             "cross_attention_dim": 768, "norm_num_groups": 32, "vae_block_out_channels": (128, 256, 512, 512),
             "vae_norm_num_groups": 32}  # fmt: skip
TINY_UNET = {"block_out_channels": (32, 64), "layers_per_block": 1, "attention_head_dim": 8, "cross_attention_dim": 32,
             "norm_num_groups": 8, "vae_block_out_channels": (8, 8, 8, 8), "vae_norm_num_groups": 8}  # fmt: skip


@dataclass
class Built:
    """A pipeline ready to call: ``call()`` runs one generation; ``steps`` sampling steps per call."""

    call: Callable[[], Any]
    modules: list[Any]
    steps: int
    size: str
    dtype: torch.dtype


def _materialised(parts: dict[str, Any], ctx: Context, dtype: torch.dtype) -> None:
    memo: dict[int, nn.Parameter] = {}
    for index, part in enumerate(parts.values()):
        if isinstance(part, nn.Module):
            materialise(part, ctx.device, dtype, seed=index, memo=memo)


def _pipe_to(pipe: Any, ctx: Context, dtype: torch.dtype) -> Any:
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=ctx.device, dtype=dtype)


def _working_dtype(ctx: Context) -> torch.dtype:
    """bf16 on the GPU; fp32 on the CPU, where bf16 convolutions of the dry run would take minutes."""
    return torch.bfloat16 if ctx.cuda else torch.float32


# ----------------------------------------------------------------------------------------------------------------
# section 3
# ----------------------------------------------------------------------------------------------------------------


def _face_landmarks(resolution: int) -> np.ndarray:
    """A synthetic 68-point face centred in a ``resolution`` frame."""
    face = np.zeros((68, 2))
    face[:17] = np.stack([np.linspace(-14, 14, 17), np.full(17, 8.0)], 1)
    face[17:27] = np.stack([np.r_[np.linspace(-12, -3, 5), np.linspace(3, 12, 5)], np.full(10, -10.0)], 1)
    face[27:36] = np.stack([np.zeros(9), np.linspace(-6, 2, 9)], 1)
    face[36:48] = np.stack([np.r_[np.linspace(-10, -4, 6), np.linspace(4, 10, 6)], np.full(12, -6.0)], 1)
    face[48:68] = np.stack([np.linspace(-6, 6, 20), np.full(20, 8.0)], 1)
    return face * resolution / 64 + resolution / 2


def build_x_portrait(ctx: Context) -> Built:
    from x_portrait.config import ModelConfig, RandomComponentsConfig
    from x_portrait.modeling_x_portrait import build_random_components
    from x_portrait.pipeline_x_portrait import XPortraitPipeline
    from x_portrait.preprocessing import similarity_matrix, transform_landmarks

    dtype = _working_dtype(ctx)
    resolution, frames, steps = (64, 2, 1) if ctx.dry_run else (512, 16, 2)
    hint = (8, 8, 16, 16) if ctx.dry_run else (16, 32, 96, 256)
    heads, groups = (2, 8) if ctx.dry_run else (8, 32)
    model = ModelConfig(
        resolution=resolution, patch_size=resolution // 4, controlnet_embedding_channels=hint, temporal_heads=heads,
        temporal_max_len=24, temporal_norm_groups=groups,
    )  # fmt: skip
    sizes = RandomComponentsConfig(**(TINY_UNET if ctx.dry_run else SD15_UNET))
    with parameters_on_meta():
        parts = build_random_components(model, sizes, seed=0).as_dict()
    _materialised(parts, ctx, dtype)
    pipe = _pipe_to(XPortraitPipeline(**parts, patch_size=model.patch_size), ctx, dtype)
    generator = torch.Generator().manual_seed(0)
    face = _face_landmarks(resolution)
    moves = [similarity_matrix((resolution / 2,) * 2, 0.05 * np.sin(i), 1.0, (i % 3, 0)) for i in range(frames)]
    inputs = {
        "source_image": torch.rand(3, resolution, resolution, generator=generator),
        "driving_frames": torch.rand(frames, 3, resolution, resolution, generator=generator),
        "source_landmarks": face,
        "driving_landmarks": np.stack([transform_landmarks(face, m) for m in moves]),
    }

    def call() -> Any:
        return pipe(
            **inputs, num_inference_steps=steps, window_size=frames, window_overlap=0, vae_chunk_size=16,
            generator=torch.Generator().manual_seed(999), output_type="pt",
        )  # fmt: skip

    return Built(call, list(parts.values()), steps, f"{frames} frames x {resolution}px, one window", dtype)


def build_diffportrait3d(ctx: Context) -> Built:
    from diffportrait3d.config import ModelConfig, RandomComponentsConfig
    from diffportrait3d.modeling_diffportrait3d import build_random_components
    from diffportrait3d.pipeline_diffportrait3d import DiffPortrait3DPipeline

    dtype = _working_dtype(ctx)
    resolution, views, steps = (64, 2, 1) if ctx.dry_run else (512, 8, 2)
    hint = (8, 8, 16, 16) if ctx.dry_run else (16, 32, 96, 256)
    heads, groups = (2, 8) if ctx.dry_run else (8, 32)
    model = ModelConfig(
        resolution=resolution, views_per_batch=views, controlnet_embedding_channels=hint, view_heads=heads,
        view_max_len=32, view_norm_groups=groups,
    )  # fmt: skip
    sizes = RandomComponentsConfig(**(TINY_UNET if ctx.dry_run else SD15_UNET))
    with parameters_on_meta():
        parts = build_random_components(model, sizes, seed=0).as_dict()
    _materialised(parts, ctx, dtype)
    pipe = _pipe_to(DiffPortrait3DPipeline(**parts, views_per_batch=views), ctx, dtype)
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, resolution, resolution, generator=generator)
    conditions = torch.rand(views, 3, resolution, resolution, generator=generator)

    def call() -> Any:
        return pipe(
            image, condition_images=conditions, num_inference_steps=steps, views_per_batch=views,
            generator=torch.Generator().manual_seed(1), output_type="pt",
        )  # fmt: skip

    return Built(call, list(parts.values()), steps, f"{views} views x {resolution}px", dtype)


def _clip_text(hidden: int, layers: int, heads: int, vocab: int, act: str, projection: int | None) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    extra: dict[str, Any] = {} if projection is None else {"projection_dim": projection}
    config = CLIPTextConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, max_position_embeddings=77, hidden_act=act, bos_token_id=vocab - 2,
        eos_token_id=vocab - 1, pad_token_id=vocab - 1, **extra,
    )  # fmt: skip
    return CLIPTextModel(config) if projection is None else CLIPTextModelWithProjection(config)


def build_id_patch(ctx: Context) -> Built:
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.controlnets.controlnet import ControlNetModel
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    from genblocks.tiny import tiny_clip_tokenizer
    from id_patch.condition import draw_pose
    from id_patch.config import IDPatchConfig
    from id_patch.data import coco_keypoints_for_person
    from id_patch.modeling_id_patch import IDPatchProjector
    from id_patch.pipeline_id_patch import IDPatchPipeline
    from id_patch.testing import sdxl_euler_scheduler

    dtype = _working_dtype(ctx)
    tokenizer, tokenizer_2 = tiny_clip_tokenizer(), tiny_clip_tokenizer()
    if ctx.dry_run:
        resolution, steps, faces = 64, 1, 2
        width, pooled, time_dim, vocab = 64, 32, 8, len(tokenizer)
        unet_sizes = {"block_out_channels": (32, 64), "layers_per_block": 1, "transformer_layers_per_block": (1, 1),
                      "attention_head_dim": (2, 4), "norm_num_groups": 8,
                      "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
                      "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D")}  # fmt: skip
        clip_l, clip_g = (32, 2, 2), (32, 2, 2)
        vae_channels, vae_groups, id_config = (8, 8, 16, 16), 8, {"face_dim": 16, "num_tokens": 2, "patch_size": 8}
    else:
        resolution, steps, faces = 1024, 2, 2
        width, pooled, time_dim, vocab = 2048, 1280, 256, 49408
        unet_sizes = {"block_out_channels": (320, 640, 1280), "layers_per_block": 2,
                      "transformer_layers_per_block": (1, 2, 10), "attention_head_dim": (5, 10, 20),
                      "norm_num_groups": 32,
                      "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                      "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")}  # fmt: skip
        clip_l, clip_g = (768, 12, 12), (1280, 32, 20)
        vae_channels, vae_groups, id_config = (
            (128, 256, 512, 512),
            32,
            {"face_dim": 512, "num_tokens": 16, "patch_size": 64},
        )
        for tok in (tokenizer, tokenizer_2):
            tok.model_max_length = 77
    with parameters_on_meta():
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=resolution // 8, in_channels=4, out_channels=4, cross_attention_dim=width,
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=time_dim,
            projection_class_embeddings_input_dim=pooled + 6 * time_dim, **unet_sizes,
        )  # fmt: skip
        parts: dict[str, Any] = {
            "unet": unet,
            "controlnet": ControlNetModel.from_unet(unet, conditioning_channels=3),
            "vae": AutoencoderKL(
                in_channels=3,
                out_channels=3,
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4,
                block_out_channels=vae_channels,
                layers_per_block=2,
                latent_channels=4,
                norm_num_groups=vae_groups,
                scaling_factor=0.13025,
            ),
            "text_encoder": _clip_text(*clip_l, vocab, "quick_gelu", None),
            "text_encoder_2": _clip_text(*clip_g, vocab, "gelu", pooled),
            "id_projector": IDPatchProjector.from_id_patch_config(IDPatchConfig(token_dim=width, **id_config)),
        }
    _materialised(parts, ctx, dtype)
    pipe = IDPatchPipeline(
        **parts, tokenizer=tokenizer, tokenizer_2=tokenizer_2, scheduler=sdxl_euler_scheduler(), add_watermarker=False
    )
    pipe = _pipe_to(pipe, ctx, dtype)
    generator = torch.Generator().manual_seed(0)
    embeds = torch.nn.functional.normalize(torch.randn(faces, id_config["face_dim"], generator=generator), dim=-1)
    noses = [(resolution * (i + 0.5) / faces, resolution * 0.3) for i in range(faces)]
    keypoints = np.stack([coco_keypoints_for_person(nose, resolution / 16) for nose in noses])
    pose = draw_pose(keypoints, resolution, resolution)

    def call() -> Any:
        return pipe(
            prompt="a group photo of friends at the beach", face_embeds=embeds, face_locations=torch.tensor(noses),
            pose_image=pose, height=resolution, width=resolution, num_inference_steps=steps, guidance_scale=5.0,
            generator=torch.Generator().manual_seed(1234), output_type="np",
        )  # fmt: skip

    return Built(call, list(parts.values()), steps, f"{faces} faces, {resolution}px", dtype)


def build_fg_net(ctx: Context) -> Built:
    from fg_net.config import paper_config, tiny_config
    from fg_net.modeling_fg_net import FGNet

    config = tiny_config() if ctx.dry_run else paper_config("BP4D")
    batch = 2 if ctx.dry_run else 32
    with parameters_on_meta():
        torch.manual_seed(0)
        model = FGNet(config)
    materialise(model, ctx.device, torch.float32)
    model.eval()
    images = (torch.rand(batch, 3, config.input_size, config.input_size, generator=torch.Generator().manual_seed(0))
              * 2 - 1).to(ctx.device)  # fmt: skip

    def call() -> Any:
        with torch.no_grad():
            return model.au_heatmaps(images)

    return Built(call, [model], 1, f"batch {batch} x {config.input_size}px", torch.float32)


# ----------------------------------------------------------------------------------------------------------------
# section 4
# ----------------------------------------------------------------------------------------------------------------


def build_portrait_edit(ctx: Context) -> Built:
    from portrait_edit.config import tiny_config
    from portrait_edit.modeling_portrait_edit import build_random_components
    from portrait_edit.pipeline_portrait_edit import PortraitEditPipeline

    dtype = _working_dtype(ctx)
    model = tiny_config().model
    steps = 1 if ctx.dry_run else 2
    if not ctx.dry_run:
        model = replace(model, resolution=512, random=replace(model.random, **SD15_UNET))
    with parameters_on_meta():
        parts = build_random_components(model, seed=0).as_dict()
    _materialised(parts, ctx, dtype)
    pipe = _pipe_to(PortraitEditPipeline(**parts, combine_type=model.combine_type), ctx, dtype)
    source = torch.rand(1, 3, model.resolution, model.resolution, generator=torch.Generator().manual_seed(0))

    def call() -> Any:
        return pipe(
            source, "a man, santa claus costume", source_prompt="a man", num_inference_steps=steps, use_mask=False,
            generator=torch.Generator().manual_seed(1), output_type="pt",
        )  # fmt: skip

    return Built(call, list(parts.values()), steps, f"{model.resolution}px, no edit mask", dtype)


def build_humananim(ctx: Context) -> Built:
    from humananim.config import tiny_config
    from humananim.modeling import build_random_components
    from humananim.pipeline import HumanAnimPipeline

    dtype = _working_dtype(ctx)
    config = tiny_config()
    if ctx.dry_run:
        height, width, frames, steps, random = 64, 48, 2, 1, config.random
    else:
        height, width, frames, steps = 512, 512, 16, 2
        random = replace(config.random, **SD15_UNET)
    with parameters_on_meta():
        parts = build_random_components(config.model, random, seed=0).as_dict()
    _materialised(parts, ctx, dtype)
    pipe = _pipe_to(HumanAnimPipeline(**parts, fusion_blocks=config.model.fusion_blocks), ctx, dtype)
    generator = torch.Generator().manual_seed(0)
    reference = torch.rand(3, height, width, generator=generator)
    poses = torch.rand(frames, 3, height, width, generator=generator)

    def call() -> Any:
        return pipe(
            reference, poses, num_inference_steps=steps, window_size=frames, window_overlap=0, vae_chunk_size=16,
            generator=torch.Generator().manual_seed(1), output_type="pt",
        )  # fmt: skip

    return Built(call, list(parts.values()), steps, f"{frames} frames x {height}x{width}", dtype)


def build_agilegan3d(ctx: Context) -> Built:
    from agilegan3d.config import load_preset
    from agilegan3d.demo import random_pipeline

    config = load_preset("tiny" if ctx.dry_run else "paper")
    with parameters_on_meta():
        torch.manual_seed(0)
        pipe = random_pipeline(config)
    materialise(pipe, ctx.device, torch.float32)
    size = config.encoder.input_size
    images = (torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(ctx.device)

    def call() -> Any:
        return pipe(images, optimize_steps=0)

    views = config.inference.views
    return Built(call, [pipe], 1, f"1 photo -> {views} views at {config.g3d.img_resolution}px", torch.float32)


def build_dream_talk(ctx: Context) -> Built:
    from dream_talk.config import load_shipped_config
    from dream_talk.pipeline_dream_talk import DreamTalkPipeline

    config = load_shipped_config("tiny" if ctx.dry_run else "paper")
    with parameters_on_meta():
        torch.manual_seed(0)
        pipe = DreamTalkPipeline.from_config(config)
    modules = [m for m in (pipe.emodiff, pipe.style_encoder, pipe.lip_refiner) if m is not None]
    memo: dict[int, nn.Parameter] = {}
    for index, module in enumerate(modules):
        materialise(module, ctx.device, torch.float32, seed=index, memo=memo)
    window = config.emodiff.window
    frames, steps = (window, 2) if ctx.dry_run else (4 * window, 10)
    generator = torch.Generator().manual_seed(0)
    audio = torch.randn(1, frames, pipe.emodiff.audio_dim, generator=generator)
    style = torch.randn(1, config.emodiff.style_frames, pipe.emodiff.motion_dim, generator=generator)

    def call() -> Any:
        with torch.no_grad():
            return pipe(audio, style, generator=torch.Generator().manual_seed(1), num_inference_steps=steps)

    return Built(call, modules, steps, f"{frames} frames of motion", torch.float32)


def build_omniavatar(ctx: Context) -> Built:
    from pathlib import Path

    import omniavatar
    from genblocks.config import load_config
    from omniavatar.config import OmniAvatarConfig
    from omniavatar.pipeline_omniavatar import OmniAvatarPipeline

    name = "tiny" if ctx.dry_run else "paper"
    config = load_config(OmniAvatarConfig, Path(omniavatar.__file__).parent / "configs" / f"{name}.yaml")
    with parameters_on_meta():
        pipe = OmniAvatarPipeline.from_config(config, seed=0)
    materialise(pipe.generator, ctx.device, torch.float32)
    heads = 1 if ctx.dry_run else 8

    def call() -> Any:
        with torch.no_grad():
            return pipe(list(range(heads)))

    return Built(call, [pipe.generator], 1, f"{heads} heads ({name} config)", torch.float32)


PAPER_PIPELINES: dict[str, tuple[Callable[[Context], Built], float]] = {
    # name: (builder, estimated GPU seconds for build + warm-up + timed call)
    "x-portrait": (build_x_portrait, 40.0),
    "diffportrait3d": (build_diffportrait3d, 30.0),
    "id-patch": (build_id_patch, 45.0),
    "fg-net": (build_fg_net, 20.0),
}
NEW_PIPELINES: dict[str, tuple[Callable[[Context], Built], float]] = {
    "portrait-edit": (build_portrait_edit, 25.0),
    "humananim": (build_humananim, 35.0),
    "omniavatar": (build_omniavatar, 20.0),
    "agilegan3d": (build_agilegan3d, 20.0),
    "dream-talk": (build_dream_talk, 15.0),
}
# Packages being written while this check was prepared (import name, modules a builder would use): a package whose
# builder above fails because its API is not there yet shows as an error row; one without a builder is probed here.
PENDING = {
    "omniavatar": ("omniavatar", ("pipeline_omniavatar", "modeling_omniavatar")),
    "agilegan3d": ("agilegan3d", ("pipeline_agilegan3d", "modeling_agilegan3d")),
    "dream-talk": ("dream_talk", ("pipeline_dream_talk", "modeling_dream_talk")),
}


def _measure(name: str, builder: Callable[[Context], Built], ctx: Context) -> dict[str, Any]:
    start = time.perf_counter()
    built = builder(ctx)
    sync(ctx.device)
    build_s = time.perf_counter() - start
    if ctx.cuda:
        built.call()  # warm-up: cuDNN autotuning, allocator, lazy initialisation
    with peak_memory(ctx.device) as memory:
        start = time.perf_counter()
        built.call()
        sync(ctx.device)
        seconds = time.perf_counter() - start
    result = {
        "pipeline": name,
        "size": built.size,
        "dtype": str(built.dtype).removeprefix("torch."),
        "params": count_parameters(*built.modules),
        "build_s": build_s,
        "call_s": seconds,
        "steps": built.steps,
        "s_per_step": seconds / built.steps,
        "peak_mib": memory["peak_mib"],
    }
    del built
    free_memory()
    return result


def _run_all(
    ctx: Context, pipelines: dict[str, tuple[Callable[[Context], Built], float]], missing_api_skips: bool = False
) -> list[dict[str, Any]]:
    """Measure each pipeline; with ``missing_api_skips`` an ImportError / AttributeError (a package whose API is not
    there yet) makes a skipped row with the reason instead of an error row."""
    rows: list[dict[str, Any]] = []
    ctx.partial["rows"] = rows
    for name, (builder, estimate) in pipelines.items():
        if not ctx.fits(f"pipeline {name}", 1.0 if ctx.dry_run else estimate):
            rows.append({"pipeline": name, "skipped": "time budget"})
            continue
        try:
            rows.append(_measure(name, builder, ctx))
        except (ImportError, AttributeError) as error:
            key = "skipped" if missing_api_skips else "error"
            prefix = "API absent: " if missing_api_skips else ""
            rows.append({"pipeline": name, key: f"{prefix}{type(error).__name__}: {error}"[:500]})
        except Exception as error:  # one pipeline failing (API drift, OOM) must not lose the others
            rows.append({"pipeline": name, "error": f"{type(error).__name__}: {error}"[:500]})
        free_memory()  # after the except block: its traceback (and the tensors its frames hold) is gone by now
    return rows


def _scale(ctx: Context) -> str:
    return "tiny sizes (dry run)" if ctx.dry_run else "paper size"


def _table(title: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    table_rows = []
    for row in rows:
        if "call_s" in row:
            table_rows.append(
                [row["pipeline"], row["size"], row["dtype"], row["params"] / 1e6, row["build_s"], row["steps"],
                 row["s_per_step"], row["call_s"], row["peak_mib"] / 1024, ""]
            )  # fmt: skip
        else:
            note = row.get("error") or row.get("skipped") or ""
            table_rows.append([row["pipeline"], *["n/a"] * 8, note[:160]])
    columns = ["pipeline", "size", "dtype", "params M", "build s", "steps", "s/step", "call s", "peak GiB", "note"]
    return {"title": title, "columns": columns, "rows": table_rows}


def run(ctx: Context) -> dict[str, Any]:
    """Section 3: the landed paper pipelines at paper size."""
    rows = _run_all(ctx, PAPER_PIPELINES)
    return {
        "rows": rows,
        "table": _table(f"Pipelines at {_scale(ctx)}, random weights", rows),
        "notes": "Weights random (meta-device init, materialised on the device); s/step includes the VAE and text "
        "encoders of the call divided by its steps; peak memory includes the weights.",
    }


def _pending(name: str, module: str, wanted: tuple[str, ...]) -> dict[str, Any]:
    """A row for a package without an adapter here: what it exposes, so the next run knows what to add."""
    if importlib.util.find_spec(module) is None:
        return {"pipeline": name, "skipped": f"package {module} is not importable"}
    found = [sub for sub in wanted if importlib.util.find_spec(f"{module}.{sub}") is not None]
    if not found:
        return {"pipeline": name, "skipped": f"no generator API yet ({module} has none of {', '.join(wanted)})"}
    names = sorted(n for sub in found for n in vars(importlib.import_module(f"{module}.{sub}")) if n[0] != "_")
    return {"pipeline": name, "skipped": f"API present ({', '.join(found)}: {', '.join(names[:8])}); no adapter yet"}


def run_new(ctx: Context) -> dict[str, Any]:
    """Section 4: portrait-edit and humananim, then a probe of the packages still being written."""
    rows = _run_all(ctx, NEW_PIPELINES, missing_api_skips=True)
    rows += [_pending(name, module, wanted) for name, (module, wanted) in PENDING.items() if name not in NEW_PIPELINES]
    return {
        "rows": rows,
        "table": _table(f"Newer packages at {_scale(ctx)}, random weights", rows),
        "notes": "omniavatar (heads from seeds), agilegan3d (photo -> stylised views, no latent refinement) and "
        "dream-talk (motion from audio features) were written while this check was prepared: a builder that finds "
        "their API missing records a skipped row with the reason; a package without a builder is listed with what it "
        "exposes.",
    }
