"""Model-only latency of Keras and TFLite candidates, timed in one fresh process per thread count."""

# TensorFlow fixes its thread pools when it starts, so each thread count gets its own process
# (python -m benchmarks.speed CONFIG.json OUT.json); inside it every candidate, ours and the
# peers', is timed round-robin in the same run.

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .timing import round_robin

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Session names: ``ours`` (our model in every form, Keras included), ``tflite`` (our TFLite files
#: only, thousands of runs) and ``peers`` (ours and the published designs together, fewer runs
#: because VGG16 takes hundreds of milliseconds a call).
SESSIONS = ("ours", "tflite", "peers")


def _tflite_runner(path: str, spec: str, threads: int, verify: bool, image: np.ndarray):
    from edge_runtime.classifier import Classifier, ClassifierOptions

    clf = Classifier(path, ClassifierOptions(num_threads=threads, quality_gate=False, spec_path=spec,
                                             verify_sha256=verify))
    return lambda: clf.run(image)


def _keras_runners(keras_path: str, image: np.ndarray):
    import keras

    model = keras.saving.load_model(keras_path, compile=False)
    batch = image[None]
    return (lambda: model.predict(batch, verbose=0),
            lambda: np.asarray(model(batch, training=False)))


def _input_image(size: int, seed: int) -> np.ndarray:
    # Latency does not depend on pixel values for these graphs; a seeded image keeps runs equal.
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def run_worker(config: dict) -> dict:
    """Build every candidate at ``config['threads']`` threads and time the two sessions."""
    threads = int(config["threads"])
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)

    seed = int(config.get("seed", 0))
    progress = bool(config.get("progress", True))
    ours = config["ours"]
    image = _input_image(int(ours["input_size"]), seed)
    predict, call = _keras_runners(ours["keras"], image)
    session_ours = {"keras_predict": predict, "keras_call": call}
    for variant, path in ours["tflite"].items():
        session_ours[variant] = _tflite_runner(path, ours["spec"], threads, variant != "tflite_f32", image)
    result = {"threads": threads, "sessions": {}}
    result["sessions"]["ours"] = round_robin(session_ours, int(config["runs"]), int(config["warmup"]), seed,
                                             progress, f"model-only, ours, {threads} thread(s)")
    # The TFLite files alone, many more rounds: their p99 needs thousands of samples, which a
    # session paced by Keras predict (tens of milliseconds a call) cannot afford.
    tflite_only = {k: v for k, v in session_ours.items() if k.startswith("tflite_")}
    result["sessions"]["tflite"] = round_robin(tflite_only, int(config["tflite_runs"]), int(config["warmup"]),
                                               seed + 2, progress, f"model-only, TFLite, {threads} thread(s)")
    if config.get("peers"):
        session = {f"ours:{k}": v for k, v in session_ours.items()}
        for peer in config["peers"]:
            peer_image = _input_image(int(peer["input_size"]), seed)
            if not peer.get("reference_only"):
                predict, call = _keras_runners(peer["keras"], peer_image)
                session[f"{peer['name']}:keras_predict"] = predict
                session[f"{peer['name']}:keras_call"] = call
            session[f"{peer['name']}:tflite_f32"] = _tflite_runner(peer["tflite_f32"], peer["spec"], threads, False,
                                                                   peer_image)
            if peer.get("tflite_int8"):
                session[f"{peer['name']}:tflite_int8"] = _tflite_runner(peer["tflite_int8"], peer["spec"], threads,
                                                                        False, peer_image)
        result["sessions"]["peers"] = round_robin(session, int(config["peer_runs"]), int(config["peer_warmup"]),
                                                  seed + 1, progress, f"model-only, peers, {threads} thread(s)")
    result["tensorflow"] = tf.__version__
    return result


def run_in_subprocess(module: str, mode_args: list[str], config: dict, timeout: float | None = None) -> dict:
    """Run ``python -m <module> [mode] CONFIG OUT`` in a fresh interpreter and return its JSON output.

    Raises:
        RuntimeError: the worker failed; the message carries the end of its stderr.
    """
    with tempfile.TemporaryDirectory(prefix="cxr-bench-") as tmp:
        cfg = Path(tmp) / "config.json"
        out = Path(tmp) / "out.json"
        cfg.write_text(json.dumps(config), encoding="utf-8")
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        proc = subprocess.run([sys.executable, "-m", module, *mode_args, str(cfg), str(out)], cwd=REPO_ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=None if config.get("progress") else
                              subprocess.PIPE, text=True, timeout=timeout)
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or "")[-3000:]
            raise RuntimeError(f"{module} {' '.join(mode_args)} failed with exit code {proc.returncode}: {tail}")
        return json.loads(out.read_text(encoding="utf-8"))


def main(argv=None) -> int:
    """``python -m benchmarks.speed CONFIG.json OUT.json`` (used by the benchmark itself)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.stderr.write("usage: python -m benchmarks.speed CONFIG.json OUT.json\n")
        return 2
    config = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    result = run_worker(config)
    Path(argv[1]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
