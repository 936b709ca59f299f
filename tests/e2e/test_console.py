"""The web console (/ui) in real headless Chromium against the real services: a wrong key, a folder uploaded and
followed live to 100 %, word boxes where the API puts them, search and a hit opened, the batch list.

Screenshots of each page go to artifacts/console/ (git-ignored) for the README and for reviewers.
"""
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from demo.processes import isolated_env, running_services
from demo.sample_batch import SampleFile, render_sample_batch
from tests.helpers import distinctive_phrase

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "console"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
KEY = "dev-key"  # the services' default API key (tenant "default")


def chromium(lang: str = "en-US") -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1000",
                 f"--lang={lang}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"intl.accept_languages": lang})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def stack(stack_endpoints, tmp_path_factory) -> Iterator[dict]:
    """The four services on this module's own topics, bucket and schema, and a folder of sample scans."""
    root = tmp_path_factory.mktemp("console")
    samples = render_sample_batch(root / "rendered", images=4, pdf_pages=2, seed=21)
    folder = root / "scans"
    for index, sample in enumerate(samples):  # a nested folder, as users keep scans
        target = folder / ("invoices" if index % 2 else "") / sample.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample.path, target)
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # hidden files are left out by the console
    env = isolated_env(stack_endpoints, uuid.uuid4().hex[:10])
    with running_services(env, root / "logs") as services:
        yield {"status": services["status_api"].probe_url, "folder": folder, "samples": samples}


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, timeout: float = 30, what: str = "the page"):
    """Until condition(driver) is truthy; elements re-drawn meanwhile (stale) are looked up again."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=(
            NoSuchElementException, StaleElementReferenceException)).until(condition, f"timed out waiting for {what}")
    except WebDriverException:
        shot(driver, "failure")
        raise


def shot(driver, name: str) -> None:
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def api(stack: dict, path: str, **params) -> dict:
    response = httpx.get(stack["status"] + path, params=params, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    response.raise_for_status()
    return response.json()


def sign_in(driver, key: str) -> None:
    field = wait(driver, lambda d: d.find_element(By.ID, "api-key"), what="the key form")
    field.clear()
    field.send_keys(key, Keys.ENTER)


def test_the_console_end_to_end(stack, browser):
    # 1. A wrong key is refused with a clear message, and nothing else is shown.
    browser.get(stack["status"] + "/ui/")
    sign_in(browser, "not-a-key")
    error = wait(browser, lambda d: (e := d.find_element(By.ID, "key-error")).text.startswith("This API key") and e,
                 what="the wrong-key message")
    assert "not accepted (401: unknown API key)" in error.text
    shot(browser, "01-wrong-key")
    sign_in(browser, KEY)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "main h1") and
         d.find_element(By.CSS_SELECTOR, "main h1").text == "My batches", what="the batch list")

    # 2. Upload a folder (the folder picker; its nested files keep their paths); the batch page opens on the 202.
    browser.get(stack["status"] + "/ui/upload")
    picker = wait(browser, lambda d: d.find_element(By.ID, "pick-folder"), what="the upload page")
    picker.send_keys(str(stack["folder"]))
    wait(browser, lambda d: d.find_element(By.ID, "selection").text.startswith("5 files selected"),
         what="the selection summary")
    assert "1 hidden files skipped" in browser.find_element(By.ID, "selection").text
    assert browser.find_element(By.ID, "batch-name").get_attribute("value") == "scans"
    shot(browser, "02-upload")
    browser.find_element(By.ID, "upload").click()
    wait(browser, lambda d: "/ui/batches/" in d.current_url, what="the batch page after the 202")
    batch_id = browser.current_url.rsplit("/", 1)[1]

    # 3. Live progress to 100 % without a reload, the bar never going backwards.
    browser.execute_script("""
        window.__sameDocument = true;
        window.__percents = [];
        new MutationObserver(() => {
          const bar = document.querySelector('[role=progressbar]');
          if (bar) window.__percents.push(parseFloat(bar.getAttribute('aria-valuenow')));
        }).observe(document.getElementById('main'), {subtree: true, attributes: true, attributeFilter: ['aria-valuenow']});
    """)
    wait(browser, lambda d: d.find_element(By.ID, "batch-percent").text == "100.0 %", timeout=300,
         what="the progress bar to reach 100 %")
    assert browser.execute_script("return window.__sameDocument") is True, "the page was reloaded"
    percents = browser.execute_script("return window.__percents")
    assert percents and percents == sorted(percents) and percents[-1] == 100, percents
    rows = wait(browser, lambda d: len(r := d.find_elements(By.CSS_SELECTOR, "#files-table tbody tr")) == 5 and r,
                what="the five files in the table")
    assert {r.find_element(By.CSS_SELECTOR, ".badge").text for r in rows} == {"ok"}
    assert browser.find_element(By.ID, "n-succeeded").text == "5"
    shot(browser, "03-batch")

    # 4. Each file page draws the words' boxes where the API says they are (an image, then a PDF's page 2).
    files = {f["original_name"]: f for f in api(stack, f"/v1/batches/{batch_id}/files")["data"]}
    image_name = next(n for n in files if n.endswith(".png"))
    browser.find_element(By.LINK_TEXT, image_name).click()
    check_boxes(browser, stack, batch_id, files[image_name]["file_id"], 1)
    box = browser.find_elements(By.CSS_SELECTOR, ".overlay .box")[0]
    ActionChains(browser).move_to_element(box).perform()
    tip = wait(browser, lambda d: (t := d.find_element(By.ID, "word-tip")).is_displayed() and t, what="the tooltip")
    assert tip.text.startswith(box.get_attribute("data-text")) and tip.text.endswith("%")
    shot(browser, "04-file")
    pdf_name = next(n for n in files if n.endswith(".pdf"))
    browser.get(f"{stack['status']}/ui/batches/{batch_id}/files/{files[pdf_name]['file_id']}?page=2")
    check_boxes(browser, stack, batch_id, files[pdf_name]["file_id"], 2)
    shot(browser, "05-file-pdf-page")

    # 5. Search: the snippet with the match marked and a page thumbnail; a hit opens its file at its page.
    target: SampleFile = stack["samples"][1]
    phrase = distinctive_phrase(target.lines[0])
    browser.get(stack["status"] + "/ui/search")
    wait(browser, lambda d: d.find_element(By.ID, "q"), what="the search form").send_keys(phrase, Keys.ENTER)
    hit = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".hit") and d.find_element(By.CSS_SELECTOR, ".hit"),
               what="a search hit")
    assert target.path.name in hit.find_element(By.CSS_SELECTOR, ".hit-link").text
    assert hit.find_element(By.CSS_SELECTOR, ".snippet mark").text.strip()
    wait(browser, lambda d: d.execute_script(
        "const i = document.querySelector('.hit .thumb img'); return i && i.complete && i.naturalWidth > 0")
        and browser.find_elements(By.CSS_SELECTOR, ".hit .thumb .hit-box"), what="the thumbnail with the match")
    shot(browser, "06-search")
    hit.find_element(By.CSS_SELECTOR, ".hit-link").click()
    wait(browser, lambda d: target.path.name in d.find_element(By.CSS_SELECTOR, "main h1").text, what="the hit's file")
    assert f"/ui/batches/{batch_id}/files/" in browser.current_url and "page=1" in browser.current_url

    # 6. The list: my batches, newest first, this one on top.
    browser.get(stack["status"] + "/ui/")
    first = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#batches tbody tr"), what="the batch list")
    assert first.find_element(By.TAG_NAME, "a").text == "scans" and "5 / 5" in first.text
    shot(browser, "07-batches")


def check_boxes(browser, stack: dict, batch_id: str, file_id: str, page_number: int) -> None:
    """Every word's box in the DOM, mapped back to page pixels, lies within a pixel of the API's box."""
    wait(browser, lambda d: d.execute_script(
        "const i = document.querySelector('.page-image'); return i && i.complete && i.naturalWidth > 0"),
        what="the page image")
    page = next(p for p in api(stack, f"/v1/batches/{batch_id}/files/{file_id}")["pages"]
                if p["page_number"] == page_number)
    assert page["words"], "the OCR found words on the page"
    drawn = browser.execute_script("""
        const img = document.querySelector('.page-image').getBoundingClientRect();
        return [...document.querySelectorAll('.overlay .box')].map((b) => {
          const r = b.getBoundingClientRect();
          return {x: r.left - img.left, y: r.top - img.top, w: r.width, h: r.height, iw: img.width, ih: img.height};
        });""")
    assert len(drawn) == len(page["words"])
    scale = page["width"] / drawn[0]["iw"]  # page pixels per CSS pixel
    assert abs(page["height"] / drawn[0]["ih"] - scale) < 0.01, "the image keeps the page's aspect ratio"
    for box, word in zip(drawn, page["words"]):
        expected = word["bbox"]
        for got, want in ((box["x"], expected["x"]), (box["y"], expected["y"]),
                          (box["w"], expected["width"]), (box["h"], expected["height"])):
            assert abs(got * scale - want) <= 1.5 * scale, (word["text"], box, expected)


def test_the_console_speaks_korean_to_a_korean_browser(stack):
    driver = chromium("ko-KR")
    try:
        driver.get(stack["status"] + "/ui/")
        title = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "main h1"), what="the key form")
        assert title.text == "API 키로 로그인"
        assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "ko"
        sign_in(driver, "wrong-key")
        error = wait(driver, lambda d: "401" in (e := d.find_element(By.ID, "key-error")).text and e, what="the message")
        assert error.text.startswith("이 API 키는 허용되지 않았습니다")
        shot(driver, "08-wrong-key-ko")
    except WebDriverException:
        shot(driver, "08-failure")
        raise
    finally:
        driver.quit()
