"""Headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driving MLflow's UI: for the SSO
UI test and the docs' screenshot. Extra headers go on every request the page makes, the way the
ALB adds its identity header; response statuses come from Chromium's network log."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Browser:
    def __init__(self, driver):
        self.driver = driver

    def get(self, url: str) -> None:
        self.driver.get(url)

    def wait_for_text(self, text: str, timeout: float = 60.0) -> str:
        """The page's visible text once it contains ``text`` (the UI renders client-side)."""
        deadline = time.monotonic() + timeout
        body = ""
        while time.monotonic() < deadline:
            body = self.driver.execute_script("return document.body ? document.body.innerText : ''") or ""
            if text in body:
                return body
            time.sleep(0.5)
        raise TimeoutError(f"{text!r} did not appear within {timeout:.0f}s; the page shows: {body[:300]!r}")

    def response_statuses(self) -> dict[str, int]:
        """URL -> HTTP status of every response the page received so far."""
        statuses: dict[str, int] = {}
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.responseReceived":
                response = message["params"]["response"]
                statuses[response["url"]] = int(response["status"])
        return statuses

    def screenshot(self, path: str, width: int = 1400, height: int = 900) -> None:
        self.driver.set_window_size(width, height)
        self.driver.save_screenshot(path)


@contextmanager
def headless_chromium(headers: dict[str, str] | None = None) -> Iterator[Browser]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(options=options, service=service)
    try:
        if headers:
            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": headers})
        yield Browser(driver)
    finally:
        driver.quit()
