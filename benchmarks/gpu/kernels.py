"""Section 1: every COAP Triton kernel against its pure-torch twin, in fp32 and bf16.

For each op of :mod:`coap_optim.kernels` (``project_and_update_moments`` on both sides, ``back_project_and_apply`` on
both sides, ``quantize_blockwise``, ``dequantize_blockwise``, ``adam_update_8bit``) and each input dtype, the same
seeded inputs go through ``impl="triton"`` and ``impl="torch"``; every output is compared against the twin's and the
worst error is checked against the bound documented in the op's module docstring:

- fp32 outputs (moments, normalised updates, fp32 weights, dequantised values, absmax): ``max |kernel - twin| /
  max |twin| <= 1e-4`` (both accumulate in fp32 from the same input values; only the summation order differs);
- bf16 outputs (a bf16 weight after ``back_project_and_apply``): elementwise ``|kernel - twin| <= 2**-7 |twin|``
  (one bf16 ulp: both round nearly the same fp32 value);
- uint8 codes: at most one code apart, on at most 0.1 % of the elements (ties of the nearest-code search).

Times: median of CUDA-synchronised calls of each backend, each call including the copy of the state it updates in place
(small next to the GEMMs: 0.1 ms for the largest weight); on CPU under ``TRITON_INTERPRET=1`` the "kernel" time is the
interpreter's, and means nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.gpu.common import Context, time_ms

FP32_NORMALISED_BOUND = 1e-4
BF16_ELEMENTWISE_BOUND = 2.0**-7
CODE_MISMATCH_FRACTION_BOUND = 1e-3
CODE_DISTANCE_BOUND = 1


def _sizes(ctx: Context) -> dict[str, Any]:
    if ctx.dry_run:
        return {"right": (48, 64, 16), "left": (24, 80, 8), "numel": 1000, "block": 256}
    return {"right": (4096, 4096, 1024), "left": (4096, 11008, 1024), "numel": 4096 * 1024, "block": 4096}


def _errors(name: str, out: torch.Tensor, ref: torch.Tensor) -> dict[str, Any]:
    """Error figures of one output and whether they are within its documented bound."""
    if out.dtype == torch.uint8:
        distance = (out.int() - ref.int()).abs()
        mismatch = (distance > 0).float().mean().item()
        worst = int(distance.max().item()) if distance.numel() else 0
        ok = worst <= CODE_DISTANCE_BOUND and mismatch <= CODE_MISMATCH_FRACTION_BOUND
        return {"output": name, "kind": "codes", "max_code_distance": worst, "mismatch_fraction": mismatch, "ok": ok}
    out32, ref32 = out.float(), ref.float()
    diff = (out32 - ref32).abs()
    scale = ref32.abs().max().item()
    max_abs = diff.max().item() if diff.numel() else 0.0
    rel = (diff / ref32.abs().clamp_min(1e-30)).masked_fill(diff == 0, 0.0)
    max_rel = rel.max().item() if rel.numel() else 0.0
    normalised = max_abs / scale if scale > 0 else max_abs
    if out.dtype == torch.bfloat16:
        bound, measured = BF16_ELEMENTWISE_BOUND, max_rel
        kind = "bf16 elementwise relative"
    else:
        bound, measured = FP32_NORMALISED_BOUND, normalised
        kind = "fp32 normalised"
    finite = bool(torch.isfinite(out32).all().item())
    return {
        "output": name,
        "kind": kind,
        "max_abs": max_abs,
        "max_rel": max_rel,
        "normalised": normalised,
        "bound": bound,
        "measured": measured,
        "ok": finite and measured <= bound,
    }


def _cases(ctx: Context, dtype: torch.dtype) -> list[tuple[str, str, Callable[[str], dict[str, torch.Tensor]]]]:
    """(op, shape label, run(impl) -> named outputs) for one input dtype; inputs are seeded and cloned per call."""
    from coap_optim.kernels import (
        adam_update_8bit,
        back_project_and_apply,
        create_dynamic_map,
        dequantize_blockwise,
        project_and_update_moments,
        quantize_blockwise,
    )

    device, sizes = ctx.device, _sizes(ctx)
    generator = torch.Generator(device=device).manual_seed(0)

    def randn(*shape: int, scale: float = 1.0, dt: torch.dtype = dtype) -> torch.Tensor:
        return (scale * torch.randn(*shape, device=device, generator=generator)).to(dt)

    cases: list[tuple[str, str, Callable[[str], dict[str, torch.Tensor]]]] = []
    for side in ("right", "left"):
        m, n, rank = sizes[side]
        low = (m, rank) if side == "right" else (rank, n)
        proj_shape = (rank, n) if side == "right" else (m, rank)
        grad, proj = randn(m, n), randn(*proj_shape, scale=n**-0.5 if side == "right" else m**-0.5)
        exp_avg = randn(*low, scale=0.1, dt=torch.float32)
        exp_avg_sq = randn(*low, dt=torch.float32).square().add_(0.01)
        param, update = randn(m, n), randn(*low)

        def project(impl: str, grad=grad, proj=proj, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq, side=side):
            moments = exp_avg.clone(), exp_avg_sq.clone()
            normalised = project_and_update_moments(
                grad, proj, *moments, side=side, beta1=0.9, beta2=0.999, eps=1e-6, denom_scale=1.0, impl=impl
            )
            return {"N": normalised, "exp_avg": moments[0], "exp_avg_sq": moments[1]}

        def back(impl: str, param=param, update=update, proj=proj, side=side):
            weight = param.clone()
            back_project_and_apply(
                weight, update, proj, side=side, step_size=1e-2, decay=1e-3, decay_before=side == "right", impl=impl
            )
            return {"param": weight}

        label = f"{m}x{n} r{rank}"
        cases += [
            (f"project_and_update_moments[{side}]", label, project),
            (f"back_project_and_apply[{side}]", label, back),
        ]

    numel, block = sizes["numel"], sizes["block"]
    values = randn(numel)
    qmap_m = create_dynamic_map(signed=True).to(device)
    qmap_v = create_dynamic_map(signed=False).to(device)
    codes, absmax = quantize_blockwise(values, qmap_m, block_size=block, impl="torch")

    def quantize(impl: str) -> dict[str, torch.Tensor]:
        out_codes, out_absmax = quantize_blockwise(values, qmap_m, block_size=block, impl=impl)
        return {"codes": out_codes, "absmax": out_absmax}

    def dequantize(impl: str) -> dict[str, torch.Tensor]:
        return {"values": dequantize_blockwise(codes, absmax, qmap_m, block_size=block, shape=(numel,), impl=impl)}

    moment_m = randn(numel, scale=0.1, dt=torch.float32)
    moment_v = randn(numel, dt=torch.float32).square()
    codes_m, absmax_m = quantize_blockwise(moment_m, qmap_m, block_size=block, impl="torch")
    codes_v, absmax_v = quantize_blockwise(moment_v, qmap_v, block_size=block, impl="torch")

    def adam8bit(impl: str) -> dict[str, torch.Tensor]:
        state = [codes_m.clone(), absmax_m.clone(), codes_v.clone(), absmax_v.clone()]
        normalised = adam_update_8bit(
            values, *state, qmap_m, qmap_v, beta1=0.9, beta2=0.999, eps=1e-6, denom_scale=1.0, block_size=block,
            impl=impl,
        )  # fmt: skip
        return {"N": normalised, "codes_m": state[0], "absmax_m": state[1], "codes_v": state[2], "absmax_v": state[3]}

    label = f"{numel} elems, block {block}"
    cases += [("quantize_blockwise", label, quantize), ("dequantize_blockwise", label, dequantize)]
    cases += [("adam_update_8bit", label, adam8bit)]
    return cases


def run(ctx: Context) -> dict[str, Any]:
    """Compare and time every kernel; see the module docstring."""
    from coap_optim.kernels import has_triton

    if not has_triton():
        raise RuntimeError("triton is not importable: the kernels cannot be checked")
    rows: list[dict[str, Any]] = []
    ctx.partial["rows"] = rows
    reps = 1 if ctx.dry_run else 20
    warmup = 0 if ctx.dry_run else 3
    for dtype in (torch.float32, torch.bfloat16):
        dtype_name = str(dtype).removeprefix("torch.")
        for op, shape, call in _cases(ctx, dtype):
            if not ctx.fits(f"kernels {op} {dtype_name}", 2.0):
                continue
            kernel_out, twin_out = call("triton"), call("torch")
            errors = [_errors(name, kernel_out[name], twin_out[name]) for name in twin_out]
            kernel_ms = time_ms(functools.partial(call, "triton"), ctx.device, warmup=warmup, reps=reps)
            twin_ms = time_ms(functools.partial(call, "torch"), ctx.device, warmup=warmup, reps=reps)
            rows.append(
                {
                    "op": op,
                    "dtype": dtype_name,
                    "shape": shape,
                    "errors": errors,
                    "ok": all(e["ok"] for e in errors),
                    "kernel_ms": kernel_ms["median_ms"],
                    "twin_ms": twin_ms["median_ms"],
                    "twin_over_kernel": twin_ms["median_ms"] / kernel_ms["median_ms"],
                }
            )
    table_rows = []
    for row in rows:
        worst = max(
            (e for e in row["errors"] if "measured" in e), key=lambda e: e["measured"] / e["bound"], default=None
        )
        codes = [e for e in row["errors"] if e["kind"] == "codes"]
        error = f"{worst['measured']:.2e} / {worst['bound']:.1e} ({worst['output']})" if worst else ""
        if codes:
            error += f"; codes max dist {max(e['max_code_distance'] for e in codes)}"
        table_rows.append(
            [row["op"], row["dtype"], row["shape"], error, "yes" if row["ok"] else "NO", row["kernel_ms"],
             row["twin_ms"], row["twin_over_kernel"]]
        )  # fmt: skip
    timing = "Triton interpreter on CPU: times mean nothing" if not ctx.cuda else "CUDA-synchronised medians"
    return {
        "rows": rows,
        "all_within_bound": all(row["ok"] for row in rows),
        "bounds": {
            "fp32_normalised": FP32_NORMALISED_BOUND,
            "bf16_elementwise_relative": BF16_ELEMENTWISE_BOUND,
            "code_distance": CODE_DISTANCE_BOUND,
            "code_mismatch_fraction": CODE_MISMATCH_FRACTION_BOUND,
        },
        "table": {
            "title": "COAP Triton kernels vs torch twins",
            "columns": [
                "op",
                "dtype",
                "shape",
                "worst error / bound",
                "within",
                "kernel ms",
                "twin ms",
                "twin/kernel",
            ],
            "rows": table_rows,
        },
        "notes": f"{timing}; error = max over the op's outputs (kernel vs twin on the same inputs).",
    }
