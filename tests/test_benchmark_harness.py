"""The benchmark runner's contract: discovery, validation, Markdown and JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import run as runner


def test_discovers_coap_optim_benchmarks() -> None:
    found = runner.discover()
    assert "coap-optim" in found
    assert all(p.name.startswith("bench_") for p in found["coap-optim"])


def good_result() -> dict:
    return {
        "title": "t",
        "columns": ["a", "b"],
        "rows": [["x", 1.23456]],
        "figures": {"speedup": {"value": 2.0, "unit": "x"}},
    }


def test_validate_accepts_contract() -> None:
    assert runner.validate_result(good_result(), Path("b.py"))["title"] == "t"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda r: r.pop("figures"), KeyError),
        (lambda r: r["rows"].append(["only one cell"]), ValueError),
        (lambda r: r["figures"].update(bad=3.0), ValueError),
    ],
)
def test_validate_rejects_malformed(change, error) -> None:
    result = good_result()
    change(result)
    with pytest.raises(error):
        runner.validate_result(result, Path("b.py"))


def test_run_package_writes_json_and_markdown(tmp_path: Path) -> None:
    bench_dir = tmp_path / "benches" / "demo-pkg"
    bench_dir.mkdir(parents=True)
    (bench_dir / "bench_one.py").write_text(
        "def run(out_dir, quick):\n"
        "    return {'title': 'One', 'columns': ['n', 'ms'], 'rows': [[1, 0.5]],\n"
        "            'figures': {'ms': {'value': 0.5, 'unit': 'ms'}}}\n"
    )
    (bench_dir / "bench_broken.py").write_text("def run(out_dir, quick):\n    raise RuntimeError('boom')\n")
    files = runner.discover(tmp_path / "benches")["demo-pkg"]
    results, failures = runner.run_package("demo-pkg", files, tmp_path / "results", quick=True)
    assert [r["title"] for r in results] == ["One"]
    assert len(failures) == 1 and "boom" in failures[0]
    payload = json.loads((tmp_path / "results" / "demo-pkg.json").read_text())
    assert payload["results"][0]["figures"]["ms"] == {"value": 0.5, "unit": "ms"}
    assert "torch" in payload["machine"]["libraries"]
    markdown = (tmp_path / "results" / "demo-pkg.md").read_text()
    assert "| n | ms |" in markdown and "| 1 | 0.5 |" in markdown
