"""ID-Patch's overhead: time per image and peak memory vs the same SDXL + ControlNet pipeline without ID tokens/patches.

Command line (from the repository root)::

    uv run --frozen python -m benchmarks --package id-patch [--quick]
    ID_PATCH_BENCH_THREADS=4 uv run --frozen python -m benchmarks --package id-patch   # with 4 idle cores

The paper's selling point is low overhead (spec id-patch §1, §6: "7x faster than OMG"; runtime flat in the number of
people). This benchmark measures what ID-Patch adds to its own base: the baseline is diffusers'
``StableDiffusionXLControlNetPipeline`` over the *same* UNet, ControlNet, VAE, text encoders and scheduler, given the
same pose image (the people's skeletons, no patches) and the text context only (77 tokens); ID-Patch is
``IDPatchPipeline`` with F subjects (precomputed face embeddings: face detection and encoding are not timed, they are
the same for any face-conditioned method), so its extra work is the two projections, the patch rendering and the
``77 + 16 F`` token context in every cross-attention of the UNet and the ControlNet (``id_injection_ratio=0.8``).

Sizes (random weights with the right shapes; timings do not depend on the values):

- ``tiny``: spec §9 (``id_patch.testing.tiny_id_patch_pipeline``): 64 px, 8 x 8 latents, 16 text tokens, 2 ID tokens
  x 64, face dim 16, patch 8; 4 steps.
- ``mid``: an SDXL-shaped model whose step runs on a CPU in about a second: UNet channels (64, 128, 256), 2 layers per
  block, transformer depths (1, 2, 2), context width 256 (two 128-wide CLIP text encoders, 77 tokens), a factor-8 VAE,
  256 px images (32 x 32 latents); ID-Patch at paper token count: face dim 512, 16 tokens x 256, patch 16 (the paper's
  64 px at 1024 scaled to 256); 8 steps.
- ``sdxl`` (only with a CUDA GPU): SDXL's shapes (UNet 2.6B, CLIP-L + bigG, SDXL VAE, ControlNet from the UNet), bf16,
  1024 px, 30 steps, ID-Patch at paper sizes (512 -> 16 x 2048 tokens, 64 px patches).

Every run: guidance scale 5.0 (two UNet/ControlNet branches per step), conditioning scale 0.8, Euler scheduler, one
image per call, ``output_type="np"`` (VAE decode included), prompt "a group photo of friends at the beach". Seeds:
``torch.manual_seed(0)`` before building the components, face embeddings from ``torch.Generator().manual_seed(0)``,
latents from ``torch.Generator().manual_seed(1234)``. Timing: one subprocess per size builds both pipelines over the
same modules, warms every variant up once, then times the variants interleaved (baseline, 1, 2, 4 people, baseline,
...) ``repeats`` times, so load changes on a shared machine hit all of them alike. Reported: the best (minimum) call;
the ratio compares process CPU time on CPU (with one thread it is the work done, and it does not count time spent
waiting for a core another job holds; wall-clock is shown next to it) and synchronised wall-clock time on CUDA. Threads:
``ID_PATCH_BENCH_THREADS`` (default 1: on a small shared CPU, two OpenMP threads per process spin and inflate timings
many-fold).

Memory, measured honestly per device: one generation call per variant, each in a fresh subprocess. On CUDA, the peak of
``torch.cuda.max_memory_allocated()`` during the call minus the allocation after loading (activations and temporaries).
On CPU, ``tracemalloc`` does not see torch's allocator, so the worker reads the process's resident set from
``/proc/self/status``: it resets the high-water mark (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0) after building
the pipelines and reports ``VmHWM - VmRSS`` (peak resident bytes above the loaded model). That includes allocator
caching and page granularity, so small differences at tiny size are noise; where ``/proc`` is unavailable the column
says n/a.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

COMMAND = "uv run --frozen python -m benchmarks --package id-patch"
THREADS = int(os.environ.get("ID_PATCH_BENCH_THREADS", "1"))
PROMPT = "a group photo of friends at the beach"
EMBED_SEED = 0
LATENT_SEED = 1234
MODEL_SEED = 0


@dataclass(frozen=True)
class Size:
    """One benchmark size."""

    name: str
    resolution: int
    steps: int
    repeats: int
    faces: tuple[int, ...]
    device: str = "cpu"


TINY = Size("tiny", resolution=64, steps=4, repeats=5, faces=(1, 2, 4))
TINY_QUICK = Size("tiny", resolution=64, steps=4, repeats=3, faces=(2,))
MID = Size("mid", resolution=256, steps=8, repeats=3, faces=(1, 2, 4))
SDXL = Size("sdxl", resolution=1024, steps=30, repeats=3, faces=(1, 2, 4), device="cuda")
SIZES = {size.name: size for size in (TINY, MID, SDXL)}


# --------------------------------------------------------------------------- components
def _clip_config(hidden: int, layers: int, heads: int, ffn: int, vocab: int, act: str, projection: int | None) -> Any:
    from transformers import CLIPTextConfig

    extra = {} if projection is None else {"projection_dim": projection}
    return CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=ffn,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act=act,
        bos_token_id=vocab - 2,
        eos_token_id=vocab - 1,
        pad_token_id=vocab - 1,
        **extra,
    )


def _tokenizer_77() -> Any:
    from genblocks.tiny import tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer()
    tokenizer.model_max_length = 77
    return tokenizer


def _sdxl_shaped(size: str, seed: int = MODEL_SEED) -> dict[str, Any]:
    """Random SDXL-shaped components: ``mid`` (CPU-sized) or ``sdxl`` (the real shapes)."""
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from id_patch.modeling_id_patch import IDPatchConfig, IDPatchProjector
    from id_patch.testing import sdxl_euler_scheduler

    tokenizer = _tokenizer_77()
    vocab = len(tokenizer)
    if size == "mid":
        width, pooled, time_dim = 256, 128, 32
        unet_kwargs = {
            "block_out_channels": (64, 128, 256),
            "layers_per_block": 2,
            "transformer_layers_per_block": (1, 2, 2),
            "attention_head_dim": (2, 4, 8),
            "norm_num_groups": 32,
        }
        clip_l = _clip_config(128, 4, 4, 512, vocab, "quick_gelu", None)
        clip_g = _clip_config(128, 4, 4, 512, vocab, "gelu", pooled)
        vae_channels, patch = (32, 64, 128, 128), 16
    else:
        width, pooled, time_dim = 2048, 1280, 256
        unet_kwargs = {
            "block_out_channels": (320, 640, 1280),
            "layers_per_block": 2,
            "transformer_layers_per_block": (1, 2, 10),
            "attention_head_dim": (5, 10, 20),
            "norm_num_groups": 32,
        }
        clip_l = _clip_config(768, 12, 12, 3072, 49408, "quick_gelu", None)
        clip_g = _clip_config(1280, 32, 20, 5120, 49408, "gelu", pooled)
        vae_channels, patch = (128, 256, 512, 512), 64
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=width,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=pooled + 6 * time_dim,
        **unet_kwargs,
    )
    controlnet = ControlNetModel.from_unet(unet, conditioning_channels=3)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=vae_channels,
        layers_per_block=2,
        latent_channels=4,
        scaling_factor=0.13025,
    )
    projector = IDPatchProjector.from_id_patch_config(
        IDPatchConfig(face_dim=512, num_tokens=16, token_dim=width, patch_size=patch)
    )
    return {
        "unet": unet,
        "controlnet": controlnet,
        "vae": vae,
        "text_encoder": CLIPTextModel(clip_l),
        "text_encoder_2": CLIPTextModelWithProjection(clip_g),
        "tokenizer": tokenizer,
        "tokenizer_2": _tokenizer_77(),
        "scheduler": sdxl_euler_scheduler(),
        "id_projector": projector,
    }


def build_components(size: str, seed: int = MODEL_SEED) -> dict[str, Any]:
    """The shared components of both pipelines at one size (``tiny``, ``mid`` or ``sdxl``)."""
    if size == "tiny":
        from id_patch.testing import tiny_id_patch_pipeline

        return dict(tiny_id_patch_pipeline(seed).components)
    if size in ("mid", "sdxl"):
        return _sdxl_shaped(size, seed)
    raise ValueError(f"unknown size {size!r}; expected one of {sorted(SIZES)}")


def subjects(num_faces: int, resolution: int, face_dim: int) -> tuple[Any, Any, Any]:
    """Seeded unit face embeddings (F, D), nose positions (F, 2) spread left to right, and their pose image."""
    import numpy as np
    import torch

    from id_patch.condition import draw_pose
    from id_patch.data import coco_keypoints_for_person

    generator = torch.Generator().manual_seed(EMBED_SEED)
    embeds = torch.nn.functional.normalize(torch.randn(num_faces, face_dim, generator=generator), dim=-1)
    head = resolution / 16
    noses = [(resolution * (i + 0.5) / num_faces, resolution * 0.3) for i in range(num_faces)]
    keypoints = np.stack([coco_keypoints_for_person(nose, head) for nose in noses])
    return embeds, torch.tensor(noses), draw_pose(keypoints, resolution, resolution)


# --------------------------------------------------------------------------- measurements (each in a subprocess)
def _proc_status(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _variants(size: Size) -> list[tuple[str, int]]:
    """(pipeline, people) pairs of a size: the baseline with the most people, then ID-Patch per face count."""
    return [("baseline", max(size.faces))] + [("id-patch", faces) for faces in size.faces]


def build_calls(size: Size) -> tuple[dict[str, Any], dict[str, int]]:
    """One generation closure per variant of a size, over shared components, and each pipeline's parameter count.

    Returns:
        ``({"baseline/4": call, "id-patch/1": call, ...}, {"baseline": params, "id-patch": params})``.
    """
    import torch
    from diffusers import StableDiffusionXLControlNetPipeline

    from id_patch.pipeline_id_patch import IDPatchPipeline

    device = torch.device(size.device)
    dtype = torch.bfloat16 if size.device == "cuda" else torch.float32
    with device:  # random init directly on the device (SDXL size: 4.7B parameters)
        components = build_components(size.name)
    projector = components.pop("id_projector")
    baseline = StableDiffusionXLControlNetPipeline(**components, add_watermarker=False).to(device=device, dtype=dtype)
    idpatch = IDPatchPipeline(**components, id_projector=projector, add_watermarker=False).to(
        device=device, dtype=dtype
    )
    for pipe in (baseline, idpatch):
        pipe.set_progress_bar_config(disable=True)
    params = {
        name: sum(
            p.numel() for m in pipe.components.values() if isinstance(m, torch.nn.Module) for p in m.parameters()
        )
        for name, pipe in (("baseline", baseline), ("id-patch", idpatch))
    }
    common = {
        "prompt": PROMPT,
        "height": size.resolution,
        "width": size.resolution,
        "num_inference_steps": size.steps,
        "guidance_scale": 5.0,
        "controlnet_conditioning_scale": 0.8,
        "output_type": "np",
    }

    def make(variant: str, faces: int) -> Any:
        embeds, noses, pose = subjects(faces, size.resolution, projector.config.face_dim)
        if variant == "baseline":
            pipe, inputs = baseline, {"image": pose[None]}
        else:
            inputs = {"face_embeds": embeds, "face_locations": noses, "pose_image": pose, "id_injection_ratio": 0.8}
            pipe = idpatch

        def call() -> None:
            pipe(**common, **inputs, generator=torch.Generator().manual_seed(LATENT_SEED))
            if device.type == "cuda":
                torch.cuda.synchronize()

        return call

    return {f"{variant}/{faces}": make(variant, faces) for variant, faces in _variants(size)}, params


def time_variants(size: Size) -> dict[str, Any]:
    """Warm every variant up once, then time them interleaved (baseline, 1, 2, 4 people, baseline, ...) ``repeats``
    times (``size.repeats``), so load changes on a shared machine hit all variants alike.

    Returns:
        ``{"seconds": {variant: [wall s, ...]}, "cpu_seconds": {variant: [process CPU s, ...]}, "params": {...}}``.
    """
    import torch

    torch.set_num_threads(THREADS)
    calls, params = build_calls(size)
    for call in calls.values():
        call()
    seconds: dict[str, list[float]] = {key: [] for key in calls}
    cpu_seconds: dict[str, list[float]] = {key: [] for key in calls}
    for _ in range(size.repeats):
        for key, call in calls.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            call()
            cpu_seconds[key].append(time.process_time() - cpu_start)
            seconds[key].append(time.perf_counter() - start)
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "params": params}


def peak_memory(size: Size, variant_key: str) -> dict[str, Any]:
    """Peak extra memory of one generation call of one variant, in a fresh process (see the module docstring).

    Returns:
        ``{"peak_bytes": int | None, "method": str}``.
    """
    import torch

    torch.set_num_threads(THREADS)
    calls, _ = build_calls(size)
    call = calls[variant_key]
    gc.collect()
    if size.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        call()
        return {"peak_bytes": torch.cuda.max_memory_allocated() - base, "method": "cuda max_memory_allocated"}
    base = _proc_status("VmRSS")
    if base is None or not _reset_peak_rss():
        return {"peak_bytes": None, "method": "n/a"}
    call()
    high = _proc_status("VmHWM")
    return {"peak_bytes": None if high is None else high - base, "method": "VmHWM - VmRSS (/proc/self/status)"}


def _worker(*args: str) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark worker {args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the benchmark
def run(out_dir: Path, quick: bool) -> dict[str, Any]:
    """Time and measure baseline vs ID-Patch at each size; see the module docstring."""
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = [TINY_QUICK] if quick else [TINY, MID] + ([SDXL] if torch.cuda.is_available() else [])
    rows: list[list[Any]] = []
    figures: dict[str, dict[str, Any]] = {}
    raw: dict[str, Any] = {}
    for size in sizes:
        spec = [size.name, str(size.repeats), ",".join(map(str, size.faces))]
        timing = _worker("time", *spec)
        memory = {key: _worker("memory", *spec, key) for key in timing["seconds"]}
        raw[size.name] = {"timing": timing, "memory": memory}
        # the compared time: process CPU time on CPU (one thread: the work done, insensitive to other jobs waiting
        # for the same cores), wall-clock time on CUDA (synchronised); the best of the repeats in both cases
        compared = timing["cpu_seconds"] if size.device == "cpu" else timing["seconds"]
        base_key = f"baseline/{max(size.faces)}"
        base_s = min(compared[base_key])
        base_mem = memory[base_key]["peak_bytes"]
        for key in timing["seconds"]:
            variant, faces = key.split("/")
            wall, seconds = min(timing["seconds"][key]), min(compared[key])
            peak = memory[key]["peak_bytes"]
            if variant == "baseline":
                label, time_ratio, memory_ratio = "SDXL + ControlNet (baseline)", None, None
                figures[f"seconds_per_image_{size.name}_baseline"] = {"value": seconds, "unit": "s"}
            else:
                label, time_ratio = "ID-Patch", seconds / base_s
                memory_ratio = peak / base_mem if peak and base_mem else None
                figures[f"seconds_per_image_{size.name}_idpatch_{faces}faces"] = {"value": seconds, "unit": "s"}
                figures[f"time_ratio_{size.name}_{faces}faces"] = {"value": time_ratio, "unit": "x"}
                if memory_ratio is not None:
                    figures[f"peak_memory_ratio_{size.name}_{faces}faces"] = {"value": memory_ratio, "unit": "x"}
            params = timing["params"][variant]
            row = _row(size, label, int(faces), wall, seconds, params, peak, time_ratio, memory_ratio)
            rows.append(row)
    (out_dir / "bench_overhead_raw.json").write_text(json.dumps(raw, indent=2))
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    notes = (
        "Time: best of the timed calls (after one warm-up each; variants interleaved); on CPU the ratio compares "
        f"process CPU time (robust to other jobs on a shared machine; wall-clock shown too), {THREADS} torch thread(s), "
        "CFG 5.0, Euler, one image per call, VAE decode included, face encoding excluded (embeddings precomputed). "
        "The baseline gets the pose of the most people in the size's list and the text context only. Peak memory: "
        "extra memory of one generation call above the loaded pipelines, each in a fresh process (on CPU "
        f"resident-set based, so noisy at tiny size). Device: {device}."
        + ("" if torch.cuda.is_available() else " The full SDXL size runs only with a CUDA GPU (not available here).")
    )
    return {
        "title": "ID-Patch overhead vs SDXL + ControlNet without ID tokens and patches",
        "command": COMMAND + (" --quick" if quick else ""),
        "columns": [
            "size",
            "pipeline",
            "people",
            "resolution",
            "steps",
            "params (M)",
            "wall s / image",
            "compared s / image",
            "time vs baseline",
            "peak extra memory (MiB)",
            "memory vs baseline",
        ],
        "rows": rows,
        "figures": figures,
        "notes": notes,
    }


def _row(
    size: Size,
    label: str,
    faces: int,
    wall: float,
    seconds: float,
    params: int,
    peak: int | None,
    time_ratio: float | None,
    memory_ratio: float | None,
) -> list[Any]:
    reference = time_ratio is None
    return [
        size.name,
        label,
        faces,
        f"{size.resolution}px",
        size.steps,
        params / 1e6,
        wall,
        seconds,
        "1 (reference)" if reference else f"{time_ratio:.3f}x",
        "n/a" if peak is None else peak / 2**20,
        "1 (reference)" if reference else ("n/a" if memory_ratio is None else f"{memory_ratio:.3f}x"),
    ]


if __name__ == "__main__":
    mode, size_name, repeats, faces = sys.argv[1:5]
    worker_size = replace(SIZES[size_name], repeats=int(repeats), faces=tuple(int(f) for f in faces.split(",")))
    result = time_variants(worker_size) if mode == "time" else peak_memory(worker_size, sys.argv[5])
    print(json.dumps(result))
