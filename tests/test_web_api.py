"""Clinic web app through Flask's test client: every endpoint, every error path, checked against OpenAPI."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edge_runtime.web
from conftest import SHARED_DATA
from edge_runtime.errors import ModelError
from edge_runtime.web import WebConfig, create_app, create_server
from edge_runtime.web.api import sniff_format
from edge_runtime.web.config import is_loopback
from edge_runtime.web.registry import choose_model_file, discover_models
from edge_runtime.web.store import images_dir_for
from runtime_models import binary_models  # noqa: F401 - fixture

WEB_DIR = Path(edge_runtime.web.__file__).resolve().parent
OPENAPI = json.loads((WEB_DIR / "openapi.json").read_text(encoding="utf-8"))
XRAY_DIR = SHARED_DATA / "chest_xray" / "train"
TOKEN = "correct-horse-battery-staple"

pytestmark = pytest.mark.skipif(not XRAY_DIR.is_dir(), reason=f"real X-rays not found at {XRAY_DIR}")


# -- helpers ---------------------------------------------------------------------------------

def real_xrays(count: int = 2) -> list[Path]:
    """The first ``count`` NORMAL and ``count`` PNEUMONIA training images (sorted, so stable)."""
    files = []
    for cls in ("NORMAL", "PNEUMONIA"):
        files += sorted((XRAY_DIR / cls).glob("*.jpeg"))[:count]
    return files


def photo_jpeg() -> bytes:
    """A real colour photograph (scikit-image's bundled astronaut) as JPEG bytes."""
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header declares ``width x height`` pixels (a decompression bomb)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def dicom_bytes(path: Path) -> bytes:
    """A 12-bit MONOCHROME2 DICOM built from a real X-ray JPEG (as a DR detector would store it)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    grey = np.asarray(Image.open(path).convert("L"), dtype=np.uint16) * 16
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = grey.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = grey.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def upload(client, data: bytes, name: str = "image.jpeg", content_type: str = "image/jpeg", **fields):
    form = {"file": (io.BytesIO(data), name, content_type), **{k: str(v) for k, v in fields.items()}}
    return client.post("/api/v1/classify", data=form, content_type="multipart/form-data")


def _pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def check_openapi(response, path: str, method: str = "get") -> None:
    """Fail unless ``response`` (status, media type, JSON body) is what OpenAPI documents for the path."""
    from openapi_schema_validator import OAS31Validator
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    operation = OPENAPI["paths"][path][method]
    status = str(response.status_code)
    assert status in operation["responses"], f"{method.upper()} {path}: status {status} is not documented"
    content = operation["responses"][status]["content"]
    assert response.mimetype in content, f"{method.upper()} {path} {status}: {response.mimetype} not documented"
    if response.mimetype == "application/json":
        registry = Registry().with_resource("urn:cxr-edge-openapi", DRAFT202012.create_resource(OPENAPI))
        ref = "urn:cxr-edge-openapi#" + _pointer("paths", path, method, "responses", status, "content",
                                                 response.mimetype, "schema")
        OAS31Validator({"$ref": ref}, registry=registry).validate(response.get_json())


def check_error(response, status: int, code: str, path: str = "/api/v1/classify", method: str = "post") -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code
    assert error["message"] and "Traceback" not in error["message"]
    check_openapi(response, path, method)
    return error


def needs_quality_gate():
    pytest.importorskip("edge_runtime.quality", reason="the chest X-ray quality gate is not available")


# -- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def web_models(binary_models, tmp_path_factory) -> Path:
    """A folder with one binary model (spec, its .tflite files, labels): the tiny test model where
    TensorFlow is installed, else the shipped one, so that these tests run as a Pi runs the server."""
    import shutil

    folder = tmp_path_factory.mktemp("web models")
    spec = binary_models["spec"]
    shutil.copy(spec, folder / spec.name)
    for name in json.loads(spec.read_text(encoding="utf-8"))["files"]:
        shutil.copy(spec.parent / name, folder / name)
    return folder


def make_twin(folder: Path, suffix: str = "_twin") -> str:
    """A second, properly bound model in ``folder``: the first model's files under a new name, each
    embedding the renamed spec (as `python -m export` would write them). Returns its name."""
    import hashlib
    import zipfile

    (spec_path,) = folder.glob("*.spec.json")
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    name = spec["name"] + suffix
    twin = {**spec, "name": name, "files": {}}
    embedded = json.dumps({k: v for k, v in twin.items() if k != "files"}, indent=2) + "\n"
    for filename in spec["files"]:
        new = filename.replace(spec["name"], name)
        data = (folder / filename).read_bytes()
        if filename.endswith(".tflite"):
            start = data.rfind(b"PK\x03\x04")
            (folder / new).write_bytes(data[:start] if start > 0 else data)
            with zipfile.ZipFile(folder / new, "a") as archive:
                archive.writestr("model_spec.json", embedded)
        else:
            (folder / new).write_bytes(data)
        twin["files"][new] = hashlib.sha256((folder / new).read_bytes()).hexdigest()
    (folder / f"{name}.spec.json").write_text(json.dumps(twin), encoding="utf-8")
    return name

@pytest.fixture()
def log_path(tmp_path) -> Path:
    return tmp_path / "clinic log" / "screenings.sqlite"


@pytest.fixture()
def make_app(web_models, log_path):
    apps = []

    def make(**settings):
        settings.setdefault("models", web_models)
        settings.setdefault("log_path", log_path)
        app = create_app(WebConfig(**settings))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["cxr_edge"].close()


@pytest.fixture()
def app(make_app):
    return make_app()


@pytest.fixture()
def client(app):
    return app.test_client()


def state(app):
    return app.extensions["cxr_edge"]


# -- OpenAPI document ------------------------------------------------------------------------

def test_openapi_document_is_valid_and_served(client):
    from openapi_spec_validator import validate

    validate(OPENAPI)
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200 and response.get_json() == OPENAPI
    documented = {p for p in OPENAPI["paths"]}
    served = {rule.rule.replace("<int:row_id>", "{row_id}") for rule in client.application.url_map.iter_rules()
              if rule.rule.startswith("/api/")}
    assert documented == served


# -- health and models -----------------------------------------------------------------------

def test_health_reports_models_runtime_and_versions(client):
    response = client.get("/api/v1/health")
    check_openapi(response, "/api/v1/health")
    body = response.get_json()
    assert body["status"] == "ok" and body["runtime"]
    assert body["model_loaded"] is False and body["auth_required"] is False
    assert body["versions"]["python"] and body["versions"]["flask"]
    client.post("/api/v1/classify", data={"file": (io.BytesIO(real_xrays(1)[0].read_bytes()), "a.jpeg")})
    body = client.get("/api/v1/health").get_json()
    assert body["model_loaded"] is True and body["models_loaded"] == [body["default_model"]]


def test_models_lists_the_cam_variant_with_its_spec(client, web_models):
    response = client.get("/api/v1/models")
    check_openapi(response, "/api/v1/models")
    body = response.get_json()
    (model,) = body["models"]
    assert model["default"] and body["default"] == model["name"]
    assert model["file"].endswith("_int8_cam.tflite") and model["has_heatmap"]
    assert model["sha256"] and (web_models / model["file"]).is_file()
    assert model["negative_label"] in model["labels"] and 0 < model["threshold"] < 1


def test_model_discovery_prefers_the_cam_file_of_the_chosen_precision(web_models, tmp_path):
    (entry,) = discover_models(web_models, "fp16")
    assert entry.model_path.name.endswith("_fp16_cam.tflite")
    assert choose_model_file(entry.spec, tmp_path, "int8") is None  # listed files absent here
    (by_file,) = discover_models([web_models / entry.model_path.name.replace("_cam", "")])
    assert not by_file.has_heatmap
    with pytest.raises(ModelError, match="no models found"):
        discover_models(tmp_path)
    with pytest.raises(ModelError, match="not found"):
        discover_models(tmp_path / "missing")


def test_defaults_come_from_the_shipped_models_folder_and_the_log_path(web_models, tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_MODELS", str(web_models))
    monkeypatch.setenv("CXR_LOG", str(tmp_path / "env log" / "screenings.db"))
    app = create_app(None)
    try:
        assert [e.spec_path.parent for e in state(app).registry.entries.values()] == [web_models]
        assert state(app).log.path == tmp_path / "env log" / "screenings.db"
        assert state(app).store.root == tmp_path / "env log" / "screenings-images"
    finally:
        state(app).close()


def test_several_models_each_with_its_own_shared_classifier(make_app, web_models, tmp_path):
    import shutil

    folder = tmp_path / "two models"
    shutil.copytree(web_models, folder)
    (spec_path,) = folder.glob("*.spec.json")
    first = json.loads(spec_path.read_text(encoding="utf-8"))["name"]
    make_twin(folder)
    app = make_app(models=folder)
    client = app.test_client()
    names = [m["name"] for m in client.get("/api/v1/models").get_json()["models"]]
    assert sorted(names) == sorted([first, first + "_twin"])
    html = client.get("/").get_data(as_text=True)
    assert f" - {first}_twin</option>" in html  # same task: told apart by name
    data = real_xrays(1)[0].read_bytes()
    assert upload(client, data, model=first + "_twin").get_json()["model"]["name"] == first + "_twin"
    assert upload(client, data).get_json()["model"]["name"] == names[0]
    check_error(upload(client, data, model="binary"), 400, "unknown_model")  # a task two models share
    assert client.get("/api/v1/health").get_json()["models_loaded"] == names


def test_unknown_default_model_fails_at_start(make_app):
    with pytest.raises(ModelError, match="not among"):
        make_app(default_model="no_such_model")


# -- classify: results -----------------------------------------------------------------------

def test_classify_real_xray_with_heatmap_is_logged_and_downloadable(app, client):
    path = real_xrays(1)[-1]
    response = upload(client, path.read_bytes(), heatmap="true", preview="true")
    check_openapi(response, "/api/v1/classify", "post")
    body = response.get_json()
    labels = list(body["probabilities"])
    # An int8 softmax's output step is 1/256: a confident film reads 0 and 255/256, summing to 0.996.
    assert body["label"] in labels and abs(sum(body["probabilities"].values()) - 1) <= 2 / 256
    assert body["positive"] == (body["score"] >= body["threshold"])
    expected = "screening positive: refer to a clinician" if body["positive"] else "screening negative"
    assert body["decision"] == expected
    assert body["latency_ms"] > 0 and body["model"]["runtime"]
    heatmap = Image.open(io.BytesIO(base64.b64decode(body["heatmap"]["data"])))
    preview = Image.open(io.BytesIO(base64.b64decode(body["preview"]["data"])))
    assert heatmap.format == "PNG" and preview.format == "JPEG" and heatmap.size == preview.size
    assert "Not a medical device" in body["notice"] and body["warnings"] == []

    row = state(app).log.get(body["id"])
    assert row["label"] == body["label"] and row["image_sha256"] == body["image_sha256"]
    assert row["model_sha256"] == body["model_sha256"] and row["source"] == "web"
    report = client.get(body["report_url"])
    assert report.status_code == 200 and report.mimetype == "image/png"
    assert "attachment" in report.headers["Content-Disposition"]
    assert Image.open(io.BytesIO(report.data)).size == (1240, 1754)
    thumb = client.get(f"/api/v1/history/{body['id']}/thumbnail.jpg")
    assert thumb.status_code == 200 and max(Image.open(io.BytesIO(thumb.data)).size) <= 128


@pytest.mark.realdata
def test_the_shipped_binary_model_when_present(make_app):
    assets = Path(__file__).resolve().parent.parent / "android_assets"
    specs = sorted(assets.glob("cxr_binary_*.spec.json"))
    if not specs:
        pytest.skip("the shipped models are not exported yet (android_assets/cxr_binary_*.spec.json)")
    client = make_app(models=specs[-1]).test_client()
    for path in real_xrays(1):
        response = upload(client, path.read_bytes(), heatmap="true")
        check_openapi(response, "/api/v1/classify", "post")
        body = response.get_json()
        assert body["model"]["file"].endswith("_int8_cam.tflite") and body["heatmap"] is not None


def test_heatmap_and_preview_are_opt_in_and_models_can_be_named_by_task(client):
    body = upload(client, real_xrays(1)[0].read_bytes()).get_json()
    assert body["heatmap"] is None and body["preview"] is None and body["id"] is not None
    task = client.get("/api/v1/models").get_json()["models"][0]["task"]
    assert upload(client, real_xrays(1)[0].read_bytes(), model=task).status_code == 200


def test_classify_dicom_and_full_resolution_scans(client):
    fullres = sorted((SHARED_DATA / "fullres_sample").rglob("*.jpeg"))[:1] or real_xrays(1)[:1]
    scan = dicom_bytes(fullres[0])  # MBs: well over the multipart parser's chunk size
    response = upload(client, scan, "scan.dcm", "application/dicom", preview="1")
    check_openapi(response, "/api/v1/classify", "post")
    preview = response.get_json()["preview"]
    assert max(preview["width"], preview["height"]) == min(512, max(Image.open(fullres[0]).size))
    body = upload(client, fullres[0].read_bytes(), preview="1").get_json()
    assert (body["preview"]["width"], body["preview"]["height"]) == (preview["width"], preview["height"])


def test_content_is_sniffed_not_taken_from_name_or_header(client):
    grey = np.asarray(Image.open(real_xrays(1)[0]).convert("L"))
    response = upload(client, png_bytes(grey), "notes.txt", "text/plain")
    assert response.status_code == 200
    gif = io.BytesIO()
    Image.fromarray(grey).save(gif, format="GIF")
    check_error(upload(client, gif.getvalue(), "xray.jpeg", "image/jpeg"), 415, "unsupported_format")
    check_error(upload(client, b"%PDF-1.7 fake", "xray.png", "image/png"), 415, "unsupported_format")
    assert sniff_format(b"\xff\xd8\xff\xe0") == "jpeg" and sniff_format(b"BM....") is None


def test_one_shared_classifier_per_model_under_concurrent_requests(make_app, web_models):
    from edge_runtime.classifier import Classifier, ClassifierOptions

    created = []

    def factory(entry):
        created.append(entry.name)
        return Classifier(entry.model_path, ClassifierOptions(spec_path=str(entry.spec_path)))

    app = make_app(classifier_factory=factory)
    data = real_xrays(1)[0].read_bytes()
    statuses = []

    def hit():
        statuses.append(upload(app.test_client(), data).status_code)

    threads = [threading.Thread(target=hit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 6 and len(created) == 1
    assert state(app).log.count() == 6


def test_camera_frame_is_screened_when_a_camera_is_present(make_app):
    from edge_runtime.camera import FakeFrameSource

    frame = np.asarray(Image.open(real_xrays(1)[0]).convert("RGB"))  # a film on a lightbox
    source = FakeFrameSource([frame])
    app = make_app(camera=source)
    client = app.test_client()
    assert 'id="camera"' in client.get("/").get_data(as_text=True)
    assert client.get("/api/v1/health").get_json()["camera"] is True
    response = client.post("/api/v1/camera/classify", data={"heatmap": "true"})
    check_openapi(response, "/api/v1/camera/classify", "post")
    body = response.get_json()
    assert body["heatmap"] is not None and state(app).log.get(body["id"])["source"] == "camera"
    assert source.opened and source.closed  # the camera is released between frames
    check_error(client.post("/api/v1/camera/classify"), 503, "camera_error", "/api/v1/camera/classify")


def test_without_a_camera_the_camera_endpoint_is_404(client):
    assert 'id="camera"' not in client.get("/").get_data(as_text=True)
    check_error(client.post("/api/v1/camera/classify"), 404, "camera_unavailable", "/api/v1/camera/classify")


# -- classify: refusals and errors -----------------------------------------------------------

def test_photo_is_refused_as_not_a_chest_xray_and_not_logged(app, client):
    needs_quality_gate()
    error = check_error(upload(client, photo_jpeg(), "xray.jpeg"), 422, "not_chest_xray")
    assert error["reason"] and isinstance(error["details"], dict)
    assert state(app).log.count() == 0


@pytest.mark.parametrize("case, status, code", [
    ("missing_file", 400, "missing_file"),
    ("empty", 400, "empty_file"),
    ("unknown_model", 400, "unknown_model"),
    ("bad_flag", 400, "invalid_parameter"),
    ("truncated", 422, "invalid_image"),
    ("too_small", 422, "image_too_small"),
    ("bomb", 413, "image_too_large"),
    ("url_instead_of_file", 400, "missing_file"),
])
def test_classify_errors_are_json_with_stable_codes(app, client, case, status, code):
    jpeg = real_xrays(1)[0].read_bytes()
    if case == "missing_file":
        response = client.post("/api/v1/classify", data={"model": ""}, content_type="multipart/form-data")
    elif case == "url_instead_of_file":
        # There is no URL input at all: nothing is ever fetched on a client's behalf.
        response = client.post("/api/v1/classify", data={"url": "http://169.254.169.254/latest"},
                               content_type="multipart/form-data")
    elif case == "empty":
        response = upload(client, b"")
    elif case == "unknown_model":
        response = upload(client, jpeg, model="../../etc/passwd")
    elif case == "bad_flag":
        response = upload(client, jpeg, heatmap="maybe")
    elif case == "truncated":
        response = upload(client, jpeg[: len(jpeg) // 3])
    elif case == "too_small":
        response = upload(client, png_bytes(np.full((16, 16), 90, np.uint8)), "x.png")
    else:
        response = upload(client, bomb_png(), "x.png")
    error = check_error(response, status, code)
    if code == "unknown_model":
        assert error["models"] == list(state(app).registry.entries)
    assert state(app).log.count() == 0


def test_upload_over_the_size_limit_is_413(make_app):
    client = make_app(max_upload_bytes=4096).test_client()
    check_error(upload(client, real_xrays(1)[0].read_bytes()), 413, "payload_too_large")


def test_unexpected_errors_give_no_stack_trace(make_app, caplog):
    class Broken:
        has_heatmap = False

        def classify(self, data, heatmap=False):
            raise RuntimeError("secret internals at /srv/models/x.py line 3")

    client = make_app(classifier_factory=lambda entry: Broken()).test_client()
    with caplog.at_level(logging.ERROR, logger="edge_runtime.web"):
        response = upload(client, real_xrays(1)[0].read_bytes())
    error = check_error(response, 500, "internal_error")
    assert "secret" not in response.get_data(as_text=True)
    assert "secret internals" in caplog.text  # the trace is kept for the operator


def test_model_that_cannot_load_is_503(make_app):
    def factory(entry):
        raise ModelError(f"{entry.model_path}: sha256 mismatch")

    client = make_app(classifier_factory=factory).test_client()
    error = check_error(upload(client, real_xrays(1)[0].read_bytes()), 503, "model_error")
    assert "/" not in error["message"]  # no server paths


def test_log_failure_still_returns_the_result_with_a_warning(app, client):
    class FullDisk:
        def record(self, *args, **kwargs):
            raise OSError("No space left on device")

    real_log = state(app).log
    state(app).log = FullDisk()
    try:
        response = upload(client, real_xrays(1)[0].read_bytes())
    finally:
        state(app).log = real_log
    check_openapi(response, "/api/v1/classify", "post")
    body = response.get_json()
    assert body["id"] is None and body["report_url"] is None and "screening log" in body["warnings"][0]


def test_no_patient_data_in_server_logs(client, caplog):
    with caplog.at_level(logging.DEBUG):
        upload(client, real_xrays(1)[0].read_bytes(), "Jane_Doe_1984-02-03_MRN12345.jpeg", heatmap="true")
        upload(client, png_bytes(np.full((16, 16), 9, np.uint8)), "John_Roe_MRN999.png")
    assert caplog.records, "expected the server to log something"
    for secret in ("Jane", "Doe", "MRN", "John", "Roe"):
        assert secret not in caplog.text


# -- history ---------------------------------------------------------------------------------

@pytest.fixture()
def screened(app, client):
    bodies = [upload(client, path.read_bytes()).get_json() for path in real_xrays(2)]
    assert all(body["id"] for body in bodies)
    return bodies


def test_history_api_lists_filters_and_limits(client, screened):
    response = client.get("/api/v1/history")
    check_openapi(response, "/api/v1/history")
    body = response.get_json()
    assert body["total"] == 4 and [r["id"] for r in body["items"]] == sorted((b["id"] for b in screened), reverse=True)
    label = screened[0]["label"]
    filtered = client.get(f"/api/v1/history?label={label}").get_json()["items"]
    assert filtered and all(row["label"] == label for row in filtered)
    assert len(client.get("/api/v1/history?limit=1").get_json()["items"]) == 1
    for bad in ("limit=0", "limit=abc", "limit=100000", "label=%3Cscript%3E"):
        check_error(client.get(f"/api/v1/history?{bad}"), 400, "invalid_parameter", "/api/v1/history", "get")
    one = client.get(f"/api/v1/history/{screened[0]['id']}")
    check_openapi(one, "/api/v1/history/{row_id}")
    assert one.get_json()["label"] == screened[0]["label"]
    assert "heatmap_path" not in one.get_json() and "source" not in one.get_json()
    for path in ("/api/v1/history/9999", "/api/v1/history/9999/thumbnail.jpg", "/api/v1/history/9999/report.png"):
        check_error(client.get(path), 404, "not_found", path.replace("9999", "{row_id}"), "get")


def test_history_csv_export(client, screened):
    response = client.get("/api/v1/history/export.csv")
    check_openapi(response, "/api/v1/history/export.csv")
    assert "attachment" in response.headers["Content-Disposition"]
    text = response.get_data(as_text=True)
    assert len(text.strip().splitlines()) == 1 + len(screened)
    label = screened[0]["label"]
    only = client.get(f"/api/v1/history/export.csv?label={label}").get_data(as_text=True)
    expected = sum(1 for body in screened if body["label"] == label)
    assert len(only.strip().splitlines()) == 1 + expected


def test_history_page_has_thumbnails_filter_and_export(client, screened, log_path):
    page = client.get("/history").get_data(as_text=True)
    for body in screened:
        assert f'src="/api/v1/history/{body["id"]}/thumbnail.jpg"' in page
        assert f'href="/api/v1/history/{body["id"]}/report.png"' in page
    assert 'id="export-csv"' in page and '<select id="label" name="label">' in page
    label = screened[0]["label"]
    filtered = client.get(f"/history?label={label}").get_data(as_text=True)
    assert filtered.count('class="card history-item"') == sum(1 for b in screened if b["label"] == label)
    images = images_dir_for(log_path)
    assert images.is_dir() and len(list(images.rglob("*.thumb.jpg"))) == len(screened)


# -- pages: offline, small screen, notice ----------------------------------------------------

def test_pages_are_self_contained_and_show_the_notice(client):
    for path in ("/", "/history", "/no-such-page"):
        html = client.get(path).get_data(as_text=True)
        assert "Not a medical device" in html
        assert "http://" not in html and "https://" not in html
        assert not re.search(r'(?:src|href|action)="(?!/[^/]|#)', html), "a link leaves this server"
        assert '<meta name="viewport"' in html
        for script in html.split("<script")[1:]:
            assert script.lstrip().startswith('src="/static/'), "inline script found"
        assert " style=" not in html and "<style" not in html
    for asset in (WEB_DIR / "static").iterdir():
        text = asset.read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text and "@import" not in text
        assert client.get(f"/static/{asset.name}").status_code == 200


def test_index_offers_every_model_and_the_upload_controls(client):
    html = client.get("/").get_data(as_text=True)
    for model in client.get("/api/v1/models").get_json()["models"]:
        assert f'value="{model["name"]}"' in html
    assert 'id="drop-zone"' in html and 'type="file"' in html and 'id="opacity"' in html


# -- safety ----------------------------------------------------------------------------------

def test_security_headers_on_pages_api_and_static(client):
    for path in ("/", "/history", "/api/v1/health", "/static/app.js", "/api/v1/history/1"):
        headers = client.get(path).headers
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "no-referrer"
    assert client.get("/api/v1/history").headers["Cache-Control"] == "no-store"


def test_token_is_required_when_set(make_app):
    client = make_app(token=TOKEN).test_client()
    response = client.get("/api/v1/health")
    check_error(response, 401, "unauthorized", "/api/v1/health", "get")
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert client.get("/api/v1/health", headers={"Authorization": "Bearer wrong-token-value"}).status_code == 401
    page = client.get("/")
    assert page.status_code == 401 and "Basic" in page.headers["WWW-Authenticate"]
    assert client.get("/api/v1/health", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    basic = base64.b64encode(f"nurse:{TOKEN}".encode()).decode()
    assert client.get("/", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    assert client.get("/", headers={"Authorization": "Basic !!!"}).status_code == 401


def test_other_interfaces_require_a_token(web_models, log_path):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20")
    with pytest.raises(ValueError, match="token is required"):
        create_server("0.0.0.0", 0, web_models, None, log_path=log_path)
    with pytest.raises(ValueError, match="too short"):
        WebConfig(models=web_models, token="short")


def test_dns_rebinding_and_cross_site_posts_are_refused(client, make_app):
    check_error(client.get("/api/v1/health", headers={"Host": "evil.example:8080"}), 403, "forbidden_host",
                "/api/v1/health", "get")
    jpeg = real_xrays(1)[0].read_bytes()
    form = {"file": (io.BytesIO(jpeg), "a.jpeg")}
    response = client.post("/api/v1/classify", data=form, headers={"Origin": "http://evil.example"})
    check_error(response, 403, "cross_origin")
    form = {"file": (io.BytesIO(jpeg), "a.jpeg")}
    assert client.post("/api/v1/classify", data=form, headers={"Origin": "http://localhost"}).status_code == 200
    with_token = make_app(token=TOKEN).test_client()
    headers = {"Host": "clinic-pi.local:8080", "Authorization": f"Bearer {TOKEN}"}
    assert with_token.get("/api/v1/health", headers=headers).status_code == 200


def test_unknown_api_paths_and_methods_are_json(client):
    check = client.get("/api/v1/nothing")
    assert check.status_code == 404 and check.get_json()["error"]["code"] == "not_found"
    wrong = client.get("/api/v1/classify")
    assert wrong.status_code == 405 and wrong.get_json()["error"]["code"] == "method_not_allowed"


# -- issue 10: hardening ---------------------------------------------------------------------

def test_ids_beyond_sqlite_integers_are_404_not_500(client):
    huge = "99999999999999999999999"
    for path in (f"/api/v1/history/{huge}", f"/api/v1/history/{huge}/thumbnail.jpg",
                 f"/api/v1/history/{huge}/report.png"):
        check_error(client.get(path), 404, "not_found", path.replace(huge, "{row_id}"), "get")


def test_origin_null_is_refused_like_any_other_site(client):
    form = {"file": (io.BytesIO(real_xrays(1)[0].read_bytes()), "a.jpeg")}
    check_error(client.post("/api/v1/classify", data=form, headers={"Origin": "null"}), 403, "cross_origin")


@pytest.mark.parametrize("shape", ["100 fields", "3 MB text field"])
def test_a_large_form_is_not_reported_as_a_large_upload(client, shape):
    jpeg = real_xrays(1)[0].read_bytes()
    form = {"file": (io.BytesIO(jpeg), "a.jpeg")}
    if shape == "100 fields":
        form.update({f"field{i}": "x" for i in range(100)})
    else:
        form["notes"] = "x" * (3 * 1024 * 1024)
    response = client.post("/api/v1/classify", data=form, content_type="multipart/form-data")
    error = check_error(response, 413, "form_too_large")
    assert "32 MB" not in error["message"] and "fields" in error["message"]


def test_csv_export_has_no_server_paths(client, screened):
    text = client.get("/api/v1/history/export.csv").get_data(as_text=True)
    assert "heatmap_path" not in text and "/" not in text.replace("/api/", "")


@pytest.mark.parametrize("token", ["            ", "\t\n  \t\n  \t\n", " correct-horse-battery "])
def test_whitespace_tokens_are_refused(web_models, token):
    with pytest.raises(ValueError, match="whitespace"):
        WebConfig(models=web_models, token=token)


def test_serve_reads_the_token_from_a_file_or_the_environment(tmp_path, monkeypatch, web_models):
    from edge_runtime import cli

    calls = []
    monkeypatch.setattr(edge_runtime.web, "serve", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setenv("CXR_MODELS", str(web_models))
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n", encoding="utf-8")
    secret.chmod(0o600)
    base = ["serve", "--port", "0", "--log", str(tmp_path / "s.db")]
    assert cli.main(base + ["--token-file", str(secret)]) == 0 and calls[-1]["token"] == TOKEN
    monkeypatch.setenv("CXR_TOKEN", TOKEN)
    assert cli.main(base) == 0 and calls[-1]["token"] == TOKEN
    assert cli.main(base + ["--token-file", str(tmp_path / "missing")]) == 2


def _raw_request(port: int, head: bytes) -> tuple[int, dict, bytes]:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    header, _, body = data.partition(b"\r\n\r\n")
    lines = header.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_bodies_over_the_servers_limit_get_the_json_413_with_security_headers(web_models, log_path):
    server = create_server("127.0.0.1", 0, web_models, None, log_path=log_path, max_upload_bytes=64 * 1024,
                           preload=False).start()
    try:
        head = (b"POST /api/v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                b"boundary=x\r\nContent-Length: 50000000\r\n\r\n")
        status, headers, body = _raw_request(server.port, head)
    finally:
        server.close()
    assert status == 413 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    assert "0.0625 MB" in json.loads(body)["error"]["message"]
    assert headers["X-Content-Type-Options"] == "nosniff" and "frame-ancestors" in headers["Content-Security-Policy"]


_CONCURRENT_SCRIPT = r"""
import io, json, sys, threading, time, urllib.request
sys.path.insert(0, sys.argv[3])
import corpus
from edge_runtime.web import create_server

server = create_server("127.0.0.1", 0, sys.argv[1], None, log_path=sys.argv[2]).start()
def post(data, name):
    boundary = "cxrboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(server.url + "/api/v1/classify", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
huge = corpus.flat_png(8000, 7999)  # 62 KB, 64 MB once decoded
normal = open(sys.argv[4], "rb").read()
statuses, finished = [], []
def post_huge():
    statuses.append(post(huge, "huge.png"))
    finished.append(time.perf_counter())
threads = [threading.Thread(target=post_huge) for _ in range(4)]
for thread in threads:
    thread.start()
time.sleep(0.2)
started = time.perf_counter()
normal_status = post(normal, "normal.jpeg")
normal_done = time.perf_counter()
normal_s = normal_done - started
for thread in threads:
    thread.join()
server.close()
# VmHWM, not ru_maxrss: this process's own high-water mark (ru_maxrss would start from the RSS of
# the test process it was forked from, gigabytes where TensorFlow is imported).
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"statuses": statuses, "normal": normal_status, "normal_s": normal_s,
                  "normal_before_last_huge": normal_done < max(finished), "peak_rss": hwm * 1024}))
"""


@pytest.mark.slow
def test_four_huge_uploads_keep_the_server_bounded_and_a_normal_request_answers(web_models, tmp_path):
    import subprocess
    import sys

    tests_dir = Path(__file__).resolve().parent
    proc = subprocess.run([sys.executable, "-c", _CONCURRENT_SCRIPT, str(web_models), str(tmp_path / "l.db"),
                           str(tests_dir), str(real_xrays(1)[0])], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["statuses"] == [422] * 4 and result["normal"] == 200
    assert result["peak_rss"] <= 600 * 1024 * 1024, f"peak RSS {result['peak_rss'] / 2**20:.0f} MB"
    # It does not queue behind the four (timing on a loaded CI machine varies, the order does not).
    assert result["normal_before_last_huge"] and result["normal_s"] < 60
