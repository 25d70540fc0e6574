"""Helpers for the page tests: the service as `make run` starts it, and steps on the page."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.utils.service import Service

UPLOAD_CAP = 2 << 20  # the test inputs are far smaller; one test sends more
# Small SDF sampling and evaluation, so a 3D fit takes seconds on one core.
SDF_LOAD = {"surface_samples": 20_000, "pool_size": 20_000, "eval_resolution": 24,
            "chamfer_points": 5_000, "trimap_band": 0.05}


def running_service(data: Path, pretrain_cache: Path, **env: str) -> Iterator[Service]:
    """A worker and an API on `data`, as `make run` starts them, until the generator closes."""
    service = Service(data, {
        "NEXP_DATA_DIR": str(data),
        "NEXP_CACHE_DIR": str(pretrain_cache),
        "NEXP_DEVICE": "cpu",
        "NEXP_TORCH_THREADS": "1",  # 2 cores for the browser, the API and the worker together
        "NEXP_HEARTBEAT_S": "0.2",  # several progress reports reach the page in a tiny fit
        "NEXP_LOAD_OPTIONS": json.dumps({"sdf": SDF_LOAD}),
        "NEXP_MAX_UPLOAD_BYTES": str(UPLOAD_CAP),
        **env,
    })
    try:
        service.start_worker()
        service.start_api()
        yield service
    finally:
        service.stop_all()


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
