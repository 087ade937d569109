"""Screening log: rows, queries, CSV, thread safety, and no acknowledged row lost to kill -9."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from edge_runtime.errors import LogError
from edge_runtime.log import COLUMNS, ScreeningLog, default_log_path
from runtime_models import make_result

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def log(tmp_path):
    with ScreeningLog(tmp_path / "logs dir" / "screenings.db") as opened:
        yield opened


def test_record_and_read_back(log):
    result = make_result(image_sha256="11" * 32, score=0.83)
    row_id = log.record(result, source="/scans/a.jpeg", heatmap_path="/h/a.png")
    assert isinstance(row_id, int)
    row = log.get(row_id)
    assert tuple(row) == COLUMNS
    # File paths may carry a patient's name: recorded as 'file' unless identifiers are kept.
    assert row["source"] == "file" and row["heatmap_path"] == "/h/a.png"
    assert row["label"] == "PNEUMONIA" and row["decision"].startswith("screening positive")
    assert row["probabilities"] == pytest.approx({"NORMAL": 0.17, "PNEUMONIA": 0.83})
    assert row["score"] == pytest.approx(0.83) and row["threshold"] == 0.5
    assert row["image_sha256"] == "11" * 32 and row["model_sha256"] == "cd" * 32
    assert row["model_name"] == "cxr_binary_test" and row["latency_ms"] == pytest.approx(12.5)
    assert row["time"].endswith("+00:00") and "T" in row["time"]
    assert row["patient_id"] is None
    assert log.get(row_id + 100) is None


def test_recent_count_seen_and_label_filter(log):
    ids = [log.record(make_result(image_sha256=f"{i:064x}", label="NORMAL" if i % 2 else "PNEUMONIA",
                                  score=0.2 if i % 2 else 0.8), source=f"s{i}") for i in range(6)]
    assert log.count() == 6 and log.count("NORMAL") == 3
    assert [r["id"] for r in log.recent(limit=4)] == ids[::-1][:4]
    assert {r["label"] for r in log.recent(label="NORMAL")} == {"NORMAL"}
    assert log.seen(f"{3:064x}", "cd" * 32)
    assert not log.seen(f"{3:064x}", "ef" * 32)
    assert not log.seen("99" * 32, "cd" * 32)


def test_accepts_a_mapping(log):
    row_id = log.record(make_result().to_dict(), source="web")
    assert log.get(row_id)["label"] == "PNEUMONIA"


def test_patient_id_only_when_configured(tmp_path, log, caplog):
    assert log.get(log.record(make_result(), source="Doe_Jane.dcm"))["source"] == "file"
    assert log.get(log.record(make_result(), source="camera"))["source"] == "camera"
    row = log.get(log.record(make_result(), source="x", patient_id="Jane Doe 1970"))
    assert row["patient_id"] is None
    assert "patient ids are not stored" in caplog.text
    with ScreeningLog(tmp_path / "with-ids.db", store_patient_ids=True) as with_ids:
        assert with_ids.get(with_ids.record(make_result(), source="x", patient_id="P-001"))["patient_id"] == "P-001"
        assert with_ids.get(with_ids.record(make_result(), source="/scans/Doe_Jane.dcm"))["source"] == "/scans/Doe_Jane.dcm"
        buffer = io.StringIO()
        with_ids.export_csv(buffer)
        assert "patient_id" in buffer.getvalue().splitlines()[0] and "P-001" in buffer.getvalue()
    buffer = io.StringIO()
    log.export_csv(buffer)
    assert "patient_id" not in buffer.getvalue().splitlines()[0]


def test_export_csv(tmp_path, log):
    log.record(make_result(label="NORMAL", score=0.1), source="=HYPERLINK(\"x\")")
    log.record(make_result(label="PNEUMONIA", score=0.9), source="b.jpeg")
    target = tmp_path / "out.csv"
    assert log.export_csv(target) == 2
    rows = list(csv.DictReader(target.open(newline="", encoding="utf-8")))
    assert [r["label"] for r in rows] == ["NORMAL", "PNEUMONIA"]
    assert json.loads(rows[1]["probabilities"]) == pytest.approx({"NORMAL": 0.1, "PNEUMONIA": 0.9})
    assert rows[0]["source"].startswith("'=")  # a spreadsheet must not run it as a formula
    buffer = io.StringIO()
    assert log.export_csv(buffer, label="PNEUMONIA") == 1
    assert len(buffer.getvalue().strip().splitlines()) == 2


def test_pragmas_wal_and_full_sync(log):
    conn = log._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_thread_safety(log):
    errors = []

    def writer(start):
        try:
            for i in range(25):
                log.record(make_result(image_sha256=f"{start + i:064x}"), source="t")
                log.recent(limit=3)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert log.count() == 100
    assert len({r["id"] for r in log.recent(limit=200)}) == 100


def test_two_processes_share_one_file(tmp_path):
    path = tmp_path / "shared.db"
    with ScreeningLog(path) as first, ScreeningLog(path) as second:
        first.record(make_result(), source="a")
        second.record(make_result(), source="b")
        assert first.count() == second.count() == 2


def test_bad_files_and_closed_log(tmp_path):
    not_db = tmp_path / "notes.db"
    not_db.write_text("this is not a database " * 100)
    with pytest.raises(LogError, match="notes.db"):
        ScreeningLog(not_db)
    log = ScreeningLog(tmp_path / "ok.db")
    log.close()
    log.close()
    with pytest.raises(LogError, match="closed"):
        log.count()


def test_default_log_path(monkeypatch, tmp_path):
    monkeypatch.setenv("CXR_LOG", str(tmp_path / "x.db"))
    assert default_log_path() == tmp_path / "x.db"
    monkeypatch.delenv("CXR_LOG")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_log_path() == tmp_path / "cxr-edge" / "screenings.db"


_WRITER = textwrap.dedent("""
    import sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    from edge_runtime.log import ScreeningLog
    from runtime_models import make_result
    log = ScreeningLog(sys.argv[1])
    i = 0
    while True:
        row_id = log.record(make_result(image_sha256=f"{{i:064x}}", score=(i % 100) / 100), source=f"file-{{i}}")
        print(row_id, i, flush=True)  # acknowledged: the commit returned
        i += 1
""")


@pytest.mark.slow
def test_kill_9_loses_no_acknowledged_row(tmp_path):
    """A writer is killed with SIGKILL mid-stream; every row it acknowledged is there, intact."""
    db = tmp_path / "crash.db"
    script = _WRITER.format(repo=str(REPO_ROOT), tests=str(REPO_ROOT / "tests"))
    proc = subprocess.Popen([sys.executable, "-c", script, str(db)], stdout=subprocess.PIPE, text=True)
    acknowledged = {}
    try:
        for line in proc.stdout:
            row_id, i = map(int, line.split())
            acknowledged[row_id] = i
            if len(acknowledged) >= 150:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert len(acknowledged) >= 150
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    with ScreeningLog(db) as log:
        assert log.count() >= len(acknowledged)
        for row_id, i in acknowledged.items():
            row = log.get(row_id)
            assert row is not None, f"acknowledged row {row_id} lost"
            assert row["source"] == f"file-{i}" and row["image_sha256"] == f"{i:064x}"
            assert row["score"] == pytest.approx((i % 100) / 100)
            assert row["probabilities"]["PNEUMONIA"] == pytest.approx((i % 100) / 100)


def test_paging_case_insensitive_label_and_reference_search(tmp_path):
    with ScreeningLog(tmp_path / "refs.db", store_patient_ids=True) as log:
        ids = [log.record(make_result(image_sha256=f"{i:064x}", label="NORMAL" if i % 2 else "PNEUMONIA"),
                          source="web", patient_id=f"CLINIC-{i:03d}" if i < 60 else None) for i in range(120)]
        assert [r["id"] for r in log.recent(limit=50, offset=50)] == ids[::-1][50:100]
        assert [r["id"] for r in log.recent(limit=50, offset=100)] == ids[::-1][100:]
        assert log.count("normal") == 60 and {r["label"] for r in log.recent(label="pneumonia")} == {"PNEUMONIA"}
        assert log.labels() == ["NORMAL", "PNEUMONIA"]
        assert [r["patient_id"] for r in log.recent(reference="clinic-007")] == ["CLINIC-007"]
        assert log.count(reference="CLINIC-00") == 10 and log.count(reference="%") == 0
        buffer = io.StringIO()
        assert log.export_csv(buffer, label="normal", reference="clinic-01") == 5
        assert "instance_sha256" not in buffer.getvalue().splitlines()[0]


def test_dicom_instances_are_known_by_the_hash_of_their_uid(log):
    uid = "1.2.826.0.1.3680043.8.498.1234"
    assert log.seen_instance(uid, "cd" * 32) is None
    row_id = log.record(make_result(), source="dicom", instance_uid=uid)
    assert log.seen_instance(uid, "cd" * 32) == row_id
    assert log.seen_instance(uid, "ef" * 32) is None
    stored = log.get(row_id)["instance_sha256"]
    assert len(stored) == 64 and uid not in json.dumps(log.get(row_id))


def test_a_schema_1_log_is_migrated_in_place(tmp_path):
    """A log written by the previous release (schema 1, no instance column) opens, keeps its rows, and takes new ones."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE screenings (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, source TEXT,
            image_sha256 TEXT NOT NULL, label TEXT NOT NULL, probabilities TEXT NOT NULL, score REAL NOT NULL,
            threshold REAL NOT NULL, decision TEXT NOT NULL, model_name TEXT NOT NULL, model_sha256 TEXT NOT NULL,
            heatmap_path TEXT, latency_ms REAL, patient_id TEXT);
        CREATE INDEX screenings_seen ON screenings (image_sha256, model_sha256);
        CREATE INDEX screenings_label ON screenings (label, id);
        INSERT INTO screenings (time, source, image_sha256, label, probabilities, score, threshold, decision,
            model_name, model_sha256, heatmap_path, latency_ms, patient_id)
        VALUES ('2026-01-02T03:04:05.000+00:00', 'web', 'aa', 'NORMAL', '{"NORMAL": 0.9, "PNEUMONIA": 0.1}', 0.1,
            0.5, 'screening negative', 'cxr_binary_160', 'cd', NULL, 9.5, NULL);
        PRAGMA user_version=1;
    """)
    conn.close()
    with ScreeningLog(path) as log:
        assert log.count() == 1 and log.get(1)["label"] == "NORMAL" and log.get(1)["instance_sha256"] is None
        assert log.get(1)["spec_sha256"] is None
        row_id = log.record(make_result(spec_sha256="ef" * 32), source="dicom", instance_uid="1.2.3")
        assert log.seen_instance("1.2.3", "cd" * 32) == row_id
        assert log.get(row_id)["spec_sha256"] == "ef" * 32
        assert log.get(1)["population"] is None
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    conn.close()


def test_a_schema_2_log_gains_the_population_column_and_keeps_its_rows(tmp_path):
    path = tmp_path / "v2.db"
    with ScreeningLog(path) as log:
        log.record(make_result())
    conn = sqlite3.connect(path)  # make it a schema-2 log: drop the column schema 3 added
    conn.executescript("ALTER TABLE screenings DROP COLUMN population; PRAGMA user_version=2;")
    conn.close()
    outcome = {"expected": "children", "other": "adults", "score": 0.912345678, "outside": True}
    with ScreeningLog(path) as log:
        assert log.count() == 1 and log.get(1)["population"] is None
        row_id = log.record(make_result(population=outcome))
        assert log.get(row_id)["population"] == {"expected": "children", "other": "adults", "score": 0.9123,
                                                 "outside": True}
        buffer = io.StringIO()
        log.export_csv(buffer)
    assert '""outside"": true' in buffer.getvalue()


def test_csv_export_holds_no_server_paths(tmp_path):
    with ScreeningLog(tmp_path / "c.db") as log:
        log.record(make_result(), heatmap_path="/srv/clinic/heatmaps/ab.png")
        buffer = io.StringIO()
        log.export_csv(buffer)
    assert "/srv/clinic" not in buffer.getvalue() and "heatmap_path" not in buffer.getvalue()
