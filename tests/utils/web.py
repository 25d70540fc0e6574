"""Helpers for the page tests: the service as `make run` starts it, and steps on the page."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.utils.service import Service, started
from tests.utils.signals import SDF_LOAD

UPLOAD_CAP = 2 << 20  # the test inputs are far smaller; one test sends more


def running_service(data: Path, pretrain_cache: Path, **env: str) -> Iterator[Service]:
    """A worker and an API on `data`, as `make run` starts them, until the generator closes."""
    yield from started(Service(data, {
        "NEXP_DATA_DIR": str(data),
        "NEXP_CACHE_DIR": str(pretrain_cache),
        "NEXP_DEVICE": "cpu",
        "NEXP_TORCH_THREADS": "1",  # 2 cores for the browser, the API and the worker together
        "NEXP_HEARTBEAT_S": "0.2",  # several progress reports reach the page in a tiny fit
        "NEXP_LOAD_OPTIONS": json.dumps({"sdf": SDF_LOAD}),
        "NEXP_MAX_UPLOAD_BYTES": str(UPLOAD_CAP),
        **env,
    }))


FIT_TIMEOUT_MS = 180_000  # tiny fits, but the worker shares 2 cores with the API and the browser


def start_fit(page: Page, upload: Path, steps: int = 10) -> None:
    page.goto("/")
    page.set_input_files("#file", upload)
    page.fill("#steps", str(steps))
    page.click("#submit")


def wait_succeeded(page: Page) -> None:
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=FIT_TIMEOUT_MS)


def natural_size(page: Page, selector: str) -> tuple[int, int]:
    return tuple(page.eval_on_selector(selector, "img => [img.naturalWidth, img.naturalHeight]"))


def wait_loaded(page: Page, selector: str, width: int) -> None:
    page.wait_for_function(
        "([selector, width]) => { const img = document.querySelector(selector);"
        " return img && img.complete && img.naturalWidth === width; }",
        arg=[selector, width],
    )
