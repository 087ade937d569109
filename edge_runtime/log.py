"""The screening log: every result in SQLite (WAL, synchronous=FULL), acknowledged only once on disk."""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, TextIO, Union

from .errors import LogError
from .serialize import record_json

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Environment variable naming the log file (used by the CLI).
LOG_PATH_ENV = "CXR_LOG"
#: Schema version kept in ``PRAGMA user_version``. Version 2 added ``instance_sha256`` and
#: ``spec_sha256``; version 3 ``population`` (the out-of-population check's outcome, JSON). Older
#: logs are migrated in place when opened, every row kept.
SCHEMA_VERSION = 3

#: Columns of schema version 1, in table order.
COLUMNS_V1 = ("id", "time", "source", "image_sha256", "label", "probabilities", "score", "threshold", "decision",
              "model_name", "model_sha256", "heatmap_path", "latency_ms", "patient_id")
#: Columns added by schema version 2, in table order.
COLUMNS_ADDED_V2 = ("instance_sha256", "spec_sha256")
#: Columns added by schema version 3.
COLUMNS_ADDED_V3 = ("population",)
#: Columns, in table order.
COLUMNS = COLUMNS_V1 + COLUMNS_ADDED_V2 + COLUMNS_ADDED_V3
#: Columns left out of the CSV: the DICOM instance key, and ``heatmap_path`` (a path on this machine);
#: ``patient_id`` too, unless the log stores patient references.
_CSV_HIDDEN = ("instance_sha256", "heatmap_path")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS screenings (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    time          TEXT    NOT NULL,  -- UTC, ISO 8601
    source        TEXT,              -- file path, 'camera', 'web' ...
    image_sha256  TEXT    NOT NULL,
    label         TEXT    NOT NULL,
    probabilities TEXT    NOT NULL,  -- JSON object label -> probability
    score         REAL    NOT NULL,
    threshold     REAL    NOT NULL,
    decision      TEXT    NOT NULL,
    model_name    TEXT    NOT NULL,
    model_sha256  TEXT    NOT NULL,
    heatmap_path  TEXT,
    latency_ms    REAL,
    patient_id    TEXT,              -- the patient reference; NULL unless store_patient_ids=True
    instance_sha256 TEXT,            -- sha256 of a DICOM SOP Instance UID (schema 2), else NULL
    spec_sha256   TEXT,              -- sha256 of the spec sidecar the result was computed with (schema 2)
    population    TEXT               -- JSON outcome of the model's out-of-population check, if any (schema 3)
);
"""
# Indexes, created after any migration (the instance index needs the version-2 column).
_INDEXES = """
CREATE INDEX IF NOT EXISTS screenings_seen ON screenings (image_sha256, model_sha256);
CREATE INDEX IF NOT EXISTS screenings_label ON screenings (label, id);
CREATE INDEX IF NOT EXISTS screenings_instance ON screenings (instance_sha256, model_sha256);
"""

# Spreadsheet programs run cells starting with these as formulas (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _looks_like_path(source: str) -> bool:
    """True for a file path or name (a separator or an extension), not for kinds like ``web``."""
    return "/" in source or "\\" in source or bool(os.path.splitext(source)[1])


def _hint(err: BaseException) -> str:
    """What to do about the commonest storage faults on a Pi, from SQLite's message."""
    text = str(err).lower()
    if "full" in text:
        return " (the disk is full: free space on it, then run again)"
    if "readonly" in text or "read-only" in text or "unable to open" in text or "permission" in text:
        return " (is the log's folder writable, and the disk mounted read-write?)"
    if "disk i/o" in text:
        return " (the storage reported an I/O error: check the SD card or disk)"
    return ""


def default_log_path() -> Path:
    """``$CXR_LOG``, else ``$XDG_DATA_HOME/cxr-edge/screenings.db`` (``~/.local/share/...``)."""
    if os.environ.get(LOG_PATH_ENV):
        return Path(os.environ[LOG_PATH_ENV]).expanduser()
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "cxr-edge" / "screenings.db"


def instance_key(instance_uid: str) -> str:
    """How a DICOM SOP Instance UID is kept in the log: its sha256 (the UID itself is an identifier)."""
    return hashlib.sha256(str(instance_uid).strip().encode("ascii", "replace")).hexdigest()


def local_time(value: Any) -> str:
    """A log time (ISO 8601 UTC, or Unix seconds) in the device's time zone: ``YYYY-MM-DD HH:MM:SS CET``.

    The log keeps UTC; people read the clinic's local time (``TZ`` or the system setting).
    """
    if isinstance(value, (int, float)):
        moment = datetime.datetime.fromtimestamp(float(value), tz=datetime.timezone.utc)
    else:
        try:
            moment = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return str(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
    local = moment.astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S ") + (local.tzname() or local.strftime("%z"))


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


class ScreeningLog:
    """Append-only record of screenings in one SQLite file.

    Durability: WAL journal with ``synchronous=FULL``, so :meth:`record` returns only after the
    row's commit reached the disk; a power cut or ``kill -9`` afterwards cannot lose it.
    Thread safety: one connection shared under a lock, so request threads of a web server may
    call any method; several processes may open the same file (SQLite locks it, and a writer
    waits up to ``timeout`` seconds).

    Args:
        path: SQLite file; created with its folder when missing.
        store_patient_ids: Keep the ``patient_id`` passed to :meth:`record`, and input file paths
            as ``source``. Off by default: the log then holds no patient identifier (file names
            from scanners often carry the patient's name), the image is known by its sha256 and a
            file source is recorded as ``file``.
        timeout: Seconds to wait for another process's write lock.

    Raises:
        LogError: the file cannot be created or is not a screening log.
    """

    def __init__(self, path: PathLike, *, store_patient_ids: bool = False, timeout: float = 30.0):
        self.path = Path(path)
        self.store_patient_ids = bool(store_patient_ids)
        self._lock = threading.RLock()
        self._warned_patient_id = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
            self._conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None,
                                         check_same_thread=False)
        except (OSError, sqlite3.Error) as err:
            raise LogError(f"cannot open the screening log {self.path}: {err}{_hint(err)}") from err
        try:
            self._conn.row_factory = sqlite3.Row
            # A damaged file (power cut on a cheap SD card) is refused at start with what to do,
            # rather than failing at the first patient. Costs ~1 ms per MB of log.
            check = self._conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(check.splitlines()[0])
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("%s: journal mode is %s, not WAL (network file system?)", self.path, mode)
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise LogError(f"{self.path} has schema version {version}; this cxr-edge reads up to "
                               f"{SCHEMA_VERSION}: upgrade cxr-edge")
            self._conn.executescript(_SCHEMA)
            columns = [row[1] for row in self._conn.execute("PRAGMA table_info(screenings)")]
            older = len(COLUMNS_V1) <= len(columns) < len(COLUMNS) and tuple(columns) == COLUMNS[:len(columns)]
            if older:  # an older schema: add the columns it lacks in place, rows kept
                logger.info("%s: migrating the screening log from schema %d to %d", self.path, version or 1,
                            SCHEMA_VERSION)
                self._conn.execute("BEGIN IMMEDIATE")
                for column in COLUMNS[len(columns):]:
                    self._conn.execute(f"ALTER TABLE screenings ADD COLUMN {column} TEXT")
                self._conn.execute("COMMIT")
                columns = [row[1] for row in self._conn.execute("PRAGMA table_info(screenings)")]
            self._conn.executescript(_INDEXES)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            if tuple(columns) != COLUMNS:
                raise LogError(f"{self.path}: table 'screenings' has columns {columns}, expected {list(COLUMNS)}")
        except sqlite3.DatabaseError as err:
            self._conn.close()
            if isinstance(err, sqlite3.OperationalError):  # read-only folder, locked, I/O error
                raise LogError(f"cannot open the screening log {self.path}: {err}{_hint(err)}") from err
            raise LogError(
                f"{self.path} is not a usable screening log ({err}); nothing was written to it. If it is a "
                f"damaged log, move it aside (mv '{self.path}' '{self.path}.damaged') to start a new one, and "
                f"salvage its rows with: sqlite3 '{self.path}.damaged' .recover | sqlite3 recovered.db") from err
        except LogError:
            self._conn.close()
            raise

    # -- writing ---------------------------------------------------------------------------
    def record(self, result: Any, source: str | None = None, heatmap_path: PathLike | None = None,
               patient_id: str | None = None, instance_uid: str | None = None) -> int:
        """Append one result; return its row id once the row is committed to disk.

        Args:
            result: A :class:`edge_runtime.classifier.Result` (or a mapping with its fields), kept as
                :func:`edge_runtime.serialize.record_json` gives them (rounded as every output shows them).
            source: Where the image came from: a file path (kept only with
                ``store_patient_ids``, else recorded as ``file``), ``camera``, ``web``.
            heatmap_path: The heatmap/overlay file written for it, if any.
            patient_id: The patient reference (a clinic number, a DICOM PatientID or
                AccessionNumber); stored only when the log was opened with ``store_patient_ids=True``.
            instance_uid: The DICOM SOP Instance UID the image came in, kept as its sha256 only
                (see :meth:`seen_instance`).

        Returns:
            The new row's id.

        Raises:
            LogError: the row could not be written (disk full, read-only file ...).
        """
        if patient_id is not None and not self.store_patient_ids:
            if not self._warned_patient_id:
                logger.warning("patient ids are not stored: open the log with store_patient_ids=True to keep them")
                self._warned_patient_id = True
            patient_id = None
        if source is not None and not self.store_patient_ids and _looks_like_path(str(source)):
            source = "file"
        fields = record_json(result)  # what every output shows of a result, rounded the same way
        population = fields["population_check"]
        row = (
            _utc_now(),
            None if source is None else str(source),
            fields["image_sha256"],
            fields["label"],
            json.dumps(fields["probabilities"], sort_keys=False),
            fields["score"],
            fields["threshold"],
            fields["decision"],
            fields["model_name"],
            fields["model_sha256"],
            None if heatmap_path is None else str(heatmap_path),
            fields["latency_ms"],
            None if patient_id is None or not str(patient_id).strip() else str(patient_id).strip(),
            None if instance_uid is None else instance_key(instance_uid),
            fields["spec_sha256"],
            None if population is None else json.dumps(population),
        )
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    cursor = conn.execute(
                        f"INSERT INTO screenings ({', '.join(COLUMNS[1:])}) VALUES ({', '.join('?' * len(row))})",
                        row)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as err:
                raise LogError(f"could not write to the screening log {self.path}: {err}{_hint(err)}; "
                               "this result was NOT recorded") from err
            return int(cursor.lastrowid)

    # -- reading ---------------------------------------------------------------------------
    @staticmethod
    def _to_dict(row: sqlite3.Row) -> dict:
        data = dict(row)
        try:
            data["probabilities"] = json.loads(data["probabilities"] or "{}")
        except ValueError:
            logger.warning("row %s: unreadable probabilities %r", data.get("id"), data["probabilities"])
            data["probabilities"] = {}
        try:
            data["population"] = json.loads(data["population"]) if data.get("population") else None
        except ValueError:
            logger.warning("row %s: unreadable population %r", data.get("id"), data["population"])
            data["population"] = None
        return data

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LogError(f"the screening log {self.path} is closed")
        return self._conn

    def _query(self, sql: str, params: tuple = ()) -> list:
        with self._lock:
            try:
                return self._connection().execute(sql, params).fetchall()
            except sqlite3.Error as err:
                raise LogError(f"could not read the screening log {self.path}: {err}") from err

    @staticmethod
    def _where(label: str | None, reference: str | None) -> tuple[str, tuple]:
        """WHERE clause of the filters: label case-insensitive, reference a case-insensitive substring."""
        clauses, params = [], []
        if label is not None:
            clauses.append("label = ? COLLATE NOCASE")
            params.append(str(label))
        if reference is not None and str(reference).strip():
            pattern = str(reference).strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append("patient_id LIKE ? ESCAPE '\\'")
            params.append(f"%{pattern}%")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", tuple(params)

    def recent(self, limit: int = 50, label: str | None = None, *, offset: int = 0,
               reference: str | None = None) -> list[dict]:
        """The newest rows first (``probabilities`` decoded).

        Args:
            limit: Rows to return.
            label: Only rows of this label (case-insensitive).
            offset: Skip this many of the newest matching rows (paging).
            reference: Only rows whose patient reference contains this text (case-insensitive).
        """
        where, params = self._where(label, reference)
        rows = self._query(f"SELECT * FROM screenings{where} ORDER BY id DESC LIMIT ? OFFSET ?",
                           params + (int(limit), max(0, int(offset))))
        return [self._to_dict(row) for row in rows]

    def get(self, row_id: int) -> dict | None:
        """One row by id, or None (also for ids SQLite cannot hold, such as 99999999999999999999999)."""
        if not 0 < int(row_id) < 2**63:
            return None
        rows = self._query("SELECT * FROM screenings WHERE id = ?", (int(row_id),))
        return self._to_dict(rows[0]) if rows else None

    def count(self, label: str | None = None, *, reference: str | None = None) -> int:
        """Number of rows (of one label, case-insensitive; with a reference containing ``reference``)."""
        where, params = self._where(label, reference)
        return int(self._query(f"SELECT COUNT(*) FROM screenings{where}", params)[0][0])

    def has_references(self) -> bool:
        """True when some row carries a patient reference."""
        return bool(self._query("SELECT 1 FROM screenings WHERE patient_id IS NOT NULL LIMIT 1"))

    def labels(self) -> list[str]:
        """The distinct labels in the log, sorted."""
        return sorted(str(row[0]) for row in self._query("SELECT DISTINCT label FROM screenings"))

    def seen(self, image_sha256: str, model_sha256: str) -> bool:
        """True when this image content was already screened with this model file."""
        rows = self._query("SELECT 1 FROM screenings WHERE image_sha256 = ? AND model_sha256 = ? LIMIT 1",
                           (str(image_sha256), str(model_sha256)))
        return bool(rows)

    def seen_instance(self, instance_uid: str, model_sha256: str) -> int | None:
        """The row id of a DICOM instance (by SOP Instance UID) already screened with this model, or None."""
        rows = self._query("SELECT id FROM screenings WHERE instance_sha256 = ? AND model_sha256 = ? "
                           "ORDER BY id LIMIT 1", (instance_key(instance_uid), str(model_sha256)))
        return int(rows[0][0]) if rows else None

    def export_csv(self, path_or_file: PathLike | TextIO, label: str | None = None, *,
                   reference: str | None = None) -> int:
        """Write the log (oldest first) as CSV with a header row.

        ``probabilities`` is a JSON object; the ``patient_id`` column (the patient reference) is
        included only when the log stores patient references; ``heatmap_path`` (a path on this machine)
        never is. Text cells that a spreadsheet would run as a formula are
        prefixed with ``'``.

        Args:
            path_or_file: A file path, or an open text stream (e.g. ``io.StringIO``).
            label: Export only rows with this label (case-insensitive).
            reference: Export only rows whose reference contains this text.

        Returns:
            Number of data rows written.
        """
        hidden = _CSV_HIDDEN if self.store_patient_ids else _CSV_HIDDEN + ("patient_id",)
        columns = tuple(c for c in COLUMNS if c not in hidden)
        where, params = self._where(label, reference)
        rows = self._query(f"SELECT {', '.join(columns)} FROM screenings{where} ORDER BY id", params)

        def write(stream: TextIO) -> int:
            writer = csv.writer(stream)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([("'" + v) if isinstance(v, str) and v.startswith(_FORMULA_START) else v
                                 for v in tuple(row)])
            return len(rows)

        if hasattr(path_or_file, "write"):
            return write(path_or_file)  # type: ignore[arg-type]
        with open(path_or_file, "w", newline="", encoding="utf-8") as stream:
            return write(stream)

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> "ScreeningLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ScreeningLog({str(self.path)!r})"
