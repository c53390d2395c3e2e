"""tests/typecheck.py: genblocks and coap-optim must be free of mypy errors; other files are held to the baseline."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location("repo_typecheck", Path(__file__).with_name("typecheck.py"))
assert _spec is not None and _spec.loader is not None
typecheck = importlib.util.module_from_spec(_spec)
sys.modules["repo_typecheck"] = typecheck
_spec.loader.exec_module(typecheck)

CORE = "shared/src/genblocks/gan/stylegan2.py"
COAP = "packages/coap-optim/src/coap_optim/projection.py"
OTHER = "packages/id-patch/src/id_patch/pipeline_id_patch.py"


def _error(file: str, line: int, message: str = "Incompatible types") -> str:
    return f"{file}:{line}: error: {message}  [assignment]"


def test_strict_files_fail_on_any_error_whatever_the_baseline() -> None:
    report = "\n".join([_error(CORE, 12, "core slip"), f"{CORE}:12: note: a note", _error(COAP, 3)])
    verdict = typecheck.judge(report, baseline={CORE: 5, COAP: 5})
    assert not verdict.ok
    assert verdict.strict_errors == [_error(CORE, 12, "core slip"), _error(COAP, 3)]
    assert verdict.worse == {}


def test_other_files_may_keep_but_not_exceed_their_baseline() -> None:
    two = "\n".join([_error(OTHER, 1), _error(OTHER, 2)])
    kept = typecheck.judge(two, baseline={OTHER: 2})
    assert kept.ok and kept.counts[OTHER] == 2
    grown = typecheck.judge(two, baseline={OTHER: 1})
    assert not grown.ok and grown.worse == {OTHER: (2, 1)} and grown.strict_errors == []
    new_file = typecheck.judge(_error(OTHER, 1), baseline={})
    assert new_file.worse == {OTHER: (1, 0)}


def test_baseline_never_records_strict_files() -> None:
    report = "\n".join([_error(OTHER, 1), _error(CORE, 2)])
    assert typecheck.judge(report, baseline={OTHER: 1}).baseline_counts() == {OTHER: 1}


def test_strict_prefixes_cover_genblocks_and_coap_optim_only() -> None:
    assert typecheck.is_strict(CORE) and typecheck.is_strict(COAP)
    assert typecheck.is_strict("shared/src/genblocks/render3d/new_module.py")
    assert not typecheck.is_strict(OTHER)
    assert not typecheck.is_strict("packages/coap-optim/tests/test_adamw.py")
    assert {"shared/src/genblocks", "packages/coap-optim/src/coap_optim"} <= set(typecheck.sources())


def test_committed_baseline_holds_no_strict_file() -> None:
    import json

    baseline = json.loads(typecheck.BASELINE.read_text())
    assert [f for f in baseline if typecheck.is_strict(f)] == []


def test_update_only_lowers_counts_and_never_adds_files() -> None:
    other2 = "packages/fg-net/src/fg_net/cli.py"
    report = "\n".join([_error(OTHER, 1), _error(other2, 1), _error(other2, 2), _error(CORE, 3)])
    verdict = typecheck.judge(report, baseline={OTHER: 4, other2: 1, "gone.py": 2})
    assert verdict.shrunk({OTHER: 4, other2: 1, "gone.py": 2}) == {OTHER: 1, other2: 1}
    assert typecheck.judge(_error(OTHER, 1), baseline={}).shrunk({}) == {OTHER: 1}  # first baseline: all files
    assert typecheck.judge(_error(OTHER, 1), baseline={other2: 1}).shrunk({other2: 1}) == {}
