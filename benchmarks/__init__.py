"""The benchmark matrix: one runner over ``benchmarks/<package>/bench_*.py``.

Each benchmark module defines ``run(out_dir: pathlib.Path, quick: bool) -> dict`` returning a result with keys
``title`` (str), ``columns`` (list of str), ``rows`` (list of lists), ``figures`` (``{name: {"value": float, "unit": str}}``),
and optionally ``artifacts`` (paths of plots it wrote under ``out_dir``) and ``notes`` (str). The runner
(``python -m benchmarks``) adds the machine and library versions and writes ``results/<package>.json`` and
``results/<package>.md``.
"""
