#!/usr/bin/env bash
# Prepares, on the CPU machine, what scripts/gpu_run.sh needs on the GPU machine:
#   .whl/          the web stack's wheels for the GPU machine's Python 3.12 (it has torch, not fastapi)
#   .device_data/  the training faces as face packs (training/facepack.py), aligned and 64×64
# Both folders are git-ignored; name them in the device tool's `carry`. Then it checks that
# the working tree that travels fits the tool's 64 MiB.
#
# DATA is packed whole (the train stage's faces: celeba-10k). ENCODER_DATA (fairface-40k-96,
# which only the encoder stage reads) gets what is left of the budget: the longest prefix of
# it that fits, i.e. a --limit run (training/facepack.py).
#
#   scripts/gpu_prepare.sh                     # celeba-10k whole + a fairface-40k prefix, crop "align"
#   DATA=a.zip,b.zip ENCODER_DATA= CROP=celeba scripts/gpu_prepare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
data="${DATA:-../shared/data/celeba-10k.zip}"
encoder_data="${ENCODER_DATA-../shared/data/fairface-40k-96.zip}"
budget=$((62 * 1048576))  # the tool's 64 MiB, less a margin for files written before the call
crop="${CROP:-align}"
quality="${QUALITY:-80}"

# The same versions as this venv's, so the GPU machine serves with what the tests ran here.
pkgs=(fastapi starlette uvicorn pydantic pydantic-core pydantic-settings python-multipart
      annotated-types typing-inspection python-dotenv typing-extensions httptools opentelemetry-api
      fastapi-offline)
pins=$("$py" - "${pkgs[@]}" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
out = []
for name in sys.argv[1:]:
    try:
        out.append(f"{name}=={version(name)}")
    except PackageNotFoundError:
        out.append(name)  # not in this venv (httptools): the newest wheel
print(" ".join(out))
EOF
)
rm -rf .whl && mkdir -p .whl
# shellcheck disable=SC2086
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d .whl $pins
echo "wheels: $(ls .whl | wc -l) files, $(du -sh .whl | cut -f1)"

# What the device tool sends: tracked files, untracked files git does not ignore, and the carried folders.
travels() {
  local tree carried
  tree=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 -r stat -c %s 2>/dev/null \
    | awk '{s += $1} END {print s + 0}')
  carried=$(du -sb .whl .device_data 2>/dev/null | awk '{s += $1} END {print s + 0}')
  echo $((tree + carried))
}

rm -rf .device_data
"$py" -m training.facepack --data "$data" --crop "$crop" --quality "$quality" --out .device_data
if [ -n "$encoder_data" ]; then
  left=$((budget - $(travels)))
  if [ "$left" -le 1048576 ]; then
    echo "no room left for ENCODER_DATA ($((left / 1024)) KiB); the encoder stage will read DATA alone" >&2
  else
    "$py" -m training.facepack --data "$encoder_data" --crop "$crop" --quality "$quality" --out .device_data \
      --max-mib "$(awk -v b="$left" 'BEGIN {printf "%.3f", b / 1048576}')"
  fi
fi

total=$(travels)
echo "travels: $((total / 1048576)) MiB of 64"
if [ "$total" -gt "$budget" ]; then
  echo "over the device tool's budget: lower QUALITY or pack fewer faces" >&2
  exit 1
fi
