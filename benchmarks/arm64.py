"""python -m benchmarks.arm64: compare what the runtime answers on arm64 with x86 for the same commit.

Reads pairs of probe files written by ``benchmarks/platform_probe.py`` (one on this x86 machine, one
in the emulated Debian bookworm arm64 root file system built by ``benchmarks/arm64.sh``), and the model
files of the checkout (for each int8 model's output quantization step), and writes
``benchmarks/results/arm64.json``. Exits 1 when a label differs or a probability or heatmap differs
beyond the tolerances below, 2 on a usage error.

    python -m benchmarks.arm64 --pair litert x86.json arm64.json --pair tflite x86-t.json arm64-t.json

Tolerances, measured (see ``TOLERANCE_NOTE`` and the README's arm64 section):

* int8 models: probabilities within ``INT8_STEPS`` steps of the model's int8 softmax output (TFLite
  quantizes softmax to a scale of 1/256, so one step is 0.0039: the 0.9102 vs 0.9141 of issue 13, which
  was TFLite's built-in kernels against XNNPACK, not arm64 against x86).
* float16 models (computed in float32): ``FLOAT_ABS``.
* heatmaps (10x10 CAM, normalised to [0, 1]): largest cell difference ``HEATMAP_MAX_ABS`` and Pearson
  r >= ``HEATMAP_MIN_R``.

Timings under emulation mean nothing for a device and are not compared or reported here.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ASSETS = REPO_ROOT / "android_assets"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "arm64.json"

#: int8 probabilities: at most this many output quantization steps apart (measured: 1).
INT8_STEPS = 2
#: float16 (float32 compute) probabilities: at most this far apart (measured: 1.2e-7).
FLOAT_ABS = 1e-5
#: Heatmaps: largest difference of one cell of the [0, 1] map, and smallest Pearson r (measured: 0 and 1).
HEATMAP_MAX_ABS = 0.02
HEATMAP_MIN_R = 0.999
#: Rounding slack for values printed with 6 decimals (the CLI's and the web API's JSON).
PRINT_SLACK = 1e-6

TOLERANCE_NOTE = (
    "Measured with the shipped models on the 24 full-resolution samples, arm64 as a Pi 4 (Cortex-A72) and a "
    "Pi 5 (Cortex-A76): decoding and resizing give bit-identical input tensors; TFLite's portable reference "
    "kernels give identical int8 probabilities on both machines; XNNPACK's int8 kernels agree on 71 of 72 "
    "int8 results per CPU and differ by one step of the int8 softmax output (1/256 = 0.0039) on one "
    "etiology scan; the thread count (1, 2, 4) changes nothing; float16 files (float32 compute) differ by "
    "at most 1.2e-7; heatmaps are identical (the int8 feature maps agree). The 0.9102 vs 0.9141 of issue 13 "
    "is TFLite's built-in kernels against XNNPACK, one int8 step apart: without /sys/devices/system/cpu in "
    "the chroot, cpuinfo fails and the XNNPACK delegate is silently not created, and the built-in kernels "
    "give 0.9102 for person1154_bacteria_3099.jpeg where XNNPACK gives 0.9141 on both machines (reproduced). "
    "Tolerances: int8 two steps (twice the measured, since a retrained model puts its rounding boundaries "
    "elsewhere and one step in the logit can move the softmax by more than one step near 0.5), float 1e-5, "
    "heatmap cells 0.02 with r >= 0.999 (a few feature-map steps; a wrong or shifted heatmap gives r far "
    "below). Labels must be identical: a two-step change can only move a label for a score within 0.008 of "
    "the threshold.")


def int8_output_steps(model_path: Path) -> float | None:
    """The quantization step of the int8 tensor that the probability output is dequantized from,
    read from the model file itself (None for a float model)."""
    from edge_runtime.interpreter import find_interpreter_class

    interpreter_class, _ = find_interpreter_class()
    interpreter = interpreter_class(model_path=str(model_path))
    interpreter.allocate_tensors()
    outputs = {d["index"]: d for d in interpreter.get_output_details() if len(d["shape"]) == 2}
    for op in interpreter._get_ops_details():  # noqa: SLF001 - the only API that lists the graph's ops
        if op["op_name"] == "DEQUANTIZE" and set(op["outputs"]) & set(outputs):
            detail = next(d for d in interpreter.get_tensor_details() if d["index"] == op["inputs"][0])
            scale = float(detail["quantization"][0])
            if np.dtype(detail["dtype"]) in (np.int8, np.uint8) and scale > 0:
                return scale
    for detail in outputs.values():  # a model with quantized outputs and no DEQUANTIZE op
        if np.dtype(detail["dtype"]) in (np.int8, np.uint8):
            return float(detail["quantization"][0])
    return None


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() < 1e-12 and b.std() < 1e-12:
        return 1.0 if np.allclose(a, b) else 0.0
    if a.std() < 1e-12 or b.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


class Comparison:
    """Collects the differences of one (reference, other) pair of probes and the failures."""

    def __init__(self, name: str, ref: dict, other: dict, assets: Path):
        self.name, self.ref, self.other, self.assets = name, ref, other, assets
        self.failures: list[str] = []
        self._steps: dict[str, float | None] = {}

    def fail(self, message: str) -> None:
        self.failures.append(f"{self.name}: {message}")

    def step_of(self, model_file: str) -> float | None:
        if model_file not in self._steps:
            self._steps[model_file] = int8_output_steps(self.assets / model_file)
        return self._steps[model_file]

    def allowed(self, model_file: str) -> float:
        step = self.step_of(model_file)
        return (INT8_STEPS * step if step else FLOAT_ABS) + PRINT_SLACK

    def probabilities(self, where: str, model_file: str, ref: dict, other: dict) -> float:
        """Largest probability difference (also checks the label sets); records a failure beyond tolerance."""
        if set(ref) != set(other):
            self.fail(f"{where}: labels {sorted(other)} differ from {sorted(ref)}")
            return math.inf
        worst = max(abs(float(ref[k]) - float(other[k])) for k in ref)
        if worst > self.allowed(model_file):
            self.fail(f"{where}: probabilities differ by {worst:.6f} > {self.allowed(model_file):.6f} "
                      f"({ref} vs {other})")
        return worst

    def in_steps(self, model_file: str, diff: float) -> float | None:
        step = self.step_of(model_file)
        return round(diff / step, 3) if step else None

    # -- the parts of a probe ------------------------------------------------------------------
    def check_models(self) -> dict:
        ref, other = self.ref["model_sha256"], self.other["model_sha256"]
        checkout = {name: _sha256(self.assets / name) for name in ref if (self.assets / name).is_file()}
        if ref != other:
            self.fail("the two probes ran different model files")
        if checkout != ref:
            self.fail(f"the probes' model files differ from the checkout's {self.assets}")
        return {"files": len(ref), "same_on_both": ref == other, "same_as_checkout": checkout == ref}

    def check_cli(self, default_model: str) -> dict:
        ref = {r["file"]: r for r in self.ref["cli"]}
        other = {r["file"]: r for r in self.other["cli"]}
        if set(ref) != set(other):
            self.fail(f"cli: files differ ({sorted(set(ref) ^ set(other))})")
        worst, labels_same = 0.0, 0
        for name in sorted(set(ref) & set(other)):
            if ref[name]["label"] != other[name]["label"]:
                self.fail(f"cli: {name}: label {other[name]['label']} vs {ref[name]['label']}")
            else:
                labels_same += 1
            worst = max(worst, self.probabilities(f"cli: {name}", default_model, ref[name]["probabilities"],
                                                  other[name]["probabilities"]))
        return {"model": default_model, "images": len(ref), "labels_same": labels_same,
                "max_abs_diff": round(worst, 6), "max_diff_steps": self.in_steps(default_model, worst)}

    def check_api(self) -> dict:
        out = {}
        for model_file, ref_model in sorted(self.ref["api"].items()):
            other_model = self.other["api"].get(model_file)
            if other_model is None:
                self.fail(f"api: {model_file} missing on the other machine")
                continue
            diffs, steps, cam_max, cam_r = [], [], [], []
            labels_same = inputs_same = 0
            for name, r in sorted(ref_model["images"].items()):
                o = other_model["images"].get(name)
                if o is None:
                    self.fail(f"api: {model_file}: {name} missing")
                    continue
                inputs_same += r["input_sha256"] == o["input_sha256"]
                if r["label"] != o["label"]:
                    self.fail(f"api: {model_file}: {name}: label {o['label']} vs {r['label']}")
                else:
                    labels_same += 1
                diff = self.probabilities(f"api: {model_file}: {name}", model_file, r["probabilities"],
                                          o["probabilities"])
                diffs.append(diff)
                a, b = np.asarray(r["heatmap"], np.float64), np.asarray(o["heatmap"], np.float64)
                cam_max.append(float(np.abs(a - b).max()))
                cam_r.append(_pearson(a, b))
                if cam_max[-1] > HEATMAP_MAX_ABS or cam_r[-1] < HEATMAP_MIN_R:
                    self.fail(f"api: {model_file}: {name}: heatmap differs (max {cam_max[-1]:.4f}, r {cam_r[-1]:.4f})")
            step = self.step_of(model_file)
            if step:
                steps = [round(d / step) for d in diffs]
            out[model_file] = {
                "images": len(ref_model["images"]), "labels_same": labels_same, "inputs_identical": inputs_same,
                "max_abs_diff": round(max(diffs, default=0.0), 7),
                "int8_output_step": step,
                "images_by_diff_steps": ({str(k): steps.count(k) for k in sorted(set(steps))} if step else None),
                "heatmap_max_abs_diff": round(max(cam_max, default=0.0), 5),
                "heatmap_min_pearson_r": round(min(cam_r, default=1.0), 5),
            }
        return out

    def check_web(self, default_model: str) -> dict:
        ref, other = self.ref["web"], self.other["web"]
        for side, probe in (("reference", ref), ("other", other)):
            if probe["health"]["status"] != "ok" or not probe["health"]["model_loaded"]:
                self.fail(f"web: {side} health {probe['health']}")
            if probe["classify_status"] != 200:
                self.fail(f"web: {side} classify answered HTTP {probe['classify_status']}")
        if ref["classify"].get("label") != other["classify"].get("label"):
            self.fail(f"web: label {other['classify'].get('label')} vs {ref['classify'].get('label')}")
        worst = self.probabilities("web", default_model, ref["classify"]["probabilities"],
                                   other["classify"]["probabilities"])
        cli = {r["file"]: r for r in self.other["cli"]}.get(other["file"])
        if cli is not None and cli["label"] != other["classify"].get("label"):
            self.fail(f"web: the server's label {other['classify'].get('label')} differs from the CLI's {cli['label']}")
        return {"file": other["file"], "health": other["health"], "label": other["classify"].get("label"),
                "heatmap_returned": other["heatmap_returned"], "max_abs_diff": round(worst, 6)}

    def check_threads(self, default_model: str) -> dict:
        """Thread counts: within each machine (expected identical) and across machines."""
        out = {}
        for side, probe in (("reference", self.ref), ("other", self.other)):
            base = probe["threads"]["1"]
            out[f"{side}_max_diff_vs_1_thread"] = round(max(
                abs(a - b) for t, rows in probe["threads"].items() for name, row in rows.items()
                for a, b in zip(row, base[name])), 9)
        for threads in self.ref["threads"]:
            worst = max(abs(a - b) for name, row in self.ref["threads"][threads].items()
                        for a, b in zip(row, self.other["threads"][threads][name]))
            out[f"across_machines_{threads}_threads_max_diff_steps"] = self.in_steps(default_model, worst)
        return out

    def check_kernels(self) -> dict:
        """Kernel sets: which of them differ across machines, and XNNPACK vs built-in on one machine."""
        if "skipped" in self.ref["kernels"] or "skipped" in self.other["kernels"]:
            return {"skipped": self.ref["kernels"].get("skipped") or self.other["kernels"].get("skipped")}

        def worst(a: dict, b: dict) -> float:
            return max(abs(x - y) for name in a for x, y in zip(a[name], b[name]))

        out = {}
        for model_file, ref_kernels in self.ref["kernels"].items():
            other_kernels = self.other["kernels"][model_file]
            row = {}
            for kind in ref_kernels:
                d = worst(ref_kernels[kind], other_kernels[kind])
                row[f"{kind}: x86 vs arm64"] = self.in_steps(model_file, d) if self.step_of(model_file) else d
            for side, kernels in (("x86", ref_kernels), ("arm64", other_kernels)):
                d = worst(kernels["AUTO"], kernels["BUILTIN_WITHOUT_DEFAULT_DELEGATES"])
                row[f"{side}: XNNPACK vs built-in"] = self.in_steps(model_file, d) if self.step_of(model_file) else d
            if self.step_of(model_file) and row.get("BUILTIN_REF: x86 vs arm64", 0) != 0:
                self.fail(f"kernels: {model_file}: the portable reference kernels differ across machines")
            out[model_file] = row
        return out


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def compare_pair(name: str, ref: dict, other: dict, assets: Path) -> tuple[dict, list[str]]:
    """The comparison of one runtime's probes (x86 reference, arm64 other) and its failures."""
    from edge_runtime.model_files import resolve_model

    default_model = resolve_model("binary", assets).name
    comparison = Comparison(name, ref, other, assets)
    result = {"x86": ref["platform"], "arm64": other["platform"], "models": comparison.check_models(),
              "cli": comparison.check_cli(default_model), "api": comparison.check_api(),
              "web": comparison.check_web(default_model)}
    # The investigation steps (thread counts, kernel sets) run on one CPU profile only.
    if "threads" in ref and "threads" in other:
        result["threads"] = comparison.check_threads(default_model)
    if "kernels" in ref and "kernels" in other:
        result["kernels"] = comparison.check_kernels()
    result["passed"] = not comparison.failures
    return result, comparison.failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.arm64", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", nargs=3, action="append", required=True, metavar=("NAME", "X86_JSON", "ARM64_JSON"),
                        help="one runtime's probe on x86 and on arm64 (repeatable)")
    parser.add_argument("--assets", type=Path, default=DEFAULT_ASSETS, help="models folder of the checkout")
    parser.add_argument("--stage", type=Path, metavar="JSON",
                        help="the arm64 stage's own record (rootfs fresh or reused, CI wall times) to include")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write (default: %(default)s)")
    args = parser.parse_args(argv)

    report = {
        "generated_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "what": "the edge runtime on Debian bookworm arm64 (the base of 64-bit Raspberry Pi OS) under "
                "qemu-user emulation, against x86 on the same commit and model files",
        "speed": "not measured: timings under emulation say nothing about a Raspberry Pi; see the labelled "
                 "Pi projection in benchmarks/results/report.md",
        "tolerance": {"int8_output_steps": INT8_STEPS, "float_abs": FLOAT_ABS, "heatmap_max_abs": HEATMAP_MAX_ABS,
                      "heatmap_min_pearson_r": HEATMAP_MIN_R, "labels": "identical", "why": TOLERANCE_NOTE},
        "runtimes": {},
    }
    failures = []
    for name, ref_path, other_path in args.pair:
        try:
            ref = json.loads(Path(ref_path).read_text(encoding="utf-8"))
            other = json.loads(Path(other_path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            print(f"error: cannot read the {name} probes: {err}", file=sys.stderr)
            return 2
        report["runtimes"][name], pair_failures = compare_pair(name, ref, other, args.assets)
        failures += pair_failures
    if args.stage is not None and args.stage.is_file():
        report["ci_stage"] = json.loads(args.stage.read_text(encoding="utf-8"))
    report["passed"] = not failures
    report["failures"] = failures
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    for name, result in report["runtimes"].items():
        cli = result["cli"]
        print(f"arm64 vs x86 ({name}): {cli['labels_same']}/{cli['images']} labels equal, largest probability "
              f"difference {cli['max_abs_diff']} ({cli['max_diff_steps']} int8 steps); web {result['web']['label']}")
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    print(f"wrote {args.out}: {'passed' if not failures else f'{len(failures)} failure(s)'}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
