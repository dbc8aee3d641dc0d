#!/usr/bin/env bash
# The seed's table on a GPU (issue 14 part 3): the synthetic DataFactory set (4,344 frames, 7 classes),
# SimCLR for hundreds of epochs at 96 px crops, then every method at 5 / 10 / 100 % labels.
# One shot, about 8 minutes on one H100/H200:  bash bench/gpu_datafactory.sh [WORK]
#
# The device image has torch but not pydantic/watchdog/...: fetch those wheels here once
# (docs/RESULTS.md, "On a GPU"), carry .whl, and this script installs them into /tmp/site.
# Knobs: SIZE (96), EPOCHS (300), BATCH (512), SUP_EPOCHS (60), TEMP (0.2), LR (0.6, LARS: 0.3 x batch/256).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-${OUT:-/tmp}/gpu_datafactory}
PY=${PY:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD/daemon:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
mkdir -p "$WORK"
cat > "$WORK/gpu.yaml" <<YAML
train:
  device: cuda
  optimizer: lars
  lr: ${LR:-0.6}
  temperature: ${TEMP:-0.2}
  head: simclrv2
  amp: true
  channels_last: true
YAML
[ -d "$WORK/datafactory" ] || "$PY" -m xtalwatch synth "$WORK/datafactory" --imagefolder --plates 181 --wells 24 --drops 1 --seed 0
"$PY" -m xtalwatch evaluate "$WORK/datafactory" --config "$WORK/gpu.yaml" --label-fraction 0.05,0.1,1 \
  --image-size "${SIZE:-96}" --small-stem off --epochs "${EPOCHS:-300}" --batch-size "${BATCH:-512}" --seed 0 \
  --supervised-epochs "${SUP_EPOCHS:-60}" --min-steps 100 --distill-epochs 5 --probe-every 25 --no-progress \
  --out "$WORK/eval" --json "$WORK/datafactory_gpu.json" --report "$WORK/datafactory_gpu.html"
cp "$WORK/eval/epoch_curve.png" "$WORK/eval/simclr/loss_curve.png" "${OUT:-$WORK}/" 2>/dev/null || true
