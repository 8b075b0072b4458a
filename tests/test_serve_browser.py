"""The page of ``ebook2audio serve`` in a real browser: Debian's headless Chromium
driven by Selenium against a real ``ebook2audio serve`` process.

The sample book is given to the page's file input, chapters 2-3 chosen, the voice
preview played (the audio element has a duration and plays), the job submitted
(espeak) and followed in the queue until 100 %, and the M4B and its report
downloaded through the page's links and checked like every other M4B.  The page is
also walked with the Tab key (focus reaches the file input, the chapter checkboxes,
the preview, submit and the queue's controls, in that order), its controls all have
accessible names, its headings do not skip levels, and it reflows at 200 % zoom.

Chromium and chromedriver come from Debian (``chromium``, ``chromium-driver``;
``.ci/install-dev.sh`` installs them): without them the test fails saying so.
Screenshots of a book's card and of the queue are written to the test's folder,
and to ``docs/images/serve-book.png`` and ``serve-queue.png`` when
``EBOOK2AUDIO_UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from helpers import check_m4b_against_report
from serve_helpers import ROOT, ServerProcess

pytestmark = pytest.mark.slow

SAMPLE = ROOT / "examples" / "childrens-literature.epub"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
IMAGES = ROOT / "docs" / "images"
TOKEN = "browser-test-token-0123456789"
#: Longest the job may take on a loaded 2-core machine (not a timing assertion).
JOB_TIMEOUT = 900


def wait_until(what: str, check, timeout: float, server: ServerProcess | None = None):
    """Poll *check* until it returns something truthy; fail naming *what* after *timeout*."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if server is not None and server.proc is not None and server.proc.poll() is not None:
            pytest.fail(f"the server exited while waiting for {what}:\n{server.log()}")
        if time.monotonic() > deadline:
            log = f"\nserver log:\n{server.log()}" if server is not None else ""
            pytest.fail(f"timed out waiting for {what}{log}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("serve") / "data", "--n-workers", "2")
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def downloads(tmp_path) -> Path:
    path = tmp_path / "downloads"
    path.mkdir()
    return path


@pytest.fixture
def browser(downloads):
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(
            f"Chromium cannot run here: {', '.join(missing)} missing (Debian packages chromium "
            "and chromium-driver; .ci/install-dev.sh installs them)"
        )
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1280,1000",
                "--lang=en-US"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
            "download.directory_upgrade": True,
            "safebrowsing.enabled": True,
        },
    )
    try:
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    except WebDriverException as exc:
        pytest.fail(f"Chromium cannot run here: {' '.join(str(exc.msg).split())[:500]}")
    try:
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior",
            {"behavior": "allow", "downloadPath": str(downloads), "eventsEnabled": False},
        )
        yield driver
    finally:
        driver.quit()


def focus_walk(driver, start_css: str, stop, limit: int = 400) -> list[dict]:
    """Press Tab from the element *start_css* until *stop(info)* or *limit* presses.

    Each step: what has focus (tag, id, type, its data-* keys, the text of its label).
    """
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver.execute_script("document.querySelector(arguments[0]).focus()", start_css)
    seen = []
    for _ in range(limit):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        info = driver.execute_script(
            """const e = document.activeElement;
            return {tag: e.tagName.toLowerCase(), id: e.id, type: e.type || '',
                    chapter: e.dataset.chapter || null, focusKey: e.dataset.focusKey || null,
                    kind: e.dataset.kind || null, inJobs: !!e.closest('#jobs'),
                    outline: getComputedStyle(e).outlineStyle};"""
        )
        seen.append(info)
        if stop(info):
            break
    return seen


def first(seen: list[dict], what: str, match) -> int:
    for i, info in enumerate(seen):
        if match(info):
            return i
    pytest.fail(f"Tab never reached {what}; focus went through: {seen}")


def check_accessible(driver) -> None:
    """Every control has an accessible name; headings go h1, h2, h3... without skipping."""
    from selenium.webdriver.common.by import By

    unnamed = []
    for element in driver.find_elements(
        By.CSS_SELECTOR, "input, select, button, a[href], audio, progress, textarea"
    ):
        if not element.is_displayed():
            continue
        if not (element.accessible_name or "").strip():
            unnamed.append(element.get_attribute("outerHTML")[:160])
    assert not unnamed, f"controls without an accessible name: {unnamed}"
    levels = driver.execute_script(
        "return [...document.querySelectorAll('h1,h2,h3,h4,h5,h6')]"
        ".filter(h => h.offsetParent !== null).map(h => +h.tagName[1]);"
    )
    assert levels[0] == 1 and levels.count(1) == 1, levels
    for before, after in itertools.pairwise(levels):
        assert after <= before + 1, f"heading levels skip: {levels}"


def check_console(driver) -> None:
    """No script error and no Content-Security-Policy violation in the browser's console."""
    bad = [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE"
        and ("Content Security Policy" in entry["message"] or "Uncaught" in entry["message"])
    ]
    assert not bad, bad


def check_reflow(driver) -> None:
    """At 200 % zoom of a 1280 px window (640 CSS px) nothing scrolls sideways."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 640, "height": 900, "deviceScaleFactor": 2, "mobile": False},
    )
    try:
        widths = driver.execute_script(
            "const d = document.documentElement; return [d.scrollWidth, d.clientWidth];"
        )
        assert widths[0] <= widths[1] + 1, f"horizontal scrolling at 200 % zoom: {widths}"
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def save_screenshot(driver, element, path: Path) -> None:
    """A PNG of *element* (under 300 kB) at *path*, and in docs/images with
    ``EBOOK2AUDIO_UPDATE_SCREENSHOTS=1``."""
    driver.execute_script("document.activeElement.blur(); arguments[0].scrollIntoView()", element)
    element.screenshot(str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 300_000, len(data)
    if os.environ.get("EBOOK2AUDIO_UPDATE_SCREENSHOTS") == "1":
        IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, IMAGES / path.name)


def job_state(driver) -> dict | None:
    return driver.execute_script(
        """const job = document.querySelector('#jobs li.job');
        if (!job) return null;
        const bar = job.querySelector('progress');
        const state = job.querySelector('h3 .state');
        return {percent: +bar.value, state: state ? state.className : '',
                text: job.innerText};"""
    )


def choose_engine(driver, server, engine: str) -> None:
    """Wait for the engine picker to list *engine* (the server lists them once), pick it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    wait_until(
        f"{engine} in the engine picker",
        lambda: driver.find_elements(By.CSS_SELECTOR, f"#engine option[value='{engine}']"),
        180,
        server,
    )
    Select(driver.find_element(By.ID, "engine")).select_by_value(engine)


def add_book(driver, server, path: Path = SAMPLE):
    """Give *path* to the drop zone's file input; its card once read."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "files").send_keys(str(path))
    return wait_until(
        f"the card of {path.name}",
        lambda: driver.find_elements(
            By.CSS_SELECTOR, "#books li.book-ready, #books li.book-failed"
        ),
        120,
        server,
    )[-1]


def submit(driver, server, known=()) -> str:
    """Press Convert; the short id of the job the page says it queued."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "submit").click()

    def new_job():
        words = driver.find_element(By.ID, "submit-status").text.split()
        if words[:1] == ["Not"]:
            pytest.fail(" ".join(words))
        return words[1] if words[:1] == ["Job"] and words[1] not in known else None

    return wait_until("the job to be queued", new_job, 60, server)


def test_page_end_to_end(server, browser, downloads, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = browser
    driver.get(server.url + "/")
    assert driver.title == "ebook2audio"
    # the CSRF token is in the page as served
    assert driver.find_element(By.CSS_SELECTOR, 'meta[name="csrf-token"]').get_attribute("content")
    choose_engine(driver, server, "espeak")
    voices = [o.get_attribute("value") for o in Select(driver.find_element(By.ID, "voice")).options]
    assert "en" in voices, voices[:10]
    Select(driver.find_element(By.ID, "voice")).select_by_value("en")

    # --- the book, through the file input of the drop zone
    book = add_book(driver, server)
    assert book.find_element(By.TAG_NAME, "h3").text == "Children's Literature"
    assert "Charles Madison Curry" in book.text and "Language: en" in book.text
    cover = book.find_element(By.CSS_SELECTOR, "img.cover")
    assert cover.get_attribute("alt") == "Cover of Children's Literature"
    wait_until(
        "the cover image to load",
        lambda: driver.execute_script("return arguments[0].naturalWidth > 0", cover),
        30,
    )
    chapters = book.find_elements(By.CSS_SELECTOR, "input[data-chapter]")
    skipped = book.find_elements(By.CSS_SELECTOR, "input[data-skipped]")
    assert len(chapters) == 15 and all(c.is_selected() for c in chapters)
    assert len(skipped) == 3 and not any(s.is_selected() for s in skipped)
    skipped_text = [driver.find_element(By.CSS_SELECTOR, f"label[for='{s.get_attribute('id')}']")
                    .text for s in skipped]  # fmt: skip
    assert all(t.startswith("Skipped (front matter)") for t in skipped_text), skipped_text
    assert "BIBLIOGRAPHY" in " ".join(skipped_text)

    # chapters 2-3 only: uncheck all, then check 2 and 3 (by keyboard: Space)
    book.find_element(By.XPATH, ".//button[starts-with(normalize-space(), 'Uncheck all')]").click()
    assert not any(c.is_selected() for c in chapters + skipped)
    for number in ("2", "3"):
        box = book.find_element(By.CSS_SELECTOR, f"input[data-chapter='{number}']")
        box.send_keys(" ")
        assert box.is_selected()

    check_accessible(driver)
    check_reflow(driver)
    save_screenshot(driver, book, tmp_path / "serve-book.png")

    # --- Tab order: file input, chapter checkboxes, preview, submit
    seen = focus_walk(driver, "a.skip", lambda info: info["id"] == "submit")
    at_files = first(seen, "the file input", lambda i: i["id"] == "files")
    at_chapter = first(seen, "a chapter checkbox", lambda i: i["chapter"] is not None)
    at_preview = first(seen, "the preview button", lambda i: i["id"] == "preview")
    at_submit = first(seen, "the submit button", lambda i: i["id"] == "submit")
    assert at_files < at_chapter < at_preview < at_submit, seen
    assert all(i["outline"] != "none" for i in seen if i["tag"] in ("button", "input")), seen

    # --- the voice preview plays
    driver.find_element(By.ID, "preview").click()
    played = wait_until(
        "the voice preview to play",
        lambda: driver.execute_script(
            """const a = document.getElementById('preview-audio');
            return a.currentSrc && a.duration > 0 && (a.currentTime > 0 || a.ended)
                ? [a.duration, a.currentTime, a.ended] : null;"""
        ),
        180,
        server,
    )
    assert played[0] > 0.5, played
    assert "No preview" not in driver.find_element(By.ID, "preview-status").text

    # --- submit, then the queue follows the job to 100 %
    submit(driver, server)
    assert not driver.find_elements(By.CSS_SELECTOR, "#books li.book")

    def finished():
        state = job_state(driver)
        if state is None:
            return None
        if "state-failed" in state["state"] or "state-cancelled" in state["state"]:
            pytest.fail(f"the job did not finish: {state['text']}\n{server.log()}")
        return state if "state-done" in state["state"] else None

    state = wait_until("the job to reach 100 %", finished, JOB_TIMEOUT, server)
    assert state["percent"] == 100, state
    job = driver.find_element(By.CSS_SELECTOR, "#jobs li.job")
    assert "100 %" in job.text and "Done" in job.text
    assert "Chapters 2-3" in job.text
    book_progress = job.find_element(By.CSS_SELECTOR, ".job-book progress")
    assert book_progress.get_attribute("value") == "100"
    chunk_line = job.find_element(By.CSS_SELECTOR, ".job-book .detail").text
    assert " chunks" in chunk_line, chunk_line
    # the live region announced the state changes
    activity = driver.find_element(By.ID, "activity")
    assert activity.get_attribute("aria-live") == "polite"
    assert "queued" in activity.text and "done" in activity.text, activity.text

    # --- download the audiobook and its report through the page's links
    audio_link = job.find_element(By.CSS_SELECTOR, "a[data-kind='audio']")
    report_link = job.find_element(By.CSS_SELECTOR, "a[data-kind='report']")
    m4b_name = audio_link.get_attribute("download")
    report_name = report_link.get_attribute("download")
    assert m4b_name.endswith(".m4b"), m4b_name
    for kind in ("audio", "report"):  # found again: the queue is redrawn as the job changes
        driver.find_element(By.CSS_SELECTOR, f"#jobs a[data-kind='{kind}']").click()

    def downloaded():
        names = {p.name for p in downloads.iterdir()}
        done = {m4b_name, report_name} <= names
        return done and not any(n.endswith(".crdownload") for n in names)

    wait_until("the downloads", downloaded, 120, server)
    report = json.loads((downloads / report_name).read_text())
    assert [c["title"] for c in report["chapters"]] == [
        "191 THE LORD HELPETH MAN AND BEAST",
        "192 THE REAL PRINCESS",
    ]
    check_m4b_against_report(downloads / m4b_name, report, expect_cover=True)

    # --- Tab reaches the queue's controls (after the form's)
    seen = focus_walk(driver, "#submit", lambda info: info["inJobs"] and info["tag"] == "a")
    first(seen, "a button of the queue", lambda i: i["inJobs"] and i["tag"] == "button")
    first(seen, "a download link", lambda i: i["inJobs"] and i["kind"] == "audio")
    check_accessible(driver)
    check_reflow(driver)

    # --- a screenshot of the queue for the docs
    queue = driver.find_element(By.ID, "queue-heading").find_element(By.XPATH, "..")
    save_screenshot(driver, queue, tmp_path / "serve-queue.png")
    check_console(driver)


def test_page_upload_error_and_queue_actions(server, browser, tmp_path):
    """An unreadable book shows its one-line error; skipped matter can be chosen (the
    job gets include_matter and every section numbered); a job is cancelled, retried,
    cancelled again and removed with the queue's buttons."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = browser
    driver.get(server.url + "/")
    choose_engine(driver, server, "espeak")
    broken = tmp_path / "broken.epub"
    broken.write_bytes(b"PK\x03\x04 this is not a zip archive")
    card = add_book(driver, server, broken)
    assert "book-failed" in card.get_attribute("class")
    error = card.find_element(By.CSS_SELECTOR, ".error").text
    assert error.startswith("Error: ") and "\n" not in error, error
    assert "broken.epub" in card.text and "Failed" in card.text
    assert (
        f"Cannot convert {error[len('Error: ') :]}" in driver.find_element(By.ID, "activity").text
    )
    card.find_element(By.CSS_SELECTOR, "button.remove").click()
    wait_until("the card to go", lambda: not driver.find_elements(By.CSS_SELECTOR, "#books li"), 30)

    # a book dropped on the drop zone (a drop event carrying a file) is uploaded too
    driver.execute_script(
        """const data = new DataTransfer();
        data.items.add(new File(["# The Dropped Book\\n\\nOne short paragraph of text.\\n"],
                                "dropped.md", {type: "text/markdown"}));
        const zone = document.getElementById("dropzone");
        zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: data, bubbles: true,
                                                      cancelable: true}));
        zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true,
                                                  cancelable: true}));"""
    )
    dropped = wait_until(
        "the dropped book's card",
        lambda: driver.find_elements(By.CSS_SELECTOR, "#books li.book-ready"),
        120,
        server,
    )[0]
    assert "dropped.md" in dropped.text or "The Dropped Book" in dropped.text, dropped.text
    dropped.find_element(By.CSS_SELECTOR, "button.remove").click()
    wait_until("the card to go", lambda: not driver.find_elements(By.CSS_SELECTOR, "#books li"), 30)

    book = add_book(driver, server)
    book.find_element(By.XPATH, ".//button[starts-with(normalize-space(), 'Uncheck all')]").click()
    bibliography = book.find_element(
        By.XPATH, ".//li[contains(., 'BIBLIOGRAPHY')]/input[@data-skipped]"
    )
    bibliography.send_keys(" ")
    book.find_element(By.CSS_SELECTOR, "input[data-chapter='2']").send_keys(" ")
    Select(driver.find_element(By.ID, "format")).select_by_value("mp3")
    # last in the queue, so that the other test's job is not held up
    priority = driver.find_element(By.ID, "priority")
    priority.clear()
    priority.send_keys("-5")
    short = submit(driver, server)
    with server.client() as http:
        (job,) = [j for j in http.get("/api/jobs").json()["jobs"] if j["id"].startswith(short)]
    assert job["options"]["include_matter"] is True and job["options"]["format"] == "mp3"
    assert job["priority"] == -5
    # every section numbered in reading order: BIBLIOGRAPHY is 2, body chapter 2 is 5
    assert [b["chapters"] for b in job["books"]] == ["2,5"]

    item = f"#jobs li[data-job='{job['id']}']"

    def press(action: str, *states: str):
        driver.find_element(By.CSS_SELECTOR, f"{item} button.action-{action}").click()
        wanted = ", ".join(f"{item}.job-state-{state}" for state in states)
        wait_until(
            f"the job to be {' or '.join(states)} after {action}",
            lambda: driver.find_elements(By.CSS_SELECTOR, wanted),
            300,
            server,
        )

    press("cancel", "cancelled")
    assert "Cancelled" in driver.find_element(By.CSS_SELECTOR, item).text
    press("retry", "queued", "running")
    press("cancel", "cancelled")
    driver.find_element(By.CSS_SELECTOR, f"{item} button.action-delete").click()
    wait_until(
        "the job to leave the queue",
        lambda: not driver.find_elements(By.CSS_SELECTOR, item),
        60,
        server,
    )
    # the keyboard is not lost when the control it was on goes away
    assert driver.execute_script("return document.activeElement.id") == "queue-heading"
    activity = driver.find_element(By.ID, "activity").text
    assert "Cancelling job" in activity and "removed from the list" in activity, activity
    check_console(driver)


@pytest.fixture
def token_server(tmp_path):
    # one job at a time, and a slow engine: the second and third jobs stay queued
    env = {"DASK_EBOOK2AUDIO__SERVE__JOBS_IN_FLIGHT": "1", "E2A_LOGGING_TTS_SLEEP": "0.5"}
    srv = ServerProcess(tmp_path / "data", "--n-workers", "1", token=TOKEN, env=env)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


def test_page_signs_in_and_reorders_by_keyboard(token_server, browser):
    """With a token the page first asks for it; queued jobs are moved with the keyboard
    (Enter on "Move up"), and focus stays on the button the job's move redrew."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    server, driver = token_server, browser
    driver.get(server.url + "/")
    assert driver.title == "ebook2audio: sign in"
    driver.find_element(By.ID, "token").send_keys(TOKEN + Keys.ENTER)

    def signed_in():
        if driver.title == "ebook2audio":
            return True
        text = driver.find_element(By.TAG_NAME, "body").text
        if '"detail"' in text:
            # e.g. Chromium sends "Origin: null" with a form POST from a page whose
            # Referrer-Policy is no-referrer
            pytest.fail(f"the sign-in form's POST /api/session was refused: {text}")
        return False

    wait_until("the page after signing in", signed_in, 30, server)
    choose_engine(driver, server, "logging-test")
    ids = []
    for _ in range(3):
        add_book(driver, server)
        ids.append(submit(driver, server, ids))

    def order():
        return [
            e.get_attribute("data-job")[:8]
            for e in driver.find_elements(By.CSS_SELECTOR, "#jobs li.job-state-queued")
        ]

    wait_until("one job running, two queued", lambda: order() == ids[1:], 120, server)
    first_job = f"#jobs li[data-job^='{ids[1]}']"
    last_job = f"#jobs li[data-job^='{ids[2]}']"
    up = driver.find_element(By.CSS_SELECTOR, f"{last_job} button.action-up")
    first_up = driver.find_element(By.CSS_SELECTOR, f"{first_job} button.action-up")
    assert first_up.get_attribute("aria-disabled") == "true"
    assert up.get_attribute("aria-disabled") is None
    driver.execute_script("arguments[0].focus()", up)
    up.send_keys(Keys.ENTER)
    wait_until("the last job to move up", lambda: order() == [ids[2], ids[1]], 60, server)
    focused = driver.execute_script("return document.activeElement.dataset.focusKey || ''")
    assert focused.startswith(ids[2]) and focused.endswith(":up"), focused
    up = driver.find_element(By.CSS_SELECTOR, f"{last_job} button.action-up")
    wait_until("Move up to be unavailable", lambda: up.get_attribute("aria-disabled"), 30)
    up.send_keys(Keys.ENTER)
    wait_until(
        "the page to say the job is first",
        lambda: "already first" in driver.find_element(By.ID, "activity").text,
        30,
    )
    with server.client() as http:
        jobs = {j["id"][:8]: j for j in http.get("/api/jobs").json()["jobs"]}
    assert jobs[ids[2]]["position"] == 1 and jobs[ids[1]]["position"] == 2
    assert jobs[ids[2]]["priority"] > jobs[ids[1]]["priority"]
    for short in ids:
        driver.find_element(
            By.CSS_SELECTOR, f"#jobs li[data-job^='{short}'] .action-cancel"
        ).click()
    wait_until(
        "every job cancelled",
        lambda: len(driver.find_elements(By.CSS_SELECTOR, "#jobs li.job-state-cancelled")) == 3,
        300,
        server,
    )
