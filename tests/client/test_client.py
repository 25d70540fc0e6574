"""nexp_client against a live service: fit, wait, every output kind, retries, errors."""

from __future__ import annotations

import asyncio
import io
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import trimesh
from nexp_client import ApiError, AsyncClient, AudioExperts, Client, JobFailed, Retry
from nexp_client._calls import decode_render
from PIL import Image

from tests.utils.service import Service


def test_an_image_fit_gives_every_output(nexp: Client, kodak_crop: Path, tmp_path: Path) -> None:
    job = nexp.fit(kodak_crop, preset="fast", steps=5)
    assert job.status == "queued" and job.kind == "image"
    job.wait(progress=True, timeout=180)
    assert job.status == "succeeded"
    image = job.reconstruction(width=16, height=8)
    assert isinstance(image, Image.Image) and image.size == (16, 8)
    experts = job.experts()
    assert isinstance(experts, Image.Image) and experts.size == (32, 32)
    values, ids = job.query([[0.1, -0.2], [0.0, 0.0]])
    assert values.shape == (2, 3) and ids.shape == (2,) and ids.dtype == np.int64
    assert "psnr" in job.metrics()
    with zipfile.ZipFile(job.weights(tmp_path / "weights.zip")) as archive:
        assert "model.safetensors" in archive.namelist()
    assert job.id in [j.id for j in nexp.jobs(status="succeeded", limit=100)]
    job.delete()
    with pytest.raises(ApiError) as missing:
        job.refresh()
    assert (missing.value.status, missing.value.code) == (404, "job_not_found")
    assert missing.value.title and missing.value.detail


def test_audio_comes_back_as_samples_and_expert_ids(nexp: Client, bach: Path) -> None:
    job = nexp.fit(bach, steps=5).wait(timeout=180)
    samples, rate = job.reconstruction(sample_rate=8000)
    assert rate == 8000 and samples.ndim == 1 and len(samples) == 800
    assert np.isfinite(samples).all() and np.abs(samples).max() <= 1
    experts = job.experts()
    assert isinstance(experts, AudioExperts) and experts.sample_rate > 0
    assert len(experts.ids) > 0 and experts.segments


def test_a_shape_comes_back_as_a_mesh_or_its_bytes(nexp: Client, spot: Path) -> None:
    job = nexp.fit(spot, steps=5).wait(timeout=180)
    mesh = job.mesh(resolution=16)
    assert isinstance(mesh, trimesh.Trimesh)
    glb = job.mesh(resolution=16, format="glb")
    assert isinstance(glb, bytes) and glb[:4] == b"glTF"


def test_job_failed_carries_the_code(nexp: Client, kodak_crop: Path) -> None:
    job = nexp.fit(kodak_crop, steps=50, lr=1e6)
    with pytest.raises(JobFailed) as failed:
        job.wait(timeout=180)
    assert failed.value.code == "diverged" and failed.value.detail
    assert job.status == "failed"


def test_a_canceled_job_raises_job_failed_canceled(nexp: Client, kodak_crop: Path) -> None:
    job = nexp.fit(kodak_crop, steps=5000)
    job.cancel()
    with pytest.raises(JobFailed) as canceled:
        job.wait(timeout=60)
    assert canceled.value.code == "canceled"


def test_an_api_error_carries_the_problem(nexp: Client, kodak_crop: Path) -> None:
    with pytest.raises(ApiError) as refused:
        nexp.fit(kodak_crop, steps=5, seed=-1)
    assert refused.value.status == 422 and refused.value.code and refused.value.title


class LostAnswers(httpx.BaseTransport):
    """The real service behind it, but the first answer to each create is lost on the way back
    (the job was made): the client can only try again."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.creates: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path == "/v1/jobs":
            self.creates.append(request.headers["idempotency-key"])
            if len(self.creates) == 1:
                response.close()
                raise httpx.ReadError("connection reset", request=request)
        return response


def test_a_retried_fit_makes_one_job(live: Service, kodak_crop: Path) -> None:
    transport = LostAnswers()
    with Client(live.url, transport=transport, retry=Retry(backoff_s=0.05)) as nexp:
        before = {j.id for j in nexp.jobs(limit=100)}
        job = nexp.fit(kodak_crop, steps=5, seed=7)
        made = {j.id for j in nexp.jobs(limit=100)} - before
    assert len(transport.creates) == 2 and transport.creates[0] == transport.creates[1]
    assert made == {job.id}


class Throttled(httpx.BaseTransport):
    """The real service, after one 429 with Retry-After: 1 (as a quota answers)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.sent: list[float] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(time.monotonic())
        if len(self.sent) == 1:
            return httpx.Response(429, headers={"retry-after": "1", "content-type":
                                                "application/problem+json"},
                                  json={"code": "quota_exceeded", "title": "t", "detail": "d"})
        return self.inner.handle_request(request)


def test_a_429_is_retried_after_its_retry_after(live: Service) -> None:
    transport = Throttled()
    with Client(live.url, transport=transport) as nexp:
        nexp.jobs()
    assert len(transport.sent) == 2 and transport.sent[1] - transport.sent[0] >= 1.0


def test_retries_are_bounded(live: Service) -> None:
    with Client("http://127.0.0.1:9", retry=Retry(attempts=3, backoff_s=0.01)) as nexp:
        with pytest.raises(httpx.ConnectError):
            nexp.jobs()


def test_the_async_client_does_the_same(live: Service, kodak_crop: Path) -> None:
    async def fit_and_read() -> tuple[Image.Image, np.ndarray]:
        async with AsyncClient(live.url) as nexp:
            job = await nexp.fit(kodak_crop, steps=5, seed=3)
            await job.wait(timeout=180)
            image = await job.reconstruction(width=8, height=8)
            _, ids = await job.query([[0.0, 0.0]])
            assert job.id in [j.id for j in await nexp.jobs(limit=100)]
            await job.delete()
            return image, ids

    image, ids = asyncio.run(fit_and_read())
    assert image.size == (8, 8) and ids.shape == (1,)


def test_it_reads_the_url_from_the_environment(live: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXP_URL", live.url)
    with Client() as nexp:
        assert nexp.url == live.url
        assert isinstance(nexp.jobs(), list)


def test_an_image_decodes_from_png_bytes() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2)).save(buffer, format="PNG")
    response = httpx.Response(200, content=buffer.getvalue(), headers={"content-type": "image/png"})
    assert decode_render(response).size == (3, 2)
