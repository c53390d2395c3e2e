"""The prepared GPU check (issue 23): ``benchmarks/gpu/run.sh --out DIR [--dry-run]``.

One process, sections run in order, each writing its own JSON as it finishes, then a Markdown table; see README.md.
"""
