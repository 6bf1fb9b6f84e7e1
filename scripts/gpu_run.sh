#!/usr/bin/env bash
# One prepared GPU run (docs/gpu_run.md): GPU tests, training, export, serving benchmark,
# everything written to $OUT. Run it through the device tool as the whole command:
#
#   scripts/gpu_run.sh                       # on the GPU machine, with .whl and .device_data carried
#   scripts/gpu_run.sh --device cpu --rehearsal --out /tmp/gpu-rehearsal    # here, seconds-long
#
# Every flag after the script name goes to scripts/gpu_run.py (--help lists the budgets).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/gpu_run_out}"
py="${PYTHON:-python3}"  # the device machine's python3 holds torch; tests pass their venv's
mkdir -p "$out"
# The GPU machine has torch but not the web stack: install the carried wheels (made by
# scripts/gpu_prepare.sh) into a private folder. Skipped where they are importable already.
if ! "$py" -c "import fastapi, uvicorn, pydantic_settings, multipart" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/facegen-site .whl/*.whl || { echo "wheel install failed" >&2; exit 3; }
    export PYTHONPATH="/tmp/facegen-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "fastapi/uvicorn are missing and there is no .whl/ to install them from; run scripts/gpu_prepare.sh" >&2
    exit 3
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$py" scripts/gpu_run.py --out "$out" "$@"
