"""Concurrent uploads against the real waitress server on loopback: no errors, every result logged.

The full 8 clients x 50 uploads run is ``python -m benchmarks.load_web``; this test keeps the same
code path with fewer uploads so that it stays fast. Latency is printed, never asserted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.load_web import ApiClient, check_logged, encode_multipart, main, percentile, pick_images, run_load
from conftest import SHARED_DATA

XRAY_DIR = SHARED_DATA / "chest_xray" / "train"
TOKEN = "load-test-token-0123456789"

pytestmark = pytest.mark.skipif(not XRAY_DIR.is_dir(), reason=f"real X-rays not found at {XRAY_DIR}")


@pytest.fixture()
def server(tiny_model_dir, tmp_path):
    from edge_runtime.web import create_server

    web = create_server("127.0.0.1", 0, tiny_model_dir, TOKEN, log_path=tmp_path / "load log" / "screenings.sqlite",
                        threads=4).start()
    yield web
    web.close()


def test_concurrent_uploads_all_succeed_and_are_logged(server, capsys):
    images = pick_images(XRAY_DIR, 8)
    report = run_load(server.url, images, clients=8, uploads=3, token=TOKEN, heatmap=True)
    summary = report.summary()
    with capsys.disabled():
        print(f"\nweb load (tiny model, 8 clients x 3 uploads): p50 {summary['p50_ms']} ms, "
              f"p95 {summary['p95_ms']} ms, {summary['throughput_rps']} uploads/s")
    assert report.errors == []
    assert len(report.ids) == 24 and len(set(report.ids)) == 24
    assert check_logged(server.url, report.ids, TOKEN) == []
    log = server.app.extensions["cxr_edge"].log
    assert log.count() == 24
    assert all(log.get(row_id) is not None for row_id in report.ids)


def test_the_real_server_refuses_without_the_token(server):
    status, body = ApiClient(server.url).classify(pick_images(XRAY_DIR, 1)[0][1])
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = ApiClient(server.url, TOKEN).get_json("/api/v1/health")
    assert status == 200 and body["auth_required"] is True and body["model_loaded"] is True


def test_the_real_server_answers_413_as_json(tiny_model_dir, tmp_path):
    from edge_runtime.web import create_server

    with create_server("127.0.0.1", 0, tiny_model_dir, log_path=tmp_path / "s.sqlite",
                       max_upload_bytes=64 * 1024).start() as web:
        status, body = ApiClient(web.url).classify(b"\xff\xd8\xff" + bytes(200 * 1024))
    assert status == 413 and body["error"]["code"] == "payload_too_large"


def test_load_script_cli(tiny_model_dir, capsys):
    code = main(["--models", str(tiny_model_dir), "--images", str(XRAY_DIR), "--clients", "2", "--uploads", "2",
                 "--distinct-images", "4", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert '"errors": 0' in out and '"not_in_log": 0' in out and '"p95_ms"' in out


def test_helpers():
    body, ctype = encode_multipart({"model": "m"}, {"file": ("a.jpeg", b"\xff\xd8\xff", "image/jpeg")})
    boundary = ctype.split("boundary=")[1]
    assert body.startswith(f"--{boundary}".encode()) and body.endswith(f"--{boundary}--\r\n".encode())
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0 and percentile([1.0, 2.0], 95) == pytest.approx(1.95)
    assert main(["--url", "http://192.168.1.5:8080", "--images", str(XRAY_DIR)]) == 2


def test_serve_runs_in_the_foreground_and_stops_on_sigterm(tiny_model_dir, tmp_path):
    """``serve`` is what ``cxr-edge serve`` calls: start it as a process, use it, stop it with SIGTERM."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = ("import logging, sys; logging.basicConfig(level=logging.INFO); "
              "from edge_runtime.web import serve; "
              "serve('127.0.0.1', int(sys.argv[1]), sys.argv[2], log_path=sys.argv[3])")
    process = subprocess.Popen([sys.executable, "-c", script, str(port), str(tiny_model_dir),
                                str(tmp_path / "serve log" / "s.sqlite")],
                               cwd=Path(__file__).resolve().parent.parent, stderr=subprocess.PIPE, text=True)
    try:
        client = ApiClient(f"http://127.0.0.1:{port}", timeout=5)
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body = client.get_json("/api/v1/health")
                break
            except OSError:
                client.close()
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        assert status == 200 and body["model_loaded"] is True
        status, body = client.classify(pick_images(XRAY_DIR, 1)[0][1])
        assert status == 200 and body["id"] == 1
        client.close()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert f"http://127.0.0.1:{port}" in stderr and "stopping" in stderr
