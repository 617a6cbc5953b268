# Shared by scripts/gpu_train.sh and scripts/gpu_joint.sh (sourced): wait for the variants started in
# the background, show each log's lines that matter, and put what comes back from the device machine
# into $OUT: NAME.pt (its best.pt) per variant, logs and histories in one archive (at most 8 files
# come back). Exits with 1 if any variant failed.
#   finish_runs RUNS_DIR LOG_PATTERN "NAME ..." ["NAME2 ..." ...]   (pids in the array `pids`)
finish_runs() {
  local runs=$1 pattern=$2 status=0 p spec name
  shift 2
  for p in "${pids[@]}"; do wait "$p" || status=1; done
  for spec in "$@"; do
    read -r name _ <<<"$spec"
    grep -E "$pattern" "$OUT/$name.log" | tail -40 | sed "s/^/[$name] /"
    if compgen -G "$OUT/$name.epoch-*.pt" >/dev/null; then
      :  # a joint run that kept its start brought back another epoch instead (gpu_joint.sh)
    elif [ -f "$runs/gpu-$name/best.pt" ]; then
      cp "$runs/gpu-$name/best.pt" "$OUT/$name.pt"
    else
      echo "[$name] no best.pt: the run did not end (see $name.log)"
    fi
    [ -f "$runs/gpu-$name/history.json" ] && cp "$runs/gpu-$name/history.json" "$OUT/$name.history.json"
  done
  (cd "$OUT" && tar czf logs.tgz ./*.log ./*.json 2>/dev/null && rm -f ./*.log ./*.json)
  exit $status
}
