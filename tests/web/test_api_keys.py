"""The page against a service that requires API keys: it asks for one and sends it everywhere,
the event stream and file downloads included (which EventSource and plain links cannot)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.utils.service import Service
from tests.utils.web import running_service, start_fit, wait_loaded, wait_succeeded

NEXP = Path(sys.executable).parent / "nexp"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, pretrain_cache: Path) -> Iterator[Service]:
    data = tmp_path_factory.mktemp("web-keyed-service")
    yield from running_service(data, pretrain_cache, NEXP_REQUIRE_KEYS="true")


@pytest.fixture(scope="module")
def token(service: Service) -> str:
    created = subprocess.run([str(NEXP), "keys", "create", "--name", "web"], capture_output=True,
                             text=True, timeout=120, env={**os.environ, **service.env})
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


def test_the_page_asks_for_a_key_then_uses_it(
    page: Page, token: str, kodak_crop: Path, screenshots: Path
) -> None:
    page.goto("/")
    expect(page.locator("#jobs-error")).to_contain_text("An API key is required")
    page.screenshot(path=screenshots / "api-key-required.png", full_page=True)

    page.fill("#api-key", token)
    page.click("#use-key")
    expect(page.locator("#jobs-empty")).to_be_visible()
    expect(page.locator("#jobs-error")).to_be_hidden()

    start_fit(page, kodak_crop)  # a reload: the key stays for the tab
    expect(page.locator("#job-step")).to_contain_text("step", timeout=180_000)  # events arrive
    wait_succeeded(page)
    wait_loaded(page, "#reconstruction", 32)
    with page.expect_download() as download:
        page.click("#job-weights")
    assert download.value.suggested_filename == f"{kodak_crop.stem}-weights.zip"
    assert Path(download.value.path()).stat().st_size > 0
