"""The page while a fit runs and after: previews that follow the fit's snapshots, stages with
their time, curves the server keeps (there after a reload), no ETA once a job has ended."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.utils.service import Service
from tests.utils.web import FIT_TIMEOUT_MS, running_service, start_fit


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, pretrain_cache: Path) -> Iterator[Service]:
    """The page's service, its fits storing a snapshot (a preview) every second."""
    yield from running_service(tmp_path_factory.mktemp("web-progress"), pretrain_cache,
                               NEXP_SNAPSHOT_EVERY_S="1")


def preview_step(page: Page) -> int:
    text = page.inner_text("#job-previews .preview-step")
    return int(text.split("step ")[1].split(",")[0])


def test_previews_update_while_training_and_the_curve_survives_a_reload(
        page: Page, kodak_crop: Path, screenshots: Path) -> None:
    start_fit(page, kodak_crop, steps=300)
    previews = page.locator("#job-previews")
    expect(previews).to_be_visible(timeout=FIT_TIMEOUT_MS)
    page.wait_for_function("() => [...document.querySelectorAll('#job-previews img')]"
                           ".every(img => img.complete && img.naturalWidth === 32)")
    first = preview_step(page)
    expect(page.locator("#job-stages li[data-state=running]")).to_contain_text("Fitting")
    expect(page.locator("#job-stages li").first).to_have_attribute("data-state", "done")
    page.screenshot(path=screenshots / "progress-previews.png", full_page=True)
    # A newer snapshot replaces the preview, while the fit still runs.
    expect(page.locator("#job-previews .preview-step")).not_to_have_text(
        re.compile(rf"step {first},"), timeout=FIT_TIMEOUT_MS)
    assert preview_step(page) > first  # previews are fetched only while the job runs

    # Each preview is rendered beside the fit, on the same 2 shared cores: give it time.
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=2 * FIT_TIMEOUT_MS)
    expect(previews).to_be_hidden()  # the result view takes over
    expect(page.locator("#job-stages li[data-state=done]")).to_have_count(3)
    expect(page.locator("#job-stages li").last).to_contain_text("Evaluating: ")
    expect(page.locator("#job-step")).not_to_contain_text("ETA")
    page.reload()  # the job's link (#job=...) opens it again: the server's curve, to the end
    expect(page.locator("#job-status")).to_have_text("succeeded")
    expect(page.locator("#chart-loss")).to_have_attribute(
        "aria-label", re.compile(r"^Loss: .* at step \d+, .* at step 300$"))
    expect(page.locator("#job-stages li[data-state=done]")).to_have_count(3)
    page.screenshot(path=screenshots / "progress-reloaded.png", full_page=True)


def test_a_canceled_job_shows_no_eta(page: Page, kodak_crop: Path) -> None:
    start_fit(page, kodak_crop, steps=5000)
    expect(page.locator("#job-step")).to_contain_text("ETA", timeout=FIT_TIMEOUT_MS)
    page.click("#job-cancel")
    expect(page.locator("#job-status")).to_have_text("canceled", timeout=FIT_TIMEOUT_MS)
    expect(page.locator("#job-step")).not_to_contain_text("ETA")
    expect(page.locator("#job-stages li[data-state=running]")).to_have_count(0)
