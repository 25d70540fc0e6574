"""The page at `/` end to end: real uploads, a real worker, a real browser.

Each test starts a tiny fit from the page, waits for it to succeed and checks its view: with
axe-core (from web/node_modules, served like three.js) for accessibility, and in screenshots at a
laptop's and a phone's size, which land in test-output/web/ for a person to look at.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from PIL import Image
from playwright.sync_api import Page, Route, expect

from model.network import ACTIVATIONS
from model.presets import MAX_EXPERTS, MODELS, PRESETS
from model.signals import kinds
from tests.utils.service import Service
from tests.utils.web import (
    FIT_TIMEOUT_MS,
    UPLOAD_CAP,
    natural_size,
    start_fit,
    wait_loaded,
    wait_succeeded,
)
from tests.web.conftest import DESKTOP


def shares_in_legend(page: Page) -> list[float]:
    """The legend's shares, in percent, as listed (largest first)."""
    texts = page.locator("#expert-legend .share").all_inner_texts()
    return [float(text.lstrip("<").rstrip("%")) for text in texts]


def downloaded(page: Page, link: str) -> tuple[str, bytes]:
    """Click a download link; the file's suggested name and bytes."""
    with page.expect_download() as download:
        page.click(link)
    return download.value.suggested_filename, Path(download.value.path()).read_bytes()


def same_as_the_api(page: Page, link: str) -> bytes:
    """Download through `link` and check the bytes are the API's for the link's URL."""
    _, data = downloaded(page, link)
    assert data == page.request.get(page.get_attribute(link, "href")).body()
    return data


def on_a_phone(page: Page, screenshot: Path) -> None:
    """At a phone's width, nothing sticks out sideways; a screenshot for a person to look at."""
    page.set_viewport_size(PHONE)
    wider = page.evaluate("[...document.querySelectorAll('body *')]"
                          ".filter(e => e.getBoundingClientRect().right > 391)"
                          ".map(e => e.id || e.className || e.tagName)")
    assert not wider, f"wider than a phone: {wider}"
    page.screenshot(path=screenshot, full_page=True)


PHONE = {"width": 390, "height": 844}
AXE = "/vendor/axe-core/axe.min.js"


def accessibility_problems(page: Page) -> list[str]:
    """axe-core's serious and critical findings on the page as it stands."""
    if not page.evaluate("'axe' in window"):
        page.add_script_tag(url=AXE)
    found = page.evaluate("axe.run(document, { resultTypes: ['violations'] })")["violations"]
    return [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:4]}"
            for v in found if v["impact"] in ("serious", "critical")]


def check_view(page: Page, screenshots: Path, name: str) -> None:
    """No serious accessibility problem; the view at a laptop's size and at a phone's (where
    nothing may stick out sideways), as screenshots."""
    assert not accessibility_problems(page), accessibility_problems(page)
    page.set_viewport_size(DESKTOP)
    page.screenshot(path=screenshots / f"{name}-1366x900.png", full_page=True)
    on_a_phone(page, screenshots / f"{name}-390x844.png")
    page.set_viewport_size(DESKTOP)


def test_image_fit_compares_clean_reconstruction_expert_map_and_zoom(
    page: Page, kodak_wide: Path, screenshots: Path
) -> None:
    # The result's renders, not the previews of the running fit (X-Fit-Preview).
    reconstructions: list[str] = []
    page.on("response", lambda r: reconstructions.append(r.url)
            if "/reconstruction" in r.url and "x-fit-preview" not in r.headers else None)
    start_fit(page, kodak_wide, steps=100)  # ten progress reports for the live curves
    expect(page.locator("#job-title")).to_have_text(kodak_wide.name)
    expect(page.locator("#job-step")).to_contain_text("step", timeout=FIT_TIMEOUT_MS)
    wait_succeeded(page)
    page.screenshot(path=screenshots / "image-training.png", full_page=True)

    wait_loaded(page, "#reconstruction", 48)
    wait_loaded(page, "#original", 48)
    assert natural_size(page, "#reconstruction") == (48, 32)
    # The reconstruction is shown clean, the expert map beside it, every panel 3:2 like the image.
    assert page.locator(".stage:has(#reconstruction) > *").count() == 1
    for stage in page.locator(".stage").all():
        box = stage.bounding_box()
        assert abs(box["width"] / box["height"] - 1.5) < 0.05, box
    expect(page.locator("#expert-legend li").first).to_contain_text("expert")
    assert abs(sum(shares_in_legend(page)) - 100) < 0.5
    assert page.eval_on_selector("#expert-map", "c => [c.width, c.height]") == [48, 32]
    expect(page.locator("#error-scale")).to_contain_text("yellow")
    expect(page.locator("#job-metrics")).to_contain_text("PSNR")
    expect(page.locator("#job-metrics")).to_contain_text("dB ↑ higher is better")

    # Before/after: the original left of the divider, the reconstruction right of it, by mouse
    # or keyboard.
    wait_loaded(page, "#compare-original", 48)
    wait_loaded(page, "#compare-reconstruction", 48)
    page.fill("#compare-split", "20")
    expect(page.locator("#compare-split")).to_have_attribute("aria-valuetext", "20% original")
    page.focus("#compare-split")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#compare-split")).to_have_attribute("aria-valuetext", "21% original")
    box = page.locator("#compare").bounding_box()
    shown_at = ("([x, y]) => document.elementFromPoint(x, y).id")
    middle = box["y"] + box["height"] / 2
    assert page.evaluate(shown_at, [box["x"] + 0.1 * box["width"], middle]) == "compare-original"
    assert page.evaluate(shown_at, [box["x"] + 0.5 * box["width"], middle]) == "compare-reconstruction"
    check_view(page, screenshots, "image")

    with page.expect_request(re.compile(r"/reconstruction\?width=96&height=64$")):
        page.select_option("#zoom", "2")
    wait_loaded(page, "#reconstruction", 96)
    expect(page.locator("#reconstruction-size")).to_have_text("(96 × 64 px, 2×; drag to pan)")
    assert page.eval_on_selector("#expert-map", "c => [c.width, c.height]") == [96, 64]
    centred = "s => Math.abs(s.scrollLeft - (s.scrollWidth - s.clientWidth) / 2) <= 1"
    assert page.eval_on_selector(".stage:has(#reconstruction)", centred)
    page.screenshot(path=screenshots / "image-result.png", full_page=True)

    # Dragged, every panel pans together.
    box = page.locator(".stage:has(#reconstruction)").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 40, box["y"] + box["height"] / 2, steps=4)
    page.mouse.up()
    scrolled = page.eval_on_selector_all(".stage", "stages => stages.map(s => s.scrollLeft)")
    assert len(set(scrolled)) == 1 and scrolled[0] < page.eval_on_selector(
        ".stage", "s => (s.scrollWidth - s.clientWidth) / 2"), scrolled

    # Downloads at the size shown: the API's reconstruction, the expert map as the page shows it.
    name, _ = downloaded(page, "#download-reconstruction")
    assert name == "kodim19-48x32-reconstruction-96x64.png"
    same_as_the_api(page, "#download-reconstruction")
    name, data = downloaded(page, "#download-expert-map")
    assert name == "kodim19-48x32-experts-96x64.png"
    with Image.open(io.BytesIO(data)) as expert_map:
        assert expert_map.size == (96, 64)
        counts = sorted((n for n, _ in expert_map.convert("RGB").getcolors()), reverse=True)
    map_shares = [round(100 * n / (96 * 64), 1) for n in counts if n / (96 * 64) >= 0.01]
    assert shares_in_legend(page)[:len(map_shares)] == map_shares

    # A zoom given up before it arrives is aborted, and 1x comes back from memory.
    held: list[Route] = []
    page.route(re.compile(r"/reconstruction\?width=384&height=256$"), lambda route: held.append(route))
    with page.expect_event("requestfailed", lambda r: "/reconstruction?width=384" in r.url):
        page.select_option("#zoom", "8")
        expect(page.locator("#zoom-status")).to_contain_text("8× (384 × 256 px)")
        expect(page.locator(".images")).to_have_attribute("aria-busy", "true")
        page.screenshot(path=screenshots / "image-zoom-loading.png", full_page=True)
        page.select_option("#zoom", "1")
    assert held, "the 8x render was never asked for"
    expect(page.locator("#reconstruction-size")).to_have_text("(48 × 32 px)")
    assert len([url for url in reconstructions if url.endswith("/reconstruction")]) == 1


    # Another tab, opened on the job's link: the upload comes from the API there.
    job_id = page.locator("#jobs-list li.selected").get_attribute("data-id")
    other = page.context.new_page()
    with other.expect_request(re.compile(rf"/v1/jobs/{job_id}/input$")):
        other.goto(f"/#job={job_id}")
    wait_loaded(other, "#reconstruction", 48)
    wait_loaded(other, "#original", 48)
    expect(other.locator("#error-scale")).to_contain_text("yellow")
    other.screenshot(path=screenshots / "image-linked.png", full_page=True)


def test_audio_fit_shows_waveforms_shares_players_and_downloads(
    page: Page, bach: Path, screenshots: Path
) -> None:
    start_fit(page, bach)
    wait_succeeded(page)
    expect(page.locator("#expert-legend li").first).to_contain_text("expert")
    assert abs(sum(shares_in_legend(page)) - 100) < 0.5
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
    # One lane per expert over 1% (the rest share "other"), named for a screen reader; a time axis;
    # the reconstruction's playhead where its player is.
    lanes = page.locator("#expert-lanes")
    expect(lanes).to_have_attribute("aria-label", re.compile(r"^Expert lanes over \d+\.\d+ s.*expert \d"))
    lanes_drawn = page.eval_on_selector("#expert-lanes", "c => c.clientHeight") // 18
    assert lanes_drawn == len(shares_in_legend(page))
    expect(page.locator("#wave-original")).to_have_attribute("aria-label", re.compile("^Original waveform, "))
    expect(page.locator("#playhead-reconstruction")).to_be_hidden()
    page.wait_for_function("document.querySelector('#audio-reconstruction').duration > 0")
    page.eval_on_selector("#audio-reconstruction", "a => { a.currentTime = a.duration / 2; }")
    expect(page.locator("#playhead-reconstruction")).to_be_visible()
    halfway = re.compile(r"left: 50(\.\d+)?%")
    expect(page.locator("#playhead-reconstruction")).to_have_attribute("style", halfway)
    check_view(page, screenshots, "audio")

    assert same_as_the_api(page, "#download-reconstruction")[:4] == b"RIFF"
    experts = json.loads(same_as_the_api(page, "#download-experts"))
    assert set(experts) >= {"expert_ids", "segments"}
    assert same_as_the_api(page, "#download-plot")[:4] == b"\x89PNG"


def test_mesh_fit_shows_3d_viewer_legend_warning_and_downloads(
    page: Page, spot: Path, screenshots: Path
) -> None:
    start_fit(page, spot)
    wait_succeeded(page)
    expect(page.locator("#job-meta")).to_contain_text("3D shape")
    expect(page.locator("#viewer-status")).to_contain_text("vertices", timeout=60_000)
    expect(page.locator("#viewer canvas")).to_be_visible()
    expect(page.locator("#viewer")).to_have_attribute("role", "application")
    expect(page.locator("#mesh-legend li").first).to_contain_text("expert")
    expect(page.locator("#download-glb")).to_have_attribute("href", re.compile("format=glb"))
    # Keys turn the view, 0 puts it back; the upload's points show on request.
    view = "() => document.querySelector('#viewer canvas').toDataURL()"
    start = page.evaluate(view)
    page.focus("#viewer")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("-")
    assert page.evaluate(view) != start
    page.keyboard.press("0")
    assert page.evaluate(view) == start
    page.check("#mesh-input")
    expect(page.locator("#viewer-status")).to_contain_text("uploaded points shown", timeout=60_000)
    assert page.evaluate(view) != start
    page.uncheck("#mesh-input")
    # A 10-step fit is a poor shape or not; the page says so exactly when the IoU says so.
    job_id = page.locator("#jobs-list li.selected").get_attribute("data-id")
    iou = page.request.get(f"/v1/jobs/{job_id}/metrics").json()["iou"]
    warning = page.locator("#job-warning")
    if iou < 0.5:
        expect(warning).to_contain_text("The shape was not recovered")
    else:
        expect(warning).to_be_hidden()
    check_view(page, screenshots, "mesh")
    page.uncheck("#mesh-experts")
    expect(page.locator("#mesh-legend")).to_be_hidden()
    page.screenshot(path=screenshots / "mesh-plain.png", full_page=True)

    # Above 128³ the page asks first; refused, nothing is asked of the API.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.select_option("#mesh-resolution", "256")
    expect(page.locator("#mesh-resolution")).to_have_value("64")
    glb_32 = re.compile(r"/mesh\?resolution=32&format=glb&experts=true&original_frame=true$")
    with page.expect_request(glb_32):
        page.select_option("#mesh-resolution", "32")
    expect(page.locator("#viewer-status")).to_contain_text("at 32³", timeout=60_000)
    name, data = downloaded(page, "#download-glb")
    assert name == "spot-32.glb"
    assert data[:4] == b"glTF"
    assert same_as_the_api(page, "#download-ply")[:3] == b"ply"


def test_form_is_labelled_explained_and_keyboard_usable(
    page: Page, kodak_crop: Path, screenshots: Path
) -> None:
    page.goto("/")
    for label in ("Drop a file here", "Preset", "Steps", "Model", "Experts", "Activation",
                  "Time budget", "Paper protocol"):
        field = page.get_by_label(label)
        expect(field).to_be_visible()
        if label != "Drop a file here":  # every choice has its one line of help
            help_id = field.get_attribute("aria-describedby")
            expect(page.locator(f"#{help_id}")).not_to_be_empty()
    expect(page.locator("#activation-hint")).to_contain_text("FINER")
    expect(page.get_by_role("link", name="API docs")).to_have_attribute("href", "/docs")
    focused = []
    for _ in range(12):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id"))
    # A skip link first, the form next; the API key, rarely needed, comes after the job list.
    assert focused == ["skip-link", "docs-link", "file", "preset", "steps", "model", "experts", "activation",
                       "time-budget", "protocol", "submit", "jobs-refresh"]
    page.get_by_text("Use it from code").click()  # the client and webhook samples (issue 15)
    expect(page.locator("#from-code")).to_contain_text("job.wait(progress=True)")
    expect(page.locator("#from-code")).to_contain_text("verify_webhook(headers, body")
    page.focus("#submit")
    page.keyboard.press("Enter")
    expect(page.locator("#form-error")).to_have_text("Choose a file to fit first.")

    # What the form cannot send is refused here, naming the field, and nothing is uploaded.
    uploads: list[str] = []
    page.on("request", lambda r: uploads.append(r.url) if r.method == "POST" else None)
    page.set_input_files("#file", {"name": "a.png", "mimeType": "image/png", "buffer": b"png"})
    for field, value, message in (("#steps", "abc", "Steps must be a whole number of 1 or more"),
                                  ("#experts", "40", "Experts must be a whole number from 2 to 32")):
        page.fill(field, value)
        page.click("#submit")
        expect(page.locator("#form-error")).to_contain_text(message)
        expect(page.locator(field)).to_have_attribute("aria-invalid", "")
        expect(page.locator(field)).to_be_focused()
        page.fill(field, "")
    assert uploads == []

    # The run time it will take, before it starts: the default budget, a chosen one, or steps.
    estimate = page.locator("#fit-estimate")
    expect(estimate).to_contain_text("up to 5 min, the service's default budget")
    page.select_option("#time-budget", "60")
    expect(estimate).to_contain_text("1 min, the budget")
    page.fill("#steps", "200")
    expect(estimate).to_contain_text("~58 s (200 steps")
    page.set_input_files("#file", kodak_crop)
    page.fill("#steps", "1")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/v1/jobs")) as sent:
        page.click("#submit")
    job = sent.value.json()
    assert job["options"]["time_budget_s"] == 60
    page.request.post(f"/v1/jobs/{job['id']}/cancel")
    page.goto("/")
    page.fill("#steps", "abc")
    page.click("#submit")
    check_view(page, screenshots, "form")


def test_the_form_offers_what_the_api_declares(page: Page) -> None:
    page.goto("/")  # the selects are empty in the HTML: GET /v1/options fills them
    expect(page.locator("#model option")).to_have_count(len(MODELS))
    expect(page.locator("#model")).to_have_value("neural-experts")
    expect(page.locator("#model option:checked")).to_have_text("Neural Experts")
    expect(page.locator("#preset option")).to_have_count(len(PRESETS))
    expect(page.locator("#preset")).to_have_value("fast")
    expect(page.locator("#activation option")).to_have_count(len(ACTIVATIONS))
    expect(page.locator("#experts-hint")).to_contain_text(f"2 to {MAX_EXPERTS}")


# A kind the page's scripts have never heard of, as GET /v1/kinds would declare it
# (tests/utils/toy_kind.py registers such a kind).
TOY_KIND = {
    "name": "toy", "label": "toy signal", "description": "TOY1 then numbers", "suffixes": [".toy"],
    "media_family": "text", "cpu_step_s": 1.5, "outputs": [],
    "poor_results": [{"metric": "close", "below": 0.9, "problem": "The toy is off",
                      "advice": "try more steps."}],
}


def test_without_the_kinds_the_page_keeps_its_own_words(page: Page) -> None:
    page.route("**/v1/kinds", lambda route: route.abort())
    page.goto("/")
    expect(page.locator("#kind-list")).to_have_text("an image, an audio clip or a 3D shape")
    expect(page.locator("#file-hint")).to_contain_text("An image (PNG, JPEG, WebP)")
    expect(page.locator("#preset option")).not_to_have_count(0)  # the rest of the form is there


def test_the_page_guesses_estimates_and_judges_by_what_each_kind_declares(page: Page) -> None:
    """The kinds and formats the page lists, an upload's kind (by media family, then extension),
    a step's cost and a poor result come from GET /v1/kinds: a kind declared there only is
    handled like the others."""
    def with_toy(route: Route) -> None:
        real = route.fetch()
        route.fulfill(response=real, json=[*real.json(), TOY_KIND])

    page.route("**/v1/kinds", with_toy)
    page.goto("/")
    expect(page.locator("#kind-list")).to_have_text("audio, image, 3D shape or toy signal")
    expect(page.locator("#file-hint")).to_have_text(
        "Audio (WAV, FLAC, OGG), image (PNG, JPG, JPEG, WEBP), 3D shape (PLY, XYZ, OBJ, OFF, STL) "
        "or toy signal (TOY)")
    estimate = page.locator("#fit-estimate")
    page.fill("#steps", "20")
    expect(estimate).to_contain_text("No run-time estimate for 20 steps")  # no file, no kind
    for name, media_type in (("wave.toy", ""), ("wave.dat", "text/plain")):
        page.set_input_files("#file", {"name": name, "mimeType": media_type, "buffer": b"TOY1 1 2"})
        expect(estimate).to_contain_text("~30 s (20 steps at ~1.5 s)")
    page.set_input_files("#file", {"name": "spot.ply", "mimeType": "", "buffer": b"ply"})
    step_s = kinds()["sdf"].cpu_step_s  # as the sdf kind declares it
    expect(estimate).to_contain_text(f"~{round(20 * step_s)} s (20 steps at ~{step_s:g} s)")
    page.set_input_files("#file", {"name": "notes.bin", "mimeType": "", "buffer": b"?"})
    expect(estimate).to_contain_text("this file's name and type do not say which it is")

    said = page.evaluate("""async (kind) => {
      const { poorResult } = await import("/static/metrics.js");  // as app.js calls it
      return [0.5, 0.95].map((close) => poorResult({ kind: "toy", metrics: { close } }, kind));
    }""", TOY_KIND)
    assert said == ["The toy is off (close 0.50000, under 0.90000): try more steps.", ""]


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
