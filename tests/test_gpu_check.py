"""The prepared GPU check (benchmarks/gpu, issue 23) rehearsed on the CPU, so it cannot rot before a GPU comes.

The dry run (``benchmarks/gpu/run.sh --dry-run``) goes through every section with tiny sizes; the assertions read its
JSON files and Markdown table: numbers present for every kernel, optimizer and pipeline, fp32 kernel errors within the
bound documented in coap-optim's kernel modules, and the optimizer-state ordering the methods exist for.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "gpu" / "run.sh"
SECTIONS = ("env", "kernels", "optimizers", "pipelines", "new_packages")
# one worker runs the whole module under `pytest -n N --dist loadgroup`, so the dry run (module fixture) runs once
pytestmark = pytest.mark.xdist_group("gpu_check")


def _run(out: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    env.pop("TRITON_INTERPRET", None)  # the check sets it itself for the dry run
    return subprocess.run(
        ["bash", str(RUN), "--out", str(out), "--dry-run", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("gpu-check")
    completed = _run(out)
    assert completed.returncode == 0, completed.stderr[-4000:]
    results = {name: json.loads((out / f"{name}.json").read_text()) for name in SECTIONS}
    return {"out": out, "stdout": completed.stdout, "results": results}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.slow
def test_every_section_ran_and_at_most_eight_files(dry_run: dict[str, Any]) -> None:
    results = dry_run["results"]
    for name in SECTIONS:
        assert results[name]["status"] == "ok", (name, results[name].get("error"), results[name].get("traceback"))
        assert results[name]["skipped"] == [], (name, results[name]["skipped"])
    files = sorted(p.name for p in dry_run["out"].iterdir())
    assert files == sorted([f"{name}.json" for name in SECTIONS] + ["summary.md"])
    assert len(files) <= 8  # what the device tool returns
    assert results["env"]["dry_run"] is True and results["env"]["cuda"] is False
    assert results["env"]["versions"]["torch"] == torch.__version__.split("+")[0]


@pytest.mark.slow
def test_kernels_match_their_twins_within_the_documented_bound(dry_run: dict[str, Any]) -> None:
    kernels = dry_run["results"]["kernels"]
    ops = {(row["op"], row["dtype"]) for row in kernels["rows"]}
    expected_ops = {
        "project_and_update_moments[right]",
        "project_and_update_moments[left]",
        "back_project_and_apply[right]",
        "back_project_and_apply[left]",
        "quantize_blockwise",
        "dequantize_blockwise",
        "adam_update_8bit",
    }
    assert ops == {(op, dtype) for op in expected_ops for dtype in ("float32", "bfloat16")}
    for row in kernels["rows"]:
        assert _number(row["kernel_ms"]) and row["kernel_ms"] > 0
        assert _number(row["twin_ms"]) and row["twin_ms"] > 0
        for error in row["errors"]:
            if error["kind"] == "codes":
                assert error["max_code_distance"] <= 1
            else:
                assert _number(error["measured"]), (row["op"], error)
        if row["dtype"] == "float32":
            assert row["ok"], row
            for error in row["errors"]:
                if error["kind"] != "codes":
                    assert error["measured"] <= kernels["bounds"]["fp32_normalised"], (row["op"], error)
    # a bf16 weight after back_project_and_apply is compared in bf16 ulps, not against the fp32 bound
    bf16_weights = [
        e for r in kernels["rows"] if r["dtype"] == "bfloat16" for e in r["errors"] if e["output"] == "param"
    ]
    assert bf16_weights and all(e["kind"] == "bf16 elementwise relative" for e in bf16_weights)


@pytest.mark.slow
def test_optimizers_report_state_memory_time_and_loss(dry_run: dict[str, Any]) -> None:
    section = dry_run["results"]["optimizers"]
    runs = section["runs"]
    for name in ("adamw", "svd", "coap", "coap_8bit"):
        run = runs[name]
        assert "error" not in run, (name, run)
        for key in ("state_bytes", "peak_mib", "median_step_ms", "median_iteration_ms", "final_loss"):
            assert _number(run[key]) and run[key] > 0, (name, key, run[key])
        assert set(run["ratios_to_adamw"]) == {
            "state_bytes",
            "peak_mib",
            "median_step_ms",
            "median_iteration_ms",
            "final_loss",
        }
    assert runs["adamw"]["ratios_to_adamw"]["state_bytes"] == 1.0
    # what the methods are for: low-rank moments are smaller than Adam's, 8-bit codes smaller still
    assert runs["coap_8bit"]["state_bytes"] < runs["coap"]["state_bytes"] < runs["adamw"]["state_bytes"]
    projection = section["projection"]
    assert _number(projection["coap_refresh_ms"]) and _number(projection["full_svd_ms"])
    assert projection["svd_over_coap"] == pytest.approx(projection["full_svd_ms"] / projection["coap_refresh_ms"])


@pytest.mark.slow
def test_pipelines_report_time_and_memory(dry_run: dict[str, Any]) -> None:
    rows = {row["pipeline"]: row for row in dry_run["results"]["pipelines"]["rows"]}
    rows |= {row["pipeline"]: row for row in dry_run["results"]["new_packages"]["rows"]}
    for name in ("x-portrait", "diffportrait3d", "id-patch", "fg-net", "portrait-edit", "humananim"):
        row = rows[name]
        assert "error" not in row and "skipped" not in row, row
        for key in ("params", "build_s", "call_s", "s_per_step", "peak_mib"):
            assert _number(row[key]) and row[key] > 0, (name, key, row[key])
    for name in ("omniavatar", "agilegan3d", "dream-talk"):
        row = rows[name]
        assert ("call_s" in row and _number(row["call_s"])) or row.get("skipped"), row  # measured, or says why not


@pytest.mark.slow
def test_summary_table_holds_every_section(dry_run: dict[str, Any]) -> None:
    summary = (dry_run["out"] / "summary.md").read_text()
    assert summary == dry_run["stdout"].strip("\n") + "\n" or summary.strip() in dry_run["stdout"]
    for title in ("COAP Triton kernels vs torch twins", "Optimizers on LLaMA", "Pipelines at tiny sizes (dry run)"):
        assert title in summary
    for row in ("| adam_update_8bit | float32 |", "| coap_8bit |", "| x-portrait |", "| id-patch |", "| fg-net |"):
        assert row in summary


def test_budget_skips_what_does_not_fit(tmp_path: Path) -> None:
    """With no time left, sections are recorded as skipped, and the table still comes out."""
    completed = _run(tmp_path, "--budget", "0", "--only", "env", "kernels", timeout=300)
    assert completed.returncode == 0, completed.stderr[-4000:]
    kernels = json.loads((tmp_path / "kernels.json").read_text())
    assert kernels["status"] == "skipped"
    assert "skipped" in (tmp_path / "summary.md").read_text()


def test_kernel_error_bounds_flag_real_errors() -> None:
    from benchmarks.gpu.kernels import BF16_ELEMENTWISE_BOUND, _errors

    ref = torch.tensor([1.0, 2.0, -3.0, 0.5])
    assert _errors("x", ref.clone(), ref)["ok"]
    assert not _errors("x", ref * (1 + 1e-3), ref)["ok"]  # 1e-3 of the scale breaks the fp32 bound
    bf16 = ref.to(torch.bfloat16)
    one_ulp = (bf16.view(torch.int16) + 1).view(torch.bfloat16)  # the next bf16 away from zero
    assert _errors("w", one_ulp, bf16)["ok"]
    assert _errors("w", one_ulp, bf16)["measured"] <= BF16_ELEMENTWISE_BOUND
    two_ulps = (bf16.view(torch.int16) + 2).view(torch.bfloat16)
    assert not _errors("w", two_ulps, bf16)["ok"]
    codes = torch.tensor([3, 4, 5], dtype=torch.uint8)
    assert not _errors("c", codes + 2, codes)["ok"]


def test_meta_parameters_materialise_on_the_device_with_shared_weights_kept() -> None:
    from benchmarks.gpu.common import count_parameters, materialise, parameters_on_meta

    with parameters_on_meta():
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 8))
        model[2].weight = torch.nn.Parameter(model[0].weight.T.contiguous())
        model.register_buffer("position", torch.arange(4))
    assert all(p.device.type == "meta" for p in model.parameters())
    materialise(model, torch.device("cpu"), torch.bfloat16, seed=0)
    assert all(p.device.type == "cpu" and p.dtype == torch.bfloat16 for p in model.parameters())
    assert torch.equal(model.position, torch.arange(4))  # buffers keep their real values
    assert torch.equal(model[1].weight, torch.ones(16, dtype=torch.bfloat16))
    assert torch.equal(model[0].bias, torch.zeros(16, dtype=torch.bfloat16))
    assert 0.1 < model[0].weight.float().std().item() * 8**0.5 < 10  # N(0, 1 / fan_in)
    assert count_parameters(model) == 8 * 16 + 16 + 32 + 16 * 8 + 8
    out = model(torch.randn(2, 8, dtype=torch.bfloat16))
    assert out.shape == (2, 8) and torch.isfinite(out).all()


def test_pending_probe_says_what_a_package_without_a_builder_exposes() -> None:
    from benchmarks.gpu.pipelines import _pending

    assert "not importable" in _pending("nope", "no_such_package_for_gpu_check", ("pipeline",))["skipped"]
    assert "no generator API yet" in _pending("fg-net", "fg_net", ("no_such_module",))["skipped"]
    present = _pending("fg-net", "fg_net", ("pipeline_fg_net", "no_such_module"))["skipped"]
    assert present.startswith("API present (pipeline_fg_net:") and "no adapter yet" in present
