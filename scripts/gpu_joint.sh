#!/usr/bin/env bash
# Issue 14 on a lent GPU: `fracsight detector joint` (the network fine-tuned with its detector and
# orientation head) with what a 2-core CPU cannot afford: every stage trainable, longer schedules,
# several variants side by side on the one GPU. The device machine has torch, timm, onnx and
# onnxruntime but not fracsight, so it runs from src/ (like scripts/gpu_train.sh).
#
#   python scripts/pack_fracatlas.py ../shared/data/fracatlas .gpu/fracatlas --quality 85  # here (23 MB)
#   bash scripts/gpu_joint.sh "f0e30 --frozen-stages 0 --epochs 30" "f2e30 --epochs 30"   # there,
#        through the device tool, carrying .gpu; OUT is where files come back (default runs/gpu-out)
# What travels must stay under 64 MiB: the tracked files are about 50 MB, so move the graphs the
# runs do not read (weights/*-v5*/model.onnx, 18 MB) out of the tree for the call and back after.
# Four variants of 24 epochs took 475 s on an H200 (16-20 s an epoch each, side by side).
#
# Per variant NAME, $OUT/NAME.pt is the chosen epoch's checkpoint (best.pt), or, when the rule kept
# the start (epoch 0, here already), NAME.epoch-K.pt, the epoch K with the best validation box AP50;
# logs.tgz holds every log and history.json. Back here, each becomes a bundle measured on the
# original images:
#   mkdir -p runs/gpu-NAME && cp OUT/NAME.pt runs/gpu-NAME/best.pt    # or NAME.epoch-K.pt as epoch-K.pt
#   tar -xzOf OUT/logs.tgz ./NAME.history.json > runs/gpu-NAME/history.json
#   fracsight detector bundle runs/gpu-NAME runs/gpu-NAME-bundle --data ../shared/data/fracatlas  # [--epoch K]
# BASE and HEADS name the bundles to start from (default: the v2 network with v4's heads), DATA the
# packed data set, RUNS the folder of the run folders (default runs), RUN_LIMIT the seconds each
# variant may run, RUN_LIMIT_<NAME> one variant's own (SIGINT then: a run keeps best.pt and
# history.json as of the epochs done, with "finished": false, and is bundled like any other).
# DEVICE=cpu runs the same on a CPU (tests/test_joint.py).
set -uo pipefail
DATA=${DATA:-.gpu/fracatlas}
if [ ! -f "$DATA/dataset.csv" ]; then
  echo "needs $DATA (python scripts/pack_fracatlas.py ../shared/data/fracatlas .gpu/fracatlas)" >&2
  exit 2
fi
if [ $# -eq 0 ]; then
  echo "usage: bash scripts/gpu_joint.sh \"NAME [detector joint options]\" [\"NAME2 ...\" ...]" >&2
  exit 2
fi
OUT=${OUT:-runs/gpu-out}
RUNS=${RUNS:-runs}
BASE=${BASE:-fracatlas-lite0-384-v2}
HEADS=${HEADS:-fracatlas-lite0-384-v4}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
export PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
PY=${PY:-python3}
# shellcheck source=scripts/_gpu_runs.sh
. "$(dirname "$0")/_gpu_runs.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
pids=()
for spec in "$@"; do
  read -r name options <<<"$spec"
  limit=${RUN_LIMIT:-480}
  if [[ $name =~ ^[A-Za-z0-9_]+$ ]]; then own="RUN_LIMIT_$name"; limit=${!own:-$limit}; fi
  # shellcheck disable=SC2086  # the variant's options are words on purpose
  (timeout --signal=INT "$limit" $PY -c "from fracsight.cli import main; main()" detector joint \
      "$BASE" "$HEADS" "$RUNS/gpu-$name" --data "$DATA" --device "$DEVICE" $options >"$OUT/$name.log" 2>&1
   status=$?
   # epoch 0 chosen: the start, which is here already, so the epoch with the best validation box AP50
   # comes back instead as NAME.epoch-K.pt, to be looked at (`detector bundle RUN OUT --epoch K`)
   [ -f "$RUNS/gpu-$name/history.json" ] && $PY - "$RUNS/gpu-$name" "$OUT/$name" >>"$OUT/$name.log" 2>&1 <<'BOXES'
import json, shutil, sys
from pathlib import Path
run, out = Path(sys.argv[1]), sys.argv[2]
record = json.loads((run / "history.json").read_text())
if record["chosen"] == 0 and len(record["epochs"]) > 1:
    k = max(record["epochs"][1:], key=lambda h: h["val_ap50"])["epoch"]
    shutil.copyfile(run / f"epoch-{k}.pt", f"{out}.epoch-{k}.pt")
    print(f"epoch 0 chosen: epoch {k}, the best box AP50 on validation, comes back instead")
BOXES
   exit "$status") &
  pids+=($!)
done
finish_runs "$RUNS" "^epoch [0-9]+:|^epoch 0|chosen|Error|error" "$@"
