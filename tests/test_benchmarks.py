"""Benchmarks: the quick (CI) mode end to end, and the pure helpers its numbers come from."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks.heatmaps import compare_maps, top_region
from benchmarks.projection import PI4_REFERENCE, PI5_OVER_PI4, project
from benchmarks.timing import round_robin, speedup, summarize

from conftest import HAS_TF, REPO_ROOT, needs_tf


# ---------------------------------------------------------------------------------------------
# pure helpers (fast)

def test_summarize_percentiles_and_speedup():
    stats = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats["median_ms"] == 3.0 and stats["min_ms"] == 1.0 and stats["max_ms"] == 100.0
    assert stats["median_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= stats["max_ms"]
    results = {"slow": summarize([10.0, 10.0, 10.0]), "fast": summarize([2.0, 2.0, 2.0])}
    assert speedup(results, "slow", "fast")["speedup"] == pytest.approx(5.0)
    with pytest.raises(ValueError):
        summarize([])


def test_round_robin_times_every_candidate_equally():
    calls = {"a": 0, "b": 0}

    def make(name):
        def call():
            calls[name] += 1
        return call

    out = round_robin({"a": make("a"), "b": make("b")}, runs=7, warmup=2, progress=False)
    assert calls == {"a": 9, "b": 9}
    assert out["a"]["runs"] == out["b"]["runs"] == 7 and len(out["a"]["samples_ms"]) == 7


def test_heatmap_metrics_identity_and_shift():
    rng = np.random.default_rng(0)
    maps = rng.random((5, 10, 10))
    same = compare_maps(maps, maps)
    assert same["pearson_r_mean"] == pytest.approx(1.0)
    assert same["top20_iou_mean"] == 1.0 and same["hottest_cell_agreement"] == 1.0
    assert top_region(maps[0]).sum() == 20
    flat = compare_maps(np.zeros((2, 4, 4)), rng.random((2, 4, 4)))
    assert flat["pearson_r_undefined_images"] == 2 and flat["pearson_r_mean"] != flat["pearson_r_mean"]
    shifted = compare_maps(maps, np.roll(maps, 3, axis=2))
    assert shifted["pearson_r_mean"] < 0.5


def test_projection_is_the_published_quotient_times_ours():
    out = project(reference_here_ms=11.0, ours_ms={"int8": 0.5}, threads_here=2)
    factor = PI4_REFERENCE["latency_ms"] / 11.0
    assert out["rows"]["int8"]["projected_pi4_ms"] == pytest.approx(0.5 * factor)
    assert out["rows"]["int8"]["projected_pi5_ms"] == pytest.approx(
        0.5 * factor * PI5_OVER_PI4["pi5_ms"] / PI5_OVER_PI4["pi4_ms"])
    assert "PROJECTION" in out["label"]


def test_committed_report_re_renders_byte_identical(tmp_path):
    """``report.md`` is a pure function of ``report.json``: the committed pair must agree."""
    from benchmarks.report import write_markdown

    results = REPO_ROOT / "benchmarks" / "results"
    out = write_markdown(json.loads((results / "report.json").read_text(encoding="utf-8")), tmp_path / "report.md")
    assert out.read_text(encoding="utf-8") == (results / "report.md").read_text(encoding="utf-8")


def test_report_shows_the_task_title_and_description_from_the_spec(tmp_path):
    from benchmarks.report import write_markdown

    results = json.loads((REPO_ROOT / "benchmarks" / "results" / "report.json").read_text(encoding="utf-8"))
    task = next(t for t in results["tasks"].values() if "error" not in t)
    task.update(title="A title", description="What it tells apart.", populations=["adults", "children"])
    text = write_markdown(results, tmp_path / "report.md").read_text(encoding="utf-8")
    assert f"### {task['model']} ({task['task']}: A title)" in text
    assert "Task: What it tells apart. Populations: adults, children." in text


# ---------------------------------------------------------------------------------------------
# quick mode end to end

@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    if not HAS_TF:
        pytest.skip("needs TensorFlow")
    from benchmarks.__main__ import main

    out = tmp_path_factory.mktemp("bench out") / "quick report"
    cache = tmp_path_factory.mktemp("bench cache")
    code = main(["--quick", "--out", str(out), "--cache-dir", str(cache), "--no-progress"])
    return code, out


def _numbers(obj, path="$"):
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return
    if isinstance(obj, (int, float)):
        yield path, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _numbers(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _numbers(value, f"{path}[{i}]")


@needs_tf
@pytest.mark.slow
def test_quick_mode_writes_every_report_file(quick_report):
    code, out = quick_report
    assert code == 0, (out / "report.md").read_text(encoding="utf-8")[-3000:]
    for name in ("report.md", "report.json", "confusion.png", "heatmaps.png", "latency.png", "sizes.png",
                 "roc.png"):
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert path.stat().st_size < 400_000, f"{name} is not small"


@needs_tf
@pytest.mark.slow
def test_quick_report_numbers_are_finite_and_derived(quick_report):
    _, out = quick_report

    def refuse(token):
        raise ValueError(f"report.json holds {token}")

    results = json.loads((out / "report.json").read_text(encoding="utf-8"), parse_constant=refuse)
    bad = [(p, v) for p, v in _numbers(results) if not math.isfinite(v)]
    assert not bad
    assert not results["failed"]
    speed = results["speed"]
    for threads, res in speed["by_threads"].items():
        for session, ratios in speed["ratios"][threads].items():
            stats = res["sessions"][session]
            assert ratios, f"no ratios for {session} at {threads} threads"
            for r in ratios:
                assert r["slower_median_ms"] == stats[r["slower"]]["median_ms"]
                assert r["faster_median_ms"] == stats[r["faster"]]["median_ms"]
                assert r["speedup"] == pytest.approx(r["slower_median_ms"] / r["faster_median_ms"], rel=1e-12)
        for session in res["sessions"].values():
            for s in session.values():
                assert 0 < s["min_ms"] <= s["median_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
                assert s["runs"] in (results["settings"]["runs"], results["settings"]["tflite_runs"],
                                     results["settings"]["peer_runs"])
    for target in results["targets"]:
        if target["met"] is None or target["operator"] == "==":
            continue
        expected = (target["measured"] >= target["limit"] if target["operator"] == ">="
                    else target["measured"] <= target["limit"])
        assert target["met"] == expected, target
    import gzip

    with gzip.open(out / "latency_samples.json.gz", "rt", encoding="utf-8") as handle:
        samples = json.load(handle)
    for threads, res in speed["by_threads"].items():
        for session, cands in res["sessions"].items():
            for name, s in cands.items():
                raw = samples[f"{threads} threads | {session} | {name}"]
                assert len(raw) == s["runs"]
                assert np.median(raw) == pytest.approx(s["median_ms"], abs=1e-3)  # samples stored to 0.1 us
                assert np.percentile(raw, 90) == pytest.approx(s["p90_ms"], abs=1e-3)
    task = results["tasks"]["binary"]
    parity = task["parity_vs_keras"]["int8"]
    assert parity["auc_delta"] == pytest.approx(parity["auc_tflite"] - parity["auc_keras"])
    assert task["metrics"]["keras"]["screening"]["roc_auc"] == pytest.approx(parity["auc_keras"])
    sizes = {s["file"]: s["bytes"] for s in results["sizes"]}
    assert all(b > 0 for b in sizes.values())


@needs_tf
@pytest.mark.slow
def test_quick_edge_process_is_tensorflow_free(quick_report):
    _, out = quick_report
    results = json.loads((out / "report.json").read_text(encoding="utf-8"))
    cold = results["coldstart"]
    assert cold["tensorflow_imported"] is False and cold["heavy_modules_imported"] == []
    assert 0 < cold["peak_rss_bytes_max"] < 1_000_000_000  # the launcher keeps the TF parent's RSS out
    assert results["endtoend"]["tensorflow_imported"] is False
    text = (out / "report.md").read_text(encoding="utf-8")
    for target in results["targets"]:
        assert target["description"] in text
    assert "Quick (CI smoke) mode" in text


def test_recorded_peers_name_no_machine_path(tmp_path):
    from benchmarks.__main__ import _recorded_peer

    peer = {"name": "cnn2_150", "params": 5, "keras": str(tmp_path / "benchmarks" / "peers" / "x" / "model.keras")}
    recorded = _recorded_peer(peer, tmp_path)
    assert recorded == {"name": "cnn2_150", "params": 5, "keras": "<cache>/benchmarks/peers/x/model.keras"}
    assert peer["keras"].startswith(str(tmp_path))  # the timing keeps the real path


def test_the_committed_report_names_no_absolute_path():
    import json

    from conftest import REPO_ROOT

    text = (REPO_ROOT / "benchmarks" / "results" / "report.json").read_text(encoding="utf-8")
    def strings(value):
        if isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)
        elif isinstance(value, str):
            yield value
    assert not [s for s in strings(json.loads(text)) if s.startswith("/")]
