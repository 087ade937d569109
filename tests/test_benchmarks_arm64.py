"""benchmarks.arm64: the x86 / arm64 comparison passes equal answers and fails beyond its tolerances."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest

arm64 = pytest.importorskip("benchmarks.arm64", reason="repository tools not installed (runtime-only environment)")

ASSETS = Path(__file__).resolve().parent.parent / "android_assets"
INT8 = "cxr_binary_160_int8_cam.tflite"
FP16 = "cxr_binary_160_fp16_cam.tflite"


def _probe() -> dict:
    """A probe as platform_probe.py writes it, for two images, with the checkout's model hashes."""
    shas = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(ASSETS.glob("*.tflite"))}
    images = {"a.jpeg": ("NORMAL", 0.9765625), "b.jpeg": ("PNEUMONIA", 0.08984375)}
    heatmap = [i / 99 for i in range(100)]

    def api_rows():
        return {name: {"input_sha256": "0" * 64, "label": label,
                       "probabilities": {"NORMAL": p, "PNEUMONIA": 1 - p}, "heatmap": list(heatmap)}
                for name, (label, p) in images.items()}

    return {
        "platform": {"machine": "x86_64"}, "model_sha256": shas,
        "cli": [{"file": name, "label": label, "probabilities": {"NORMAL": p, "PNEUMONIA": 1 - p},
                 "decision": "-"} for name, (label, p) in images.items()],
        "api": {INT8: {"labels": ["NORMAL", "PNEUMONIA"], "images": api_rows()},
                FP16: {"labels": ["NORMAL", "PNEUMONIA"], "images": api_rows()}},
        "threads": {t: {name: [p, 1 - p] for name, (_, p) in images.items()} for t in ("1", "2")},
        "kernels": {"skipped": "test"},
        "web": {"health": {"status": "ok", "model_loaded": True}, "classify_status": 200, "file": "b.jpeg",
                "classify": {"label": "PNEUMONIA", "probabilities": {"NORMAL": 0.08984375, "PNEUMONIA": 0.91015625}},
                "heatmap_returned": True},
    }


def _compare(other: dict) -> list[str]:
    _, failures = arm64.compare_pair("test", _probe(), other, ASSETS)
    return failures


def test_the_int8_output_step_is_read_from_the_model_file():
    assert arm64.int8_output_steps(ASSETS / INT8) == pytest.approx(1 / 256)
    assert arm64.int8_output_steps(ASSETS / FP16) is None


def test_identical_probes_pass():
    assert _compare(_probe()) == []


def test_differences_within_tolerance_pass():
    other = _probe()
    row = other["api"][INT8]["images"]["a.jpeg"]["probabilities"]
    step = arm64.INT8_STEPS / 256
    row["NORMAL"] -= step
    row["PNEUMONIA"] += step
    other["api"][FP16]["images"]["a.jpeg"]["probabilities"]["NORMAL"] += arm64.FLOAT_ABS / 2
    other["api"][INT8]["images"]["b.jpeg"]["heatmap"][5] += arm64.HEATMAP_MAX_ABS / 2
    assert _compare(other) == []


def test_a_probability_beyond_tolerance_fails():
    other = _probe()
    row = other["cli"][0]["probabilities"]
    row["NORMAL"] -= (arm64.INT8_STEPS + 1) / 256
    failures = _compare(other)
    assert len(failures) == 1 and "cli: a.jpeg: probabilities differ" in failures[0]


def test_a_float_model_beyond_its_tolerance_fails():
    other = _probe()
    other["api"][FP16]["images"]["b.jpeg"]["probabilities"]["PNEUMONIA"] += 10 * arm64.FLOAT_ABS
    assert any(FP16 in f for f in _compare(other))


def test_a_different_label_or_heatmap_or_model_fails():
    other = _probe()
    other["api"][INT8]["images"]["a.jpeg"]["label"] = "PNEUMONIA"
    other["api"][INT8]["images"]["b.jpeg"]["heatmap"] = list(reversed(other["api"][INT8]["images"]["b.jpeg"]["heatmap"]))
    other["model_sha256"][INT8] = "f" * 64
    failures = _compare(other)
    assert any("label PNEUMONIA vs NORMAL" in f for f in failures)
    assert any("heatmap differs" in f for f in failures)
    assert any("different model files" in f for f in failures)


def test_a_server_that_did_not_answer_fails():
    other = _probe()
    other["web"]["classify_status"] = 500
    other["web"]["health"]["status"] = "degraded"
    assert len([f for f in _compare(other) if f.startswith("test: web")]) == 2


def test_main_writes_the_report_and_exits_1_on_failure(tmp_path):
    ref, other = tmp_path / "x86.json", tmp_path / "arm64.json"
    ref.write_text(json.dumps(_probe()))
    bad = copy.deepcopy(_probe())
    bad["cli"][1]["label"] = "NORMAL"
    other.write_text(json.dumps(bad))
    out = tmp_path / "arm64-report.json"
    assert arm64.main(["--pair", "litert-pi4", str(ref), str(ref), "--out", str(out), "--assets", str(ASSETS)]) == 0
    report = json.loads(out.read_text())
    assert report["passed"] and report["tolerance"]["int8_output_steps"] == arm64.INT8_STEPS
    assert "not measured" in report["speed"]
    assert arm64.main(["--pair", "litert-pi4", str(ref), str(other), "--out", str(out), "--assets", str(ASSETS)]) == 1
    assert not json.loads(out.read_text())["passed"]
