"""python -m benchmarks: accuracy and heatmap parity, latency, memory and size of the models, with peers."""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from edge_runtime.errors import CxrError
from training.data import INPUT_SIZE, TASKS, default_cache_dir
from training.train import portable_path

from .accuracy import VARIANTS, evaluate_task, locate
from .edge_process import OVERLAY_SIDE
from .heatmaps import plot_examples
from .memory import measure_coldstart, measure_hostile_inputs
from .peers import PEERS, REFERENCE, SMALLEST, prepare_ours_float32, prepare_peer
from .projection import project
from .quick import QUICK_SIZE, build_quick_assets
from .synthetic import write_jpeg
from .report import plot_confusions, plot_latency, plot_rocs, plot_sizes, write_markdown
from .speed import run_in_subprocess
from .timing import speedup

logger = logging.getLogger("benchmarks")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ASSETS = REPO_ROOT / "android_assets"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
SHARED_DATA = Path(os.environ.get("CXR_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

#: Run counts per mode; any of them can be overridden on the command line.
FULL = dict(runs=300, tflite_runs=3000, warmup=20, peer_runs=40, peer_warmup=3, e2e_runs=100, e2e_warmup=10, coldstart_runs=5,
            bootstrap=1000, cam_images=300, threads=[1, 2, 4])
QUICK = dict(runs=20, tflite_runs=60, warmup=3, peer_runs=5, peer_warmup=1, e2e_runs=10, e2e_warmup=2, coldstart_runs=1,
             bootstrap=50, cam_images=20, threads=[1])

#: Targets of issue 6: (id, description, operator, limit, unit). Measured values are looked up
#: in the results by :func:`compute_targets`; nothing here is a measurement.
MB = 1_000_000


# --------------------------------------------------------------------------------------------
# environment

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float:
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return float("nan")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True)
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment(argv: list[str]) -> dict:
    """Machine, versions and the command, as the report states them."""
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks" + ("" if not argv else " " + " ".join(argv)),
        "git_commit": _git_commit(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": _memory_gb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": _version("tensorflow"),
        "keras": _version("keras"),
        "ai_edge_litert": _version("ai-edge-litert"),
        "numpy": _version("numpy"),
        "pillow": _version("pillow"),
        "loadavg_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


# --------------------------------------------------------------------------------------------
# helpers

def sanitize(value):
    """JSON-ready copy: numpy scalars to Python, non-finite floats to None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [sanitize(v) for v in value]
    if isinstance(value, np.ndarray):
        return sanitize(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def pick_e2e_images(workdir: Path) -> tuple[dict, dict]:
    """(name -> path, name -> description) of the end-to-end images: full-resolution scans and a 224 one.

    The typical scan is the median by pixel count of ``fullres_sample``; the largest is shown too.
    Without the shared data, synthetic JPEGs of the same sizes stand in (and the report says so).
    """
    from PIL import Image

    images, notes = {}, {}
    fullres = sorted(p for p in (SHARED_DATA / "fullres_sample").rglob("*.jp*g")) if (
        SHARED_DATA / "fullres_sample").is_dir() else []
    if fullres:
        sizes = []
        for p in fullres:
            with Image.open(p) as im:
                sizes.append((im.size[0] * im.size[1], im.size, p))
        sizes.sort(key=lambda s: (s[0], str(s[2])))
        for name, (_, size, path) in (("fullres typical", sizes[len(sizes) // 2]), ("fullres largest", sizes[-1])):
            images[name] = str(path)
            notes[name] = f"{path.parent.name}/{path.name} ({size[0]}x{size[1]}, {path.stat().st_size / 1e3:.0f} kB)"
    else:
        for name, (w, h) in (("fullres typical", (1530, 1229)), ("fullres largest", (2396, 1990))):
            path = write_jpeg(workdir / f"{name.replace(' ', '_')}.jpeg", w, h)
            images[name] = str(path)
            notes[name] = f"SYNTHETIC stand-in {w}x{h} (shared data not found)"
    small = sorted((SHARED_DATA / "chest_xray" / "train" / "NORMAL").glob("*.jpeg"))[:1] if (
        SHARED_DATA / "chest_xray" / "train" / "NORMAL").is_dir() else []
    if small:
        with Image.open(small[0]) as im:
            size = im.size
        images["kermany 224"] = str(small[0])
        notes["kermany 224"] = f"NORMAL/{small[0].name} ({size[0]}x{size[1]}, {small[0].stat().st_size / 1e3:.0f} kB)"
    else:
        path = write_jpeg(workdir / "kermany_224.jpeg", 224, 224)
        images["kermany 224"] = str(path)
        notes["kermany 224"] = "SYNTHETIC stand-in 224x224 (shared data not found)"
    return images, notes


def _write_samples(out: Path, samples: dict) -> None:
    """Raw latency samples (ms, in run order) for auditing the summaries, gzipped to stay small."""
    import gzip

    with gzip.open(out / "latency_samples.json.gz", "wt", encoding="utf-8") as handle:
        json.dump(samples, handle)


def _ratios(session: dict, pairs: list[tuple[str, str]]) -> list[dict]:
    return [speedup(session, slower, faster) for slower, faster in pairs if slower in session and faster in session]


def _get(obj, *keys):
    for key in keys:
        if obj is None:
            return None
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def compute_targets(results: dict) -> list[dict]:
    """Targets of issues 6 and 9, each with the measured value taken from ``results`` and met/missed computed."""
    rows = []

    def add(tid, description, measured, op, limit, fmt):
        met = None if measured is None else (measured >= limit if op == ">=" else measured <= limit)
        rows.append({"id": tid, "description": description, "measured": measured, "operator": op, "limit": limit,
                     "met": met, "measured_text": "n/a" if measured is None else fmt(measured),
                     "limit_text": f"{op} {fmt(limit)}"})

    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    for task, t in results["tasks"].items():
        if "error" in t:
            continue
        parity = t["parity_vs_keras"]
        add(f"{task}.int8_agreement", f"{task}: int8 top-1 agreement with Keras",
            _get(parity, "int8", "top1_agreement"), ">=", 0.995, pct)
        add(f"{task}.int8_auc_delta", f"{task}: int8 abs(delta AUC) vs Keras",
            _get(parity, "int8", "auc_delta_abs"), "<=", 0.003, lambda v: f"{v:.4f}")
        for key in ("int8_cam", "fp16_cam"):
            add(f"{task}.{key}_cam_r", f"{task}: CAM Pearson r, edge {key} vs Keras Grad-CAM (mean)",
                _get(t, "heatmap_parity", key, "pearson_r_mean"), ">=", 0.95, lambda v: f"{v:.4f}")
        # Issue 9: the heatmap of a positive call points at the lungs (edge int8 CAM vs lung masks).
        for key, loc in (t.get("lung_localization") or {}).items():
            label, pop = key.split("|")
            if label == t.get("negative_label", "NORMAL"):
                continue
            add(f"{task}.lungs_hottest.{label}.{pop}", f"{task}: called {label}, {pop}: hottest heatmap cell inside "
                f"the lungs ({loc['images']} films)", loc["hottest_inside"], ">=", 0.90, pct)
            add(f"{task}.lungs_mass.{label}.{pop}", f"{task}: called {label}, {pop}: heatmap mass inside the lungs",
                loc["mass_inside_mean"], ">=", 0.60, pct)
    for size in results["sizes"]:
        if size["group"] == "ours" and "_int8" in size["file"]:
            add(f"size.{size['file']}", f"size of {size['file']}", size["bytes"] / MB, "<=", 1.0,
                lambda v: f"{v:.3f} MB")
    tflite1 = _get(results, "speed", "by_threads", "1", "sessions", "tflite")
    for key in ("tflite_int8", "tflite_int8_cam"):
        add(f"latency.{key}", f"{key} model-only median latency, 1 thread", _get(tflite1, key, "median_ms"), "<=",
            1.5, lambda v: f"{v:.3f} ms")
    cnn2 = None
    for r in _get(results, "speed", "ratios", "1", "peers") or []:
        if {r["slower"], r["faster"]} == {"cnn2_150:tflite_int8", "ours:tflite_int8"}:
            cnn2 = r["speedup"] if r["faster"] == "ours:tflite_int8" else 1.0 / r["speedup"]
    add("speedup.cnn2_int8", "int8 speed-up over the fastest published design's int8 (two-conv CNN, 150 px), "
        "1 thread, same run", cnn2, ">=", 1.0, lambda v: f"{v:.2f}x")
    vgg = None
    for r in _get(results, "speed", "ratios", "1", "peers") or []:
        if r["slower"] == "vgg16_224:tflite_int8" and r["faster"] == "ours:tflite_int8":
            vgg = r["speedup"]
    add("speedup.vgg16_int8", "int8 speed-up over the VGG16 design's int8, 1 thread, same run", vgg, ">=", 15.0,
        lambda v: f"{v:.1f}x")
    e2e1 = _get(results, "endtoend", "by_threads", "1")
    add("e2e.int8_cam_fullres", "end-to-end median, int8 CAM file, typical full-resolution JPEG, 1 thread",
        _get(e2e1, "int8_cam, fullres typical", "median_ms"), "<=", 25.0, lambda v: f"{v:.1f} ms")
    add("e2e.int8_cam_fullres_largest", "end-to-end median, int8 CAM file, largest full-resolution JPEG, 1 thread",
        _get(e2e1, "int8_cam, fullres largest", "median_ms"), "<=", 25.0, lambda v: f"{v:.1f} ms")
    peak = _get(results, "coldstart", "peak_rss_bytes_max")
    add("memory.peak_rss", "peak RSS of a fresh edge-runtime process classifying one image",
        None if peak is None else peak / MB, "<=", 150.0, lambda v: f"{v:.1f} MB")
    hostile = _get(results, "hostile_inputs", "peak_rss_bytes_max")
    add("memory.hostile_peak_rss", "peak RSS of a fresh edge-runtime process refusing issue 10's hostile inputs "
        "(8000x7999 RGBA/16-bit/grey PNGs, a 30000^2 PNG, /dev/zero), worst of them",
        None if hostile is None else hostile / MB, "<=", 250 * 1024 * 1024 / MB, lambda v: f"{v:.1f} MB")
    tf_imported = _get(results, "coldstart", "tensorflow_imported")
    rows.append({"id": "memory.no_tensorflow", "description": "TensorFlow not imported by the edge-runtime process",
                 "measured": None if tf_imported is None else (not tf_imported), "operator": "==", "limit": True,
                 "met": None if tf_imported is None else (not tf_imported),
                 "measured_text": "n/a" if tf_imported is None else ("not imported" if not tf_imported else "IMPORTED"),
                 "limit_text": "not imported"})
    return rows


# --------------------------------------------------------------------------------------------
# sections

def section_accuracy(args, settings, assets, results) -> dict:
    """Sections 1 and 2 for every requested task; returns task -> plot data."""

    plot_data = {}
    for task in args.models:
        try:
            models = locate(task, assets, args.input_size)
        except FileNotFoundError as err:
            results["tasks"][task] = {"error": str(err)}
            logger.error("%s", err)
            continue
        logger.info("evaluating %s", models.name)
        try:
            out = evaluate_task(models, args.data, SHARED_DATA, args.cache_dir, settings["bootstrap"],
                                settings["cam_images"], settings["accuracy_threads"], args.seed, not args.no_progress)
        except (CxrError, ValueError, OSError) as err:  # e.g. the folder lacks this task's classes
            results["tasks"][task] = {"error": f"{type(err).__name__}: {err}"}
            logger.error("%s: %s", task, err)
            continue
        results["tasks"][task] = out["report"]
        plot_data[task] = out["plot"]
    return plot_data


def plot_accuracy_figures(results, plot_data, out: Path) -> None:
    if plot_data:
        plot_rocs({task: p["roc"] for task, p in plot_data.items()}, out / "roc.png")
        results["plots"]["roc"] = "roc.png"
        confusion = {task: {"labels": list(p["spec"].labels), "threshold": p["spec"].threshold,
                            "confusion": p["confusion"]} for task, p in plot_data.items()}
        plot_confusions(confusion, out / "confusion.png")
        results["plots"]["confusion"] = "confusion.png"
    for task, p in plot_data.items():
        cam = p["cam"]
        if cam is None:
            continue
        labels = p["labels"][cam["indices"]]
        neg = p["spec"].negative_index
        picks = [i for i in range(len(labels)) if labels[i] != neg][:2] + [i for i in range(len(labels))
                                                                         if labels[i] == neg][:2]
        rows = []
        for i in picks:
            maps = {"Keras Grad-CAM": cam["reference"][i]}
            for key, stack in cam["edge"].items():
                r = np.corrcoef(cam["reference"][i].ravel(), stack[i].ravel())[0, 1] if (
                    cam["reference"][i].std() > 0 and stack[i].std() > 0) else float("nan")
                maps[f"edge {key} (r={r:.3f})"] = stack[i]
            cls = p["spec"].labels[int(cam["classes"][i])]
            rows.append({"image": p["inputs"][cam["indices"][i]],
                         "caption": f"true {p['spec'].labels[int(labels[i])]}, map of {cls}", "maps": maps})
        if rows:
            plot_examples(rows, out / "heatmaps.png", f"{task}: Keras Grad-CAM vs edge CAM (same class, same image)")
            results["plots"]["heatmaps"] = "heatmaps.png"
        break  # one task's examples keep the figure small


def section_sizes(args, assets, speed_models, peers_info) -> list[dict]:
    sizes = []
    for task in args.models:
        try:
            models = locate(task, assets, args.input_size)
        except FileNotFoundError:
            continue
        sizes.append({"file": models.keras_path.relative_to(assets).as_posix(), "what": f"{task}: Keras model (as "
                      "saved by training)", "bytes": models.keras_path.stat().st_size, "group": "ours"})
        for key, _ in VARIANTS:
            if key in models.files:
                sizes.append({"file": models.files[key].name, "what": f"{task}: shipped {key}",
                              "bytes": models.files[key].stat().st_size, "group": "ours"})
    if speed_models.get("f32"):
        sizes.append({"file": f"{speed_models['name']}_float32.tflite (benchmark-made)",
                      "what": f"{speed_models['task']}: float32 TFLite, not shipped", "bytes":
                      Path(speed_models["f32"]).stat().st_size, "group": "ours-reference"})
    for p in peers_info:
        if p.get("reference_only"):
            continue
        for key, what in (("keras", "Keras"), ("tflite_f32", "float32 TFLite"), ("tflite_int8", "int8 TFLite")):
            if p.get(key):
                sizes.append({"file": f"{p['name']} {what}", "what": f"peer: {p['title']}",
                              "bytes": Path(p[key]).stat().st_size, "group": "peer"})
    return sizes


def _run_quality_gate_benchmark(out: Path) -> dict:
    """Run the quality-gate helper's CLI (its own process, no TensorFlow) and summarise its JSON.

    Its exit code 1 means a target was missed, not that the run failed; its full report is
    written beside ours as ``quality_gate.json``.
    """
    command = [sys.executable, "-m", "benchmarks.quality_gate", "--json", "--out", str(out / "quality_gate.json")]
    try:
        proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=3600,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        start = proc.stdout.find("{")
        summary = json.loads(proc.stdout[start:]) if start >= 0 else None
    except (subprocess.TimeoutExpired, ValueError) as err:
        return {"text": f"Run failed: {err}"}
    if summary is None or "xray_false_reject_rate" not in summary:
        return {"text": f"Run failed (exit code {proc.returncode}): {(proc.stderr or proc.stdout)[-1500:]}"}
    frr, catch = summary["xray_false_reject_rate"], summary["photo_catch_rate"]
    limits = summary.get("targets", {})
    gate_ms = ", ".join(f"{k} {v} ms" for k, v in (summary.get("gate_ms_median") or {}).items())
    text = (f"`python -m benchmarks.quality_gate --json --out quality_gate.json` (exit code {proc.returncode}; "
            f"full output in quality_gate.json): false rejects on real X-rays "
            f"{'n/a' if frr is None else f'{100 * frr:.2f}%'} of {summary['xrays']} "
            f"(target <= {100 * limits.get('false_reject_rate_max', float('nan')):.0f}%); real photos caught "
            f"{'n/a' if catch is None else f'{100 * catch:.1f}%'} of {summary['photos']} "
            f"(target >= {100 * limits.get('photo_catch_rate_min', float('nan')):.0f}%); missed: "
            f"{', '.join(summary.get('photos_missed') or []) or 'none'}; targets met: "
            f"{'yes' if summary.get('targets_met') else 'NO'}. Gate time per image (median, after decoding): "
            f"{gate_ms or 'n/a'}.")
    return {"text": text, "summary": summary, "exit_code": proc.returncode}


def section_others(args, assets, out: Path, quick: bool) -> dict:
    """The web load test and the quality-gate benchmark, each in its own process."""
    others = {}
    if not quick and not args.no_load_test:
        try:
            proc = subprocess.run([sys.executable, "-m", "benchmarks.load_web", "--models", str(assets), "--json"],
                                  cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800,
                                  env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
            summary = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None
            if summary is None:
                raise RuntimeError(f"exit code {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}")
            text = (f"`python -m benchmarks.load_web --models {assets.name} --json` (exit code {proc.returncode}): "
                    f"{summary['requests']} uploads from {summary['clients']} concurrent clients in "
                    f"{summary['wall_s']} s ({summary['throughput_rps']} per s); errors {summary['errors']}, missing "
                    f"from the log {summary.get('not_in_log')}; client-side p50 {summary['p50_ms']} ms, p95 "
                    f"{summary['p95_ms']} ms; server classify p50 {summary['server_p50_ms']} ms.")
            others["web load test (benchmarks/load_web.py)"] = {"text": text, "summary": summary,
                                                                "exit_code": proc.returncode}
        except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as err:
            others["web load test (benchmarks/load_web.py)"] = {"text": f"Run failed: {err}"}
    else:
        others["web load test (benchmarks/load_web.py)"] = {"text": "Not run in this mode (--quick or --no-load-test)."}
    if not quick and not args.no_quality_gate_benchmark:
        others["quality gate (benchmarks/quality_gate.py)"] = _run_quality_gate_benchmark(out)
    else:
        others["quality gate (benchmarks/quality_gate.py)"] = {"text": "Not run in this mode."}
    return others


# --------------------------------------------------------------------------------------------
# main

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark the chest X-ray models: accuracy parity of Keras, float16 and int8 (sensitivity, "
                    "specificity, PPV, NPV, F1, ROC AUC with bootstrap CI), heatmap parity of the edge CAM with "
                    "Keras Grad-CAM, model-only and end-to-end latency (interleaved, same run), peak memory and "
                    "cold start of the TensorFlow-free runtime, file sizes, untrained published designs as speed "
                    "and size peers, and a labelled Raspberry Pi projection. Writes report.md, report.json and PNG "
                    "plots. With no arguments: the shipped models on each one's validation split.")
    p.add_argument("--data", type=Path, default=None,
                   help="labelled folder to evaluate on, all of it (Kermany layout: one subfolder per class, e.g. "
                        ".../chest_xray/test); default: each model's own validation split of ../shared/data")
    p.add_argument("--models", nargs="+", choices=list(TASKS), default=list(TASKS),
                   help="tasks to benchmark (default: every task, in training.data.TASKS order); speed is measured "
                        "on the first")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: benchmarks/results)")
    p.add_argument("--quick", action="store_true",
                   help="CI smoke mode: a tiny model trained on synthetic images, few runs, only the smallest peer, "
                        "about a minute; never use its numbers")
    p.add_argument("--assets", type=Path, default=DEFAULT_ASSETS,
                   help="folder holding the exported models and training/ (default: android_assets)")
    p.add_argument("--input-size", type=int, default=INPUT_SIZE,
                   help="model input size in the file names (default %(default)s)")
    p.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts for model-only latency "
                   "(default: 1 2 4)")
    p.add_argument("--runs", type=int, default=None, help="timed rounds of our model's session (default 300)")
    p.add_argument("--tflite-runs", type=int, default=None,
                   help="timed rounds of the session of our TFLite files alone (default 3000)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up rounds before them (default 20)")
    p.add_argument("--peer-runs", type=int, default=None, help="timed rounds of the peers session (default 40)")
    p.add_argument("--e2e-runs", type=int, default=None, help="timed end-to-end rounds (default 100)")
    p.add_argument("--coldstart-runs", type=int, default=None, help="fresh processes for cold start (default 5)")
    p.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples for AUC CIs (default 1000)")
    p.add_argument("--cam-images", type=int, default=None, help="images per task for heatmap parity (default 300)")
    p.add_argument("--no-peers", action="store_true", help="skip the peer models (and the Pi projection)")
    p.add_argument("--no-load-test", action="store_true", help="skip benchmarks/load_web.py")
    p.add_argument("--no-quality-gate-benchmark", action="store_true", help="skip benchmarks/quality_gate.py")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="cache for decoded images and converted peers (default ~/.cache/cxr-edge)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the targets as JSON at the end")
    return p


def resolve_settings(args) -> dict:
    """Run counts of the mode (full or quick) with the command line's overrides, and the thread counts."""
    mode = QUICK if args.quick else FULL
    settings = {k: (getattr(args, k) if getattr(args, k, None) is not None else v) for k, v in mode.items()}
    cores = os.cpu_count() or 1
    settings.update(quick=bool(args.quick), peer_warmup=mode["peer_warmup"], e2e_warmup=mode["e2e_warmup"],
                    e2e_threads=sorted({1, cores}) if not args.quick else [1], accuracy_threads=cores)
    return settings


def prepare_assets(args, workdir: Path, results: dict) -> Path:
    """The models folder to benchmark (quick mode: a tiny model trained and exported into ``workdir``);
    fills in the report's title and data note."""
    assets = args.assets
    if args.quick:
        logger.info("quick mode: training and exporting a tiny model on synthetic images")
        assets, synthetic = build_quick_assets(workdir)
        args.input_size = QUICK_SIZE
        args.models = ["binary"]
        results["data_note"] = (f"synthetic images ({synthetic}); validation side of the tiny model's split"
                                if args.data is None else f"every image of {args.data}")
    else:
        # Paths relative to the repository: the report names no machine.
        results["data_note"] = (f"every image of {portable_path(args.data)} (all of it, per task; see each "
                                "task's line)" if args.data else "each model's own validation split (split.json "
                                f"in its training folder) over {portable_path(SHARED_DATA)}, grouped by patient "
                                "and near-duplicate")
    results["title"] = ("QUICK smoke run (tiny synthetic model)" if args.quick else
                        f"cxr_<task>_{args.input_size} models in {portable_path(assets)}")
    return assets


def prepare_speed_candidates(args, assets: Path, cache_dir: Path, results: dict):
    """Our model (first task that loaded) and the peers to time.

    Returns:
        (our TaskModels or None when no task loaded, {task, name, f32} of ours, the peers' info).
    """
    speed_task = next((t for t in args.models if "error" not in results["tasks"].get(t, {"error": 1})), None)
    if speed_task is None:
        results["notes"].append("speed, memory and size sections skipped: no task could be loaded")
        return None, {}, []
    models = locate(speed_task, assets, args.input_size)
    import keras  # only now: loading TensorFlow costs seconds and gigabytes

    results["ours_params"] = int(keras.saving.load_model(models.keras_path, compile=False).count_params())
    f32 = prepare_ours_float32(models.keras_path, cache_dir / "benchmarks")
    speed_models = {"task": speed_task, "name": models.name, "f32": str(f32)}
    peers_info = []
    if not args.no_peers:
        names = [SMALLEST] if args.quick else list(PEERS)
        for name in names:
            logger.info("preparing peer %s (cached after the first run)", name)
            peers_info.append(prepare_peer(name, cache_dir / "benchmarks"))
        if not args.quick:
            peers_info.append(prepare_peer(REFERENCE.name, cache_dir / "benchmarks", int8=False))
    results["peers"] = [_recorded_peer(p, cache_dir) for p in peers_info if not p.get("reference_only")]
    return models, speed_models, peers_info


def _recorded_peer(peer: dict, cache_dir: Path) -> dict:
    """A peer as the report records it: its files relative to the cache folder (``<cache>/...``), so the
    committed report names no machine; the in-process record keeps the absolute paths the timing needs."""
    root = Path(cache_dir).resolve()

    def portable(value):
        if isinstance(value, str) and Path(value).is_absolute():
            try:
                return "<cache>/" + Path(value).resolve().relative_to(root).as_posix()
            except ValueError:
                return portable_path(value)
        return value

    return {key: portable(value) for key, value in peer.items()}


def section_speed(args, settings, models, speed_models: dict, peers_info: list, results: dict, out: Path) -> dict:
    """Section 3: model-only latency, one process per thread count; returns the raw samples (ms) by run."""
    tflite = {"tflite_f32": speed_models["f32"]}
    tflite.update({f"tflite_{k}": str(v) for k, v in models.files.items()})
    speed = {"model": models.name, "input_size": args.input_size, "by_threads": {}, "ratios": {},
             "note": "the other tasks' models share this backbone and differ only in the final dense layer"}
    samples = {}
    for threads in settings["threads"]:
        config = {"threads": threads, "seed": args.seed, "progress": not args.no_progress,
                  "runs": settings["runs"], "tflite_runs": settings["tflite_runs"],
                  "warmup": settings["warmup"], "peer_runs": settings["peer_runs"],
                  "peer_warmup": settings["peer_warmup"],
                  "ours": {"keras": str(models.keras_path), "spec": str(models.spec_path),
                           "input_size": args.input_size, "tflite": tflite},
                  "peers": peers_info}
        logger.info("model-only latency at %d thread(s)", threads)
        res = run_in_subprocess("benchmarks.speed", [], config)
        for session, cands in res["sessions"].items():
            for name, stats in cands.items():
                samples[f"{threads} threads | {session} | {name}"] = stats.pop("samples_ms")
        key = str(threads)
        speed["by_threads"][key] = res
        speed["ratios"][key] = _speed_ratios(res, results.get("peers") or [])
    results["speed"] = speed
    _write_samples(out, samples)
    return samples


def _speed_ratios(res: dict, peers: list) -> dict:
    """The speed-ups of one thread count's sessions: ours against Keras and float, and against each peer."""
    ours = res["sessions"]["ours"]
    ratios = {"ours": _ratios(ours, [
        ("keras_predict", "tflite_int8"), ("keras_call", "tflite_int8"), ("tflite_f32", "tflite_int8"),
        ("tflite_fp16", "tflite_int8"), ("keras_call", "tflite_fp16"),
        ("tflite_int8", "tflite_int8_cam")])}
    ratios["tflite"] = _ratios(res["sessions"]["tflite"], [
        ("tflite_f32", "tflite_int8"), ("tflite_fp16", "tflite_int8"), ("tflite_fp16_cam", "tflite_int8_cam"),
        ("tflite_int8", "tflite_int8_cam")])
    if "peers" in res["sessions"]:
        pairs = [(f"{p['name']}:{v}", f"ours:{v}") for p in peers
                 for v in ("tflite_int8", "tflite_f32", "keras_call", "keras_predict")]
        ratios["peers"] = _ratios(res["sessions"]["peers"], pairs)
    return ratios


def section_endtoend(args, settings, models, workdir: Path, results: dict, out: Path, samples: dict) -> None:
    """Section 3b (end-to-end latency in a TensorFlow-free process) and section 4 (cold start, peak memory)."""
    images, image_notes = pick_e2e_images(workdir)
    gate = importlib.util.find_spec("edge_runtime.quality") is not None
    e2e_models = {k: str(models.files[k]) for k in ("int8_cam", "fp16_cam") if k in models.files}
    if not e2e_models:
        return
    logger.info("end-to-end latency")
    e2e = run_in_subprocess("benchmarks.edge_process", ["endtoend"], {
        "models": e2e_models, "images": images, "threads": settings["e2e_threads"],
        "runs": settings["e2e_runs"], "warmup": settings["e2e_warmup"], "quality_gate": gate,
        "seed": args.seed, "progress": not args.no_progress})
    for t, cands in e2e["by_threads"].items():
        for name, stats in cands.items():
            samples[f"e2e {t} threads | {name}"] = stats.pop("samples_ms")
    e2e.update(image_notes=image_notes, overlay_side=OVERLAY_SIDE,
               tensorflow_imported=e2e["heavy_modules"]["tensorflow"])
    if not gate:
        e2e["notes"].append("edge_runtime.quality (the quality gate) was not installed: not timed")
    results["endtoend"] = e2e
    _write_samples(out, samples)

    model = e2e_models.get("int8_cam") or next(iter(e2e_models.values()))
    logger.info("cold start and peak RSS in %d fresh process(es)", settings["coldstart_runs"])
    results["coldstart"] = measure_coldstart(model, images["fullres typical"], settings["coldstart_runs"], 1, gate,
                                             not args.no_progress)
    logger.info("peak RSS of a fresh process on each of issue 10's hostile inputs")
    results["hostile_inputs"] = measure_hostile_inputs(model, gate)


def section_projection(args, results: dict, peers_info: list) -> None:
    """Section 7: the Raspberry Pi projection from the reference network timed in the all-core peers session."""
    cores = os.cpu_count() or 1
    speed = results["speed"]
    reference = next((p for p in peers_info if p.get("reference_only")), None)
    if reference is None or str(cores) not in speed["by_threads"]:
        results["projection_note"] = ("Not computed: needs the peers (MobileNet v2 reference) timed at this "
                                      f"machine's all-core thread count ({cores}); "
                                      + ("quick mode skips it." if args.quick else "run without --no-peers "
                                         f"and include {cores} in --threads."))
        return
    session = speed["by_threads"][str(cores)]["sessions"]
    # Reference and our files from the same interleaved session, so they share its conditions.
    ref_ms = session["peers"][f"{reference['name']}:tflite_f32"]["median_ms"]
    ours_ms = {f"model-only {k}": session["peers"][f"ours:{k}"]["median_ms"]
               for k in ("tflite_int8", "tflite_fp16", "tflite_int8_cam") if f"ours:{k}" in session["peers"]}
    e2e_t = _get(results, "endtoend", "by_threads", str(cores)) or {}
    for k in ("int8_cam, fullres typical", "int8_cam, kermany 224"):
        if k in e2e_t:
            ours_ms[f"end-to-end {k}"] = e2e_t[k]["median_ms"]
    results["projection"] = project(ref_ms, ours_ms, cores)


def plot_summary_figures(results: dict, out: Path) -> None:
    """The size and latency figures."""
    if results["sizes"]:
        plot_sizes(results["sizes"], out / "sizes.png")
        results["plots"]["sizes"] = "sizes.png"
    if results.get("speed"):
        plot_latency(results["speed"], out / "latency.png")
        results["plots"]["latency"] = "latency.png"


def write_reports(results: dict, failures: list, started: float, out: Path) -> dict:
    """Targets and timing into ``results``, then report.json and report.md; returns the JSON-ready results."""
    results["environment"]["loadavg_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    results["targets"] = compute_targets(results)
    results["wall_seconds"] = time.perf_counter() - started
    results["failed"] = failures
    clean = sanitize(results)
    (out / "report.json").write_text(json.dumps(clean, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    write_markdown(clean, out / "report.md")
    return clean


def run(args, argv: list[str]) -> dict:
    """Run every section and write the report; returns the results dict (as written to report.json)."""
    started = time.perf_counter()
    settings = resolve_settings(args)
    out = args.out or DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = args.cache_dir or default_cache_dir()
    workdir = Path(tempfile.mkdtemp(prefix="cxr-bench-work-"))
    results = {"title": "", "environment": environment(argv), "settings": settings, "tasks": {}, "plots": {},
               "notes": [], "sizes": [], "data_note": "n/a"}
    failures = []
    try:
        assets = prepare_assets(args, workdir, results)
        plot_data = section_accuracy(args, settings, assets, results)  # sections 1 and 2
        plot_accuracy_figures(results, plot_data, out)
        models, speed_models, peers_info = prepare_speed_candidates(args, assets, cache_dir, results)
        if models is not None:
            samples = section_speed(args, settings, models, speed_models, peers_info, results, out)
            section_endtoend(args, settings, models, workdir, results, out, samples)
            section_projection(args, results, peers_info)
        results["sizes"] = section_sizes(args, assets, speed_models, peers_info)
        plot_summary_figures(results, out)
        results["others"] = section_others(args, assets, out, args.quick)
    except Exception as err:  # noqa: BLE001 - keep what was measured, say what failed, exit non-zero
        logger.exception("benchmark failed")
        failures.append(f"{type(err).__name__}: {err}")
        results["notes"].append("FAILED: " + "".join(traceback.format_exception_only(type(err), err)).strip())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return write_reports(results, failures, started, out)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.data is not None and not args.data.is_dir():
        logger.error("--data %s is not a folder", args.data)
        return 2
    results = run(args, argv)
    out = args.out or DEFAULT_OUT
    targets = results["targets"]
    if args.json:
        print(json.dumps(targets, indent=2))
    else:
        for t in targets:
            state = "not measured" if t["met"] is None else ("met" if t["met"] else "MISSED")
            print(f"{state:>12}  {t['description']}: {t['measured_text']} (target {t['limit_text']})")
        print(f"report: {out / 'report.md'}")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
