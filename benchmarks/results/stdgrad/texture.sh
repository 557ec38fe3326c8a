#!/usr/bin/env bash
# Checks 1 and 2 of RULE.md: README command 1 on the texture task (seeds 0-3) and on the default, per variant.
# Usage: PYTHONPATH=<code> bash texture.sh <work folder> <variant>...   Resumable: a finished run is skipped.
set -u
W=$1; shift
PY=${PY:-/work/main/.venv/bin/python}
B=bundles/das_volume_classification/configs
cd "$(dirname "$0")/../../.."
for v in "$@"; do
  for s in 0 1 2 3 default; do
    R=$W/tex_${v}_$s; [ "$s" = default ] && R=$W/def_${v}_0
    [ -f "$R/done.txt" ] && continue
    extra=(--num_train 512 --synthetic_options '{"distractor": "texture", "distractor_prob": 0.7}' --seed "$s")
    [ "$s" = default ] && extra=(--seed 0)
    t0=$(date +%s); rm -rf "$R"; mkdir -p "$R"
    "$PY" -m monai.bundle run --config_file $B/train.json --meta_file $B/metadata.json --logging_file $B/logging.conf \
      --bundle_root "$R" --num_threads 1 --sampler_gradient "$v" "${extra[@]}" > "$R/log.txt" 2>&1
    rc=$?
    echo "$(basename "$R") rc $rc $(( $(date +%s) - t0 ))s: $(grep -o 'training done:.*' "$R/log.txt" | head -1)" \
      | tee "$R/done.txt"
  done
done
cat "$W"/*/done.txt
