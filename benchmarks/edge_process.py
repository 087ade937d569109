"""TensorFlow-free worker process (python -m benchmarks.edge_process): cold start and end-to-end latency."""

# Module-level imports are the standard library only, so the cold-start clock covers every
# import the edge runtime itself makes, and sys.modules shows whether TensorFlow was loaded.

from __future__ import annotations

import time

_T0 = time.perf_counter()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

#: Modules whose presence in ``sys.modules`` would mean the runtime pulled in a training stack.
HEAVY_MODULES = ("tensorflow", "keras", "jax", "torch", "training", "export")

#: Longer side of the image the overlay is drawn on: the web app's preview size.
OVERLAY_SIDE = 512


def _rss_peak_kib() -> int:
    """Peak resident set size of this process (VmHWM) in KiB, from /proc; 0 where unavailable."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def heavy_modules_loaded() -> dict:
    """Which of :data:`HEAVY_MODULES` are imported in this process."""
    return {name: name in sys.modules for name in HEAVY_MODULES}


def _classifier(model: str, threads: int, quality_gate: bool):
    from edge_runtime.classifier import Classifier, ClassifierOptions

    return Classifier(model, ClassifierOptions(num_threads=threads, heatmap=True, quality_gate=quality_gate))


def run_coldstart(config: dict) -> dict:
    """Import the runtime, load one model and classify one image with its heatmap, timing each step."""
    t_start = _T0
    from edge_runtime.render import fit_within, overlay_heatmap
    from edge_runtime.classifier import Classifier  # noqa: F401  (its import time belongs to "imports")

    t_imported = time.perf_counter()
    clf = _classifier(config["model"], int(config.get("threads", 1)), bool(config.get("quality_gate", False)))
    t_loaded = time.perf_counter()
    refused = None
    try:
        result = clf.classify(config["image"], heatmap=True)
        overlay_heatmap(fit_within(result.image, OVERLAY_SIDE), result.heatmap)
    except Exception as err:  # noqa: BLE001 - hostile inputs are meant to be refused
        if not config.get("allow_refusal"):
            raise
        result, refused = None, getattr(err, "code", type(err).__name__)
    t_done = time.perf_counter()
    return {
        "import_ms": (t_imported - t_start) * 1000.0,
        "load_model_ms": (t_loaded - t_imported) * 1000.0,
        "first_classify_ms": (t_done - t_loaded) * 1000.0,
        "in_process_total_ms": (t_done - t_start) * 1000.0,
        "vmhwm_kib": _rss_peak_kib(),
        "runtime": clf.runtime,
        "label": result.label if result is not None else None,
        "refused": refused,
        "heavy_modules": heavy_modules_loaded(),
        "modules_loaded": len(sys.modules),
    }


def run_coldstart_series(config: dict) -> dict:
    """Start ``config['runs']`` cold-start children one after another and account for each.

    This launcher is itself a small, standard-library-only process on purpose: a child's
    ``ru_maxrss`` starts from the RSS of the process it was forked from (with vfork or
    posix_spawn the kernel carries the parent's high-water mark through ``exec``), so children
    forked straight from the TensorFlow-laden benchmark would report its gigabytes. Forked from
    here, the inherited floor is this launcher's few megabytes, reported as ``launcher_rss_bytes``.
    """
    import subprocess
    import tempfile

    records = []
    with tempfile.TemporaryDirectory(prefix="cxr-coldstart-") as tmp:
        child_cfg = os.path.join(tmp, "child.json")
        with open(child_cfg, "w", encoding="utf-8") as handle:
            json.dump(config, handle)
        for index in range(int(config["runs"])):
            out = os.path.join(tmp, f"out{index}.json")
            started = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "benchmarks.edge_process", "coldstart", child_cfg, out],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, status, usage = os.wait4(proc.pid, 0)
            wall_ms = (time.perf_counter() - started) * 1000.0
            proc.returncode = os.waitstatus_to_exitcode(status)
            stderr = proc.stderr.read().decode(errors="replace")
            proc.stderr.close()
            if proc.returncode != 0 or not os.path.exists(out):
                raise RuntimeError(f"cold-start child failed with exit code {proc.returncode}: {stderr[-2000:]}")
            with open(out, encoding="utf-8") as handle:
                record = json.load(handle)
            record["process_wall_ms"] = wall_ms
            record["peak_rss_bytes"] = int(usage.ru_maxrss) * 1024  # Linux reports KiB
            record["vmhwm_bytes"] = int(record.pop("vmhwm_kib")) * 1024
            records.append(record)
    return {"records": records, "launcher_rss_bytes": _rss_peak_kib() * 1024}


def run_endtoend(config: dict) -> dict:
    """Round-robin end-to-end latency: read + decode a file, preprocess, invoke, CAM and overlay.

    ``config`` holds ``models`` (name -> path), ``images`` (name -> path), ``threads`` (list),
    ``runs``, ``warmup``, ``quality_gate`` and ``seed``.
    """
    from edge_runtime.errors import NotChestXrayError

    from .timing import round_robin

    gates = [False, True] if config.get("quality_gate") else [False]
    out = {"by_threads": {}, "quality_gate_timed": len(gates) > 1, "notes": []}
    for threads in config["threads"]:
        candidates, stages = {}, {}
        for model_name, model_path in config["models"].items():
            for gate in gates:
                clf = _classifier(model_path, threads, gate)
                for image_name, image_path in config["images"].items():
                    key = f"{model_name}, {image_name}" + (", +quality gate" if gate else "")
                    if gate:
                        try:
                            clf.classify(image_path, heatmap=True)
                        except NotChestXrayError as err:
                            out["notes"].append(f"{key}: the quality gate refused the benchmark image "
                                                f"({err.reason}); not timed")
                            continue
                    candidates[key] = _e2e_call(clf, image_path, stages.setdefault(key, {}))
        results = round_robin(candidates, runs=int(config["runs"]), warmup=int(config["warmup"]),
                              seed=int(config.get("seed", 0)), progress=bool(config.get("progress", True)),
                              desc=f"end-to-end, {threads} thread(s)")
        for key, stats in results.items():
            # Stage timings of the timed rounds only (the first entries came from warm-up).
            timed = {stage: values[-stats["runs"]:] for stage, values in stages[key].items()}
            stats["stage_median_ms"] = {stage: float(sorted(v)[len(v) // 2]) for stage, v in timed.items()}
        out["by_threads"][str(threads)] = results
    out["heavy_modules"] = heavy_modules_loaded()
    return out


def _e2e_call(clf, path: str, record: dict):
    """One end-to-end call: classify the file with its heatmap, then draw the overlay; stage times into ``record``."""
    from edge_runtime.render import fit_within, overlay_heatmap

    def call():
        result = clf.classify(path, heatmap=True)
        mark = time.perf_counter()
        overlay_heatmap(fit_within(result.image, OVERLAY_SIDE), result.heatmap)
        timings = dict(result.timings_ms)
        timings["overlay"] = (time.perf_counter() - mark) * 1000.0
        for stage, value in timings.items():
            record.setdefault(stage, []).append(value)

    return call


def main(argv=None) -> int:
    """``python -m benchmarks.edge_process {coldstart,coldstart-series,endtoend} CONFIG.json OUT.json``."""
    argv = sys.argv[1:] if argv is None else argv
    modes = {"coldstart": run_coldstart, "coldstart-series": run_coldstart_series, "endtoend": run_endtoend}
    if len(argv) != 3 or argv[0] not in modes:
        sys.stderr.write(f"usage: python -m benchmarks.edge_process {{{','.join(modes)}}} CONFIG.json OUT.json\n")
        return 2
    mode, config_path, out_path = argv
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    result = modes[mode](config)
    result["pid"] = os.getpid()
    with open(out_path, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
