"""Writes the benchmark's report.md and PNG plots from the results dict (every number comes from it)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

#: Plot resolution: small files that stay readable.
DPI = 80
#: Candidate-name prefix of the Raspberry Pi projection's reference network in the peers session.
REFERENCE_PREFIX = "mobilenet_v2_224:"


def _f(value, digits: int = 3, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value}{unit}"
    return f"{value:.{digits}f}{unit}"


def _pct(value, digits: int = 2) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f}%"


def _mb(num_bytes) -> str:
    return "n/a" if num_bytes is None else f"{num_bytes / 1e6:.3f} MB"


def _ms(value) -> str:
    return _f(value, 3 if value is not None and value < 10 else 1, " ms")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


# --------------------------------------------------------------------------------------------
# plots

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_small_png(fig, path: Path) -> Path:
    """Save a figure as a 256-colour palette PNG: a few times smaller, and plots need no more colours."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    _plt().close(fig)
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def plot_confusions(tasks: dict, path: Path) -> Path:
    """Confusion matrices at the shipped threshold: one row per task, one column per precision."""
    plt = _plt()
    from sklearn.metrics import ConfusionMatrixDisplay

    names = list(tasks)
    cols = max(len(t["confusion"]) for t in tasks.values())
    fig, axes = plt.subplots(len(names), cols, figsize=(3.1 * cols, 3.0 * len(names)), squeeze=False)
    for r, task in enumerate(names):
        entry = tasks[task]
        for c, (variant, matrix) in enumerate(entry["confusion"].items()):
            ax = axes[r][c]
            ConfusionMatrixDisplay(np.asarray(matrix), display_labels=entry["labels"]).plot(
                ax=ax, colorbar=False, cmap="Blues")
            ax.set_title(f"{task}: {variant} (thr {entry['threshold']:.3f})", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.xaxis.label.set_size(8)
            ax.yaxis.label.set_size(8)
        for c in range(len(entry["confusion"]), cols):
            axes[r][c].axis("off")
    fig.tight_layout()
    return save_small_png(fig, path)


def plot_rocs(tasks: dict, path: Path) -> Path:
    """Screening ROC of Keras, float16 and int8 overlaid per task; line styles keep identical curves visible."""
    plt = _plt()
    from sklearn.metrics import auc, roc_curve

    styles = {"keras": dict(lw=3.5, alpha=0.45, ls="-"), "fp16": dict(lw=1.6, ls="--"), "int8": dict(lw=1.4, ls=":")}
    fig, axes = plt.subplots(2, len(tasks), figsize=(3.9 * len(tasks), 7.4), squeeze=False)
    for col, (task, curves) in enumerate(tasks.items()):
        for row, zoom in enumerate((False, True)):
            ax = axes[row][col]
            for name, (positive, score) in curves.items():
                fpr, tpr, _ = roc_curve(positive, score)
                ax.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.4f})", **styles.get(name, {}))
            ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=0.8)
            if zoom:
                ax.set_xlim(0.0, 0.2)
                ax.set_ylim(0.8, 1.0)
            ax.set_title(f"{task}: screening ROC" + (" (zoom on the corner)" if zoom else ""), fontsize=10)
            ax.set_xlabel("1 - specificity", fontsize=8)
            ax.set_ylabel("sensitivity", fontsize=8)
            ax.legend(fontsize=8, loc="lower right")
            ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_small_png(fig, path)


def plot_latency(speed: dict, path: Path) -> Path:
    """Model-only medians (bars) with p90 (whiskers), ours at each thread count and the peer session."""
    plt = _plt()
    threads = sorted(speed["by_threads"], key=int)
    ours = speed["by_threads"][threads[0]]["sessions"]["ours"]
    candidates = list(ours)
    has_peers = "peers" in speed["by_threads"][threads[0]]["sessions"]
    fig, axes = plt.subplots(1, 2 if has_peers else 1, figsize=(13 if has_peers else 7, 4.2), squeeze=False)
    ax = axes[0][0]
    width = 0.8 / len(threads)
    x = np.arange(len(candidates))
    for i, t in enumerate(threads):
        session = speed["by_threads"][t]["sessions"]["ours"]
        med = np.array([session[c]["median_ms"] for c in candidates])
        p90 = np.array([session[c]["p90_ms"] for c in candidates])
        ax.bar(x + i * width, med, width, yerr=[np.zeros_like(med), p90 - med], capsize=2, label=f"{t} thread(s)")
    ax.set_xticks(x + width * (len(threads) - 1) / 2)
    ax.set_xticklabels(candidates, rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("ms per image (median; whisker p90)")
    ax.set_title("our model, model-only latency", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3, which="both")
    if has_peers:
        ax = axes[0][1]
        t = threads[0]
        session = speed["by_threads"][t]["sessions"]["peers"]
        names = sorted(session, key=lambda n: session[n]["median_ms"])
        med = np.array([session[n]["median_ms"] for n in names])
        p90 = np.array([session[n]["p90_ms"] for n in names])
        colors = ["tab:green" if n.startswith("ours:") else "tab:blue" if n.startswith(REFERENCE_PREFIX)
                  else "tab:grey" for n in names]
        ax.barh(np.arange(len(names)), med, xerr=[np.zeros_like(med), p90 - med], color=colors, capsize=2)
        ax.set_yticks(np.arange(len(names)))
        ax.set_yticklabels(names, fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("ms per image (median; whisker p90)")
        ax.set_title(f"ours (green) vs untrained peers (grey), same run, {t} thread(s);\n"
                     "blue: Pi-projection reference, not a peer", fontsize=9)
        ax.grid(axis="x", alpha=0.3, which="both")
    fig.tight_layout()
    return save_small_png(fig, path)


def plot_sizes(sizes: list[dict], path: Path) -> Path:
    """File sizes, log scale."""
    plt = _plt()
    rows = sorted(sizes, key=lambda r: r["bytes"])
    fig, ax = plt.subplots(figsize=(7, 0.22 * len(rows) + 1.2))
    colors = ["tab:grey" if r["group"] == "peer" else "tab:green" for r in rows]
    ax.barh(np.arange(len(rows)), [r["bytes"] / 1e6 for r in rows], color=colors)
    ax.set_yticks(np.arange(len(rows)))
    ax.set_yticklabels([r["file"] for r in rows], fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("MB (10^6 bytes), log scale")
    ax.axvline(1.0, ls=":", color="red")
    ax.set_title("file sizes (ours green, peers grey; dotted: 1 MB)", fontsize=10)
    fig.tight_layout()
    return save_small_png(fig, path)


# --------------------------------------------------------------------------------------------
# markdown

def _metrics_rows(task: dict) -> list[list[str]]:
    rows = []
    for variant, m in task["metrics"].items():
        scr = m["screening"]
        low, high = scr["roc_auc_ci95"]
        for key, label in (("at_threshold", "shipped"), ("at_0.5", "0.5")):
            b = scr[key]
            rows.append([variant, f"{label} ({b['threshold']:.3f})", _f(b["accuracy"]), _f(b["sensitivity"]),
                         _f(b["specificity"]), _f(b["ppv"]), _f(b["npv"]), _f(b["f1"]),
                         _f(b["multiclass_accuracy"]),
                         f"{_f(scr['roc_auc'], 4)} ({_f(low, 3)}-{_f(high, 3)})"])
    return rows


def _session_note(speed: dict) -> list[str]:
    """Why one file's latency differs between sessions, with the numbers of each."""
    rows = []
    for t, res in sorted(speed["by_threads"].items(), key=lambda kv: int(kv[0])):
        sessions = res["sessions"]
        values = [f"{name} {_ms(sessions[name][key]['median_ms'])}" for name, key in
                  (("tflite", "tflite_int8"), ("ours", "tflite_int8"), ("peers", "ours:tflite_int8"))
                  if name in sessions and key in sessions[name]]
        rows.append(f"{t} thread(s): " + ", ".join(values))
    return ["Why the same file's median differs between sessions: interleaved with Keras or VGG16 calls, which "
            "evict the caches and move the clock, a small model runs colder than among TFLite calls alone. The "
            "latency targets use the TFLite-only session; the speed-up over VGG16 uses the peers session. int8 "
            "medians by session (TFLite-only, ours with Keras, peers): " + "; ".join(rows) + ".", ""]


def _header_lines(results: dict) -> list[str]:
    """Title, provenance, the targets table and the set-up."""
    env = results["environment"]
    runs = results["settings"]
    lines = [f"# Benchmark report: {results['title']}", ""]
    if results["settings"].get("quick"):
        lines += ["**Quick (CI smoke) mode: a tiny model trained for seconds on synthetic images. These numbers say "
                  "nothing about the shipped models.**", ""]
    lines += [f"Generated {env['date_utc']} by `{env['command']}` (commit {env['git_commit'][:12]}); "
              f"wall time {results['wall_seconds']:.0f} s. Every number below is computed by the benchmark; "
              "the published references used by the Raspberry Pi projection are the only typed-in values, each "
              "with its source.", "", "## Targets", ""]
    lines += _table(["target", "measured", "limit", "result"],
                    [[t["description"], t["measured_text"], t["limit_text"],
                      "not measured" if t["met"] is None else ("met" if t["met"] else "**missed**")]
                     for t in results["targets"]])
    lines += ["", "## Setup", ""]
    lines += [f"- Machine: {env['cpu_model']}, {env['cpu_count']} logical CPUs ({env['affinity']} usable), "
              f"{env['memory_gb']:.1f} GB RAM, {env['platform']}",
              f"- Load average when starting / finishing: {env['loadavg_start']} / {env.get('loadavg_end', 'n/a')} "
              "(a shared machine: ratios measured in the same run are the trustworthy numbers)",
              f"- Versions: Python {env['python']}, TensorFlow {env['tensorflow']}, Keras {env['keras']}, "
              f"ai-edge-litert {env['ai_edge_litert']}, NumPy {env['numpy']}, Pillow {env['pillow']}",
              f"- Threads: model-only latency at {', '.join(str(t) for t in runs['threads'])} "
              f"(TensorFlow intra- and inter-op pools and the TFLite interpreter set to that count); "
              f"end-to-end at {', '.join(str(t) for t in runs['e2e_threads'])}; accuracy inference at "
              f"{runs['accuracy_threads']}",
              f"- Runs: ours {runs['runs']} timed rounds after {runs['warmup']} warm-up rounds; our TFLite files "
              f"alone {runs['tflite_runs']} rounds; peers session "
              f"{runs['peer_runs']} rounds after {runs['peer_warmup']}; end-to-end {runs['e2e_runs']} after "
              f"{runs['e2e_warmup']}; cold start {runs['coldstart_runs']} fresh processes; bootstrap "
              f"{runs['bootstrap']} resamples; Grad-CAM parity on up to {runs['cam_images']} images per task",
              f"- Data: {results['data_note']}", ""]
    return lines


def _task_accuracy_lines(task_name: str, task: dict) -> list[str]:
    """One task's accuracy and parity tables."""
    if "error" in task:
        return [f"### {task_name}", "", f"Not evaluated: {task['error']}", ""]
    heading = f"{task_name}: {task['title']}" if task.get("title") else task_name
    lines = [f"### {task['model']} ({heading})", ""]
    if task.get("description"):
        lines += [f"Task: {task['description']}" + (f" Populations: {', '.join(task['populations'])}."
                                                    if task.get("populations") else ""), ""]
    lines += [f"Data: {task['data']}.", "",
              "Screening decision: positive = not NORMAL (score 1 - P(NORMAL)); 'class acc.' is the accuracy "
              "over all classes with the same decision rule. AUC with bootstrap 95% CI.", ""]
    lines += _table(["model", "threshold", "accuracy", "sensitivity", "specificity", "PPV", "NPV", "F1",
                     "class acc.", "ROC AUC (95% CI)"], _metrics_rows(task))
    first = next(iter(task["metrics"].values()))
    if "one_vs_rest_auc" in first:
        labels = list(first["one_vs_rest_auc"])
        lines += ["", "One-vs-rest ROC AUC per class:", ""]
        lines += _table(["model"] + labels + ["macro"],
                        [[variant] + [_f(m["one_vs_rest_auc"][label], 4) for label in labels]
                         + [_f(m["macro_auc"], 4)] for variant, m in task["metrics"].items()])
    lines += ["", "Agreement with the Keras model on the same images:", ""]
    lines += _table(["file", "top-1 agreement", "decision agreement (shipped thr.)", "max abs prob diff",
                     "mean abs prob diff", "AUC", "delta AUC vs Keras"],
                    [[f"{task['files'][k]}", _pct(p["top1_agreement"]), _pct(p["decision_agreement"]),
                      _f(p["max_prob_diff"], 4), _f(p["mean_prob_diff"], 5), _f(p["auc_tflite"], 4),
                      f"{p['auc_delta']:+.4f}"] for k, p in task["parity_vs_keras"].items()])
    pops = task.get("by_population") or {}
    if pops:
        lines += ["", "By population, each alone (shipped threshold):", ""]
        lines += _table(["model", "population", "images", "sensitivity", "specificity", "PPV", "NPV",
                         "ROC AUC (95% CI)"],
                        [[variant, pop, str(m["n"]), _f(m["screening"]["at_threshold"]["sensitivity"], 3),
                          _f(m["screening"]["at_threshold"]["specificity"], 3),
                          _f(m["screening"]["at_threshold"]["ppv"], 3), _f(m["screening"]["at_threshold"]["npv"], 3),
                          f"{_f(m['screening']['roc_auc'], 4)} ({_f(m['screening']['roc_auc_ci95'][0], 3)}-"
                          f"{_f(m['screening']['roc_auc_ci95'][1], 3)})"]
                         for variant, by_pop in pops.items() for pop, m in by_pop.items()])
    loc = task.get("lung_localization") or {}
    if loc:
        lines += ["", "Does the heatmap point at the lungs? Edge int8 CAM of the shown label against the lung "
                  "masks of `lung_masks/` (held-out films that have one): share of the heatmap's mass inside "
                  "the lungs, and share of films whose hottest cell is at least half lung.", ""]
        lines += _table(["shown label", "population", "films", "mass inside the lungs", "hottest cell inside",
                         "lungs' share of the image"],
                        [[key.split("|")[0], key.split("|")[1], str(r["images"]), _pct(r["mass_inside_mean"], 1),
                          _pct(r["hottest_inside"], 1), _pct(r["lung_area_mean"], 1)] for key, r in loc.items()])
    lines += [""]
    return lines


def _accuracy_lines(results: dict) -> list[str]:
    """Section 1: accuracy parity of every task, and its figures."""
    lines = ["## 1. Accuracy parity", ""]
    if not results["tasks"]:
        lines += ["No task could be evaluated.", ""]
    for task_name, task in results["tasks"].items():
        lines += _task_accuracy_lines(task_name, task)
    if results.get("plots", {}).get("roc"):
        lines += [f"Screening ROC, Keras / float16 / int8 overlaid: ![ROC]({results['plots']['roc']})", ""]
    if results.get("plots", {}).get("confusion"):
        lines += [f"Confusion matrices at the shipped threshold (rows true, columns predicted): "
                  f"![confusion]({results['plots']['confusion']})", ""]
    return lines


def _heatmap_lines(results: dict) -> list[str]:
    """Section 2: edge CAM against Keras Grad-CAM."""
    lines = ["## 2. Heatmap parity", "",
             "Edge CAM (feature-map output of the *_cam.tflite file x the dense weights in the spec, no gradients) "
             "against Keras Grad-CAM (gradients through the Keras model), both for the Keras model's argmax class, "
             "on the same images. r: Pearson correlation of the two maps per image; IoU: overlap of the hottest 20% "
             "of cells; hottest cell: share of images whose maximum falls on the same cell.", ""]
    rows = []
    for task_name, task in results["tasks"].items():
        for key, h in task.get("heatmap_parity", {}).items():
            rows.append([task_name, task["files"][key], str(h["images"]), _f(h["pearson_r_mean"], 4),
                         _f(h["pearson_r_median"], 4), _f(h["pearson_r_p05"], 4), _f(h["pearson_r_min"], 4),
                         str(h["pearson_r_undefined_images"]), _f(h["top20_iou_mean"], 3),
                         _pct(h["hottest_cell_agreement"], 1)])
    lines += _table(["task", "file", "images", "r mean", "r median", "r 5th pct", "r min", "r undefined (flat map)",
                     "top-20% IoU", "hottest cell agrees"], rows) if rows else ["No *_cam.tflite file evaluated."]
    if results.get("plots", {}).get("heatmaps"):
        lines += ["", f"![heatmap examples]({results['plots']['heatmaps']})"]
    lines += [""]
    return lines


def _speed_threads_lines(t: str, res: dict, ratios: dict) -> list[str]:
    """Model-only latency at one thread count: each session's table and its ratios."""
    lines = [f"### {t} thread(s)", ""]
    lines += _table(["candidate", "median", "p90", "p99", "min", "runs"],
                    [[name, _ms(s["median_ms"]), _ms(s["p90_ms"]), _ms(s["p99_ms"]), _ms(s["min_ms"]),
                      str(s["runs"])] for name, s in res["sessions"]["ours"].items()])
    lines += ["", "Ratios in this session (median of the first / median of the second; above 1 means the "
              "second is faster):", ""]
    lines += [f"- {r['slower']} / {r['faster']} = **{r['speedup']:.2f}x**" for r in ratios["ours"]]
    if "tflite" in res["sessions"]:
        lines += ["", "Our TFLite files alone, many more rounds (the session the latency targets use):", ""]
        lines += _table(["candidate", "median", "p90", "p99", "min", "runs"],
                        [[name, _ms(s["median_ms"]), _ms(s["p90_ms"]), _ms(s["p99_ms"]), _ms(s["min_ms"]),
                          str(s["runs"])] for name, s in res["sessions"]["tflite"].items()])
        lines += [""] + [f"- {r['slower']} / {r['faster']} = **{r['speedup']:.2f}x**"
                         for r in ratios["tflite"]]
    if "peers" in res["sessions"]:
        lines += ["", "Peers session (ours and the untrained published designs, interleaved):", ""]
        lines += _table(["candidate", "median", "p90", "p99", "runs"],
                        [[name, _ms(s["median_ms"]), _ms(s["p90_ms"]), _ms(s["p99_ms"]), str(s["runs"])]
                         for name, s in sorted(res["sessions"]["peers"].items(),
                                               key=lambda kv: kv[1]["median_ms"])])
        lines += ["", f"`{REFERENCE_PREFIX[:-1]}` is not a peer: it is the reference network of the "
                  "Raspberry Pi projection (section 7)."]
        lines += ["", "Ours against each peer in the same form (peer median / our median; above 1 means ours "
                  "is faster):", ""]
        lines += [f"- {r['slower']} / {r['faster']} = **{r['speedup']:.2f}x**" for r in ratios["peers"]]
    return lines + [""]


def _speed_lines(results: dict) -> list[str]:
    """Section 3: model-only latency."""
    speed = results.get("speed")
    lines = ["## 3. Speed", ""]
    if speed:
        lines += [f"Model-only: one {speed['input_size']}x{speed['input_size']} image through `{speed['model']}` "
                  f"({speed['note']}). Keras predict = `model.predict(x)`, Keras call = `model(x)` (eager); TFLite "
                  "= `Classifier.run(prepared)` of the edge runtime (input quantization, invoke, output "
                  "dequantization), float32 converted here for reference. All candidates of a session are "
                  "interleaved round-robin in a shuffled order per round, in one process per thread count.", ""]
        for t, res in sorted(speed["by_threads"].items(), key=lambda kv: int(kv[0])):
            lines += _speed_threads_lines(t, res, speed["ratios"][t])
        lines += _session_note(speed)
        if results.get("plots", {}).get("latency"):
            lines += [f"![latency]({results['plots']['latency']})", ""]
        lines += ["Every raw sample behind these summaries, in run order: `latency_samples.json.gz`.", ""]
    else:
        lines += ["Not measured.", ""]
    return lines


def _endtoend_lines(results: dict) -> list[str]:
    """Section 3, end to end: the edge runtime in a TensorFlow-free process."""
    lines: list[str] = []
    e2e = results.get("endtoend")
    if e2e:
        lines += ["### End-to-end (edge runtime, TensorFlow-free process)", "",
                  "`Classifier.classify(path, heatmap=True)` (read the file, decode, luminance + resize, invoke, "
                  "CAM) followed by the overlay on the image shrunk to the web app's preview size "
                  f"({e2e['overlay_side']} px): the issue's definition, without the chest X-ray quality gate. "
                  + ("Rows marked '+quality gate' add `edge_runtime.quality.check_chest_xray`, which the runtime "
                     "runs by default (ClassifierOptions.quality_gate=True). " if e2e.get("quality_gate_timed") else
                     "The quality gate was not installed, so it was not timed. ")
                  + "All rows are interleaved round-robin in one process. Images: "
                  + "; ".join(f"{k}: {v}" for k, v in e2e["image_notes"].items()) + ".", ""]
        for t, res in sorted(e2e["by_threads"].items(), key=lambda kv: int(kv[0])):
            stage_names = sorted({s for r in res.values() for s in r["stage_median_ms"]})
            lines += [f"{t} thread(s):", ""]
            lines += _table(["model, image", "median", "p90", "p99", "runs"] + [f"{s} (median)" for s in stage_names],
                            [[k, _ms(r["median_ms"]), _ms(r["p90_ms"]), _ms(r["p99_ms"]), str(r["runs"])]
                             + [_ms(r["stage_median_ms"].get(s)) for s in stage_names] for k, r in res.items()])
            lines += [""]
        lines += [f"TensorFlow imported in that process: {_f(e2e['tensorflow_imported'])}."]
        lines += [f"- {n}" for n in e2e.get("notes", [])] + [""]
    return lines


def _memory_lines(results: dict) -> list[str]:
    """Section 4: cold start and peak memory of one classification."""
    cold = results.get("coldstart")
    lines = ["## 4. Memory and cold start", ""]
    if cold:
        lines += [f"A fresh Python process imports the edge runtime, loads `{cold['model']}` ({cold['runtime']}, "
                  f"{cold['threads']} thread) and classifies `{cold['image']}` with its heatmap and overlay; "
                  f"{cold['runs']} processes, one after another"
                  + (", with the quality gate on (the runtime's default)" if cold["quality_gate"] else "")
                  + ". Peak RSS from `os.wait4` on that child (the kernel's ru_maxrss), the children being started "
                  "by a small standard-library launcher (its own RSS, "
                  f"{_mb(cold['launcher_rss_bytes'])}, is the floor a child inherits through vfork/exec; started "
                  "from the TensorFlow-laden benchmark process a child would report that process's gigabytes); "
                  "VmHWM from the child's /proc as a cross-check.", ""]
        lines += _table(["measure", "value"], [
            ["process wall time, spawn to exit (median / max / first)",
             f"{_ms(cold['process_wall_ms_median'])} / {_ms(cold['process_wall_ms_max'])} / "
             f"{_ms(cold['first_run_wall_ms'])}"],
            ["in-process: imports (median)", _ms(cold["import_ms_median"])],
            ["in-process: model load (median)", _ms(cold["load_model_ms_median"])],
            ["in-process: first classification + overlay (median)", _ms(cold["first_classify_ms_median"])],
            ["peak RSS (max / median)", f"{_mb(cold['peak_rss_bytes_max'])} / {_mb(cold['peak_rss_bytes_median'])}"],
            ["VmHWM (max)", _mb(cold["vmhwm_bytes_max"])],
            ["TensorFlow imported", _f(cold["tensorflow_imported"])],
            ["heavy modules imported (tensorflow, keras, jax, torch, training, export)",
             ", ".join(cold["heavy_modules_imported"]) or "none"],
            ["modules loaded in total", str(cold["modules_loaded"])],
        ])
        lines += [""]
    else:
        lines += ["Not measured.", ""]
    return lines


def _hostile_lines(results: dict) -> list[str]:
    """Section 4, continued: peak memory refusing hostile inputs."""
    lines: list[str] = []
    hostile = results.get("hostile_inputs")
    if hostile:
        lines += ["Hostile inputs (issue 10): a fresh process per input, refused from the header or after a "
                  "reduced decode; limit " + _mb(hostile["limit_bytes"]) + " peak RSS each.", ""]
        lines += _table(["input", "file size", "refused as", "peak RSS"],
                        [[name, "-" if v["size_bytes"] is None else f"{v['size_bytes'] / 1024:.0f} KB",
                          str(v["refused"] or "classified"), _mb(v["peak_rss_bytes"])]
                         for name, v in hostile["inputs"].items()])
        lines += [""]
    return lines


def _sizes_lines(results: dict) -> list[str]:
    """Section 5: file sizes."""
    lines = ["## 5. File sizes", ""]
    lines += _table(["file", "what", "bytes", "MB"],
                    [[s["file"], s["what"], str(s["bytes"]), _mb(s["bytes"])] for s in results["sizes"]])
    if results.get("plots", {}).get("sizes"):
        lines += ["", f"![sizes]({results['plots']['sizes']})"]
    lines += [""]
    return lines


def _peers_lines(results: dict) -> list[str]:
    """Section 6: the untrained published designs."""
    lines = ["## 6. Peers", ""]
    if results.get("peers"):
        lines += ["Untrained (random weights, seeded; nothing downloaded): for speed and size only, never accuracy. "
                  "Built with the same uint8 input and in-graph scaling as ours.", ""]
        lines += _table(["peer", "architecture", "stands for", "input", "parameters", "int8 calibration",
                         "conversion cached"],
                        [[p["name"], p["title"], p["source"], f"{p['input_size']}x{p['input_size']}",
                          f"{p['params']:,}", p.get("calibration") or "-", _f(p["cached"])]
                         for p in results["peers"]])
        lines += [f"", f"Ours: {results['ours_params']:,} parameters."]
    else:
        lines += ["Peers were not run (--no-peers)."]
    lines += [""]
    return lines


def _projection_lines(results: dict) -> list[str]:
    """Section 7: the labelled Raspberry Pi projection."""
    lines: list[str] = []
    proj = results.get("projection")
    lines += ["## 7. Raspberry Pi 4 / Pi 5: PROJECTION, not a measurement", ""]
    if proj:
        ref4, ref54 = proj["pi4_reference"], proj["pi5_over_pi4_reference"]
        lines += [f"Reference network timed here in the peers session at {proj['threads_here']} threads (this "
                  f"machine's cores): {ref4['network']}, median {_ms(proj['reference_here_ms'])}. Published: "
                  f"{ref4['latency_ms']:.0f} ms on the {ref4['board']}, {ref4['threads']} ({ref4['software']}; "
                  f"source: {ref4['source']}). Pi 4 factor = {ref4['latency_ms']:.0f} / "
                  f"{proj['reference_here_ms']:.2f} = {proj['pi4_factor']:.2f}. Pi 5 / Pi 4 = "
                  f"{ref54['pi5_ms']} / {ref54['pi4_ms']} = {proj['pi5_over_pi4']:.3f} ({ref54['network']}; source: "
                  f"{ref54['source']}), so the Pi 5 factor is {proj['pi5_factor']:.2f}.", ""]
        lines += _table(["measured here (median)", f"here, {proj['threads_here']} threads", "projected Pi 4 (4 threads)",
                         "projected Pi 5 (4 threads)"],
                        [[name, _ms(r["measured_here_ms"]), _ms(r["projected_pi4_ms"]), _ms(r["projected_pi5_ms"])]
                         for name, r in proj["rows"].items()])
        lines += [""] + [f"- {c}" for c in proj["caveats"]] + [""]
    else:
        lines += [results.get("projection_note", "Not computed."), ""]
    return lines


def _others_lines(results: dict) -> list[str]:
    """The other helpers' benchmarks and the notes."""
    lines = ["## Other helpers' benchmarks", ""]
    for name, item in results.get("others", {}).items():
        lines += [f"### {name}", "", item["text"], ""]

    if results.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    return lines


def write_markdown(results: dict, path: Path) -> Path:
    """The human report: targets first, then each section with the numbers from ``results``."""
    sections = (_header_lines, _accuracy_lines, _heatmap_lines, _speed_lines, _endtoend_lines, _memory_lines,
                _hostile_lines, _sizes_lines, _peers_lines, _projection_lines, _others_lines)
    lines = [line for section in sections for line in section(results)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
