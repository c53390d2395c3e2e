"""The smoke-check runner behind the packages' ``python -m <package>.smoke``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genblocks.smoke import SmokeError, check_save_load, run_smoke


def _failing() -> list[str]:
    raise SmokeError("frames are not finite")


def _crashing() -> list[str]:
    raise KeyError("boom")


def test_run_smoke_reports_passes_failures_and_crashes(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_smoke("pkg", lambda: ["one", "two"]) == 0
    assert capsys.readouterr().err == "pkg smoke: ok: one\npkg smoke: ok: two\n"
    assert run_smoke("pkg", _failing) == 1
    assert capsys.readouterr().err == "pkg smoke: FAILED: frames are not finite\n"
    assert run_smoke("pkg", _crashing) == 1
    err = capsys.readouterr().err
    assert err.startswith("pkg smoke: FAILED with an unexpected error:\n") and "KeyError: 'boom'" in err


class _Scale:
    """A pipeline-like object: output = scale * ones; ``drift`` is added to the scale on reload."""

    drift = 0.0

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def save_pretrained(self, folder: str) -> None:
        (Path(folder) / "scale.txt").write_text(str(self.scale))

    @classmethod
    def from_pretrained(cls, folder: str) -> _Scale:
        return cls(float((Path(folder) / "scale.txt").read_text()) + cls.drift)

    def set_progress_bar_config(self, disable: bool) -> None:
        pass

    def __call__(self) -> torch.Tensor:
        return torch.full((2, 3), self.scale)


class _Drifting(_Scale):
    drift = 1e-2


def test_check_save_load_passes_a_faithful_round_trip_and_names_a_changed_output() -> None:
    pipe = _Scale(0.5)
    assert (
        check_save_load(pipe, lambda p: p(), pipe(), "image")
        == "save_pretrained / from_pretrained reproduces the image"
    )
    drifting = _Drifting(0.5)
    with pytest.raises(SmokeError, match=r"save/load round trip changed the image by 0\.01"):
        check_save_load(drifting, lambda p: p(), drifting(), "image")
