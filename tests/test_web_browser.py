"""The clinic page in a real browser (Debian's chromium through Playwright) against the real waitress server."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO_ROOT, SHARED_DATA

CHROMIUM = Path("/usr/bin/chromium")
XRAY_DIR = SHARED_DATA / "chest_xray" / "train"
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium "
                                                     "(apt-get install chromium)"),
    pytest.mark.skipif(not XRAY_DIR.is_dir(), reason=f"real X-rays not found at {XRAY_DIR}"),
]


def _xray() -> Path:
    """A real scan at scanner resolution when available (the real input path), else a training image."""
    fullres = sorted((SHARED_DATA / "fullres_sample" / "PNEUMONIA").glob("*.jpeg"))
    return fullres[0] if fullres else sorted((XRAY_DIR / "PNEUMONIA").glob("*.jpeg"))[0]


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    from edge_runtime.web import create_server

    log_path = tmp_path_factory.mktemp("browser log") / "screenings.sqlite"
    web = create_server("127.0.0.1", 0, tiny_model_dir, log_path=log_path, threads=2).start()
    yield web
    web.close()


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    from skimage import data

    path = tmp_path_factory.mktemp("photo") / "holiday.jpeg"
    Image.fromarray(data.astronaut()).save(path, quality=90)
    return path


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Watched:
    """A page whose console errors, page errors and off-server requests are collected."""

    def __init__(self, context, base_url: str):
        self.page = context.new_page()
        self.problems: list[str] = []
        self.expected: list[str] = []  # console errors a test provokes on purpose

        def console(msg):
            if msg.type == "error" and not any(text in msg.text for text in self.expected):
                self.problems.append(f"console: {msg.text}")

        self.page.on("console", console)
        self.page.on("pageerror", lambda err: self.problems.append(f"page error: {err}"))

        def check(request):
            if not request.url.startswith((base_url + "/", "data:", "blob:")):
                self.problems.append(f"request outside this server: {request.url}")

        self.page.on("request", check)


@pytest.fixture()
def desktop(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    watched = Watched(context, server.url)
    yield watched
    context.close()
    assert watched.problems == []


@pytest.fixture()
def phone(browser, server):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                  is_mobile=True, has_touch=True, accept_downloads=True)
    watched = Watched(context, server.url)
    yield watched
    context.close()
    assert watched.problems == []


def _screen(page, base_url: str, path: Path):
    from playwright.sync_api import expect

    page.goto(base_url + "/")
    expect(page.locator("#notice")).to_be_visible()
    page.set_input_files("#file", str(path))
    expect(page.locator("#file-name")).to_have_text(path.name)
    page.click("#submit")
    expect(page.locator("#result")).to_be_visible(timeout=30_000)


def _loaded(page, selector: str) -> bool:
    return page.eval_on_selector(selector, "img => img.complete && img.naturalWidth > 0")


def test_screen_a_real_xray_see_heatmap_and_download(desktop, server, tmp_path):
    from playwright.sync_api import expect

    page = desktop.page
    _screen(page, server.url, _xray())
    labels = server.app.extensions["cxr_edge"].registry.get(None).spec.labels
    expect(page.locator("#result-label")).to_have_text(re.compile("^(" + "|".join(labels) + ")$"))
    decision = re.compile("^screening (positive: refer to a clinician|negative)$")
    expect(page.locator("#result-decision")).to_have_text(decision)
    expect(page.locator("#result-threshold")).to_contain_text("threshold")
    expect(page.locator("#probabilities .prob")).to_have_count(len(labels))
    if page.locator("#show-heatmap").is_visible():  # a negative result: its heatmap only on request
        page.click("#show-heatmap")
    expect(page.locator("#image-heatmap")).to_be_visible()
    assert _loaded(page, "#image-heatmap") and _loaded(page, "#image-original")
    expect(page.locator("#result-latency")).to_have_text(re.compile(r"^\d+ ms$"))

    page.locator("#opacity").fill("80")
    assert page.eval_on_selector("#image-heatmap", "img => img.style.opacity") == "0.8"
    expect(page.locator("#opacity-value")).to_have_text("80%")

    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header belongs at the top of a full-page shot
    page.screenshot(path=str(ARTIFACTS / "web-desktop-result.png"), full_page=True)
    with page.expect_download() as info:
        page.click("#download")
    saved = ARTIFACTS / "web-result-download.png"
    info.value.save_as(str(saved))
    report = Image.open(saved)
    assert report.format == "PNG" and report.size == (1240, 1754)
    row_id = int(page.locator("#result-id").inner_text())
    assert server.app.extensions["cxr_edge"].log.get(row_id) is not None


def test_a_photo_is_refused_clearly(desktop, server, photo):
    from playwright.sync_api import expect

    pytest.importorskip("edge_runtime.quality", reason="the chest X-ray quality gate is not available")
    page = desktop.page
    desktop.expected.append("status of 422")  # the refusal itself
    page.goto(server.url + "/")
    page.set_input_files("#file", str(photo))
    page.click("#submit")
    expect(page.locator("#error")).to_be_visible(timeout=30_000)
    expect(page.locator("#error-title")).to_have_text("Refused: this does not look like a chest X-ray")
    expect(page.locator("#error-message")).to_contain_text("not_chest_xray")
    expect(page.locator("#result")).to_be_hidden()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-desktop-refusal.png"), full_page=True)


def test_drag_and_drop_upload(desktop, server):
    from playwright.sync_api import expect

    page = desktop.page
    page.goto(server.url + "/")
    path = sorted((XRAY_DIR / "NORMAL").glob("*.jpeg"))[0]
    payload = base64.b64encode(path.read_bytes()).decode("ascii")
    page.eval_on_selector("#drop-zone", """(zone, payload) => {
        const bytes = Uint8Array.from(atob(payload), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "dropped.jpeg", {type: "image/jpeg"}));
        zone.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }""", payload)
    expect(page.locator("#file-name")).to_have_text("dropped.jpeg")
    page.click("#submit")
    expect(page.locator("#result")).to_be_visible(timeout=30_000)
    expect(page.locator("#result-id")).to_have_text(re.compile(r"^\d+$"))


def test_small_screen_layout(phone, server):
    from playwright.sync_api import expect

    page = phone.page
    _screen(page, server.url, _xray())
    # On a phone an overflowing page widens the layout viewport (and zooms out): check against 390 px.
    assert page.evaluate("[window.innerWidth, document.documentElement.scrollWidth]") == [390, 390], \
        "page is wider than the phone"
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    box = page.locator("#notice").bounding_box()
    assert box is not None and 0 <= box["y"] < 844, "notice scrolled out of view"
    expect(page.locator("#download")).to_be_visible()
    page.evaluate("window.scrollTo(0, 0)")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-phone-result.png"), full_page=True)
    page.goto(server.url + "/history")
    expect(page.locator(".history-item").first).to_be_visible()
    assert page.evaluate("[window.innerWidth, document.documentElement.scrollWidth]") == [390, 390]
    page.screenshot(path=str(ARTIFACTS / "web-phone-history.png"), full_page=True)


def test_history_page_thumbnails_filter_and_csv(desktop, server):
    from playwright.sync_api import expect

    page = desktop.page
    _screen(page, server.url, sorted((XRAY_DIR / "NORMAL").glob("*.jpeg"))[1])
    label = page.locator("#result-label").text_content()  # inside the closed details
    page.click("nav >> text=History")
    expect(page.locator(".history-item").first).to_be_visible()
    page.wait_for_load_state("networkidle")
    assert page.eval_on_selector_all(".history-item img",
                                     "imgs => imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0)")
    page.select_option("#label", label)
    page.click("form.filter button")
    expect(page).to_have_url(re.compile(r"label=" + label))
    labels = page.locator(".history-item .label-name").all_inner_texts()
    assert labels and set(labels) == {label}
    with page.expect_download() as info:
        page.click("#export-csv")
    text = Path(info.value.path()).read_text(encoding="utf-8")
    assert len(text.strip().splitlines()) == 1 + len(labels)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-desktop-history.png"), full_page=True)
