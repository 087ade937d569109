"""Scanner-folder watching: each new file classified exactly once, also across restarts (polling)."""

from __future__ import annotations

import dataclasses
import datetime
import errno
import hashlib
import io
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Iterator, Union

from .errors import CxrError, InvalidImageError, ModelError, NotChestXrayError, StorageError
from .errors import InputNotFoundError
from .files import write_atomic
from .imaging import read_bytes
from .render import DEFAULT_ALPHA, heatmap_name, save_overlay

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Seconds between two scans of the watched folder.
DEFAULT_POLL_SECONDS = 1.0
#: Seconds a file's size and mtime must stay unchanged before it is read.
DEFAULT_SETTLE_SECONDS = 2.0
#: A file that reads as truncated or undecodable is retried until it has stayed unchanged this many
#: times ``settle_seconds`` (the default grace period): a scanner that pauses mid-write for longer
#: than the settle time must not lose its scan to ``failed/``.
GRACE_FACTOR = 10.0
#: Suffix of the note written beside a file that could not be classified.
ERROR_SUFFIX = ".error.txt"
# Names that scanners, browsers and copy tools use while a file is still being written.
_PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", "~")

#: Outcome statuses.
CLASSIFIED, DUPLICATE, FAILED = "classified", "duplicate", "failed"
# Internal: read too early (truncated, undecodable); tried again after the grace period.
_RETRY = "retry"


@dataclasses.dataclass(frozen=True)
class WatchOutcome:
    """What happened to one file.

    Attributes:
        path: The file as found in the watched folder.
        status: ``classified``, ``duplicate`` (this content was already screened with this
            model: not classified again) or ``failed``.
        result: The :class:`~edge_runtime.classifier.Result` when classified.
        row_id: Its screening-log row.
        error: Error message when failed.
        error_code: Stable code of the error (``invalid_image``, ``not_chest_xray`` ...).
        moved_to: Where the file was moved, if it was.
        heatmap_path: The heatmap PNG written, if any.
    """

    path: Path
    status: str
    result: object = None
    row_id: int | None = None
    error: str | None = None
    error_code: str | None = None
    moved_to: Path | None = None
    heatmap_path: Path | None = None


def _unique_target(folder: Path, name: str) -> Path:
    target = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    counter = 1
    while target.exists() or Path(str(target) + ERROR_SUFFIX).exists():
        target = folder / f"{stem}-{counter}{suffix}"
        counter += 1
    return target


def _move(path: Path, folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        target = _unique_target(folder, path.name)
        shutil.move(str(path), str(target))
    except OSError as err:
        raise StorageError(f"cannot move {path} to {folder}: {err.strerror or err}") from err
    return target


def _error_note(path: Path, err: BaseException) -> str:
    lines = [
        f"file: {path.name}",
        f"time: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"error: {getattr(err, 'code', type(err).__name__)}",
        f"message: {err}",
    ]
    if isinstance(err, NotChestXrayError):
        lines.append(f"reason: {err.reason}")
        lines.extend(f"{key}: {value}" for key, value in sorted(err.details.items()))
    return "\n".join(lines) + "\n"


def _ignored(path: Path) -> bool:
    name = path.name
    return (name.startswith(".") or name.endswith(ERROR_SUFFIX)
            or name.lower().endswith(_PARTIAL_SUFFIXES))


def _marked_failed(path: Path, stat: os.stat_result) -> bool:
    """A failure note newer than the file marks it as already tried (when failures stay in place)."""
    note = Path(str(path) + ERROR_SUFFIX)
    try:
        return note.stat().st_mtime_ns >= stat.st_mtime_ns
    except FileNotFoundError:
        return False


def _incomplete(err: BaseException) -> bool:
    """True for errors a file still being written gives: empty, truncated, not yet recognisable
    (a plain :class:`InvalidImageError`, not one of its specific subclasses)."""
    return type(err) is InvalidImageError


def _process(path: Path, classifier, log, processed_dir: Path | None, failed_dir: Path | None,
             heatmap_dir: Path | None, alpha: float, source_prefix: str, defer_incomplete: bool = False,
             restore_to: Path | None = None) -> WatchOutcome:
    """Classify one settled file; never raises for a bad file (only for a broken log).

    With ``defer_incomplete``, a file that looks incomplete is neither moved nor marked: the
    outcome's status is ``_RETRY``. ``restore_to``: a re-examined file from the failed folder,
    moved there (or to ``processed_dir``) once classified.
    """
    def failure(err: BaseException) -> WatchOutcome:
        if defer_incomplete and _incomplete(err):
            logger.info("%s: %s; trying again once it has stopped changing", path, err)
            return WatchOutcome(path, _RETRY, error=str(err), error_code=getattr(err, "code", None))
        return _fail(path, err, failed_dir)

    try:
        data, _ = read_bytes(path, name=str(path))
    except InputNotFoundError:
        return WatchOutcome(path, FAILED, error=f"{path}: vanished before it could be read", error_code="vanished")
    except CxrError as err:
        return failure(err)
    digest = hashlib.sha256(data).hexdigest()
    destination = processed_dir if processed_dir is not None else restore_to
    if log is not None and log.seen(digest, classifier.model_sha256):
        moved = _move(path, destination) if destination is not None else None
        _drop_note(path)
        logger.info("%s: already screened with this model; not classified again", path)
        return WatchOutcome(path, DUPLICATE, moved_to=moved)
    stream = io.BytesIO(data)
    stream.name = str(path)  # error messages name the file
    try:
        result = classifier.classify(stream, heatmap=heatmap_dir is not None)
        heatmap_path = None
        if heatmap_dir is not None:
            # Named after the input only when the log keeps identifiers (--store-identifiers), as the CLI does.
            identifiers = bool(getattr(log, "store_patient_ids", False))
            heatmap_path = save_overlay(
                result, Path(heatmap_dir) / heatmap_name(path.name, result.image_sha256, identifiers), alpha=alpha)
    except StorageError:
        raise  # the disk, not the file: stop, and the file is tried again after a restart
    except CxrError as err:
        return failure(err)
    except Exception as err:  # noqa: BLE001 - one strange file must not stop the clinic's scanner folder
        logger.exception("unexpected error on %s", path)
        return _fail(path, err, failed_dir)
    row_id = None
    if log is not None:
        # The row is committed before the file moves: a crash in between leaves a file whose
        # content the log knows, so the next run moves it without classifying it again.
        row_id = log.record(result, source=f"{source_prefix}{path}", heatmap_path=heatmap_path)
    moved = _move(path, destination) if destination is not None else None
    _drop_note(path)
    return WatchOutcome(path, CLASSIFIED, result=result, row_id=row_id, moved_to=moved, heatmap_path=heatmap_path)


def _drop_note(path: Path) -> None:
    """Remove the failure note of a file that has now been handled."""
    try:
        Path(str(path) + ERROR_SUFFIX).unlink(missing_ok=True)
    except OSError as err:
        logger.warning("could not remove the note beside %s: %s", path, err)


def _fail(path: Path, err: BaseException, failed_dir: Path | None) -> WatchOutcome:
    # Info, not warning: the outcome carries the error, and the CLI prints it once.
    logger.info("%s", err)
    note = _error_note(path, err)
    moved = None
    try:
        if failed_dir is not None and path.parent.resolve() == Path(failed_dir).resolve():
            write_atomic(Path(str(path) + ERROR_SUFFIX), note.encode("utf-8"))  # re-examined: stays
        elif failed_dir is not None:
            moved = _move(path, failed_dir)
            write_atomic(Path(str(moved) + ERROR_SUFFIX), note.encode("utf-8"))
        else:
            write_atomic(Path(str(path) + ERROR_SUFFIX), note.encode("utf-8"))
    except (OSError, StorageError) as move_err:
        logger.error("could not move or mark %s: %s", path, move_err)
    return WatchOutcome(path, FAILED, error=str(err), error_code=getattr(err, "code", type(err).__name__),
                        moved_to=moved)


def watch_folder(folder: PathLike, classifier, log=None, *, processed_dir: PathLike | None = None,
                 failed_dir: PathLike | None = None, heatmap_dir: PathLike | None = None,
                 poll_interval: float = DEFAULT_POLL_SECONDS, settle_seconds: float = DEFAULT_SETTLE_SECONDS,
                 stop_event: threading.Event | None = None, once: bool = False, alpha: float = DEFAULT_ALPHA,
                 source_prefix: str = "", grace_seconds: float | None = None) -> Iterator[WatchOutcome]:
    """Classify every file that appears in ``folder``, exactly once, yielding what happened.

    Polls (no inotify: works on SD cards, USB sticks and network shares alike). A file is read
    only once its size and mtime stayed unchanged for ``settle_seconds`` (a scanner still
    writing it is left alone). A file that then reads as truncated, empty or undecodable is not
    failed at once: it is read again each time it changes, and failed only once it has stayed
    unchanged for ``grace_seconds`` (a scanner pausing mid-write). A failed file that changes
    afterwards (in ``failed_dir`` or beside its note) is examined again; classified, it moves to
    ``processed_dir`` (or, without one, stays where it is without its note). "Exactly once" is keyed by content: a file whose sha256 the log
    already holds for this model's sha256 is not classified again, also after a restart or when
    the same image is dropped twice. Bad files never stop the loop: they are moved to
    ``failed_dir`` with a ``.error.txt`` note beside them, or, without ``failed_dir``, left in
    place and marked by that note (delete the note to retry). Hidden files, ``*.error.txt``
    notes, partial downloads and sub-folders are ignored.

    Args:
        folder: The folder to watch (only its top level).
        classifier: A :class:`~edge_runtime.classifier.Classifier`.
        log: A :class:`~edge_runtime.log.ScreeningLog`; without one, nothing is remembered across
            restarts (files are then best moved to ``processed_dir``).
        processed_dir: Move classified (and duplicate) files here; default: leave them.
        failed_dir: Move files that could not be classified here.
        heatmap_dir: Write an original | heatmap PNG per classified file here (needs a
            ``*_cam`` model).
        poll_interval: Seconds between scans.
        settle_seconds: Seconds a file must stay unchanged before it is read.
        stop_event: Set it to stop (checked between files and between scans).
        once: Return once every file present has been handled (waiting for growing files to
            settle) instead of watching forever.
        alpha: Heatmap weight in the overlay.
        source_prefix: Prefix of the ``source`` recorded in the log.
        grace_seconds: How long a file that reads as incomplete must stay unchanged before it
            is failed (default: ``GRACE_FACTOR`` x ``settle_seconds``).

    Yields:
        One :class:`WatchOutcome` per file handled.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ModelError: ``heatmap_dir`` was given but the model has no feature-map output.
        LogError: the screening log cannot be written (nothing is moved then).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"watch folder not found: {folder}")
    if heatmap_dir is not None and not classifier.has_heatmap:
        raise ModelError(f"{classifier.model_path.name} has no feature-map output; use a *_cam.tflite model "
                         "for heatmaps")
    processed = Path(processed_dir) if processed_dir is not None else None
    failed = Path(failed_dir) if failed_dir is not None else None
    heatmaps = Path(heatmap_dir) if heatmap_dir is not None else None
    own_dirs = {p.resolve() for p in (processed, failed, heatmaps) if p is not None}
    grace = GRACE_FACTOR * settle_seconds if grace_seconds is None else float(grace_seconds)
    # path -> ((size, mtime_ns), monotonic time this state was first seen)
    pending: dict[Path, tuple[tuple[int, int], float]] = {}
    # path -> (size, mtime_ns) of files handled and left in place during this run
    handled: dict[Path, tuple[int, int]] = {}
    # path -> ((size, mtime_ns), monotonic time) of files that read as incomplete in that state
    suspects: dict[Path, tuple[tuple[int, int], float]] = {}
    stop = stop_event or threading.Event()
    # symbolic links that loop or point nowhere, reported once each while they stay
    bad_links: set[Path] = set()
    while not stop.is_set():
        now = time.monotonic()
        ready = []
        new_bad_links = []
        try:
            entries = sorted(folder.iterdir())
        except OSError as err:
            logger.error("cannot list %s: %s", folder, err)
            entries = []
        if failed is not None and failed.is_dir():
            # A file that failed and has changed since (a scanner still writing it when it was moved
            # there: the rename does not stop the writer) is examined again.
            try:
                entries += sorted(p for p in failed.iterdir() if not _ignored(p)
                                  and Path(str(p) + ERROR_SUFFIX).exists())
            except OSError as err:
                logger.error("cannot list %s: %s", failed, err)
        present = set()
        for path in entries:
            in_failed = failed is not None and path.parent == failed
            if _ignored(path) or (not in_failed and path.resolve() in own_dirs):
                continue
            try:
                stat = path.stat()
            except OSError as err:
                if path.is_symlink():
                    present.add(path)
                    if path not in bad_links:
                        bad_links.add(path)
                        what = "loops" if err.errno == errno.ELOOP else "points nowhere"
                        new_bad_links.append(WatchOutcome(path, FAILED, error=f"{path}: symbolic link {what}; "
                                                          "skipped", error_code="bad_symlink"))
                continue
            if not path.is_file():
                continue
            present.add(path)
            state = (stat.st_size, stat.st_mtime_ns)
            if handled.get(path) == state or _marked_failed(path, stat):
                continue
            age = time.time() - stat.st_mtime  # by the wall clock: also right after a restart
            suspect = suspects.get(path)
            if suspect is not None:
                if suspect[0] == state:
                    if now - suspect[1] >= grace or age >= grace:
                        ready.append((stat.st_mtime_ns, path, state, True, in_failed))
                    continue
                del suspects[path]  # it changed: still being written, settle again
            previous = pending.get(path)
            if previous is None or previous[0] != state:
                pending[path] = (state, now)
                # Untouched for settle_seconds by the wall clock: complete already (e.g. a restart).
                if age < settle_seconds:
                    continue
            elif now - previous[1] < settle_seconds:
                continue
            ready.append((stat.st_mtime_ns, path, state, age >= grace, in_failed))
        for gone in set(pending) - present:
            del pending[gone]
        for gone in set(handled) - present:
            del handled[gone]
        for gone in set(suspects) - present:
            del suspects[gone]
        bad_links &= present
        for outcome in new_bad_links:
            logger.info("%s", outcome.error)
            yield outcome
        for _, path, state, final, in_failed in sorted(ready):
            if stop.is_set():
                return
            pending.pop(path, None)
            outcome = _process(path, classifier, log, processed, failed, heatmaps, alpha, source_prefix,
                               defer_incomplete=not final)
            if outcome.status == _RETRY:
                suspects[path] = (state, now)
                continue
            suspects.pop(path, None)
            if outcome.moved_to is None:
                handled[path] = state
            yield outcome
        if once and not pending and not suspects:
            return
        stop.wait(poll_interval)
