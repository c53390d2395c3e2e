"""Import isolation: the arrows of ARCHITECTURE.md, checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("diffusers", "transformers", "genblocks", "lightning", "triton", "bitsandbytes", "peft")
PAPER_PACKAGES = (
    "coap_optim",
    "id_patch",
    "x_portrait",
    "diffportrait3d",
    "dream_talk",
    "fg_net",
    "omniavatar",
    "agilegan3d",
    "portrait_edit",
    "humananim",
)


def modules_after_import(name: str) -> set[str]:
    code = f"import json, sys; import {name}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return {m.split(".")[0] for m in json.loads(out.splitlines()[-1])}


def test_coap_optim_imports_only_torch() -> None:
    loaded = modules_after_import("coap_optim")
    assert "torch" in loaded
    assert not loaded & set(HEAVY), f"importing coap_optim pulled {sorted(loaded & set(HEAVY))}"


@pytest.mark.parametrize("name", ["genblocks"])
def test_core_imports_no_paper_package(name: str) -> None:
    loaded = modules_after_import(name)
    assert not loaded & set(PAPER_PACKAGES), f"{name} imported {sorted(loaded & set(PAPER_PACKAGES))}"
