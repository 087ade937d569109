"""Which integer file of a model agrees with Keras on the held-out films? python training/experiments/int8_variants.py
MODEL.keras [--calibration-size 1000] [--seed 0] [--variants int8,16x8,...]

The export gate asks int8 top-1 agreement >= 0.995 with Keras on every held-out film; a covid model trained on the
40-epoch schedule missed it (0.9904 with the bias correction, training/EXPERIMENTS.md), the random part of the
int8 error flipping COVID-19 / PNEUMONIA near-ties. This script converts the model several ways, with the export's
own calibration images (training side) and its classifier-bias correction, and prints for each the held-out top-1
and screening-decision agreement, the file size and a rough single-thread time per image (this machine, other work
beside it: an indication, not a benchmark):

- ``int8``: the shipped export (``export.convert.export_int8``);
- ``16x8``: int16 activations, int8 weights (TFLite's ``EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8``),
  uint8 input kept by a cast in the graph;
- ``float-head-K``: int8 with the first K quantized ops left in float (``export_int8(..., float_head=K)``, the
  export's ``--float-head K``), the bias correction measured on that file.

Also printed: the held-out probability error (RMS over films and classes of the difference to Keras; log-probabilities
would be dominated by saturated classes near 0), a continuous figure beside the agreement counts, which move by a
film or two at near-ties; and the number of held-out films whose Keras top-1 margin (log-probability) is under 0.1,
where any int8 error can flip the call.

Nothing is written outside a temporary folder.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from export.convert import (_converter, export_int8, int8_bias_correction,  # noqa: E402
                            run_unbound, uint8_representative, with_float_input)
from training.experiments.int8_bias_check import agreement, parser_and_sides  # noqa: E402


def export_16x8(model, calibration: np.ndarray, path: Path, classifier_bias) -> Path:
    import tensorflow as tf

    converter = _converter(with_float_input(model, center_logits=True, input_dtype="uint8",
                                            classifier_bias=classifier_bias))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = uint8_representative(calibration)
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    path.write_bytes(converter.convert())
    return path


def input_form(path: Path) -> tuple[str, tuple]:
    """The file's input dtype and quantization (scale, zero point), for the table."""
    from edge_runtime.interpreter import make_interpreter

    detail = make_interpreter(str(path), 1)[0].get_input_details()[0]
    return detail["dtype"].__name__, detail["quantization"]


def timed_probs(path: Path, images: np.ndarray) -> tuple[np.ndarray, float]:
    """Probabilities of a .tflite file with uint8 input (``export.convert.run_unbound``, one thread) and the rough
    ms per image."""
    start = time.perf_counter()
    probs = run_unbound(path, images, num_threads=1)[0]
    return probs, 1000 * (time.perf_counter() - start) / max(1, len(images))


def probability_error(keras_probs: np.ndarray, probs: np.ndarray) -> str:
    """RMS over films and classes of the probability difference to Keras, and its largest value."""
    diff = np.abs(probs - keras_probs)
    return f"{np.sqrt(np.mean(diff ** 2)):.4f} (max {diff.max():.3f})"


def flips(keras_probs: np.ndarray, probs: np.ndarray, labels) -> str:
    """Which way the top-1 calls that differ from Keras went, e.g. ``BACTERIAL->VIRAL 3``."""
    moved = Counter(f"{labels[k]}->{labels[q]}" for k, q in zip(keras_probs.argmax(1), probs.argmax(1)) if k != q)
    return ", ".join(f"{key} {n}" for key, n in sorted(moved.items())) or "none"


def near_ties(keras_probs: np.ndarray, margin: float = 0.1) -> int:
    top2 = np.sort(np.log(np.clip(keras_probs, 1e-7, 1.0)), axis=1)[:, -2:]
    return int(np.sum(top2[:, 1] - top2[:, 0] < margin))


def main(argv=None) -> int:
    args, spec, model, calibration, val_inputs, keras_val = parser_and_sides(
        __doc__.splitlines()[0], argv,
        lambda parser: parser.add_argument("--variants", default="int8,16x8,float-head-3"))
    print(f"{spec.name}: {len(calibration)} calibration images, {len(val_inputs)} held-out films, "
          f"{near_ties(keras_val)} of them near a top-1 tie (Keras log-probability margin < 0.1)")
    print("| variant | calibration-side logit error (std, mean over classes) | held-out probability error: RMS (max) | "
          "top-1 agreement | screening-decision agreement | top-1 changes | MB | ms / image (1 thread, rough) |")
    print("|---|---|---|---|---|---|---|---|")
    variants = args.variants.split(",")
    unknown = [v for v in variants if v != "int8" and v != "16x8" and not v.startswith("float-head-")]
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}: int8, 16x8 or float-head-K")
    with tempfile.TemporaryDirectory(prefix="int8-variants-") as tmp:
        for variant in variants:
            path = Path(tmp) / f"{variant}.tflite"
            head = int(variant.rsplit("-", 1)[1]) if variant.startswith("float-head-") else 0
            correction = int8_bias_correction(model, calibration, tmp, float_head=head)
            bias = correction["bias"]
            if variant == "16x8":
                export_16x8(model, calibration, path, bias)
            else:
                export_int8(model, calibration, path, classifier_bias=bias, float_head=head)
            probs, ms = timed_probs(path, val_inputs)
            top1, dec = agreement(keras_val, probs, spec.negative_index, spec.threshold)
            print(f"| {variant} | {np.mean(correction['logit_error_std']):.4f} | {probability_error(keras_val, probs)} | "
                  f"{top1:.4f} | {dec:.4f} | {flips(keras_val, probs, spec.labels)} | {path.stat().st_size / 1e6:.3f} | "
                  f"{ms:.2f} | input {input_form(path)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
