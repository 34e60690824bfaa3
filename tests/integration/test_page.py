"""The SMS automations page in a real headless Chromium (Debian's chromium and
chromium-driver, through selenium): create an automation with cooldown through the
page, send two triggers for one number, and see the second counted as suppressed on the
page. Screenshots of the page are written to test-artefacts/ (page.png: the list;
page-editor.png: the first step; page-phone.png: a phone-sized screen).

Without a browser the test skips, unless SMSCOOL_REQUIRE_BROWSER is set (CI sets it:
there the browser is installed and a skip would hide a failure)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams import topics
from streams.kafka import produce_all, producer
from tests.helpers import WEB_TOKEN, call, decisions_by_event, now_ms, start_web, trigger

pytestmark = pytest.mark.integration

ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artefacts"
WAIT_S = 90


def _browser_paths() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


@pytest.fixture
def browser() -> Iterator[object]:
    paths = _browser_paths()
    if paths is None:
        if os.environ.get("SMSCOOL_REQUIRE_BROWSER"):
            pytest.fail("SMSCOOL_REQUIRE_BROWSER is set and chromium or chromedriver is "
                        "missing (apt-get install chromium chromium-driver)")
        pytest.skip("no chromium and chromedriver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,1100"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(paths[1]), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_create_with_cooldown_through_the_page_and_see_the_suppression(
        bootstrap, start_worker, tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import Select, WebDriverWait

    web = start_web(bootstrap, tmp_path, SMSCOOL_WEB_TOKEN=WEB_TOKEN)
    driver = browser
    wait = WebDriverWait(driver, WAIT_S)
    try:
        start_worker()
        # The token comes in the address's fragment, which no server sees.
        driver.get(f"{web.base}/#token={WEB_TOKEN}")  # type: ignore[attr-defined]
        wait.until(seen.visibility_of_element_located((By.ID, "empty")))
        assert "token" not in driver.current_url

        def field(element_id: str):
            return driver.find_element(By.ID, element_id)

        field("create").click()
        wait.until(seen.visibility_of_element_located((By.ID, "editor")))
        # Typed as a person would, with the keyboard: the id field has the focus.
        driver.switch_to.active_element.send_keys("cart-reminder")
        assert field("cooldown-amount").get_attribute("disabled") is not None
        field("next").click()
        # An empty title is shown beside its field, and the first step stays.
        wait.until(lambda d: field("title-error").text)
        assert "title" in field("title-error").text
        assert field("title").get_attribute("aria-invalid") == "true"
        field("title").send_keys("Cart reminder")
        field("event_type").send_keys("cart_abandoned")
        field("always").click()  # any day and hour: the triggers are sent now
        field("cooldown_enabled").click()
        assert field("cooldown-amount").get_attribute("disabled") is None
        amount = field("cooldown-amount")
        amount.clear()
        amount.send_keys("24")
        Select(field("cooldown-unit")).select_by_visible_text("hours")
        ARTEFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTEFACTS / "page-editor.png"))
        field("next").click()
        wait.until(seen.visibility_of_element_located((By.ID, "message")))
        field("message").send_keys("Hi {name}, your cart is waiting")
        wait.until(lambda d: "{name}" in field("message-facts").text)
        assert "1 SMS part" in field("message-facts").text
        field("sender").send_keys("A" * 12, Keys.ENTER)  # Enter saves; the sender is refused
        wait.until(lambda d: field("sender-error").text)
        assert "at most 11 characters" in field("sender-error").text
        field("sender").clear()
        field("sender").send_keys("Shop", Keys.ENTER)
        row = wait.until(seen.visibility_of_element_located(
            (By.CSS_SELECTOR, 'tr[data-automation="cart-reminder"]')))
        assert "Cart reminder" in row.text

        status, stored = call(web.base, "GET", "/automations/cart-reminder")  # type: ignore[attr-defined]
        assert status == 200
        assert (stored["cooldown_enabled"], stored["cooldown_ms"], stored["window"],
                stored["sender"], stored["country"]) == (True, 86_400_000, "always", "Shop", "DK")

        t = now_ms()
        cart = {"event_type": "cart_abandoned"}
        produce_all(producer(bootstrap), topics.TRIGGERS, [
            (f"cart-{n}".encode(), json.dumps(trigger(f"cart-{n}", "+4520123401", t + n,
                                                      **cart)).encode()) for n in (1, 2)])
        decisions_by_event(bootstrap, 2, WAIT_S)
        # The page refreshes its counts by itself: last hour (and day).
        suppressed = (By.CSS_SELECTOR,
                      'tr[data-automation="cart-reminder"] td[data-count="suppressed_cooldown"]')
        wait.until(seen.text_to_be_present_in_element(suppressed, "1 (1)"))
        sent = driver.find_element(
            By.CSS_SELECTOR, 'tr[data-automation="cart-reminder"] td[data-count="passed"]')
        assert sent.text == "1 (1)"

        field("why-number").send_keys("20 12 34 01", Keys.ENTER)
        wait.until(lambda d: "suppressed cooldown" in field("why-answer").text)
        driver.save_screenshot(str(ARTEFACTS / "page.png"))
        # A phone-sized screen: the table turns into cards, nothing wider than the screen.
        driver.set_window_size(390, 844)
        assert driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth")
        driver.save_screenshot(str(ARTEFACTS / "page-phone.png"))
    finally:
        web.stop()
