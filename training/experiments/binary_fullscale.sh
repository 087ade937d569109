#!/usr/bin/env bash
# Rule 6 of training/EXPERIMENTS.md: width 1.25 against the default at full scale (24 epochs x 6,000 draws),
# same grouped split as the shipped binary model, seeds 0 and 1 (the shipped run is R1 seed 0).
# Run from the repository root: bash training/experiments/binary_fullscale.sh  (16-21 min of fitting a run on 2 cores, plus ~2 min of shift check)
# Outputs and logs: runs/full/ (not committed). RUNS picks a subset, e.g. RUNS="W125_s0 R1_s1 W125_s1".
# Rule 7 (crop/aspect augmentation at full scale) ran as: RUNS="A3_s0 A3_s1" bash training/experiments/binary_fullscale.sh
# Rules 8 and 9 (context swap, the portable-film confounder): RUNS="A7_s0 A7_s1", then RUNS="A7_s2 A7_s3"
# Rule 10 (depth: two 256-filter blocks at the last grid): RUNS="D2_s0 D2_s1"
# Rule 11 (a longer schedule: 40 epochs, no early stop): RUNS="L40_s0 L40_s1"
# Rule 12 (context swap on the 40-epoch schedule): RUNS="A7L40_s0 A7L40_s1"
# Rule 15 (mixup on the shipped A7L40 recipe): RUNS="MIX_s0 MIX_s1"
set -u
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
DATA=${CXR_SHARED_DATA:-../shared/data}
SPLIT=android_assets/training/cxr_binary_160/split.json
mkdir -p runs/full
for run in ${RUNS:-W125_s0 R1_s1 W125_s1}; do
  variant=${run%_s*}; seed=${run##*_s}
  case $variant in
    R1) extra=() ;;
    W125) extra=(--width 1.25) ;;
    A3) extra=(--crop-augment 0.5) ;;
    A7) extra=(--context-swap 0.5) ;;
    D2) extra=(--extra-blocks 2) ;;
    L40) extra=(--epochs 40 --patience 40) ;;
    A7L40) extra=(--context-swap 0.5 --epochs 40 --patience 40) ;;
    MIX) extra=(--context-swap 0.5 --epochs 40 --patience 40 --mixup 0.4) ;;
    *) echo "unknown variant $variant"; exit 2 ;;
  esac
  out=runs/full/$run
  start=$(date +%s)
  "$PY" -m training train --task binary --data "$DATA" --seed "$seed" --split "$SPLIT" --out "$out" "${extra[@]}" \
    > "$out.log" 2>&1
  echo "$run rc=$? $(( ($(date +%s) - start) / 60 )) min"
  "$PY" -m training shift --model "$out/model.keras" --split "$SPLIT" --data "$DATA" --out "$out" \
    --max-images 500 --bootstrap 0 --no-progress > "$out.shift.log" 2>&1
  echo "$run shift rc=$?"
  "$PY" training/experiments/context_check.py "$out" > "$out.context.log" 2>&1
  echo "$run context rc=$?"
done
