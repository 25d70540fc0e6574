"""The real service as `make run` starts it (embedded broker, SQLite) and Debian's Chromium.

Playwright drives /usr/bin/chromium through `executable_path` and never downloads a browser; a
browser that cannot start fails the test with its reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, sync_playwright

from tests.utils.data import kodim19_crop
from tests.utils.service import Service
from tests.utils.web import running_service

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps calling Google's hosts, which a closed
# network refuses (the machine notes); --no-sandbox because tests run as root.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "web"
DESKTOP = {"width": 1366, "height": 900}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, pretrain_cache: Path) -> Iterator[Service]:
    yield from running_service(tmp_path_factory.mktemp("web-service"), pretrain_cache)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (scripts/ensure-services.sh)")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        except Error as e:
            pytest.fail(f"Chromium at {CHROMIUM} could not be started: {e.message}")
        yield browser
        browser.close()


def unexpected(message: ConsoleMessage) -> bool:
    """A console error the page should not cause: a blocked script, a missing file (the favicon).
    The API's own error answers are left out: the page shows them as messages, and some tests
    ask for them."""
    if message.type != "error" and "Content Security Policy" not in message.text:
        return False
    return not urlsplit(message.location.get("url", "")).path.startswith("/v1/")


@pytest.fixture
def page(browser: Browser, service: Service) -> Iterator[Page]:
    """A laptop-sized page on the service; any uncaught script error, anything the page's
    Content-Security-Policy blocked, or any other console error fails the test."""
    context = browser.new_context(viewport=DESKTOP, base_url=service.url,
                                  accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(f"{message.text} ({message.location})")
            if unexpected(message) else None)
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}\n{service.logs()}"


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS



@pytest.fixture(scope="session")
def kodak_wide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 48x32 crop of kodim19: a 3:2 image, so panels that are not square show."""
    return kodim19_crop(tmp_path_factory.mktemp("images") / "kodim19-48x32.png", (30, 60, 78, 92))
