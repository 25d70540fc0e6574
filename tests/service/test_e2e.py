"""Upload -> train -> poll -> fetch, over real HTTP, with a real worker on a real Redis."""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf
import torch
import trimesh
from PIL import Image

from model.checkpoint import load_checkpoint
from tests.utils.data import KODIM19
from tests.utils.service import Service, assert_problem, create_job, submit, wait_status

STEPS = 20  # tiny fits: the service is under test here, not the model


def fit(client: httpx.Client, path: Path, steps: int = STEPS) -> dict[str, Any]:
    """Submit, check the 202 promise, wait for success; returns the finished job."""
    response = create_job(client, path, steps=steps)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert int(response.headers["retry-after"]) >= 1
    assert job["status"] == "queued" and job["urls"]["self"] == f"/v1/jobs/{job['id']}"
    done = wait_status(client, job["id"], "succeeded", "failed", "canceled")
    assert done["status"] == "succeeded", done
    assert done["progress"]["step"] == done["progress"]["total"] == steps
    assert done["attempts"] == 1 and done["error"] is None
    assert done["started_at"] <= done["finished_at"]
    return done


def get(client: httpx.Client, job: dict[str, Any], output: str, **query: Any) -> httpx.Response:
    response = client.get(job["urls"][output], params=query)
    assert response.status_code == 200, response.text
    return response


def test_an_image_is_fitted_and_served(client: httpx.Client, kodak_crop: Path,
                                       tmp_path: Path) -> None:
    job = fit(client, kodak_crop)
    assert job["kind"] == "image" and job["metrics"]["psnr"] > 15
    assert set(job["urls"]) >= {"reconstruction", "experts", "metrics", "weights", "query"}

    png = get(client, job, "reconstruction", width=48, height=40)
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (48, 40)
    assert get(client, job, "reconstruction", width=48, height=40).content == png.content
    with Image.open(io.BytesIO(get(client, job, "experts").content)) as experts:
        assert experts.size == (32, 32) and experts.mode == "RGB"
    assert get(client, job, "metrics").json() == job["metrics"]
    upload = get(client, job, "input")
    assert upload.content == kodak_crop.read_bytes() and upload.headers["content-type"] == "image/png"
    assert upload.headers["content-disposition"] == (
        "attachment; filename=\"kodim19-32.png\"; filename*=UTF-8''kodim19-32.png")

    with zipfile.ZipFile(io.BytesIO(get(client, job, "weights").content)) as archive:
        archive.extractall(tmp_path)
    model, config = load_checkpoint(tmp_path)
    assert config["kind"] == "image" and config["signal"]["width"] == 32

    coords = [[0.0, 0.0], [-1.0, 1.0], [0.5, -0.25]]
    answer = client.post(job["urls"]["query"], json={"coords": coords})
    assert answer.status_code == 200, answer.text
    values, ids = model.predict(torch.tensor(coords))
    assert np.allclose(answer.json()["values"], values.numpy(), atol=1e-5)
    assert answer.json()["experts"] == ids.tolist()
    far = client.post(job["urls"]["query"], json={"coords": [[1e308, 0.0]]})  # float32: inf, then NaN
    assert_problem(far, 422, "invalid_option")


def test_an_image_over_the_render_cap_renders_scaled_down_by_default(
        client: httpx.Client, tmp_path: Path) -> None:
    photo = tmp_path / "kodim19-half.png"
    with Image.open(KODIM19) as img:
        img.reduce(2).save(photo)  # 256 x 384: 98,304 pixels over the suite's cap of 256 x 256
    job = fit(client, photo, steps=2)
    for output in ("reconstruction", "experts"):
        with Image.open(io.BytesIO(get(client, job, output).content)) as shown:
            assert shown.size == (209, 313)  # the largest at 256 x 384's aspect within 65,536
    body = assert_problem(client.get(job["urls"]["reconstruction"], params={"width": 256}), 422,
                          "over_limit")
    assert "98,304 pixels" in body["detail"]  # asked for, the input's size is refused, not shrunk


def test_an_audio_clip_is_fitted_and_served(client: httpx.Client, bach: Path) -> None:
    job = fit(client, bach)
    assert job["kind"] == "audio" and job["progress"]["metric_name"] == "mse"

    wav = get(client, job, "reconstruction", sample_rate=8000)
    assert wav.headers["content-type"] == "audio/wav"
    samples, rate = sf.read(io.BytesIO(wav.content))
    assert rate == 8000 and len(samples) == 800  # 0.1 s

    labels = get(client, job, "experts", sample_rate=8000).json()
    assert len(labels["expert_ids"]) == 800 and labels["segments"]
    plot = get(client, job, "experts", format="png")
    assert plot.headers["content-type"] == "image/png"
    upload = get(client, job, "input")
    assert upload.content == bach.read_bytes() and upload.headers["content-type"] == "audio/wav"
    assert_problem(client.get(job["urls"]["reconstruction"], params={"width": 10}), 422,
                   "invalid_option")


def test_a_mesh_is_fitted_and_served(client: httpx.Client, spot: Path) -> None:
    job = fit(client, spot, steps=2)
    assert job["kind"] == "sdf" and set(job["metrics"]) >= {"iou", "chamfer"}
    assert "mesh" in job["urls"] and "reconstruction" not in job["urls"]

    ply = trimesh.load(io.BytesIO(get(client, job, "mesh", resolution=24).content),
                       file_type="ply")
    assert len(ply.vertices) > 0 and len(ply.faces) > 0
    coloured = trimesh.load(io.BytesIO(get(client, job, "mesh", resolution=24, experts="true")
                                       .content), file_type="ply")
    assert coloured.visual.vertex_colors.shape == (len(coloured.vertices), 4)
    assert get(client, job, "mesh", resolution=16, format="obj").content.lstrip().startswith(
        (b"v ", b"#"))
    assert get(client, job, "mesh", resolution=16, format="glb").content[:4] == b"glTF"
    upload = get(client, job, "input")  # OBJ text: bytes to save, never a page to show
    assert upload.content == spot.read_bytes()
    assert upload.headers["content-type"] == "application/octet-stream"

    polls = polls_during(client, job, lambda c: get(c, job, "mesh", resolution=32, experts="true"))
    assert polls >= 3, "polls waited for a render"

    assert_problem(client.get(job["urls"]["mesh"], params={"resolution": 33}), 422, "over_limit")
    assert_problem(client.get(f"/v1/jobs/{job['id']}/reconstruction"), 422,
                   "output_not_available")


def polls_during(client: httpx.Client, job: dict[str, Any],
                 request: Callable[[httpx.Client], object]) -> int:
    """How many job polls were answered while `request` (a slow render) was in flight."""
    with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=client.base_url, timeout=120) as other:
        pending = pool.submit(request, other)
        polls = 0
        while not pending.done():
            assert client.get(job["urls"]["self"]).status_code == 200
            polls += 1
        pending.result()
    return polls


def test_events_stream_progress_then_the_final_status(client: httpx.Client,
                                                      kodak_crop: Path) -> None:
    job = submit(client, kodak_crop, steps=60)
    events: list[tuple[str, dict[str, Any]]] = []
    with client.stream("GET", job["urls"]["events"], timeout=180) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    steps = [data["step"] for name, data in events if name == "progress"]
    assert steps == sorted(steps) and steps[-1] == 60 and len(steps) > 1
    statuses = [data["status"] for name, data in events if name == "status"]
    assert statuses[-1] == "succeeded" and "running" in statuses


def test_idempotency_key_replays_and_refuses_reuse(client: httpx.Client, kodak_crop: Path,
                                                   bach: Path) -> None:
    headers = {"Idempotency-Key": "test-replay"}
    first = client.post("/v1/jobs", files={"file": kodak_crop.open("rb")},
                        data={"steps": "5"}, headers=headers)
    again = client.post("/v1/jobs", files={"file": kodak_crop.open("rb")},
                        data={"steps": "5"}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert_problem(client.post("/v1/jobs", files={"file": bach.open("rb")}, data={"steps": "5"},
                               headers=headers), 422, "idempotency_key_reused")
    wait_status(client, first.json()["id"], "succeeded")


def test_jobs_are_listed_filtered_and_deleted(client: httpx.Client, service: Service,
                                              kodak_crop: Path) -> None:
    job = submit(client, kodak_crop, steps=5)
    wait_status(client, job["id"], "succeeded")
    listed = client.get("/v1/jobs", params={"status": "succeeded", "limit": 1}).json()
    assert listed["limit"] == 1 and len(listed["items"]) == 1 and listed["total"] >= 1
    assert all(j["status"] == "succeeded" for j in listed["items"])
    second = client.get("/v1/jobs", params={"status": "succeeded", "limit": 1, "offset": 1})
    assert second.json()["items"] != listed["items"] or listed["total"] == 1
    assert_problem(client.get("/v1/jobs", params={"status": "lost"}), 422, "invalid_option")

    artifacts = service.data / "artifacts" / "jobs" / job["id"]
    assert (artifacts / "model" / "model.safetensors").is_file()
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert not artifacts.exists()
    assert_problem(client.get(f"/v1/jobs/{job['id']}"), 404, "job_not_found")
    assert_problem(client.delete(f"/v1/jobs/{job['id']}"), 404, "job_not_found")


def test_health_readiness_metrics_and_docs(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}
    metrics = client.get("/metrics").text
    assert 'nexp_jobs{status="succeeded"}' in metrics and "nexp_queue_depth" in metrics
    assert 'nexp_http_requests_total{method="GET",route="/healthz",status="200"}' in metrics
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui-bundle.js" in docs.text
    assets = re.findall(r"(?:src|href|url)[=:] ?['\"]([^'\"]+)['\"]", docs.text)
    assert len(assets) >= 3 and "/static/docs.js" in assets
    assert '"/openapi.json"' in client.get("/static/docs.js").text  # what Swagger UI shows
    for url in assets:  # all served from here: /docs works offline
        assert url.startswith("/") and client.get(url).status_code == 200, url


def test_the_kinds_are_listed_with_their_outputs(client: httpx.Client) -> None:
    """What the page labels jobs and picks their views by, from the registry (model/signals)."""
    kinds = {kind["name"]: kind for kind in client.get("/v1/kinds").json()}
    assert list(kinds) == ["audio", "image", "sdf"] and kinds["sdf"]["label"] == "3D shape"
    image = {output["name"]: output for output in kinds["image"]["outputs"]}
    assert list(image) == ["reconstruction", "experts"]
    assert [(o["name"], o["type"], o["minimum"]) for o in image["experts"]["options"]] == [
        ("width", "integer", 1), ("height", "integer", 1)]
    assert ".flac" in kinds["audio"]["suffixes"]
    # What the page guesses an upload's kind by, estimates its run time with, and calls poor.
    assert [kinds[name]["media_family"] for name in kinds] == ["audio", "image", "model"]
    assert all(kind["cpu_step_s"] > 0 for kind in kinds.values())
    assert [(r["metric"], r["below"]) for r in kinds["sdf"]["poor_results"]] == [("iou", 0.5)]
    assert kinds["audio"]["poor_results"] == []


def test_every_operation_documents_its_responses(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert "Problem" in spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert any(code.startswith("2") for code in responses), (method, path)
            if "{job_id}" in path:
                assert "404" in responses, (method, path)
            for code, response in responses.items():
                if code[0] in "45":
                    assert set(response["content"]) == {"application/problem+json"}, (
                        method, path, code)
