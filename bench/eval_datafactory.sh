#!/usr/bin/env bash
# The DataFactory results table (docs/RESULTS.md): 4,344 synthetic frames, 7 classes, label fractions 5/10/100 %.
# Usage: bench/eval_datafactory.sh [WORK_DIR]   (default /tmp/xtalwatch-eval; nothing is written into the repo)
# Budget used for docs/RESULTS.md: 2 shared CPU cores; change the knobs below for a bigger machine.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/xtalwatch-eval}
X=.venv/bin/xtalwatch
mkdir -p "$WORK"
# 181 plates x 24 wells x 1 drop = 4,344 frames of 512 x 512 px, written as WORK/datafactory/<class>/*.png
[ -d "$WORK/datafactory" ] || $X synth "$WORK/datafactory" --imagefolder --plates 181 --wells 24 --drops 1 --seed 0
# One SimCLR run (train split, no labels), then every method at every fraction. One thread: on a shared
# 2-core machine a single OpenMP thread per process was faster than two fighting over the cores.
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $X evaluate "$WORK/datafactory" --label-fraction 0.05,0.1,1 \
  --image-size "${SIZE:-32}" --small-stem off --epochs "${EPOCHS:-6}" --batch-size 128 --seed 0 \
  --supervised-epochs "${SUP_EPOCHS:-4}" --min-steps 30 --distill-epochs 1 \
  --out "$WORK/datafactory_eval" --json "$WORK/datafactory_eval.json" --report "$WORK/datafactory_eval.html"
