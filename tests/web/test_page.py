"""The page at `/` end to end: real uploads, a real worker, a real browser.

Each test starts a tiny fit from the page, waits for it to succeed and checks its view.
Screenshots land in test-output/web/ for a person to look at.
"""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page, Route, expect

from tests.utils.service import Service
from tests.utils.web import (
    FIT_TIMEOUT_MS,
    UPLOAD_CAP,
    natural_size,
    start_fit,
    wait_loaded,
    wait_succeeded,
)


def test_image_fit_shows_training_reconstruction_and_super_resolution(
    page: Page, kodak_crop: Path, screenshots: Path
) -> None:
    start_fit(page, kodak_crop, steps=100)  # ten progress reports for the live curves
    expect(page.locator("#job-title")).to_have_text(kodak_crop.name)
    expect(page.locator("#job-step")).to_contain_text("step", timeout=FIT_TIMEOUT_MS)
    wait_succeeded(page)
    page.screenshot(path=screenshots / "image-training.png", full_page=True)

    wait_loaded(page, "#reconstruction", 32)
    wait_loaded(page, "#experts-overlay", 32)
    wait_loaded(page, "#original", 32)
    assert natural_size(page, "#reconstruction") == (32, 32)
    assert natural_size(page, "#experts-overlay") == (32, 32)
    expect(page.locator("#error-scale")).to_contain_text("yellow")
    assert page.eval_on_selector("#error-map", "c => [c.width, c.height]") == [32, 32]
    expect(page.locator("#job-metrics")).to_contain_text("psnr")

    page.fill("#overlay-opacity", "80")
    expect(page.locator("#experts-overlay")).to_have_css("opacity", "0.8")
    with page.expect_request(re.compile(r"/reconstruction\?width=64&height=64")):
        page.select_option("#zoom", "2")
    wait_loaded(page, "#reconstruction", 64)
    wait_loaded(page, "#experts-overlay", 64)
    expect(page.locator("#reconstruction-size")).to_have_text("(64 × 64 px; scroll to pan)")
    page.screenshot(path=screenshots / "image-result.png", full_page=True)

    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "wider than a phone"
    page.screenshot(path=screenshots / "image-phone.png", full_page=True)

    # Another tab, opened on the job's link: the upload comes from the API there.
    job_id = page.locator("#jobs-list li.selected").get_attribute("data-id")
    other = page.context.new_page()
    with other.expect_request(re.compile(rf"/v1/jobs/{job_id}/input$")):
        other.goto(f"/#job={job_id}")
    wait_loaded(other, "#reconstruction", 32)
    wait_loaded(other, "#original", 32)
    expect(other.locator("#error-scale")).to_contain_text("yellow")
    other.screenshot(path=screenshots / "image-linked.png", full_page=True)


def test_audio_fit_shows_waveforms_segments_and_players(
    page: Page, bach: Path, screenshots: Path
) -> None:
    start_fit(page, bach)
    wait_succeeded(page)
    expect(page.locator("#expert-legend li").first).to_contain_text("expert")
    expect(page.locator("#audio-reconstruction")).to_have_attribute("src", re.compile("^blob:"))
    expect(page.locator("#audio-original")).to_have_attribute("src", re.compile("^blob:"))
    # Both waveforms are drawn: the canvases hold more than their blank background.
    for canvas in ("#wave-original", "#wave-reconstruction"):
        page.wait_for_function(
            "selector => { const c = document.querySelector(selector);"
            " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            " return d.some((v, i) => i % 4 === 3 && v > 0); }",
            arg=canvas,
        )
    page.screenshot(path=screenshots / "audio-result.png", full_page=True)


def test_mesh_fit_shows_3d_viewer_and_downloads(page: Page, spot: Path, screenshots: Path) -> None:
    start_fit(page, spot)
    wait_succeeded(page)
    expect(page.locator("#viewer-status")).to_contain_text("vertices", timeout=60_000)
    expect(page.locator("#viewer canvas")).to_be_visible()
    expect(page.locator("#download-glb")).to_have_attribute("href", re.compile("format=glb"))
    page.screenshot(path=screenshots / "mesh-experts.png", full_page=True)
    page.uncheck("#mesh-experts")
    page.screenshot(path=screenshots / "mesh-plain.png", full_page=True)

    with page.expect_request(re.compile(r"/mesh\?resolution=32&format=ply")):
        page.select_option("#mesh-resolution", "32")
    expect(page.locator("#viewer-status")).to_contain_text("at 32³", timeout=60_000)
    with page.expect_download() as download:
        page.click("#download-glb")
    assert download.value.suggested_filename == "spot-32.glb"
    assert Path(download.value.path()).read_bytes()[:4] == b"glTF"


def test_form_is_labelled_and_keyboard_usable(page: Page, screenshots: Path) -> None:
    page.goto("/")
    for label in ("Drop a file here", "Preset", "Steps", "Model", "Experts", "Activation",
                  "Paper protocol"):
        expect(page.get_by_label(label)).to_be_visible()
    focused = []
    for _ in range(10):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id"))
    assert focused == ["api-key", "use-key", "file", "preset", "steps", "model", "experts",
                       "activation", "protocol", "submit"]
    page.focus("#submit")
    page.keyboard.press("Enter")
    expect(page.locator("#form-error")).to_have_text("Choose a file to fit first.")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "wider than a phone"
    page.screenshot(path=screenshots / "form-phone.png", full_page=True)


def test_garbage_upload_shows_the_api_error(
    page: Page, tmp_path: Path, screenshots: Path
) -> None:
    garbage = tmp_path / "notes.png"
    garbage.write_bytes(b"this is not a picture, a sound or a shape\n" * 20)
    start_fit(page, garbage)
    error = page.locator("#form-error")
    expect(error).to_be_visible()
    expect(error).not_to_have_text("")
    assert "Not Found" not in error.inner_text()
    expect(page.locator("#job")).to_be_hidden()
    page.screenshot(path=screenshots / "garbage-error.png", full_page=True)


def test_too_large_upload_shows_the_api_error(
    page: Page, tmp_path: Path, screenshots: Path
) -> None:
    large = tmp_path / "large.wav"
    large.write_bytes(bytes(UPLOAD_CAP + 1))
    start_fit(page, large)
    expect(page.locator("#form-error")).to_contain_text("over the size cap")
    page.screenshot(path=screenshots / "too-large-error.png", full_page=True)


def test_job_list_cancels_and_deletes_a_job(page: Page, kodak_crop: Path, screenshots: Path) -> None:
    page.on("dialog", lambda dialog: dialog.accept())  # the "Delete this job?" confirmation
    start_fit(page, kodak_crop, steps=5000)
    row = page.locator("#jobs-list li.selected")
    expect(row).to_have_count(1)
    job_id = row.get_attribute("data-id")
    row.get_by_role("button", name=f"Cancel {kodak_crop.name}").click()
    expect(page.locator("#job-status")).to_have_text("canceled", timeout=60_000)
    expect(row.locator(".badge")).to_have_text("canceled")
    page.screenshot(path=screenshots / "jobs.png", full_page=True)

    row.get_by_role("button", name=f"Delete {kodak_crop.name}").click()
    expect(page.locator(f'#jobs-list li[data-id="{job_id}"]')).to_have_count(0)
    expect(page.locator("#job")).to_be_hidden()


def test_the_api_docs_render_offline(page: Page, service: Service, screenshots: Path) -> None:
    """/docs loads Swagger UI from this server: with every other host cut off, it still works."""
    outside: list[str] = []

    def only_this_server(route: Route) -> None:
        if route.request.url.startswith(service.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    page.goto("/docs")
    expect(page.locator(".opblock-summary-path", has_text="/v1/jobs/{job_id}/query")).to_be_visible()
    expect(page.locator(".info .title")).to_contain_text("Neural Experts")
    assert outside == []
    page.screenshot(path=screenshots / "docs.png")
