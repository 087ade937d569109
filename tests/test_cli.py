"""cxr-edge command line: batches with bad files, JSON lines, exit codes, history, watch, camera, demo, serve."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import corpus
from conftest import ASSETS, REPO_ROOT, terminal_sigint
from edge_runtime import cli
from edge_runtime.camera import FakeFrameSource
from edge_runtime.log import ScreeningLog
from runtime_models import FULLRES, binary_models, needs_fullres, xray_like  # noqa: F401 - fixture

NO_GATE = "--no-quality-gate"


@pytest.fixture()
def env(binary_models, monkeypatch, tmp_path):
    """Models from the test model folder; the log in tmp (never the user's)."""
    monkeypatch.setenv("CXR_MODELS", str(binary_models["dir"]))
    monkeypatch.setenv("CXR_LOG", str(tmp_path / "default-log" / "screenings.db"))
    monkeypatch.delenv("CXR_SAMPLES", raising=False)
    return tmp_path


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_images(folder: Path, count: int, size: int = 64, start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img {start + i}.png"
        Image.fromarray(xray_like(size, start + i)).save(path)
        paths.append(path)
    return paths


def test_help_documents_commands_and_exit_codes(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for word in ("classify", "watch", "camera", "history", "demo", "serve", "exit codes", "130", "CXR_LOG"):
        assert word in out
    code, out, _ = run(capsys, "classify", "--help")
    assert code == 0 and "--json" in out and "--heatmap" in out and "--no-log" in out and "--model" in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and "0.1.0" in out


def test_usage_errors_exit_2(capsys, env):
    assert run(capsys)[0] == 2
    assert run(capsys, "classify")[0] == 2  # PATH is required
    assert run(capsys, "classify", "--threads", "0", "x.png")[0] == 2
    code, _, err = run(capsys, "classify", "--model", "nonsense", "x.png")
    assert code == 2 and "unknown model 'nonsense'" in err and "binary" in err


def test_batch_with_bad_files_completes_the_good_ones(capsys, env):
    folder = env / "batch of scans"
    good = write_images(folder, 3)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")  # named explicitly below: tried, and reported
    (folder / "report.pdf").write_bytes(b"%PDF-1.4\n")  # named explicitly below
    (folder / "readme.md").write_text("# scans")  # in the folder only: skipped, and said so
    (folder / "cut.jpeg").write_bytes(corpus.truncated_jpeg())
    (folder / "dot.png").write_bytes(corpus.encode(Image.new("L", (1, 1)), "PNG"))
    log_path = env / "log.db"
    code, out, err = run(capsys, "classify", NO_GATE, "--log", log_path, folder, folder / "notes.txt",
                         folder / "report.pdf", folder / "missing.png")
    assert code == 1
    lines = out.strip().splitlines()
    assert lines[0].startswith("label") and len(lines) == 1 + 3
    for path in good:
        assert any(line.endswith(str(path)) for line in lines[1:])
    for name, code_word in (("empty.png", "invalid_image"), ("notes.txt", "invalid_image"),
                            ("report.pdf", "unsupported_format"), ("cut.jpeg", "invalid_image"),
                            ("dot.png", "image_too_small"), ("missing.png", "file_not_found")):
        assert any(name in line and code_word in line for line in err.splitlines()), name
    assert "3 classified, 6 failed" in err
    assert "skipped 3 file(s)" in err and "readme.md" in err  # notes.txt, report.pdf, readme.md in the folder
    with ScreeningLog(log_path) as log:
        assert log.count() == 3


def test_json_lines_and_heatmaps(capsys, env):
    images = write_images(env / "in", 2)
    code, out, err = run(capsys, "classify", NO_GATE, "--json", "--heatmap", env / "maps", "--log", env / "l.db",
                         *images)
    assert code == 0 and err == ""
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert len(rows) == 2
    for row, path in zip(rows, images):
        assert {"path", "label", "probabilities", "threshold", "decision", "latency_ms"} <= set(row)
        assert row["path"] == str(path) and isinstance(row["log_id"], int)
        heatmap = Path(row["heatmap"])
        assert heatmap.parent == env / "maps" and heatmap.is_file()
        assert Image.open(heatmap).size == (64 * 2 + 8, 64)


def test_quality_gate_is_on_by_default(capsys, env):
    rng = np.random.default_rng(0)
    photo = env / "holiday.jpeg"
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(photo)
    code, out, err = run(capsys, "classify", "--no-log", photo)
    assert code == 1 and "holiday.jpeg" in err and "not a chest X-ray" in err and "not_chest_xray" in err


def test_no_log_writes_nothing(capsys, env):
    images = write_images(env / "in", 1)
    assert run(capsys, "classify", NO_GATE, "--no-log", *images)[0] == 0
    assert not (env / "default-log").exists()
    assert run(capsys, "classify", NO_GATE, *images)[0] == 0  # default: $CXR_LOG
    assert (env / "default-log" / "screenings.db").is_file()


def test_history(capsys, env):
    log_path = env / "h.db"
    run(capsys, "classify", NO_GATE, "--log", log_path, *write_images(env / "in", 3))
    code, out, err = run(capsys, "history", "--log", log_path)
    assert code == 0 and len(out.strip().splitlines()) == 4 and "3 of 3 screenings" in err
    with ScreeningLog(log_path) as log:
        label = log.recent(1)[0]["label"]
        expected = log.count(label)
    code, out, _ = run(capsys, "history", "--log", log_path, "--label", label, "--json")
    assert code == 0 and [json.loads(line)["label"] for line in out.strip().splitlines()] == [label] * expected
    target = env / "export.csv"
    assert run(capsys, "history", "--log", log_path, "--csv", target)[0] == 0
    rows = list(csv.DictReader(target.open(newline="")))
    assert len(rows) == 3 and "patient_id" not in rows[0]
    code, _, err = run(capsys, "history", "--log", env / "none.db")
    assert code == 0 and "no screening log yet" in err and not (env / "none.db").exists()


def test_watch_once(capsys, env):
    inbox = env / "inbox"
    write_images(inbox, 2)
    (inbox / "bad.png").write_bytes(b"garbage")
    code, out, err = run(capsys, "watch", inbox, NO_GATE, "--once", "--settle", "0", "--grace", "0", "--interval", "0.01",
                         "--processed", env / "done", "--failed", env / "failed", "--log", env / "w.db")
    assert code == 1
    assert len(out.strip().splitlines()) == 1 + 2 and "bad.png" in err
    assert len(list((env / "done").iterdir())) == 2 and (env / "failed" / "bad.png.error.txt").is_file()
    assert run(capsys, "watch", env / "nowhere", "--once")[0] == 2


def test_watch_grace_defaults_to_the_library_rule(capsys, env, monkeypatch):
    """Without --grace the CLI leaves the grace period to watch_folder (GRACE_FACTOR x --settle); given, it passes it."""
    from edge_runtime import watch

    seen = []

    def fake_watch(folder, classifier, log, **kwargs):
        seen.append(kwargs["grace_seconds"])
        return iter(())

    monkeypatch.setattr(cli, "watch_folder", fake_watch)
    inbox = env / "inbox"
    inbox.mkdir()
    assert run(capsys, "watch", inbox, "--once", "--no-log")[0] == 0
    assert run(capsys, "watch", inbox, "--once", "--no-log", "--grace", "7")[0] == 0
    assert seen == [None, 7.0]
    code, out, _ = run(capsys, "watch", "--help")
    assert code == 0 and f"{watch.GRACE_FACTOR:g} x --settle" in " ".join(out.split())


def test_camera_with_a_fake_source(capsys, env, monkeypatch):
    frames = [xray_like(64, 1), xray_like(64, 2)]
    monkeypatch.setattr(cli, "open_camera", lambda args: FakeFrameSource(frames))
    code, out, err = run(capsys, "camera", NO_GATE, "--interval", "0", "--count", "2", "--json",
                         "--save-frames", env / "frames", "--heatmap", env / "maps", "--log", env / "c.db")
    assert code == 0, err
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert len(rows) == 2 and all(Path(r["path"]).is_file() and Path(r["heatmap"]).is_file() for r in rows)
    with ScreeningLog(env / "c.db") as log:
        assert log.count() == 2
    # With the gate on, these small frames are refused: reported, exit code 1.
    monkeypatch.setattr(cli, "open_camera", lambda args: FakeFrameSource(frames))
    code, out, err = run(capsys, "camera", "--no-log")
    assert code == 1 and "too_small" not in out and "low quality" in err


def test_camera_without_picamera2_exits_2(capsys, env, monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    code, _, err = run(capsys, "camera", "--no-log")
    assert code == 2 and "python3-picamera2" in err


def test_demo_on_a_samples_folder(capsys, env, monkeypatch):
    samples = env / "samples"
    write_images(samples / "NORMAL", 2, start=0)
    write_images(samples / "PNEUMONIA", 2, start=10)
    code, out, err = run(capsys, "demo", NO_GATE, "--samples", samples, "--heatmap", env / "demo maps",
                         "--log", env / "d.db")
    assert code == 0, err
    assert "of 4 screening decisions agreed with the folder labels" in out
    assert len(list((env / "demo maps").glob("*.png"))) == 4
    code, _, err = run(capsys, "demo", "--samples", env / "nothing here")
    assert code == 2 and "--samples" in err and "nothing here" in err
    monkeypatch.setenv("CXR_SAMPLES", str(samples))
    assert cli.default_samples_dirs() == [samples]


@pytest.mark.realdata
@needs_fullres
def test_demo_default_on_the_real_samples(capsys, tmp_path, monkeypatch):
    if not (ASSETS / "cxr_binary_160_int8_cam.tflite").is_file():
        pytest.skip("shipped model not exported yet")
    monkeypatch.delenv("CXR_MODELS", raising=False)
    monkeypatch.delenv("CXR_SAMPLES", raising=False)
    monkeypatch.chdir(REPO_ROOT)  # the README runs it from the checkout, installed or not
    assert any(d.resolve() == FULLRES.resolve() for d in cli.default_samples_dirs())
    code, out, err = run(capsys, "demo", "--heatmap", tmp_path / "maps")
    assert code == 0, err
    assert "of 24 screening decisions agreed" in out
    assert len(list((tmp_path / "maps").glob("*.png"))) == 24


def test_models_listing(capsys, env, binary_models):
    code, out, _ = run(capsys, "models", "--json")
    assert code == 0
    files = {json.loads(line)["file"] for line in out.strip().splitlines()}
    assert binary_models["int8_cam"].name in files and binary_models["fp16"].name in files


def test_serve_calls_the_web_server(capsys, env, monkeypatch, binary_models):
    pytest.importorskip("flask")  # edge_runtime.web itself imports without Flask
    import edge_runtime.web as web
    calls = []
    monkeypatch.setattr(web, "serve", lambda **kwargs: calls.append(kwargs))
    code, _, err = run(capsys, "serve", "--port", "0", "--log", env / "s.db", "--model", "binary-fp16")
    assert code == 0, err
    (kwargs,) = calls
    assert kwargs["port"] == 0 and kwargs["host"] == "127.0.0.1" and kwargs["log_path"] == env / "s.db"
    assert kwargs["models"] == str(binary_models["dir"]) and kwargs["precision"] == "fp16"
    assert kwargs["default_model"] == json.loads(binary_models["spec"].read_text())["name"]


def test_entry_point_in_a_subprocess(tmp_path):
    """The real process: exit code 2 and a clean message when no model can be found."""
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "classify", "--no-log", "x.png"],
                          cwd=REPO_ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "CXR_MODELS": str(tmp_path / "no models"),
                               "HOME": str(tmp_path)})
    assert proc.returncode == 2
    assert "CXR_MODELS" in proc.stderr and "Traceback" not in proc.stderr


def test_model_names_resolve(binary_models, monkeypatch, tmp_path):
    from edge_runtime.errors import ModelError
    from edge_runtime.model_files import find_models_dir, list_models, resolve_model, short_name

    folder = binary_models["dir"]
    monkeypatch.setenv("CXR_MODELS", str(folder))
    assert find_models_dir() == folder
    assert resolve_model("binary") == binary_models["int8_cam"]
    assert resolve_model(None) == binary_models["int8_cam"]
    assert resolve_model("binary-fp16") == binary_models["fp16_cam"]
    assert resolve_model("binary-int8-plain") == binary_models["int8"]
    assert resolve_model("binary-fp16-plain") == binary_models["fp16"]
    assert resolve_model(binary_models["fp16"].name) == binary_models["fp16"]
    assert resolve_model(str(binary_models["int8"])) == binary_models["int8"]
    spec_name = json.loads(binary_models["spec"].read_text())["name"]
    assert resolve_model(spec_name) == binary_models["int8_cam"]
    models = list_models()
    assert {short_name(m) for m in models} >= {"binary", "binary-fp16", "binary-plain", "binary-fp16-plain"}
    entry = next(m for m in models if m["file"] == binary_models["int8_cam"].name)
    assert entry["task"] == "binary" and entry["precision"] == "int8" and entry["heatmap"]
    assert entry["size"] == binary_models["int8_cam"].stat().st_size and len(entry["sha256"]) == 64
    with pytest.raises(ModelError, match=r"unknown model 'pneumothorax'.*available: binary, binary-fp16"):
        resolve_model("pneumothorax")
    with pytest.raises(ModelError, match="not found"):
        resolve_model(tmp_path / "gone.tflite")
    monkeypatch.setenv("CXR_MODELS", str(tmp_path / "no such folder"))
    with pytest.raises(ModelError, match="CXR_MODELS"):
        find_models_dir()


def test_table_names_each_heatmap_and_says_what_score_means(capsys, env):
    images = write_images(env / "in", 2)
    code, out, err = run(capsys, "classify", NO_GATE, "--heatmap", env / "maps", "--no-log", *images)
    assert code == 0
    header, *lines = out.strip().splitlines()
    assert "heatmap" in header and len(lines) == 2
    written = sorted(p.name for p in (env / "maps").iterdir())
    assert sorted(line.split()[-3] for line in lines) == written  # "... ms  <heatmap>  img N.png"
    assert "score = 1 - P(NORMAL)" in err and "thresh" in err
    # With identifiers, heatmaps are named after the input's stem plus a short hash.
    code, out, _ = run(capsys, "classify", NO_GATE, "--heatmap", env / "named", "--no-log", "--store-identifiers",
                       images[0])
    (named,) = (env / "named").iterdir()
    assert code == 0 and named.name.startswith("img_0-") and named.name.endswith(".heatmap.png")


def test_reference_needs_store_identifiers_and_is_searchable(capsys, env):
    images = write_images(env / "in", 2)
    log_path = env / "refs.db"
    code, _, err = run(capsys, "classify", NO_GATE, "--log", log_path, "--ref", "CLINIC-42", images[0])
    assert code == 2 and "--store-identifiers" in err
    assert run(capsys, "classify", NO_GATE, "--log", log_path, "--store-identifiers", "--ref", "CLINIC-42",
               images[0])[0] == 0
    assert run(capsys, "classify", NO_GATE, "--log", log_path, images[1])[0] == 0
    code, out, err = run(capsys, "history", "--log", log_path, "--ref", "clinic-4")
    assert code == 0 and "CLINIC-42" in out and len(out.strip().splitlines()) == 2 and "1-1 of 1" in err
    code, out, _ = run(capsys, "history", "--log", log_path, "--csv", "-")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["patient_id"] for r in rows] == ["CLINIC-42", ""]


def test_history_label_any_case_unknown_label_model_title_and_local_time(capsys, env, monkeypatch):
    log_path = env / "h.db"
    run(capsys, "classify", NO_GATE, "--log", log_path, *write_images(env / "in", 3))
    with ScreeningLog(log_path) as log:
        label = log.recent(1)[0]["label"]
        expected = log.count(label)
    code, out, _ = run(capsys, "history", "--log", log_path, "--label", label.lower(), "--json")
    assert code == 0 and len(out.strip().splitlines()) == expected
    code, _, err = run(capsys, "history", "--log", log_path, "--label", "PNEUMONYA")
    assert code == 2 and "unknown label 'PNEUMONYA'" in err and "NORMAL" in err
    monkeypatch.setenv("TZ", "Africa/Nairobi")  # UTC+3, no daylight saving
    import time as time_module

    time_module.tzset()
    try:
        code, out, _ = run(capsys, "history", "--log", log_path, "--limit", "1", "--offset", "1")
    finally:
        monkeypatch.delenv("TZ")
        time_module.tzset()
    header, line = out.strip().splitlines()
    assert "time (local)" in header and "model" in header
    assert "EAT" in line and "Pneumonia screening" in line


def test_a_folder_of_folders_suggests_recursive(capsys, env):
    write_images(env / "root" / "NORMAL", 1)
    code, _, err = run(capsys, "classify", NO_GATE, "--no-log", env / "root")
    assert code == 1 and "--recursive" in err
    assert run(capsys, "classify", NO_GATE, "--no-log", "--recursive", env / "root")[0] == 0


def test_serve_lists_only_its_options_and_ctrl_c_exits_130(capsys, env, monkeypatch):
    pytest.importorskip("flask")  # edge_runtime.web itself imports without Flask
    import edge_runtime.web as web
    code, out, _ = run(capsys, "serve", "--help")
    assert code == 0 and "--store-identifiers" in out
    assert not any(flag in out for flag in ("--heatmap", "--alpha", "--no-log", "--ref "))

    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(web, "serve", interrupted)
    code, _, err = run(capsys, "serve", "--port", "0", "--log", env / "s.db")
    assert code == 130 and "interrupted" in err


@pytest.mark.parametrize("signal_name, expected", [("SIGINT", 130), ("SIGTERM", 0)])
def test_serve_process_exit_codes(binary_models, tmp_path, signal_name, expected):
    """The real server process: Ctrl+C exits 130 as documented, a service manager's SIGTERM exits 0."""
    pytest.importorskip("flask")
    import os
    import signal
    import socket
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, CXR_MODELS=str(binary_models["dir"]), PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "serve", "--port", str(port),
                             "--log", str(tmp_path / "s.db")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=terminal_sigint)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=5) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.3)
    finally:
        proc.send_signal(getattr(signal, signal_name))
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == expected, err


# -- issue 10: bounded memory, an error object per failed input, quiet start ---------------------

_LAUNCHER = (
    "import json, os, subprocess, sys\n"
    "proc = subprocess.Popen(sys.argv[3:], stdout=open(sys.argv[1], 'w'), stderr=open(sys.argv[2], 'w'))\n"
    "_, status, usage = os.wait4(proc.pid, 0)\n"
    "print(json.dumps({'code': os.waitstatus_to_exitcode(status), 'maxrss_kib': usage.ru_maxrss}))\n"
)


def _classify_process(paths, env_dir: Path, models_dir: Path) -> tuple[int, str, str, int]:
    """Run ``cxr-edge classify --json`` on inputs in a fresh process: (exit code, stdout, stderr,
    peak RSS in bytes of that process alone).

    The process is started by a tiny standard-library launcher and measured there with os.wait4:
    a child's ru_maxrss starts from the RSS of the process it is forked from, so forked straight
    from a test process that has imported TensorFlow it would report that process's gigabytes.
    """
    import os
    import tempfile

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp) / "out", Path(tmp) / "err"
        command = [sys.executable, "-m", "edge_runtime.cli", "classify", "--no-log", "--json", *map(str, paths)]
        launched = subprocess.run([sys.executable, "-c", _LAUNCHER, str(out), str(err), *command], cwd=env_dir,
                                  capture_output=True, text=True, env={**os.environ, "CXR_MODELS": str(models_dir)},
                                  check=True)
        report = json.loads(launched.stdout)
        return report["code"], out.read_text(), err.read_text(), report["maxrss_kib"] * 1024


@pytest.mark.slow
def test_any_input_costs_at_most_250_mb_in_the_cli(tmp_path, binary_models):
    """The issue's files: 265 KB PNGs declaring 8000 x 7999 pixels (RGBA, 16-bit, grey) cost 0.8-1.7 GB
    before; a 30000^2 PNG; /dev/zero. One process refuses each cleanly and stays under 250 MB."""
    inputs = {
        "rgba.png": corpus.flat_png(8000, 7999, colour_type=6),
        "grey16.png": corpus.flat_png(8000, 7999, bit_depth=16),
        "grey.png": corpus.flat_png(8000, 7999),
        "bomb.png": corpus.png_bomb(30000, 30000),
    }
    paths = []
    for name, data in inputs.items():
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data)
    paths.append(Path("/dev/zero"))
    code, out, err, peak = _classify_process(paths, tmp_path, binary_models["dir"])
    assert code == 1, err
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    assert [r["code"] for r in rows] == ["image_too_large", "image_too_large", "not_chest_xray", "image_too_large",
                                         "not_a_regular_file"]
    assert peak <= 250 * 1024 * 1024, f"peak RSS {peak / 2**20:.0f} MB"
    assert "Traceback" not in err


def test_json_prints_an_error_object_for_every_failed_input(capsys, env):
    images = write_images(env / "in", 1)
    (env / "in" / "bad.png").write_bytes(b"garbage")
    code, out, err = run(capsys, "classify", NO_GATE, "--no-log", "--json", images[0], env / "in" / "bad.png",
                         env / "missing.png")
    assert code == 1
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert [r["path"] for r in rows] == [str(images[0]), str(env / "in" / "bad.png"), str(env / "missing.png")]
    assert [r["status"] for r in rows] == ["classified", "failed", "failed"]
    assert rows[1]["code"] == "invalid_image" and rows[2]["code"] == "file_not_found"
    assert "bad.png" in rows[1]["error"] and "[" not in rows[1]["error"]


def test_no_xnnpack_info_line_on_stderr(tmp_path, binary_models):
    path = tmp_path / "x.png"
    Image.fromarray(xray_like(256)).save(path)
    code, out, err, _ = _classify_process(path, tmp_path, binary_models["dir"])
    assert "XNNPACK" not in err and "INFO" not in err, err
    assert json.loads(out)["path"] == str(path)


def test_symlink_loops_in_a_folder_are_counted_and_reported(capsys, env):
    folder = env / "scans"
    write_images(folder, 1)
    (folder / "loop a").symlink_to(folder / "loop b")
    (folder / "loop b").symlink_to(folder / "loop a")
    (folder / "dangling").symlink_to(env / "nowhere")
    code, out, err = run(capsys, "classify", NO_GATE, "--no-log", folder)
    assert code == 1
    assert "skipped 3 symbolic link(s) that loop or point nowhere" in err and "loop a" in err
    assert "1 classified, 3 failed" in err


def test_watch_prints_each_error_once(capsys, env):
    import logging

    inbox = env / "inbox"
    inbox.mkdir()
    (inbox / "bad.png").write_bytes(b"garbage")
    logging.getLogger().handlers.clear()
    code, out, err = run(capsys, "watch", inbox, "--once", "--settle", "0", "--grace", "0", "--interval", "0.01", "--no-log")
    assert code == 1
    assert err.count("bad.png: not a recognised image") == 1, err


def test_demo_refuses_no_log_which_would_mean_nothing(capsys):
    code, _, err = run(capsys, "demo", "--no-log")
    assert code == 2 and "unrecognized arguments: --no-log" in err


def test_each_command_offers_only_options_it_reads():
    """Static check over cli.py: every option of a subcommand is read by its handler or a helper it calls."""
    import argparse
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cli))
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}

    def reads(name: str, seen: set) -> set:
        if name in seen or name not in functions:
            return set()
        seen.add(name)
        found = set()
        for node in ast.walk(functions[name]):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "args":
                found.add(node.attr)
            elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "getattr" and len(node.args) >= 2 \
                    and getattr(node.args[0], "id", "") == "args" and isinstance(node.args[1], ast.Constant):
                found.add(node.args[1].value)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                found |= reads(node.func.id, seen)
        return found

    always = reads("main", set()) | {"handler", "command", "help", "version"}
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    unread = {}
    for command, parser in sub.choices.items():
        handler = parser.get_default("handler").__name__
        used = reads(handler, set()) | always
        dests = {a.dest for a in parser._actions if a.dest != "help"}
        if dests - used:
            unread[command] = sorted(dests - used)
    assert not unread


def test_a_closed_pipe_ends_the_cli_quietly(tmp_path):
    """`cxr-edge history | head`: the reader goes away; no traceback, exit 141 (128 + SIGPIPE)."""
    import subprocess
    import sys

    from edge_runtime.log import ScreeningLog
    from runtime_models import make_result

    log_path = tmp_path / "many.db"
    with ScreeningLog(log_path) as log:
        for index in range(3000):
            log.record(make_result(image_sha256=f"{index:064x}"))
    command = f"{sys.executable} -m edge_runtime.cli history --log {log_path} --limit 3000 | head -1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode in (0, 141), (done.returncode, done.stderr)
