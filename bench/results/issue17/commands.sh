#!/bin/bash
# Before/after on the same (quiet) machine, interleaved: tiny model (HTTP path) and faces64.
set -x
OUT=/work/main/bench/results/issue17
mkdir -p $OUT
for r in 1 2; do
  for tree in before main; do
    cd /work/$tree
    extra=""; [ $tree = before ] && extra="--server-env PYTHONPATH=/tmp/nouvloop"
    .venv/bin/python -m bench $extra --short --random-model tiny --torch-threads 1 --workloads gen1 --concurrency 1,64 --servers on --duration 8 --out $OUT/tiny-$tree-$r.json > $OUT/tiny-$tree-$r.txt 2>&1
    .venv/bin/python -m bench $extra --short --workloads gen1 --concurrency 1,64 --servers on --duration 10 --out $OUT/faces64-$tree-$r.json > $OUT/faces64-$tree-$r.txt 2>&1
  done
done
