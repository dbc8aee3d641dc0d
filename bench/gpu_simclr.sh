#!/usr/bin/env bash
# One-shot GPU benchmark of SimCLR training (issue 5). Prints the card's name and every figure:
# views/s at 32 px (small stem), 64 px and 96 px, the full-step / model-only ratio (goal >= 0.85),
# peak memory per batch size. Goal: >= 25,000 views/s at 32 px, bf16, one H100.
# Run from the repository root:  bash bench/gpu_simclr.sh   (about 3-5 minutes on an H100)
set -euo pipefail
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
OUT=${OUT:-/tmp}
echo "== eager, bf16, channels_last =="
"$PY" bench/bench_simclr.py --device cuda --amp --sizes 32,64,96 --batch-sizes 256,512,1024 \
    --steps 20 --warmup 5 --json "$OUT/gpu_simclr_eager.json"
echo "== torch.compile, bf16, channels_last (32 px only; the first step compiles) =="
"$PY" bench/bench_simclr.py --device cuda --amp --compile --sizes 32 --batch-sizes 512,1024 \
    --steps 20 --warmup 5 --json "$OUT/gpu_simclr_compile.json" || echo "compile run failed"
