"""The smoke-check runner behind the packages' ``python -m <package>.smoke``."""

from __future__ import annotations

import pytest

from genblocks.smoke import SmokeError, run_smoke


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
