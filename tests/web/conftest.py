"""The real service as `make run` starts it (embedded broker, SQLite) and Debian's Chromium.

Playwright drives /usr/bin/chromium through `executable_path` and never downloads a browser; a
browser that cannot start fails the test with its reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Error, Page, sync_playwright

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


@pytest.fixture
def page(browser: Browser, service: Service) -> Iterator[Page]:
    """A laptop-sized page on the service; any uncaught script error fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=service.url)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}\n{service.logs()}"


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS

