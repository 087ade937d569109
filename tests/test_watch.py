"""Scanner-folder watching: exactly once (also across restarts), settle before reading, bad files set aside."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_runtime.classifier import Classifier, ClassifierOptions
from edge_runtime.errors import ModelError
from edge_runtime.imaging import load_image, read_bytes
from edge_runtime.log import ScreeningLog
from edge_runtime.watch import CLASSIFIED, DUPLICATE, ERROR_SUFFIX, FAILED, watch_folder
from runtime_models import binary_models, make_result, xray_like  # noqa: F401 - fixture


class StubClassifier:
    """Decodes for real (bad files fail as they would) but answers without a model."""

    model_sha256 = "ee" * 32
    model_path = Path("stub_int8_cam.tflite")

    def __init__(self, has_heatmap: bool = True):
        self.has_heatmap = has_heatmap
        self.calls: list[str] = []

    def classify(self, source, heatmap=False):
        data, name = read_bytes(source)
        rgb = load_image(data, name=name)
        self.calls.append(name)
        return make_result(image_sha256=hashlib.sha256(data).hexdigest(), model_sha256=self.model_sha256,
                           image=rgb, heatmap=np.full((4, 4), 0.5, np.float32) if heatmap else None)


def png(path: Path, seed: int = 0) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(xray_like(64, seed)).save(path, format="PNG")
    return path.read_bytes()


@pytest.fixture()
def log(tmp_path):
    with ScreeningLog(tmp_path / "state" / "log.db") as opened:
        yield opened


def run_once(folder, classifier, log, **kwargs):
    kwargs.setdefault("settle_seconds", 0)
    kwargs.setdefault("poll_interval", 0.01)
    return list(watch_folder(folder, classifier, log, once=True, **kwargs))


def test_new_files_are_classified_moved_and_logged(tmp_path, log):
    inbox = tmp_path / "scanner inbox"
    png(inbox / "a.png", 1)
    png(inbox / "b.png", 2)
    (inbox / "broken.jpeg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    stub = StubClassifier()
    outcomes = run_once(inbox, stub, log, processed_dir=tmp_path / "done", failed_dir=tmp_path / "failed",
                        heatmap_dir=tmp_path / "heatmaps")
    by_name = {o.path.name: o for o in outcomes}
    assert {n: o.status for n, o in by_name.items()} == {"a.png": CLASSIFIED, "b.png": CLASSIFIED,
                                                         "broken.jpeg": FAILED}
    assert sorted(p.name for p in (tmp_path / "done").iterdir()) == ["a.png", "b.png"]
    assert not any(inbox.iterdir())
    note = tmp_path / "failed" / ("broken.jpeg" + ERROR_SUFFIX)
    assert (tmp_path / "failed" / "broken.jpeg").is_file() and note.is_file()
    text = note.read_text()
    assert "invalid_image" in text and "broken.jpeg" in text
    assert by_name["broken.jpeg"].error_code == "invalid_image"
    assert log.count() == 2
    row = log.get(by_name["a.png"].row_id)
    assert row["source"] == "file"  # no file names in the log unless identifiers are kept
    assert "a.png" not in (row["heatmap_path"] or "")
    assert Path(row["heatmap_path"]).is_file() and Path(row["heatmap_path"]).parent == tmp_path / "heatmaps"
    assert by_name["a.png"].moved_to == tmp_path / "done" / "a.png"


def test_restart_does_not_classify_again(tmp_path, log):
    inbox = tmp_path / "inbox"
    png(inbox / "a.png", 1)
    png(inbox / "b.png", 2)
    first = StubClassifier()
    assert [o.status for o in run_once(inbox, first, log)] == [CLASSIFIED, CLASSIFIED]
    assert sorted(p.name for p in inbox.iterdir()) == ["a.png", "b.png"]  # left in place
    # A restart: new process, same log. Nothing is classified twice; a new file is.
    png(inbox / "c.png", 3)
    second = StubClassifier()
    outcomes = run_once(inbox, second, log)
    assert {o.path.name: o.status for o in outcomes} == {"a.png": DUPLICATE, "b.png": DUPLICATE, "c.png": CLASSIFIED}
    assert second.calls == [str(inbox / "c.png")]
    assert log.count() == 3


def test_same_content_under_another_name_is_a_duplicate(tmp_path, log):
    inbox = tmp_path / "inbox"
    data = png(inbox / "scan.png", 4)
    stub = StubClassifier()
    run_once(inbox, stub, log, processed_dir=tmp_path / "done")
    (inbox / "scan-again.png").write_bytes(data)
    (inbox / "scan.png").write_bytes(data)  # a second copy with the same name as a processed file
    outcomes = run_once(inbox, stub, log, processed_dir=tmp_path / "done")
    assert {o.status for o in outcomes} == {DUPLICATE}
    assert len(stub.calls) == 1 and log.count() == 1
    assert sorted(p.name for p in (tmp_path / "done").iterdir()) == ["scan-1.png", "scan-again.png", "scan.png"]


def test_a_crash_between_log_and_move_is_recovered(tmp_path, log):
    """The row was committed, then the process died before moving the file: it is moved, not re-run."""
    inbox = tmp_path / "inbox"
    data = png(inbox / "a.png", 5)
    stub = StubClassifier()
    log.record(make_result(image_sha256=hashlib.sha256(data).hexdigest(), model_sha256=stub.model_sha256), "a.png")
    outcomes = run_once(inbox, stub, log, processed_dir=tmp_path / "done")
    assert [o.status for o in outcomes] == [DUPLICATE] and not stub.calls
    assert (tmp_path / "done" / "a.png").is_file()


def test_a_file_written_slowly_is_read_once_complete(tmp_path, log):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    data = png(tmp_path / "source.png", 6)
    target = inbox / "slow.png"
    stub = StubClassifier()
    stop = threading.Event()
    outcomes = []

    def watcher():
        for outcome in watch_folder(inbox, stub, log, failed_dir=tmp_path / "failed", settle_seconds=1.0,
                                    poll_interval=0.05, stop_event=stop):
            outcomes.append(outcome)

    thread = threading.Thread(target=watcher)
    thread.start()
    try:
        with open(target, "wb") as handle:  # a scanner writing in two halves with a pause
            handle.write(data[: len(data) // 2])
            handle.flush()
            time.sleep(0.3)
            handle.write(data[len(data) // 2:])
        deadline = time.monotonic() + 10
        while not outcomes and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # would a second outcome follow?
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert [o.status for o in outcomes] == [CLASSIFIED]
    assert outcomes[0].result.image_sha256 == hashlib.sha256(data).hexdigest()
    assert stub.calls == [str(target)]


def test_failures_left_in_place_are_marked_and_not_retried(tmp_path, log):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "empty.png").write_bytes(b"")
    stub = StubClassifier()
    first = run_once(inbox, stub, log)
    assert [(o.status, o.error_code) for o in first] == [(FAILED, "invalid_image")]
    note = inbox / ("empty.png" + ERROR_SUFFIX)
    assert "empty file" in note.read_text()
    assert run_once(inbox, stub, log) == []  # marked: not retried after a restart
    # The file is replaced by a good one (newer than the note): it is tried again.
    png(inbox / "empty.png", 7)
    later = time.time() + 5
    os.utime(inbox / "empty.png", (later, later))
    assert [o.status for o in run_once(inbox, stub, log)] == [CLASSIFIED]


def test_ignored_entries(tmp_path, log):
    inbox = tmp_path / "inbox"
    png(inbox / ".hidden.png", 1)
    png(inbox / "upload.png.part", 2)
    png(inbox / "sub" / "nested.png", 3)
    (inbox / ("old.png" + ERROR_SUFFIX)).write_text("note")
    stub = StubClassifier()
    assert run_once(inbox, stub, log, processed_dir=inbox / "processed") == []
    assert stub.calls == []


def test_quality_refusal_goes_to_failed_with_reason(tmp_path, log, binary_models):
    inbox = tmp_path / "inbox"
    png(inbox / "tiny.png", 8)  # 64 px: too small for the quality gate
    with Classifier(binary_models["int8_cam"]) as classifier:
        outcomes = run_once(inbox, classifier, log, failed_dir=tmp_path / "failed")
    assert [(o.status, o.error_code) for o in outcomes] == [(FAILED, "not_chest_xray")]
    note = (tmp_path / "failed" / ("tiny.png" + ERROR_SUFFIX)).read_text()
    assert "reason: too_small" in note and "width: 64" in note


def test_real_model_end_to_end_with_heatmaps(tmp_path, log, binary_models):
    inbox = tmp_path / "inbox"
    for seed in range(3):
        png(inbox / f"s{seed}.png", seed)
    with Classifier(binary_models["int8_cam"], ClassifierOptions(quality_gate=False)) as classifier:
        outcomes = run_once(inbox, classifier, log, heatmap_dir=tmp_path / "maps", processed_dir=tmp_path / "done")
        assert [o.status for o in outcomes] == [CLASSIFIED] * 3
        assert all(o.heatmap_path.is_file() for o in outcomes)
        assert all(log.seen(o.result.image_sha256, classifier.model_sha256) for o in outcomes)


def test_heatmaps_need_a_cam_model_and_folder_must_exist(tmp_path, log):
    (tmp_path / "inbox").mkdir()
    with pytest.raises(ModelError, match="feature-map"):
        run_once(tmp_path / "inbox", StubClassifier(has_heatmap=False), log, heatmap_dir=tmp_path / "maps")
    with pytest.raises(FileNotFoundError):
        run_once(tmp_path / "missing", StubClassifier(), log)


def test_stop_event_ends_a_forever_watch(tmp_path, log):
    (tmp_path / "inbox").mkdir()
    stop = threading.Event()
    outcomes = []
    thread = threading.Thread(target=lambda: outcomes.extend(
        watch_folder(tmp_path / "inbox", StubClassifier(), log, poll_interval=0.05, stop_event=stop)))
    thread.start()
    time.sleep(0.2)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive() and outcomes == []


# -- issue 10: a scanner that pauses mid-write -------------------------------------------------

def _slow_writer(path: Path, data: bytes, pauses: list[float], started: threading.Event) -> threading.Thread:
    """Write ``data`` to ``path`` in len(pauses) + 1 pieces through one open file, pausing between them
    (as a scanner does); keeps writing to the same file if the watcher renames it meanwhile."""
    def write():
        pieces = np.array_split(np.frombuffer(data, np.uint8), len(pauses) + 1)
        with open(path, "wb") as stream:
            for i, piece in enumerate(pieces):
                stream.write(piece.tobytes())
                stream.flush()
                os.fsync(stream.fileno())
                if i == 0:
                    started.set()
                if i < len(pauses):
                    time.sleep(pauses[i])

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def test_a_scan_written_with_pauses_longer_than_settle_is_retried_not_failed(tmp_path, log):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    data = png(tmp_path / "source" / "scan.png", 3)
    started = threading.Event()
    writer = _slow_writer(inbox / "scan.png", data, [0.8, 0.8], started)
    started.wait(5)
    stub = StubClassifier()
    outcomes = run_once(inbox, stub, log, settle_seconds=0.2, grace_seconds=3.0, poll_interval=0.05,
                        processed_dir=tmp_path / "done", failed_dir=tmp_path / "failed")
    writer.join()
    assert [(o.path.name, o.status) for o in outcomes] == [("scan.png", CLASSIFIED)]
    assert (tmp_path / "done" / "scan.png").read_bytes() == data
    assert not (tmp_path / "failed").exists() or not any((tmp_path / "failed").iterdir())


def test_a_truncated_file_is_failed_after_the_grace_period(tmp_path, log):
    inbox = tmp_path / "inbox"
    data = png(tmp_path / "source" / "cut.png", 4)
    inbox.mkdir()
    (inbox / "cut.png").write_bytes(data[: len(data) // 2])
    started = time.monotonic()
    outcomes = run_once(inbox, StubClassifier(), log, settle_seconds=0.05, grace_seconds=0.5, poll_interval=0.05,
                        failed_dir=tmp_path / "failed")
    assert [o.status for o in outcomes] == [FAILED] and time.monotonic() - started >= 0.5
    assert (tmp_path / "failed" / ("cut.png" + ERROR_SUFFIX)).is_file()


def test_a_failed_file_that_becomes_complete_is_examined_again(tmp_path, log):
    """The trial's lost scans: a pause longer than the grace period sends the partial file to failed/,
    where the scanner (writing through its open file) completes it; it is then classified."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    data = png(tmp_path / "source" / "late.png", 5)
    started = threading.Event()
    writer = _slow_writer(inbox / "late.png", data, [1.5], started)
    started.wait(5)
    stop = threading.Event()
    outcomes = []

    def watch():
        for outcome in watch_folder(inbox, StubClassifier(), log, settle_seconds=0.1, grace_seconds=0.3,
                                    poll_interval=0.05, processed_dir=tmp_path / "done",
                                    failed_dir=tmp_path / "failed", stop_event=stop):
            outcomes.append(outcome)
            if outcome.status == CLASSIFIED:
                stop.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    writer.join()
    watcher.join(10)
    stop.set()
    assert [o.status for o in outcomes] == [FAILED, CLASSIFIED]
    assert outcomes[1].path == tmp_path / "failed" / "late.png"
    assert (tmp_path / "done" / "late.png").read_bytes() == data
    assert not (tmp_path / "failed" / ("late.png" + ERROR_SUFFIX)).exists()
    assert log.count() == 1


def test_heatmaps_are_named_after_the_input_only_when_the_log_keeps_identifiers(tmp_path):
    from edge_runtime.log import ScreeningLog

    for keep in (False, True):
        inbox = tmp_path / f"inbox-{keep}"
        png(inbox / "Doe_John.png", 1)
        with ScreeningLog(tmp_path / f"log-{keep}.db", store_patient_ids=keep) as log:
            outcome, = run_once(inbox, StubClassifier(), log, heatmap_dir=tmp_path / f"maps-{keep}")
        assert ("Doe_John" in outcome.heatmap_path.name) is keep
