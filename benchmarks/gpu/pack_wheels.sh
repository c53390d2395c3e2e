#!/usr/bin/env bash
# Wheels of what the device machine lacks (it reaches no package registry): diffusers and omegaconf by default, more
# with --with NAME (e.g. --with bitsandbytes, if it fits the 64 MiB the device tool carries).
#
#   benchmarks/gpu/pack_wheels.sh [--with NAME]... [--out DIR]     (default DIR: benchmarks/gpu/wheels, git-ignored)
#
# Nothing is downloaded: each wheel is rebuilt from the distribution installed in this checkout's .venv (the versions
# uv.lock pins), from its RECORD, with fresh hashes. Pure-Python wheels (py3-none-any) install on the device
# machine's Python 3.12; a platform wheel keeps the tag of the installed one. run.sh installs them with
# `pip install --no-index --no-deps --target` when diffusers / omegaconf do not import.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$ROOT/benchmarks/gpu/wheels"
NAMES=(diffusers omegaconf)
while [[ $# -gt 0 ]]; do
    case "$1" in
        --with) NAMES+=("$2"); shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        *) echo "pack_wheels.sh: unknown argument $1 (use --with NAME, --out DIR)" >&2; exit 2 ;;
    esac
done
PY="${PYTHON:-$ROOT/.venv/bin/python}"
mkdir -p "$OUT"
"$PY" - "$OUT" "${NAMES[@]}" <<'PYTHON'
import base64
import hashlib
import sys
import zipfile
from importlib.metadata import distribution
from pathlib import Path

out = Path(sys.argv[1])
for name in sys.argv[2:]:
    dist = distribution(name)
    info = Path(dist._path)  # the .dist-info folder
    site = info.parent
    wheel_meta = (info / "WHEEL").read_text()
    tag = next(line.split(":", 1)[1].strip() for line in wheel_meta.splitlines() if line.startswith("Tag:"))
    project = dist.metadata["Name"].replace("-", "_")
    target = out / f"{project}-{dist.version}-{tag}.whl"
    for old in out.glob(f"{project}-*.whl"):
        old.unlink()
    record_name = f"{info.name}/RECORD"
    rows = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for line in (info / "RECORD").read_text().splitlines():
            path = line.split(",")[0]
            if not path or path.startswith("..") or "__pycache__" in path or path == record_name:
                continue  # scripts outside site-packages, bytecode and the RECORD itself are left out
            if path.endswith(("INSTALLER", "REQUESTED", "direct_url.json", "uv_cache.json")):
                continue
            data = (site / path).read_bytes()
            archive.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append(f"{path},sha256={digest},{len(data)}")
        rows.append(f"{record_name},,")
        archive.writestr(record_name, "\n".join(rows) + "\n")
    print(f"{target.name}: {target.stat().st_size / 2**20:.1f} MiB")
PYTHON
du -sh "$OUT"
