#!/usr/bin/env bash
# Second reduced-scale comparison of training/EXPERIMENTS.md (rule 4): crop/aspect augmentation (A3) and width
# 1.25 (A4) against R1's figures from binary_ablation.sh (same split, seeds, scale and code otherwise).
# Run from the repository root: bash training/experiments/binary_levers_2.sh. Outputs: runs/ablate/ (not committed).
set -u
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
DATA=${CXR_SHARED_DATA:-../shared/data}
SPLIT=android_assets/training/cxr_binary_160/split.json
mkdir -p runs/ablate
for seed in 0 1; do
  for variant in A3_crop A4_width125; do
    case $variant in
      A3_crop) extra=(--crop-augment 0.5) ;;
      A4_width125) extra=(--width 1.25) ;;
    esac
    out=runs/ablate/${variant}_s${seed}
    "$PY" -m training train --task binary --data "$DATA" --epochs 8 --epoch-size 3000 --patience 8 --seed "$seed" \
      --split "$SPLIT" --out "$out" "${extra[@]}" > "$out.log" 2>&1
    echo "$variant seed $seed rc=$? $(date +%T)"
  done
done
