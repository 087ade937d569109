"""Is the int8 files' disagreement with Keras a bias that the classifier's bias can absorb?
python training/experiments/int8_bias_check.py MODEL.keras [--calibration-size 1000] [--seed 0]

Quantizing the convolutional trunk to int8 adds an error to the pooled feature vector the classifier reads. Its
random part cannot be undone; its mean part (a per-channel offset, known from depthwise layers: Nagel et al. 2019,
"Data-free quantization through weight equalization and bias correction") can: the classifier is linear, so
folding ``-W^T delta`` into its bias cancels the mean logit error. This script converts the model as
``python -m export`` does (same calibration images, drawn from the training side), measures ``delta`` on those
calibration images (``export.convert.int8_bias_correction``, the function the export uses), and prints, on every
held-out film (both held-out sides, as the export gate), the top-1 and screening-decision agreement with the
unchanged Keras model of the plain int8 file without and with the correction, and how large the mean and the spread
of the logit error are. Nothing is written outside a temporary folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge_runtime.classifier import decide  # noqa: E402
from export.__main__ import load_run, sample_sides  # noqa: E402
from export.convert import export_int8, int8_bias_correction, run_unbound  # noqa: E402
from training.train import predict_probs  # noqa: E402


def agreement(keras_probs: np.ndarray, probs: np.ndarray, neg: int, threshold: float) -> tuple[float, float]:
    return (float(np.mean(keras_probs.argmax(1) == probs.argmax(1))),
            float(np.mean(decide(keras_probs, neg, threshold) == decide(probs, neg, threshold))))


def parser_and_sides(description: str, argv=None, extra=None):
    """Parse MODEL [--calibration-size] [--seed] (plus ``extra(parser)``'s options) and load what the export would:
    (args, spec, model, calibration images, held-out inputs, Keras probabilities on them)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("model", type=Path)
    parser.add_argument("--calibration-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    run_args = SimpleNamespace(model=args.model, data=None, cache_dir=None, parity_max=0,
                               calibration_size=args.calibration_size, seed=args.seed)
    spec, model, dataset = load_run(run_args)
    cal_idx, val_idx = sample_sides(run_args, dataset)
    keras_val = predict_probs(model, dataset.images[val_idx])
    return args, spec, model, dataset.rgb(cal_idx), dataset.rgb(val_idx), keras_val


def main(argv=None) -> int:
    _, spec, model, calibration, val_inputs, keras_val = parser_and_sides(__doc__.splitlines()[0], argv)

    with tempfile.TemporaryDirectory(prefix="int8-bias-") as tmp:
        c = int8_bias_correction(model, calibration, tmp)
        before = run_unbound(export_int8(model, calibration, Path(tmp) / "plain.tflite"), val_inputs)[0]
        after = run_unbound(export_int8(model, calibration, Path(tmp) / "corrected.tflite",
                                        classifier_bias=c["bias"]), val_inputs)[0]
    print(f"{spec.name}: {c['images']} calibration images, {len(val_inputs)} held-out films")
    print(f"pooled-feature error: |mean| {c['pooled_error_mean_abs']:.4f}, spread {c['pooled_error_std']:.4f} "
          "(means over channels)")
    print("logit error on calibration images, per class (centred): mean "
          + " ".join(f"{-v:+.4f}" for v in c["logit_shift"]) + ", std "
          + " ".join(f"{v:.4f}" for v in c["logit_error_std"]))
    for name, probs in (("int8 as exported before the correction", before), ("int8, classifier bias corrected", after)):
        top1, dec = agreement(keras_val, probs, spec.negative_index, spec.threshold)
        print(f"{name}: top-1 agreement {top1:.4f}, screening-decision agreement {dec:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
