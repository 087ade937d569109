"""What a clinic's Pi does to the runtime: a full disk, a read-only log folder, a damaged log, power loss
during `watch`. Each ends in a clear error or a recovery, never in a lost acknowledged result."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from edge_runtime import cli
from edge_runtime.log import ScreeningLog
from runtime_models import binary_models, xray_like  # noqa: F401 - fixture

NO_GATE = "--no-quality-gate"


@pytest.fixture()
def env(binary_models, monkeypatch, tmp_path):
    monkeypatch.setenv("CXR_MODELS", str(binary_models["dir"]))
    monkeypatch.setenv("CXR_LOG", str(tmp_path / "default-log" / "screenings.db"))
    return tmp_path


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_images(folder: Path, count: int, start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        paths.append(folder / f"scan {i}.png")
        Image.fromarray(xray_like(64, i)).save(paths[-1])
    return paths


def full_log(path: Path) -> ScreeningLog:
    """A real log whose SQLite connection cannot grow by one more page, filled to the last byte: the
    next write fails with SQLITE_FULL, exactly as on a full disk. Its rows are other films (id < 0
    marks none; they are counted by ``filler``)."""
    from edge_runtime.errors import LogError
    from runtime_models import make_result

    log = ScreeningLog(path)
    pages = log._conn.execute("PRAGMA page_count").fetchone()[0]
    log._conn.execute(f"PRAGMA max_page_count={pages + 1}").fetchall()
    log.filler = 0
    for i in range(100_000):
        try:
            log.record(make_result(image_sha256=f"{i:064x}"), source="filler")
        except LogError:
            return log
        log.filler += 1
    raise AssertionError("the log never filled up")


def test_full_disk_under_the_log_stops_the_batch_and_shows_nothing_unrecorded(capsys, env, monkeypatch):
    images = write_images(env / "in", 2)
    opened = []
    monkeypatch.setattr(cli, "open_log", lambda args: opened.append(full_log(env / "full.db")) or opened[-1])
    code, out, err = run(capsys, "classify", NO_GATE, "--json", *images)
    assert code == 2
    assert "disk is full" in err and "NOT recorded" in err and "Traceback" not in err
    assert out.strip() == ""  # no result shown that the log does not hold
    with ScreeningLog(env / "full.db") as log:
        assert log.count() == opened[0].filler  # only the rows that filled it


def test_full_disk_under_the_log_leaves_watched_files_for_the_next_run(capsys, env, monkeypatch):
    inbox = env / "inbox"
    write_images(inbox, 2)
    monkeypatch.setattr(cli, "open_log", lambda args: full_log(env / "full.db"))
    code, _, err = run(capsys, "watch", inbox, NO_GATE, "--once", "--settle", "0", "--grace", "0",
                       "--processed", env / "done", "--failed", env / "failed")
    assert code == 2 and "disk is full" in err
    assert len(list(inbox.glob("*.png"))) == 2 and not (env / "failed").exists()
    monkeypatch.undo()
    monkeypatch.setenv("CXR_MODELS", os.environ.get("CXR_MODELS", ""))
    code, out, _ = run(capsys, "watch", inbox, NO_GATE, "--once", "--settle", "0", "--json", "--log", env / "ok.db",
                       "--processed", env / "done")
    assert code == 0 and len(out.strip().splitlines()) == 2 and len(list((env / "done").iterdir())) == 2


def test_full_disk_under_the_heatmaps_stops_the_watcher_without_failing_the_scan(capsys, env, monkeypatch):
    import edge_runtime.render as render

    inbox = env / "inbox"
    write_images(inbox, 1)

    def no_space(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(render, "write_atomic", no_space)
    code, _, err = run(capsys, "watch", inbox, NO_GATE, "--once", "--settle", "0", "--grace", "0",
                       "--heatmap", env / "maps", "--failed", env / "failed", "--log", env / "w.db")
    assert code == 2 and "No space left on device" in err and "cannot write the heatmap" in err
    assert len(list(inbox.glob("*.png"))) == 1 and not (env / "failed").exists()


def _make_read_only(folder: Path):
    """Make ``folder`` refuse new files even for root (chattr +i); returns an undo function, or None."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)
    return None


def test_read_only_log_folder_is_a_clear_error(capsys, env):
    images = write_images(env / "in", 1)
    folder = env / "read-only logs"
    folder.mkdir()
    undo = _make_read_only(folder)
    if undo is None:
        pytest.skip("cannot make a folder read-only for root here (no chattr)")
    try:
        code, out, err = run(capsys, "classify", NO_GATE, "--log", folder / "screenings.db", *images)
    finally:
        undo()
    assert code == 2 and "writable" in err and "Traceback" not in err
    assert "scan 0.png" not in out


def test_a_damaged_log_is_refused_at_start_with_what_to_do(capsys, env):
    path = env / "screenings.db"
    with ScreeningLog(path) as log:
        from runtime_models import make_result

        for i in range(200):
            log.record(make_result(image_sha256=f"{i:064x}"))
    data = bytearray(path.read_bytes())
    data[4096 * 2: 4096 * 6] = b"\x5a" * (4096 * 4)  # pages overwritten, as after a bad power cut
    path.write_bytes(bytes(data))
    code, out, err = run(capsys, "classify", NO_GATE, "--log", path, *write_images(env / "in", 1))
    assert code == 2 and "move it aside" in err and ".recover" in err
    assert path.read_bytes() == bytes(data)  # nothing written to it
    assert "scan 0.png" not in out


@pytest.mark.slow
def test_kill_9_during_watch_then_restart_classifies_each_file_once(env, binary_models):
    """Power loss mid-run: every result the watcher printed is in the log, and after a restart every file
    is screened exactly once and moved out of the inbox."""
    inbox = env / "inbox"
    paths = write_images(inbox, 40)
    log_path = env / "watch.db"
    command = [sys.executable, "-m", "edge_runtime.cli", "watch", str(inbox), NO_GATE, "--settle", "0",
               "--interval", "0.05", "--json", "--log", str(log_path), "--processed", str(env / "done")]
    proc_env = {**os.environ, "CXR_MODELS": str(binary_models["dir"])}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=proc_env)
    acknowledged = []
    try:
        for line in proc.stdout:
            acknowledged.append(json.loads(line))
            if len(acknowledged) >= 5:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
    assert len(acknowledged) >= 5
    restart = subprocess.run(command + ["--once"], capture_output=True, text=True, env=proc_env, timeout=300)
    assert restart.returncode == 0, restart.stderr
    conn = sqlite3.connect(log_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = {row[0] for row in conn.execute("SELECT id FROM screenings")}
        digests = [row[0] for row in conn.execute("SELECT image_sha256 FROM screenings")]
    finally:
        conn.close()
    assert {row["log_id"] for row in acknowledged} <= ids, "an acknowledged row was lost"
    assert len(digests) == len(set(digests)) == len(paths), "a file was screened twice or never"
    assert not list(inbox.glob("*.png")) and len(list((env / "done").iterdir())) == len(paths)
