"""The ``coap-optim`` command line: ``smoke``, ``demo`` and ``convert``."""

from __future__ import annotations

import json
import math
import sys
import types

import pytest
import torch

from coap_optim.cli import main


def test_smoke_subcommand_returns_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["smoke"]) == 0
    err = capsys.readouterr().err
    assert "FAILED" not in err
    assert err.count("coap-optim smoke: ok") == 5


def test_smoke_module_fails_loudly_when_a_check_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import coap_optim.smoke as smoke

    def broken_load(*args: object, **kwargs: object) -> None:
        raise RuntimeError("weights_only refused")

    monkeypatch.setattr(smoke.torch, "load", broken_load)
    assert smoke.main() == 1
    assert "FAILED: torch.load(weights_only=True) rejected the state dict" in capsys.readouterr().err


def test_demo_writes_summary_and_plot(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--steps", "4", "--eval-every", "2", "--batch-size", "4", "--no-progress"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    figures = summary["optimizers"]
    assert list(figures) == ["adamw", "coap", "coap8bit"]
    for name, row in figures.items():
        assert math.isfinite(row["final_eval_loss"]), name
        assert row["median_step_ms"] > 0.0
        assert len(summary["curves"][name]["train_loss"]) == 4
        assert summary["curves"][name]["eval_steps"] == [2, 4]
    # AdamW: two fp32 moments per parameter plus one 4-byte step per tensor.
    assert 8.0 <= figures["adamw"]["state_bytes_per_param"] < 8.01
    assert figures["coap"]["state_bytes_per_param"] < 0.6 * figures["adamw"]["state_bytes_per_param"]
    assert figures["coap8bit"]["state_bytes_per_param"] < 0.5 * figures["coap"]["state_bytes_per_param"]
    # Same seed, same batches, same initial weights: the first training loss is identical for every optimizer.
    first = {summary["curves"][name]["train_loss"][0] for name in figures}
    assert len(first) == 1
    assert (out / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert str(out / "summary.json") in printed
    assert "coap8bit" in printed


def test_demo_rejects_unknown_optimizer(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--optimizers", "sgd"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'sgd'" in capsys.readouterr().err


def test_demo_rejects_invalid_settings(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path), "--steps", "0"]) == 2
    assert "steps must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "summary.json").exists()


def _write_official_state(path, monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """Save a state dict shaped like the official ``coap_torch`` one (a projector object per projected parameter)."""
    names = ("coap_torch", "coap_torch.projection", "coap_torch.projection.coap_matrix")
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    projector_class = type("MatrixCOAP", (), {"__module__": names[-1]})
    sys.modules[names[-1]].MatrixCOAP = projector_class
    generator = torch.Generator().manual_seed(0)
    tensors = {
        "P": torch.linalg.qr(torch.randn(16, 4, generator=generator)).Q.T.contiguous(),  # (r, n) RIGHT
        "exp_avg": torch.randn(32, 4, generator=generator),
        "exp_avg_sq": torch.rand(32, 4, generator=generator),
        "bias_avg": torch.randn(32, generator=generator),
    }
    projector = projector_class()
    projector.rank, projector.update_interval, projector.ortho_matrix = 4, 40, tensors["P"]
    official = {
        "state": {
            0: {"step": 7, "exp_avg": tensors["bias_avg"], "exp_avg_sq": tensors["bias_avg"].square()},
            1: {
                "step": 7,
                "projector": projector,
                "exp_avg": tensors["exp_avg"],
                "exp_avg_sq": tensors["exp_avg_sq"],
                "custom": 1.0,
            },
        },
        "param_groups": [
            {"params": [0], "lr": 0.01, "betas": (0.9, 0.999), "weight_decay": 0.0},
            {"params": [1], "lr": 0.01, "rank": 4, "proj_method": "coap", "hook": projector},
        ],
    }
    torch.save(official, path)
    return tensors


def test_convert_needs_trust_pickle(tmp_path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    source, target = tmp_path / "official.pt", tmp_path / "ours.pt"
    _write_official_state(source, monkeypatch)
    assert main(["convert", str(source), str(target)]) == 2
    assert "--trust-pickle" in capsys.readouterr().err
    assert not target.exists()


def test_convert_writes_tensors_only_state(tmp_path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    source, target = tmp_path / "official.pt", tmp_path / "ours.pt"
    tensors = _write_official_state(source, monkeypatch)
    with pytest.raises(Exception, match="weights_only"):
        torch.load(source, weights_only=True)
    assert main(["convert", str(source), str(target), "--trust-pickle"]) == 0
    converted = torch.load(target, weights_only=True)
    projected, plain = converted["state"][1], converted["state"][0]
    assert torch.equal(projected["P"], tensors["P"])
    assert torch.equal(projected["exp_avg"], tensors["exp_avg"])
    assert torch.equal(projected["exp_avg_sq"], tensors["exp_avg_sq"])
    assert projected["step"].dtype == torch.int64 and int(projected["step"]) == 7
    assert "P" not in plain and torch.equal(plain["exp_avg"], tensors["bias_avg"])
    assert converted["param_groups"][1] == {"params": [1], "lr": 0.01, "rank": 4, "proj_method": "coap"}
    printed = capsys.readouterr().out
    assert "unmatched state keys of parameter 1: custom" in printed
    assert "non-scalar param-group keys left out: hook" in printed


def test_convert_missing_file(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(tmp_path / "absent.pt"), str(tmp_path / "out.pt"), "--trust-pickle"]) == 2
    assert "no such file" in capsys.readouterr().err
