#!/usr/bin/env bash
# The runs of RULE.md, in its order; resumable by cell (re-run the script).
set -u
cd "$(dirname "$0")/../../.."
PY=${PY:-.venv/bin/python}
OUT=benchmarks/results/positional
common=(--standard --methods das --eval-split val --out "$OUT" --threads 1)
nopos=(--override 'network_def#sampler_kwargs={"positional": false}' --tag nopos)
ref=(--override 'network_def#sampler_kwargs={}' --tag ref)
for ds in pocus pocus_sparse; do
  for variant in nopos ref; do
    declare -n v=$variant
    "$PY" benchmarks/compare_methods.py "${common[@]}" --datasets "$ds" --keep-ratios 0.1 0.25 --seeds 0 "${v[@]}"
  done
done
for variant in nopos ref; do
  declare -n v=$variant
  "$PY" benchmarks/compare_methods.py "${common[@]}" --datasets vesselmnist3d_28 --keep-ratios 0.25 --seeds 0 1 2 \
    "${v[@]}"
done
"$PY" benchmarks/paired_tags.py "$OUT" --candidate nopos --reference ref --by-keep
