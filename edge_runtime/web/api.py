"""JSON API v1: classify, health, models and history (described by openapi.json, served here)."""

from __future__ import annotations

import base64
import io
import logging
import platform
import re
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request, send_file, url_for

from .. import __version__
from ..cam import upsample
from ..errors import (
    ApiError,
    CameraError,
    ImageTooLargeError,
    InvalidImageError,
    NotChestXrayError,
    RuntimeUnavailableError,
    UnknownModelError,
    UnsupportedFormatError,
)
from ..i18n import plain_result, population_notice, population_text, task_title, translator
from ..imaging import is_dicom
from ..interpreter import find_interpreter_class
from ..log import local_time
from ..model_files import model_title
from ..render import colorize, encode_jpeg, encode_png, fit_within
from ..serialize import is_positive, record_json, round_ms, threshold_rule
from .language import request_language
from .pdf import render_pdf
from .report import NOTICE, render_report
from .state import get_state
from .store import PREVIEW_SIDE

logger = logging.getLogger(__name__)

api = Blueprint("api", __name__, url_prefix="/api/v1")

_OPENAPI = Path(__file__).resolve().parent / "openapi.json"
_LABEL = re.compile(r"^[A-Za-z0-9_ .+-]{1,64}$")
#: A patient reference: what a clinic writes on a file (letters of any script, digits, a few signs).
_REFERENCE = re.compile(r"^[\w .,:;/#()+-]{1,64}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
#: Largest number of rows one history request returns.
MAX_HISTORY_LIMIT = 500


def sniff_format(data: bytes) -> str | None:
    """The accepted format of ``data`` from its first bytes: ``jpeg``, ``png``, ``dicom`` or None.

    The file name and the declared Content-Type are never trusted. Other formats Pillow could
    open (TIFF, BMP, WebP ...) are refused on purpose: fewer decoders, smaller attack surface.
    """
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if is_dicom(data):
        return "dicom"
    return None


def _flag(name: str, default: bool = False) -> bool:
    raw = request.form.get(name, request.args.get(name))
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ApiError(400, "invalid_parameter", f"{name} must be true or false")


def _clean_message(err: Exception) -> str:
    # Messages name the input "<bytes>" when it came from memory; drop that prefix for clients.
    message = str(err)
    return message[len("<bytes>: "):] if message.startswith("<bytes>: ") else message


def _image_json(media_type: str, data: bytes, width: int, height: int) -> dict:
    return {"media_type": media_type, "encoding": "base64", "width": int(width), "height": int(height),
            "data": base64.b64encode(data).decode("ascii")}


@api.post("/classify")
def classify() -> Response:
    """Classify one uploaded image (multipart field ``file``)."""
    upload = request.files.get("file")
    if upload is None:
        raise ApiError(400, "missing_file", "send the image as a multipart/form-data field named 'file'")
    options = _classify_options()
    reference = _reference_field()
    data = upload.stream.read()
    if not data:
        raise ApiError(400, "empty_file", "the uploaded file is empty")
    if sniff_format(data) is None:
        raise ApiError(415, "unsupported_format",
                       "only JPEG, PNG and DICOM images are accepted, and this file's content is none of them")
    return _classify_and_answer(data, "web", *options, reference=reference)


def _reference_field() -> str | None:
    """The ``reference`` form field (validated); ``None`` when empty or when references are off."""
    raw = (request.form.get("reference") or "").strip()
    if not raw:
        return None
    if not get_state().config.patient_reference:
        raise ApiError(400, "references_disabled", "this server does not store patient references; start it "
                                                   "with --store-identifiers to enable them")
    if not _REFERENCE.match(raw):
        raise ApiError(400, "invalid_parameter", "reference must be 1-64 letters, digits, spaces or . , : ; / # ( ) + -")
    return raw


@api.post("/camera/classify")
def camera_classify() -> Response:
    """Take one frame from the device's camera (e.g. a film on a lightbox) and classify it."""
    state = get_state()
    if state.camera is None:
        raise ApiError(404, "camera_unavailable", "this device has no camera")
    options = _classify_options()
    reference = _reference_field()
    try:
        frame = state.camera()
    except CameraError as err:
        logger.error("camera failed: %s", err)
        raise ApiError(503, err.code, "the camera did not deliver a frame; see the server log") from None
    return _classify_and_answer(frame, "camera", *options, reference=reference)


def _classify_options():
    state = get_state()
    want_heatmap = _flag("heatmap")
    want_preview = _flag("preview")
    try:
        entry = state.registry.get((request.form.get("model") or request.args.get("model") or "").strip())
    except UnknownModelError as err:
        raise ApiError(400, "unknown_model", str(err), models=list(state.registry.entries)) from None
    return entry, want_heatmap, want_preview


def _classify_and_answer(source, origin: str, entry, want_heatmap: bool, want_preview: bool,
                         reference: str | None = None) -> Response:
    state = get_state()
    classifier = state.registry.classifier(entry.name)
    has_heatmap = bool(getattr(classifier, "has_heatmap", False))
    try:
        # The heatmap is cheap (one matrix product): always kept for the report and history.
        result = classifier.classify(source, heatmap=has_heatmap)
    except NotChestXrayError as err:
        logger.info("refused an image: not a chest X-ray (%s)", err.reason)
        raise ApiError(422, "not_chest_xray", _clean_message(err), reason=err.reason,
                       details=_jsonable(err.details)) from None
    except ImageTooLargeError as err:
        raise ApiError(413, err.code, _clean_message(err)) from None
    except UnsupportedFormatError as err:
        raise ApiError(415, err.code, _clean_message(err)) from None
    except InvalidImageError as err:
        logger.info("refused an image: %s", err.code)
        raise ApiError(422, err.code, _clean_message(err)) from None

    warnings: list[str] = []
    if want_heatmap and not has_heatmap:
        warnings.append(f"model file {entry.model_path.name} has no feature-map output: no heatmap")
    language = request_language()
    notice = population_notice(language, result.population)
    if result.population.get("outside"):
        warnings.append(notice)
    row_id = _record(state, result, origin, warnings, reference)
    preview = None
    if want_preview or (want_heatmap and result.heatmap is not None):
        preview = fit_within(result.image, PREVIEW_SIDE)
    body = {
        "id": row_id,
        **record_json(result),
        "timings_ms": round_ms(result.timings_ms),
        "threshold_rule": threshold_rule(entry.spec.negative_label, result.threshold),
        "plain": plain_result(language, result.label, bool(result.positive)),
        "population": population_text(entry.spec, entry.spec_path, language),
        "population_notice": notice,
        "reference": reference,
        "model": {"name": entry.name, "title": task_title(language, entry.spec.task, entry.title),
                  "task": entry.spec.task,
                  "negative_label": entry.spec.negative_label, "file": entry.model_path.name,
                  "runtime": getattr(classifier, "runtime", None)},
        "heatmap": None,
        "preview": None,
        "report_url": url_for("api.history_report", row_id=row_id) if row_id is not None else None,
        "report_pdf_url": url_for("api.history_report_pdf", row_id=row_id) if row_id is not None else None,
        "warnings": warnings,
        "notice": NOTICE,
    }
    if want_heatmap and result.heatmap is not None:
        height, width = preview.shape[:2]
        heat = colorize(upsample(result.heatmap, (height, width)))
        body["heatmap"] = _image_json("image/png", encode_png(heat), width, height)
    if want_preview:
        height, width = preview.shape[:2]
        body["preview"] = _image_json("image/jpeg", encode_jpeg(preview, 88), width, height)
    logger.info("classified: row=%s model=%s source=%s latency=%.0f ms", row_id, entry.name, origin,
                result.latency_ms)
    return jsonify(body)


def _jsonable(details: dict) -> dict:
    out = {}
    for key, value in (details or {}).items():
        if isinstance(value, (bool, int, float, str)) or value is None:
            out[str(key)] = value
        elif hasattr(value, "item"):
            out[str(key)] = value.item()
        else:
            out[str(key)] = str(value)
    return out


def _record(state, result, origin: str, warnings: list[str], reference: str | None = None) -> int | None:
    """Keep the images and the log row; on failure the result is still returned, with a warning."""
    try:
        heatmap_path = state.store.save(result.image_sha256, result.image, result.model_sha256, result.heatmap)
        return int(state.log.record(result, source=origin,
                                    heatmap_path=str(heatmap_path) if heatmap_path else None,
                                    patient_id=reference))
    except Exception as err:  # noqa: BLE001 - a full disk must not hide the result from the clinician
        logger.error("could not write the screening log: %s", err)
        warnings.append("this result could not be saved to the screening log; see the server log")
        return None


_VERSIONS: dict[str, Any] = {}
_VERSIONS_LOCK = threading.Lock()


def _versions() -> dict[str, Any]:
    with _VERSIONS_LOCK:
        if not _VERSIONS:
            _VERSIONS["python"] = platform.python_version()
            _VERSIONS["edge_runtime"] = __version__ or _dist_version(
                "cxr-edge", "edge-runtime", "edge_runtime")
            for dist in ("numpy", "pillow", "flask", "waitress", "ai-edge-litert", "tflite-runtime", "pydicom"):
                _VERSIONS[dist] = _dist_version(dist)
        return dict(_VERSIONS)


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


_RUNTIME: dict[str, str | None] = {}


def _runtime_name() -> str | None:
    if "name" not in _RUNTIME:
        try:
            _RUNTIME["name"] = find_interpreter_class()[1]
        except RuntimeUnavailableError:
            _RUNTIME["name"] = None
    return _RUNTIME["name"]


@api.get("/health")
def health() -> Response:
    """Liveness and what this server runs: models loaded, runtime, versions."""
    state = get_state()
    registry = state.registry
    loaded = [name for name in registry.entries if registry.loaded(name) is not None]
    runtime = next((getattr(registry.loaded(n), "runtime", None) for n in loaded), None) or _runtime_name()
    try:
        log_ok, count = True, int(state.log.count())
    except Exception as err:  # noqa: BLE001 - health reports, it does not fail
        logger.error("screening log unreadable: %s", err)
        log_ok, count = False, None
    status = "ok" if runtime and log_ok else "degraded"
    return jsonify({
        "status": status,
        "model_loaded": registry.default_name in loaded,
        "default_model": registry.default_name,
        "models_loaded": loaded,
        "runtime": runtime,
        "log": {"ok": log_ok, "count": count},
        "auth_required": bool(state.config.token),
        "camera": state.camera is not None,
        "uptime_s": round(time.time() - state.started, 1),
        "versions": _versions(),
    })


@api.get("/models")
def models() -> Response:
    """The models this server offers."""
    registry = get_state().registry
    items = []
    for entry in registry.entries.values():
        classifier = registry.loaded(entry.name)
        spec = entry.spec
        items.append({
            "name": entry.name,
            "title": entry.title,
            "task": spec.task,
            "labels": list(spec.labels),
            "negative_label": spec.negative_label,
            "threshold": float(spec.threshold),
            "threshold_rule": threshold_rule(spec.negative_label, spec.threshold),
            "population": population_text(spec, entry.spec_path, request_language()),
            "input_size": [spec.input_height, spec.input_width],
            "file": entry.model_path.name,
            "sha256": entry.file_sha256,
            "has_heatmap": entry.has_heatmap,
            "loaded": classifier is not None,
            "default": entry.name == registry.default_name,
        })
    return jsonify({"default": registry.default_name, "models": items})


def row_model(row: dict, language: str) -> tuple[Any, str, str, str]:
    """(model entry or None, title, validated population, negative label) of a log row's model."""
    entry = get_state().registry.entries.get(row["model_name"])
    if entry is not None:
        return (entry, task_title(language, entry.spec.task, entry.title),
                population_text(entry.spec, entry.spec_path, language), entry.spec.negative_label)
    match = re.match(r"^cxr_([a-z0-9]+)_", str(row["model_name"]))
    task = type("Unknown", (), {"task": match.group(1) if match else ""})()
    return (None, task_title(language, task.task, model_title(row["model_name"])),
            population_text(task, None, language), "NORMAL")


def public_row(row: dict, language: str = "en") -> dict:
    """A log row as the API shows it: no file paths, no source; the patient reference only when
    this server keeps references."""
    state = get_state()
    row_id = int(row["id"])
    record = record_json(row)
    _, title, _, _ = row_model(row, language)
    return {
        "id": row_id,
        "time": str(row["time"]),
        "time_local": local_time(row["time"]),
        **record,
        "latency_ms": record["latency_ms"] or 0.0,  # a row recorded without a latency
        "plain": plain_result(language, record["label"], record["positive"]),
        "model_title": title,
        "reference": row.get("patient_id") if state.config.patient_reference else None,
        "has_heatmap": bool(row.get("heatmap_path")),
        "has_thumbnail": _has_thumbnail(state.store, row["image_sha256"]),
        "thumbnail_url": url_for("api.history_thumbnail", row_id=row_id),
        "report_url": url_for("api.history_report", row_id=row_id),
        "report_pdf_url": url_for("api.history_report_pdf", row_id=row_id),
    }


def _has_thumbnail(store, image_sha256: str) -> bool:
    try:
        return store.thumbnail_path(image_sha256).is_file()
    except ValueError:  # a row written by hand or by an old tool without a proper digest
        return False


def history_label_arg() -> str | None:
    """The ``label`` filter of a history request (validated, any case), or ``None``."""
    label = (request.args.get("label") or "").strip()
    if not label:
        return None
    if not _LABEL.match(label):
        raise ApiError(400, "invalid_parameter", "label must be 1-64 letters, digits, spaces or _ . + -")
    return label


def history_reference_arg() -> str | None:
    """The ``reference`` search of a history request (validated), or ``None``; refused when references are off."""
    reference = (request.args.get("reference") or "").strip()
    if not reference:
        return None
    if not get_state().config.patient_reference:
        raise ApiError(400, "references_disabled", "this server does not store patient references")
    if not _REFERENCE.match(reference):
        raise ApiError(400, "invalid_parameter", "reference must be 1-64 letters, digits, spaces or . , : ; / # ( ) + -")
    return reference


def offset_arg() -> int:
    """The ``offset`` of a history request (rows skipped, newest first)."""
    raw = request.args.get("offset")
    if raw is None or raw == "":
        return 0
    try:
        offset = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", "offset must be an integer") from None
    if offset < 0:
        raise ApiError(400, "invalid_parameter", "offset must be at least 0")
    return offset


def _limit_arg(default: int) -> int:
    raw = request.args.get("limit")
    if raw is None or raw == "":
        return default
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", "limit must be an integer") from None
    if not 1 <= limit <= MAX_HISTORY_LIMIT:
        raise ApiError(400, "invalid_parameter", f"limit must be between 1 and {MAX_HISTORY_LIMIT}")
    return limit


@api.get("/history")
def history() -> Response:
    """Screenings from the log, newest first, a page at a time."""
    state = get_state()
    label, reference = history_label_arg(), history_reference_arg()
    limit, offset = _limit_arg(state.config.history_limit), offset_arg()
    rows = state.log.recent(limit=limit, label=label, offset=offset, reference=reference)
    language = request_language()
    return jsonify({"items": [public_row(row, language) for row in rows], "label": label, "reference": reference,
                    "offset": offset, "limit": limit, "matching": int(state.log.count(label, reference=reference)),
                    "total": int(state.log.count())})


def _row_or_404(row_id: int) -> dict:
    row = get_state().log.get(row_id)
    if row is None:
        raise ApiError(404, "not_found", f"no screening with id {row_id}")
    return row


@api.get("/history/<int:row_id>")
def history_item(row_id: int) -> Response:
    """One screening from the log."""
    return jsonify(public_row(_row_or_404(row_id), request_language()))


@api.get("/history/<int:row_id>/thumbnail.jpg")
def history_thumbnail(row_id: int) -> Response:
    """The small image shown in the history list."""
    row = _row_or_404(row_id)
    path = get_state().store.thumbnail_path(row["image_sha256"])
    if not path.is_file():
        raise ApiError(404, "not_found", f"screening {row_id} has no thumbnail")
    return send_file(path, mimetype="image/jpeg", max_age=0)


def _report_parts(row_id: int) -> dict:
    """What both reports show: the row, its images, the wording in the request's language."""
    state = get_state()
    row = _row_or_404(row_id)
    language = request_language()
    positive = is_positive(row["decision"])
    # A negative result's heatmap reads like a finding: it is printed only when asked for.
    show_heatmap = positive or _flag("heatmap")
    preview = state.store.load_preview(row["image_sha256"])
    heatmap = None
    if row.get("heatmap_path") and show_heatmap:
        heatmap = state.store.load_heatmap(row["image_sha256"], row["model_sha256"])
    _, title, population, negative_label = row_model(row, language)
    return {"row": row, "preview": preview, "heatmap": heatmap, "language": language, "title": title,
            "population": population, "negative_label": negative_label,
            "plain": plain_result(language, row["label"], positive),
            "population_notice": population_notice(language, row.get("population")),
            "outside_population": bool((row.get("population") or {}).get("outside")),
            "reference": row.get("patient_id") if state.config.patient_reference else None}


@api.get("/history/<int:row_id>/report.png")
def history_report(row_id: int) -> Response:
    """The one-page result (image, heatmap, probabilities, model, time) as a PNG download."""
    parts = _report_parts(row_id)
    png = render_report(parts["row"], parts["preview"], parts["heatmap"], negative_label=parts["negative_label"],
                        title=parts["title"], runtime_version=_versions().get("edge_runtime") or "",
                        t=translator(parts["language"]), plain=parts["plain"], population=parts["population"],
                        reference=parts["reference"], population_notice=parts["population_notice"],
                        outside_population=parts["outside_population"])
    return send_file(io.BytesIO(png), mimetype="image/png", as_attachment=True,
                     download_name=f"cxr-screening-{row_id}.png", max_age=0)


@api.get("/history/<int:row_id>/report.pdf")
def history_report_pdf(row_id: int) -> Response:
    """The one-page result as a PDF: plain result, reference, image, population, model hash, notice."""
    parts = _report_parts(row_id)
    pdf = render_pdf(parts["row"], parts["preview"], parts["heatmap"], t=translator(parts["language"]),
                     plain=parts["plain"], population=parts["population"], title=parts["title"],
                     reference=parts["reference"], negative_label=parts["negative_label"],
                     runtime_version=_versions().get("edge_runtime") or "",
                     time_text=local_time(parts["row"]["time"]), population_notice=parts["population_notice"],
                     outside_population=parts["outside_population"])
    return send_file(io.BytesIO(pdf), mimetype="application/pdf", as_attachment=True,
                     download_name=f"cxr-screening-{row_id}.pdf", max_age=0)


@api.get("/history/export.csv")
def history_csv() -> Response:
    """The screening log as CSV (optionally one label only)."""
    state = get_state()
    label, reference = history_label_arg(), history_reference_arg()
    buffer = io.StringIO()
    state.log.export_csv(buffer, label=label, reference=reference)
    name = f"cxr-screenings-{label}.csv" if label else "cxr-screenings.csv"
    return send_file(io.BytesIO(buffer.getvalue().encode("utf-8")), mimetype="text/csv",
                     as_attachment=True, download_name=name.replace(" ", "_"), max_age=0)


@api.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 description of this API."""
    return send_file(_OPENAPI, mimetype="application/json", max_age=0)
