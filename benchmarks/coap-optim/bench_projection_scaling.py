"""Cost of one projection update: COAP's closed-form refresh vs GaLore's full SVD vs the official autograd refresh.

Command line (from the repository root; ``--quick`` stops at n = 1024)::

    uv run --frozen python -m benchmarks --package coap-optim [--quick]
    COAP_BENCH_THREADS=1 uv run --frozen python -m benchmarks --package coap-optim   # on a shared CPU

Seeds: the gradient G and the low-rank moment M come from ``torch.Generator().manual_seed(0)`` (per size, G then M);
the starting P is ``coap_optim.projection.initial_projection(G, r, "right", seed=3407)``. CPU timings use 2 torch
threads (the §10 protocol of the spec; ``COAP_BENCH_THREADS`` overrides it), fp32.

For square matrices n = 256 … 4096 with rank r = n / 4 (RIGHT side, P of shape (r, n)) it times:

- **COAP refresh** (ours): ``coap_optim.projection.refresh_projection`` — one clipped SGD step on P with the
  closed-form gradient of ``L(P) = mse(G PᵀP, G) · (1 − mean_rows cos(M P, G))``.
- **GaLore full SVD**: ``torch.linalg.svd(G, full_matrices=False)`` and the top-r rows of Vh, what
  ``galore_torch/galore_projector.py`` does every ``update_proj_gap`` steps.
- **official autograd refresh**: the update of bytedance/coap ``coap_torch/projection/coap_matrix.py``
  (``MatrixCOAP.update_proj``) re-implemented here: the same loss through autograd, ``clip_grad_norm_(P, 1.0)``,
  ``P -= 0.1 · grad``.
- **COAP re-projection**: ``coap_optim.projection.reproject`` (the warm-started range finder run every
  ``update_interval · reproject_factor`` steps).

It also checks that our refresh and the autograd one give the same P (max abs difference). A kernel-throughput section
(Triton ``project_and_update_moments`` / ``back_project_and_apply`` vs their torch twins and a bare matmul of the same
shape) runs only when CUDA is available and is recorded as skipped otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F


def _load_common() -> Any:
    name = "benchmarks_coap_optim__common"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_common.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


common = _load_common()

COMMAND = "uv run --frozen python -m benchmarks --package coap-optim"
SIZES_FULL = (256, 512, 1024, 2048, 4096)
SIZES_QUICK = (256, 512, 1024)
THREADS = int(os.environ.get("COAP_BENCH_THREADS", "2"))  # the spec §10 protocol: 2 CPU threads
PROJ_LR = 0.1
PROJ_CLIP = 1.0


def official_autograd_refresh(proj: torch.Tensor, exp_avg: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The official ``MatrixCOAP.update_proj`` for the RIGHT side, re-implemented (P (r, n), M (m, r), G (m, n))."""
    leaf = proj.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.mse_loss(grad @ leaf.T @ leaf, grad)
        loss = loss * (1 - F.cosine_similarity(exp_avg @ leaf, grad, dim=1).mean())
        loss.backward()
    torch.nn.utils.clip_grad_norm_([leaf], max_norm=PROJ_CLIP)
    with torch.no_grad():
        return leaf.detach() - PROJ_LR * leaf.grad


def galore_svd(grad: torch.Tensor, rank: int) -> torch.Tensor:
    """GaLore's projection update: full SVD, top-``rank`` right singular vectors (r, n)."""
    _, _, vh = torch.linalg.svd(grad, full_matrices=False)
    return vh[:rank]


def _inputs(n: int, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from coap_optim.projection import initial_projection

    generator = torch.Generator().manual_seed(0)
    grad = torch.randn(n, n, generator=generator)
    exp_avg = 0.1 * torch.randn(n, rank, generator=generator)
    proj = initial_projection(grad, rank, "right", seed=3407)
    return grad, exp_avg, proj


def _cuda_ms(fn: Any) -> float:
    def call() -> None:
        fn()
        torch.cuda.synchronize()

    return common.time_call(call, min_reps=5, budget_s=1.0)["median_ms"]


def _kernel_section() -> tuple[str, list[dict[str, Any]]]:
    """Triton kernels vs their torch twins vs a bare matmul of the same shape (CUDA only)."""
    if not torch.cuda.is_available():
        return "Kernel throughput: skipped: no CUDA.", []
    from coap_optim.kernels import back_project_and_apply, project_and_update_moments

    rows: list[dict[str, Any]] = []
    device = torch.device("cuda")
    generator = torch.Generator(device=device).manual_seed(0)
    for m, n, rank in ((4096, 4096, 1024), (11008, 4096, 1024), (4096, 4096, 256)):
        grad = torch.randn(m, n, device=device, generator=generator)
        proj = torch.linalg.qr(torch.randn(n, rank, device=device, generator=generator)).Q.T.contiguous()  # (r, n)
        exp_avg = torch.zeros(m, rank, device=device)
        exp_avg_sq = torch.zeros(m, rank, device=device)
        param = torch.randn(m, n, device=device, generator=generator)
        update = torch.randn(m, rank, device=device, generator=generator)

        def project(impl: str, grad=grad, proj=proj, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq) -> None:
            project_and_update_moments(
                grad,
                proj,
                exp_avg,
                exp_avg_sq,
                side="right",
                beta1=0.9,
                beta2=0.999,
                eps=1e-6,
                denom_scale=1.0,
                impl=impl,
            )

        def back(impl: str, param=param, update=update, proj=proj) -> None:
            back_project_and_apply(
                param, update, proj, side="right", step_size=1e-6, decay=0.0, decay_before=True, impl=impl
            )

        cases = (
            ("project_and_update_moments", project, lambda grad=grad, proj=proj: grad @ proj.T),
            ("back_project_and_apply", back, lambda update=update, proj=proj: update @ proj),
        )
        for label, kernel, matmul in cases:
            triton_ms = _cuda_ms(lambda kernel=kernel: kernel("triton"))
            torch_ms = _cuda_ms(lambda kernel=kernel: kernel("torch"))
            matmul_ms = _cuda_ms(matmul)
            rows.append(
                {
                    "kernel": label,
                    "shape": f"{m}x{n}, r={rank}",
                    "triton_ms": triton_ms,
                    "torch_impl_ms": torch_ms,
                    "matmul_ms": matmul_ms,
                    "triton_tflops": 2.0 * m * n * rank / triton_ms / 1e9,
                    "matmul_over_triton": matmul_ms / triton_ms,
                }
            )
    columns = ["kernel", "shape", "triton ms", "torch twin ms", "bare matmul ms", "triton TFLOP/s", "matmul / triton"]
    table = common.markdown_table(columns, [list(row.values()) for row in rows])
    return f"Kernel throughput on {torch.cuda.get_device_name(0)} (fp32 tensors):\n\n{table}", rows


def _measure(n: int, rank: int) -> tuple[list[dict[str, float]], float, float]:
    """Timings (ours, GaLore SVD, autograd, re-projection), max |P_ours - P_autograd| and max |P_ours - P|."""
    from coap_optim.projection import refresh_projection, reproject

    grad, exp_avg, proj = _inputs(n, rank)

    def ours() -> torch.Tensor:
        return refresh_projection(proj, exp_avg, grad, "right", lr=PROJ_LR, max_norm=PROJ_CLIP)

    timings = [
        common.time_call(ours),
        common.time_call(lambda: galore_svd(grad, rank), budget_s=3.0),
        common.time_call(lambda: official_autograd_refresh(proj, exp_avg, grad)),
        common.time_call(lambda: reproject(grad, proj, "right")),
    ]
    new_proj = ours()
    diff = (new_proj - official_autograd_refresh(proj, exp_avg, grad)).abs().max().item()
    return timings, diff, (new_proj - proj).abs().max().item()


def run(out_dir: Path, quick: bool) -> dict[str, Any]:
    """Time one projection update per method and size; see the module docstring."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = SIZES_QUICK if quick else SIZES_FULL
    load_before = os.getloadavg()[0]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    rows: list[list[Any]] = []
    figures: dict[str, dict[str, Any]] = {}
    curves: dict[str, list[float]] = {
        "COAP refresh": [],
        "GaLore full SVD": [],
        "autograd refresh": [],
        "reproject": [],
    }
    try:
        for n in sizes:
            rank = n // 4
            timings, diff, moved = _measure(n, rank)
            ours, svd, autograd, again = timings
            svd_ratio = svd["median_ms"] / ours["median_ms"]
            autograd_ratio = autograd["median_ms"] / ours["median_ms"]
            rows.append(
                [
                    n,
                    rank,
                    ours["median_ms"],
                    svd["median_ms"],
                    autograd["median_ms"],
                    again["median_ms"],
                    svd_ratio,
                    autograd_ratio,
                    f"{diff:.2e} (step {moved:.2e})",
                ]
            )
            figures[f"coap_refresh_ms_n{n}"] = {"value": ours["median_ms"], "unit": "ms"}
            figures[f"galore_svd_ms_n{n}"] = {"value": svd["median_ms"], "unit": "ms"}
            figures[f"svd_over_coap_n{n}"] = {"value": svd_ratio, "unit": "x"}
            figures[f"autograd_over_coap_n{n}"] = {"value": autograd_ratio, "unit": "x"}
            figures[f"max_abs_diff_vs_autograd_n{n}"] = {"value": diff, "unit": "abs"}
            for key, result in zip(curves, timings, strict=True):
                curves[key].append(result["median_ms"])
    finally:
        torch.set_num_threads(previous_threads)
    plot = common.line_plot(
        out_dir / "projection_scaling.png",
        {key: (list(sizes), values) for key, values in curves.items()},
        xlabel="n (square n×n gradient, rank n/4)",
        ylabel="time of one projection update (ms)",
        title=f"projection update cost, CPU, {THREADS} thread{'s' if THREADS > 1 else ''}, fp32",
        log_x=True,
        log_y=True,
        marker="o",
    )
    kernel_notes, kernel_rows = _kernel_section()
    notes = (
        "Median wall time of one projection update (ms). 'max |ΔP| vs autograd' is the largest entry-wise difference "
        "between our closed-form refresh and the autograd re-implementation of the official update, next to the size "
        "of the step itself. GaLore runs its SVD every `update_proj_gap` steps and COAP its refresh every "
        "`update_interval` steps, so per-training-step costs divide these by the respective gaps. "
        f"{THREADS} torch thread(s); 1-minute load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after "
        "(above the core count, other processes shared the CPU and timings are inflated).\n\n" + kernel_notes
    )
    if plot is None:
        notes += "\n\nNo plot: matplotlib is not installed."
    return {
        "title": "Projection update: COAP refresh vs GaLore SVD vs official autograd refresh"
        + (" (quick)" if quick else ""),
        "command": COMMAND + (" --quick" if quick else ""),
        "columns": [
            "n",
            "rank",
            "COAP refresh ms",
            "GaLore full SVD ms",
            "official autograd refresh ms",
            "COAP re-projection ms",
            "SVD / COAP",
            "autograd / COAP",
            "max |ΔP| vs autograd",
        ],
        "rows": rows,
        "figures": figures,
        "artifacts": [str(Path(out_dir.name) / plot.name)] if plot else [],
        "notes": notes,
        "kernel_throughput": kernel_rows if kernel_rows else "skipped: no CUDA",
        "threads": THREADS,
    }


if __name__ == "__main__":
    import json

    quick_mode = "--quick" in sys.argv
    print(json.dumps(run(Path("results/coap-optim"), quick_mode), indent=2, default=str))
