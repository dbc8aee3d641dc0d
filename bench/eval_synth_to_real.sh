#!/bin/bash
# Issue 14 part 6 (docs/RESULTS.md, "From synthetic to real"): agreement with the labelled real MARCO frames
# of a model trained on the synthetic imager before (commit 9aa1328: the imager and augmentations before
# issue 14's realism changes) and after (HEAD); the same 480-frame recipe, evaluate and bundle build.
# Usage: bench/eval_synth_to_real.sh [WORK_DIR]   (default /tmp/xtalwatch-s2r); needs $XTALWATCH_REAL_IMAGES
# (default /work/shared/real-images) and a git checkout (it exports both commits' code into WORK_DIR).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
R=${1:-/tmp/xtalwatch-s2r}; mkdir -p "$R"; cd "$R"
PY=$REPO/.venv/bin/python
mkdir -p old new
[ -d old/daemon ] || git -C "$REPO" archive 9aa1328 daemon plugins | tar -x -C old
[ -d new/daemon ] || git -C "$REPO" archive HEAD daemon plugins bench | tar -x -C new
for side in before after; do
  code=$([ $side = before ] && echo old || echo new)
  export PYTHONPATH=$R/$code/daemon:$R/$code/plugins
  mkdir -p $side
  [ -d $side/datafactory ] || $PY -m xtalwatch synth $side/datafactory --imagefolder --plates 20 --wells 24 --drops 1 \
      --image-size 320x240 --seed 0 --labels $side/labels.csv > $side/synth.log 2>&1
  [ -f $side/datafactory_eval.json ] || OMP_NUM_THREADS=2 /usr/bin/time -v $PY -m xtalwatch evaluate $side/datafactory \
      --label-fraction 1 --image-size 48 --small-stem off --epochs 10 --batch-size 128 --seed 0 --methods simclr_linear \
      --out $side/datafactory_eval --json $side/datafactory_eval.json --no-progress > $side/eval.log 2>&1
  PYTHONPATH=$R/new/daemon:$R/new/plugins XTALWATCH_REAL_IMAGES=${XTALWATCH_REAL_IMAGES:-/work/shared/real-images} \
      $PY $R/new/bench/eval_marco.py $R/$side > $side/marco.md 2> $side/marco.err
  echo "$side done"
done
