"""The nurse's workflow in the real browser (Debian's chromium) against the real waitress server and the shipped
models: plain words first, the patient reference, the PDF download, history paging and the language switch."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from conftest import ASSETS, REPO_ROOT, SHARED_DATA
from edge_runtime.log import ScreeningLog
from runtime_models import make_result
from test_web_browser import CHROMIUM, CHROMIUM_ARGS, Watched

XRAY_DIR = SHARED_DATA / "chest_xray" / "train"
FULLRES = SHARED_DATA / "fullres_sample"
ARTIFACTS = REPO_ROOT / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"),
    pytest.mark.skipif(not FULLRES.is_dir(), reason=f"real X-rays not found at {FULLRES}"),
]
pypdf = pytest.importorskip("pypdf")
pytest.importorskip("fpdf")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from edge_runtime.web import create_server

    log_path = tmp_path_factory.mktemp("clinic browser") / "screenings.db"
    with ScreeningLog(log_path) as log:  # 60 older rows logged by the CLI (no image kept): two pages and more
        for index in range(60):
            log.record(make_result(image_sha256=f"{index:064x}", label="NORMAL", score=0.1,
                                   model_name="cxr_binary_160"), source="file")
    web = create_server("127.0.0.1", 0, ASSETS, log_path=log_path, threads=2, patient_reference=True,
                        camera=None).start()
    yield web
    web.close()


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _page(browser, server, locale: str = "en-GB"):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True, locale=locale)
    return context, Watched(context, server.url)


def _film(cls: str) -> Path:
    return sorted((FULLRES / cls).glob("*.jpeg"))[0]


def _download_pdf_text(page, name: str) -> str:
    """Click the PDF button, keep the file in test-artifacts/, return its text on one line."""
    ARTIFACTS.mkdir(exist_ok=True)
    with page.expect_download() as info:
        page.click("#download-pdf")
    saved = ARTIFACTS / name
    info.value.save_as(str(saved))
    text = " ".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(saved.read_bytes())).pages)
    return text.replace("\n", " ")


def test_plain_result_reference_and_pdf_download(browser, server):
    from playwright.sync_api import expect

    context, watched = _page(browser, server)
    page = watched.page
    try:
        page.goto(server.url + "/")
        page.fill("#reference", "CLINIC-2024-0042")
        page.set_input_files("#file", str(_film("PNEUMONIA")))
        page.click("#submit")
        expect(page.locator("#result")).to_be_visible(timeout=30_000)
        plain = page.locator("#result-plain")
        expect(plain).to_have_text(re.compile(r"^(Signs of pneumonia: refer to a clinician|No sign of pneumonia found)$"))
        # Plain words first; the score, threshold and rule one click away.
        expect(page.locator("#result-threshold")).to_be_hidden()
        page.click("#result-details summary")
        expect(page.locator("#result-threshold")).to_be_visible()
        expect(page.locator("#result-threshold")).to_contain_text("threshold")
        expect(page.locator("#result-reference")).to_have_text("CLINIC-2024-0042")
        expect(page.locator("#result-population")).to_contain_text("Guangzhou")
        ARTIFACTS.mkdir(exist_ok=True)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(ARTIFACTS / "web-clinic-result.png"), full_page=True)
        text = _download_pdf_text(page, "web-clinic-report.pdf")
        assert plain.inner_text() in text and "CLINIC-2024-0042" in text and "Not a medical device" in text
        assert "Guangzhou" in text
        row_id = int(page.locator("#result-id").inner_text())
        row = server.app.extensions["cxr_edge"].log.get(row_id)
        assert row["patient_id"] == "CLINIC-2024-0042" and row["model_sha256"][:32] in text
        assert watched.problems == []
    finally:
        context.close()


def test_normal_result_hides_the_heatmap_until_asked(browser, server):
    from playwright.sync_api import expect

    context, watched = _page(browser, server)
    page = watched.page
    try:
        negative = False
        for path in sorted((XRAY_DIR / "NORMAL").glob("*.jpeg"))[:6]:
            page.goto(server.url + "/")
            page.set_input_files("#file", str(path))
            page.click("#submit")
            expect(page.locator("#result")).to_be_visible(timeout=30_000)
            if page.locator("#result-plain").inner_text() == "No sign of pneumonia found":
                negative = True
                break
        if not negative:
            pytest.skip("the model called none of these normal films negative")
        expect(page.locator("#overlay-figure")).to_be_hidden()
        page.click("#show-heatmap")
        expect(page.locator("#overlay-figure")).to_be_visible()
        expect(page.locator("#overlay-caption")).to_have_text('What drove "no sign found" (not a finding)')
        expect(page.locator("#heatmap-note")).to_contain_text("It is not a finding")
        page.click("#show-heatmap")
        expect(page.locator("#overlay-figure")).to_be_hidden()
        assert watched.problems == []
    finally:
        context.close()


def test_history_paging_reference_search_and_placeholders(browser, server):
    from playwright.sync_api import expect

    context, watched = _page(browser, server)
    page = watched.page
    try:
        page.goto(server.url + "/history")
        expect(page.locator(".history-item")).to_have_count(50)
        total = server.app.extensions["cxr_edge"].log.count()
        page.click("#older")
        expect(page).to_have_url(re.compile(r"page=2"))
        expect(page.locator(".history-item")).to_have_count(total - 50)
        expect(page.locator(".thumb-placeholder").first).to_have_text("No image kept")
        assert "UTC" not in page.locator(".history-item time").first.inner_text() or \
            page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone") == "UTC"
        expect(page.locator(".history-item").first).to_contain_text("Pneumonia screening (normal / pneumonia)")
        page.click("#newer")
        expect(page.locator(".history-item")).to_have_count(50)
        page.fill("#reference-search", "clinic-2024")
        page.click("form.filter button")
        expect(page.locator(".history-item")).to_have_count(1)
        expect(page.locator(".history-item .reference")).to_contain_text("CLINIC-2024-0042")
        page.wait_for_load_state("networkidle")
        assert page.eval_on_selector_all(".history-item img", "imgs => imgs.every(i => i.complete && i.naturalWidth > 0)")
        assert watched.problems == []
    finally:
        context.close()


def test_language_from_the_browser_and_the_switch(browser, server):
    from playwright.sync_api import expect

    context, watched = _page(browser, server, locale="fr-FR")
    page = watched.page
    try:
        page.goto(server.url + "/")
        expect(page.locator("html")).to_have_attribute("lang", "fr")
        expect(page.locator("#upload-title")).to_have_text("Dépister une radiographie thoracique")
        expect(page.locator("#notice")).to_contain_text("pas un dispositif médical")
        page.set_input_files("#file", str(_film("PNEUMONIA")))
        page.click("#submit")
        expect(page.locator("#result")).to_be_visible(timeout=30_000)
        expect(page.locator("#result-plain")).to_have_text(
            re.compile(r"^(Signes de pneumonie : orienter vers un clinicien|Aucun signe de pneumonie trouvé)$"))
        ARTIFACTS.mkdir(exist_ok=True)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(ARTIFACTS / "web-clinic-result-fr.png"), full_page=True)
        page.click("#lang-en")
        expect(page.locator("html")).to_have_attribute("lang", "en")
        expect(page.locator("#upload-title")).to_have_text("Screen a chest X-ray")
        page.click("#nav-history")
        expect(page.locator("h1")).to_have_text("Recent screenings")  # the choice is remembered
        page.click("#lang-fr")
        expect(page.locator("h1")).to_have_text("Dépistages récents")
        expect(page).to_have_url(re.compile(r"/history\?lang=fr$"))
        assert watched.problems == []
    finally:
        context.close()


def _etiology_checks_population() -> bool:
    import json

    spec = ASSETS / "cxr_etiology_160.spec.json"
    return spec.is_file() and bool(json.loads(spec.read_text(encoding="utf-8")).get("population_check"))


@pytest.mark.skipif(not (SHARED_DATA / "covid19" / "COVID19").is_dir(), reason="adult films not found")
def test_an_adult_film_on_the_children_only_model_carries_the_notice_to_page_and_pdf(browser, server):
    """The etiology model is children-only: an adult's film (a source its check never saw) gets the notice on
    the page and in the PDF; a child's film does not."""
    from playwright.sync_api import expect

    if not _etiology_checks_population():
        pytest.skip("the shipped etiology spec carries no population_check")
    adult = sorted((SHARED_DATA / "covid19" / "COVID19").glob("*"))[0]
    context, watched = _page(browser, server)
    page = watched.page
    try:
        page.goto(server.url + "/")
        page.select_option("#model", "cxr_etiology_160")
        page.set_input_files("#file", str(adult))
        page.click("#submit")
        expect(page.locator("#result")).to_be_visible(timeout=30_000)
        warning = page.locator("#population-warning")
        expect(warning).to_be_visible()
        expect(warning).to_contain_text("adults")
        expect(warning).to_contain_text("children only")
        expect(page.locator("#warnings")).to_be_hidden()  # shown once, not twice
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web-clinic-out-of-population.png"), full_page=True)
        assert "children only" in _download_pdf_text(page, "web-clinic-out-of-population.pdf")
        row = server.app.extensions["cxr_edge"].log.get(int(page.locator("#result-id").inner_text()))
        assert row["population"]["outside"] is True

        page.goto(server.url + "/")
        page.select_option("#model", "cxr_etiology_160")
        page.set_input_files("#file", str(_film("NORMAL")))
        page.click("#submit")
        expect(page.locator("#result")).to_be_visible(timeout=30_000)
        expect(page.locator("#population-warning")).to_be_hidden()
        expect(page.locator("#population-check")).to_contain_text("validated on")
        assert watched.problems == []
    finally:
        context.close()
