"""The clinic workflow in the web app (Flask test client, the shipped models, a real SQLite log): plain words,
population, patient reference, PDF report, history paging and filters, languages."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest

from conftest import ASSETS, SHARED_DATA
from edge_runtime.log import ScreeningLog
from edge_runtime.web import WebConfig, create_app
from runtime_models import make_result
from test_web_api import check_openapi

XRAY_DIR = SHARED_DATA / "chest_xray" / "train"
pytestmark = pytest.mark.skipif(not XRAY_DIR.is_dir(), reason=f"real X-rays not found at {XRAY_DIR}")
pypdf = pytest.importorskip("pypdf")
pytest.importorskip("fpdf")


def xray(cls: str = "PNEUMONIA", index: int = 0) -> bytes:
    return sorted((XRAY_DIR / cls).glob("*.jpeg"))[index].read_bytes()


def upload(client, data: bytes, headers=None, **fields):
    form = {"file": (io.BytesIO(data), "film.jpeg", "image/jpeg"), **{k: str(v) for k, v in fields.items()}}
    return client.post("/api/v1/classify", data=form, content_type="multipart/form-data", headers=headers or {})


def pdf_text(data: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages)


@pytest.fixture()
def make_client(tmp_path):
    apps = []

    def make(**settings):
        settings.setdefault("models", ASSETS)
        settings.setdefault("log_path", tmp_path / "clinic" / "screenings.db")
        settings.setdefault("camera", None)
        app = create_app(WebConfig(**settings))
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        app.extensions["cxr_edge"].close()


def test_plain_words_population_and_pdf_report(make_client):
    client = make_client()
    classified = upload(client, xray("PNEUMONIA"), heatmap="true", preview="true")
    check_openapi(classified, "/api/v1/classify", "post")
    body = classified.get_json()
    assert body["plain"] in ("Signs of pneumonia: refer to a clinician", "No sign of pneumonia found")
    assert body["plain"].startswith("Signs") == body["positive"]
    assert "Guangzhou" in body["population"] and body["reference"] is None
    listed = client.get("/api/v1/models")
    check_openapi(listed, "/api/v1/models")
    assert all(model["population"] for model in listed.get_json()["models"])
    check_openapi(client.get(f"/api/v1/history/{body['id']}"), "/api/v1/history/{row_id}")
    response = client.get(body["report_pdf_url"])
    check_openapi(response, "/api/v1/history/{row_id}/report.pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert "attachment" in response.headers["Content-Disposition"]
    text = pdf_text(response.data)
    for expected in (body["plain"], "Not a medical device", body["model_sha256"][:32], "Guangzhou",
                     "Validated on", "Pneumonia screening"):
        assert expected in text.replace("\n", " "), expected


def test_normal_heatmap_only_on_request_in_reports(make_client, tmp_path):
    client = make_client()
    log = client.application.extensions["cxr_edge"].log
    negative = None
    for index in range(6):  # the first NORMAL training films the model calls negative
        body = upload(client, xray("NORMAL", index)).get_json()
        if not body["positive"]:
            negative = body
            break
    if negative is None:
        pytest.skip("the model called none of these normal films negative")
    assert log.get(negative["id"])["heatmap_path"]  # the heatmap is kept ...
    plain = pdf_text(client.get(negative["report_pdf_url"]).data)
    assert "not a finding" not in plain and "No sign of pneumonia found" in plain  # ... but not printed
    asked = pdf_text(client.get(negative["report_pdf_url"] + "?heatmap=true").data)
    assert "not a finding" in asked  # labelled as what drove "no sign found"
    small = client.get(negative["report_url"]).data
    bigger = client.get(negative["report_url"] + "?heatmap=true").data
    assert small != bigger


def test_patient_reference_only_when_enabled(make_client, caplog):
    client = make_client()
    response = upload(client, xray(), reference="CLINIC-2024-0042")
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "references_disabled"
    assert client.application.extensions["cxr_edge"].log.count() == 0
    assert 'id="reference"' not in client.get("/").get_data(as_text=True)

    client = make_client(patient_reference=True, log_path=Path(str(client.application.extensions["cxr_edge"]
                                                                   .log.path) + "-refs.db"))
    assert 'id="reference"' in client.get("/").get_data(as_text=True)
    with caplog.at_level(logging.DEBUG):
        body = upload(client, xray(), reference="CLINIC-2024-0042").get_json()
        upload(client, xray(index=1), reference="OTHER-7")
        history = client.get("/api/v1/history?reference=clinic-2024").get_json()
        csv_text = client.get("/api/v1/history/export.csv").get_data(as_text=True)
        page = client.get("/history?reference=0042").get_data(as_text=True)
        pdf = pdf_text(client.get(body["report_pdf_url"]).data)
    assert body["reference"] == "CLINIC-2024-0042"
    assert [row["reference"] for row in history["items"]] == ["CLINIC-2024-0042"] and history["matching"] == 1
    assert "patient_id" in csv_text.splitlines()[0] and "CLINIC-2024-0042" in csv_text and "OTHER-7" in csv_text
    assert "CLINIC-2024-0042" in page and "OTHER-7" not in page
    assert "CLINIC-2024-0042" in pdf
    assert "CLINIC" not in caplog.text and "OTHER-7" not in caplog.text  # never in the server's log
    check_openapi(client.get("/api/v1/history?reference=clinic-2024"), "/api/v1/history")
    bad = upload(client, xray(), reference="<script>")
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid_parameter"


def test_history_paging_local_time_titles_label_any_case_and_placeholder(make_client, tmp_path, monkeypatch):
    log_path = tmp_path / "many.db"
    with ScreeningLog(log_path) as log:  # rows logged by the CLI: no images kept for them
        for index in range(120):
            log.record(make_result(image_sha256=f"{index:064x}", label="NORMAL" if index % 3 else "PNEUMONIA",
                                   score=0.2 if index % 3 else 0.9, model_name="cxr_binary_160"), source="file")
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    import time

    time.tzset()
    try:
        client = make_client(log_path=log_path)
        first = client.get("/history").get_data(as_text=True)
        third = client.get("/history?page=3").get_data(as_text=True)
        api_response = client.get("/api/v1/history?offset=100&limit=50&label=normal")
        check_openapi(api_response, "/api/v1/history")
        api_page = client.get("/api/v1/history?offset=100&limit=50").get_json()
        filtered = client.get("/history?label=pneumonia").get_data(as_text=True)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert first.count('class="card history-item"') == 50 and 'id="older"' in first and 'id="newer"' not in first
    assert third.count('class="card history-item"') == 20 and 'id="older"' not in third and 'id="newer"' in third
    assert "Screenings 101 to 120 of 120" in third
    assert [row["id"] for row in api_page["items"]] == list(range(20, 0, -1)) and api_page["matching"] == 120
    assert "IST" in first and "UTC" not in first  # the device's time zone
    assert "Pneumonia screening (normal / pneumonia)" in first and "cxr_binary_160 ·" not in first
    assert 'class="thumb-placeholder"' in first and "thumbnail.jpg" not in first
    assert filtered.count('class="card history-item"') == 40
    assert set(re.findall(r'class="label-name">(\w+)<', filtered)) == {"PNEUMONIA"}
    assert '<option value="PNEUMONIA" selected>' in filtered


def test_french_page_from_the_browser_language_and_the_switch(make_client):
    client = make_client()
    english = client.get("/").get_data(as_text=True)
    assert '<html lang="en">' in english and "Screen a chest X-ray" in english
    french = client.get("/", headers={"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5"}).get_data(as_text=True)
    assert '<html lang="fr">' in french and "Dépister une radiographie thoracique" in french
    assert "Ceci n'est pas un dispositif médical" in french or "Ceci n&#39;est pas un dispositif médical" in french
    strings = json.loads(re.search(r'data-strings="([^"]*)"', french).group(1).replace("&#34;", '"')
                         .replace("&#39;", "'").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    assert strings["status.screening"] == "Analyse en cours..."
    switched = client.get("/history?lang=fr")
    assert "cxr_lang=fr" in switched.headers.get("Set-Cookie", "")
    assert "Dépistages récents" in switched.get_data(as_text=True)
    assert "Dépistages récents" in client.get("/history").get_data(as_text=True)  # remembered
    assert "Recent screenings" in client.get("/history?lang=en").get_data(as_text=True)
    fresh = client.application.test_client()  # no language cookie: the browser's language decides
    body = upload(fresh, xray(), headers={"Accept-Language": "fr"}).get_json()
    assert body["plain"] in ("Signes de pneumonie : orienter vers un clinicien", "Aucun signe de pneumonie trouvé")
    text = pdf_text(fresh.get(body["report_pdf_url"] + "?lang=fr").data)
    assert "Validé sur" in text and "dispositif médical" in text  # accents survive the PDF's built-in fonts


def test_every_catalog_has_every_key():
    from edge_runtime.i18n import catalog, languages

    assert languages()[0] == "en" and "fr" in languages()
    reference = set(catalog("en"))
    for code in languages():
        assert set(catalog(code)) == reference, code


def test_population_from_the_spec_field_when_present(tmp_path):
    from edge_runtime.i18n import population_text
    from edge_runtime.spec import ModelSpec

    spec_path = ASSETS / "cxr_binary_160.spec.json"
    spec = ModelSpec.load(spec_path)
    assert "Guangzhou" in population_text(spec, spec_path)
    data = json.loads(spec_path.read_text(encoding="utf-8"))
    data["populations"] = ["Children aged 1-5, Guangzhou (Kermany 2018)", "Adults, site B (external test)"]
    custom = tmp_path / "custom.spec.json"
    custom.write_text(json.dumps(data), encoding="utf-8")
    assert population_text(ModelSpec.load(custom), custom) == \
        "Children aged 1-5, Guangzhou (Kermany 2018); Adults, site B (external test)"
    data["populations"] = {"validated": "Adults in Lagos"}
    custom.write_text(json.dumps(data), encoding="utf-8")
    assert population_text(spec, custom) == "Adults in Lagos"


def test_a_row_without_a_proper_digest_gets_the_placeholder(make_client, tmp_path):
    log_path = tmp_path / "odd.db"
    with ScreeningLog(log_path) as log:
        log.record(make_result(image_sha256="not-a-digest", model_name="cxr_etiology_160"), source="file")
    client = make_client(log_path=log_path)
    page = client.get("/history")
    assert page.status_code == 200 and 'class="thumb-placeholder"' in page.get_data(as_text=True)
    assert "Pneumonia type (normal / bacterial / viral)" in page.get_data(as_text=True)
    assert client.get("/api/v1/history").get_json()["items"][0]["has_thumbnail"] is False


def test_bare_population_codes_show_the_task_sentence():
    from edge_runtime.i18n import population_text
    from edge_runtime.spec import ModelSpec

    spec = ModelSpec(name="cxr_binary_160", task="binary", labels=("NORMAL", "PNEUMONIA"),
                     populations=("adults", "children"))
    assert "Guangzhou" in population_text(spec) and "adults; children" not in population_text(spec)
    assert "Canton" in population_text(spec, language="fr")
    assert population_text(spec.replace(populations=("Adults in Lagos",))) == "Adults in Lagos"


def test_a_new_task_with_population_codes_names_them():
    from edge_runtime.i18n import population_text
    from edge_runtime.spec import ModelSpec

    spec = ModelSpec(name="cxr_tb_160", task="tb", labels=("NORMAL", "TB"), populations=("adults",))
    assert population_text(spec) == "adults" and population_text(spec, language="fr") == "adultes"
    assert "Not stated" in population_text(spec.replace(populations=()))
