#!/usr/bin/env bash
# The prepared GPU check (issue 23): benchmarks/gpu/run.sh --out DIR [--dry-run] [--budget S] [--only SECTION...]
# Uses the packages from the working tree (source paths, no install). On a machine without diffusers / omegaconf
# (the device machine), the wheels that benchmarks/gpu/pack_wheels.sh put in benchmarks/gpu/wheels/ are installed
# into a scratch folder first. See benchmarks/gpu/README.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

if [[ -n "${PYTHON:-}" ]]; then
    PY="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
    PY=.venv/bin/python
else
    PY=python3
fi

SRC="$ROOT:$ROOT/shared/src"
for pkg in "$ROOT"/packages/*/src; do SRC="$SRC:$pkg"; done

WHEELS="$ROOT/benchmarks/gpu/wheels"
if ! PYTHONPATH="$SRC" "$PY" -c "import diffusers, omegaconf" 2>/dev/null; then
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        SITE="${GPU_CHECK_SITE:-/tmp/gpu-check-site}"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
        SRC="$SRC:$SITE"
    else
        echo "run.sh: diffusers/omegaconf are not importable and $WHEELS has no wheels (run pack_wheels.sh)" >&2
    fi
fi

export PYTHONPATH="$SRC${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export DIFFUSERS_VERBOSITY="${DIFFUSERS_VERBOSITY:-error}" TRANSFORMERS_VERBOSITY="${TRANSFORMERS_VERBOSITY:-error}"
exec "$PY" -m benchmarks.gpu.check "$@"
