#!/usr/bin/env bash
# The reduced-scale comparison of training/EXPERIMENTS.md (rule 4) and its cross-population check.
# Run from the repository root after the shipped binary model exists: bash training/experiments/binary_ablation.sh
# Outputs and logs: runs/ablate/ (not committed). About 30 min on a 2-core CPU.
# The second comparison (A3, A4) ran as: VARIANTS="A3_crop A4_width125" CROSS=0 bash training/experiments/binary_ablation.sh
# The third (A5) as: VARIANTS="A5_size192" CROSS=0 bash training/experiments/binary_ablation.sh
# Rule 5's (shift levers, with the shift check): VARIANTS="R1 A3_crop A6_strong" SHIFT=1 CROSS=0 bash ...
set -u
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
DATA=${CXR_SHARED_DATA:-../shared/data}
SPLIT=android_assets/training/cxr_binary_160/split.json
mkdir -p runs/ablate
for seed in 0 1; do
  for variant in ${VARIANTS:-R1 A1_no_penalty A2_no_augment}; do
    case $variant in
      R1) extra=() ;;
      A1_no_penalty) extra=(--cam-penalty 0) ;;
      A2_no_augment) extra=(--no-augment) ;;
      A3_crop) extra=(--crop-augment 0.5) ;;
      A4_width125) extra=(--width 1.25) ;;
      A5_size192) extra=(--input-size 192) ;;
      A6_strong) extra=(--augment-preset strong) ;;
    esac
    out=runs/ablate/${variant}_s${seed}
    "$PY" -m training train --task binary --data "$DATA" --epochs 8 --epoch-size 3000 --patience 8 --seed "$seed" \
      --split "$SPLIT" --out "$out" "${extra[@]}" > "$out.log" 2>&1
    echo "$variant seed $seed rc=$?"
    if [ "${SHIFT:-0}" = 1 ]; then  # rule 5: the operating-point drift under the shift check
      "$PY" -m training shift --model "$out/model.keras" --split "$SPLIT" --data "$DATA" --out "$out" \
        --max-images 500 --bootstrap 0 --no-progress > "$out.shift.log" 2>&1
      echo "$variant seed $seed shift rc=$?"
    fi
  done
done
[ "${CROSS:-1}" = 1 ] || exit 0
# Cross-population: the default recipe on children only, scored on every adult film.
out=runs/ablate/R1_children_only_s0
"$PY" -m training train --task binary --data "$DATA/chest_xray/train" --epochs 8 --epoch-size 3000 --patience 8 \
  --seed 0 --out "$out" > "$out.log" 2>&1
"$PY" -m training evaluate --model "$out/model.keras" --data "$DATA/adult_cxr" --out "$out/adult" --name adult_cxr \
  --bootstrap 300 > "$out.adult.log" 2>&1
echo "children-only rc=$?"
