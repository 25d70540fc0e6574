"""Bad input gets a clear 4xx problem with a machine code, and leaves nothing behind."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.utils.service import Service, assert_problem, create_job, submit, wait_status
from tests.utils.signals import bach_clip, decompression_bomb, sphere_points

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# name -> (write the upload into a folder, declared content type, status, code)
UPLOADS: dict[str, tuple[Callable[[Path], Path], str | None, int, str]] = {
    "empty file": (lambda d: _write(d / "empty.png", b""), None, 422, "empty_file"),
    "unknown type": (lambda d: _write(d / "data.bin", bytes(range(256)) * 8), None, 415,
                     "unsupported_type"),
    "content lies about its type": (lambda d: _write(d / "photo.png", b"hello, world\n" * 50),
                                    "image/png", 422, "undecodable"),
    "undecodable image": (lambda d: _write(d / "broken.png", PNG_MAGIC + bytes(500)), None,
                          422, "undecodable"),
    "undecodable audio": (lambda d: _write(d / "broken.wav", b"RIFF\x24\x00\x00\x00WAVEfmt "
                                           + bytes(200)), None, 422, "undecodable"),
    "undecodable mesh": (lambda d: _write(d / "broken.ply", b"ply\nformat ascii 1.0\nelement "
                                          b"vertex 5\nproperty float x\nend_header\nnot numbers\n"),
                         None, 422, "undecodable"),
    "image over the pixel cap": (lambda d: decompression_bomb(d / "bomb.png", 1000), None, 413,
                                 "too_large"),
    "audio over the duration cap": (lambda d: bach_clip(d / "long.wav", 1.5), None, 413,
                                    "too_long"),
    "point cloud with NaN": (lambda d: sphere_points(d / "nan.xyz", 500, float("nan")), None,
                             422, "non_finite"),
    "point cloud with infinity": (lambda d: sphere_points(d / "inf.xyz", 500, float("inf")),
                                  None, 422, "non_finite"),
    "too few points": (lambda d: sphere_points(d / "few.xyz", 20), None, 422, "too_few_points"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture
def leaves_nothing(client: httpx.Client, service: Service) -> Iterator[None]:
    """The test's refused requests create no job, no artifact and no leftover upload."""
    jobs_before = client.get("/v1/jobs").json()["total"]
    artifacts = service.data / "artifacts" / "jobs"
    stored_before = set(artifacts.iterdir()) if artifacts.exists() else set()
    yield
    assert client.get("/v1/jobs").json()["total"] == jobs_before
    assert (set(artifacts.iterdir()) if artifacts.exists() else set()) == stored_before
    assert not list((service.data / "tmp").glob("upload-*"))


@pytest.mark.usefixtures("leaves_nothing")
@pytest.mark.parametrize("case", UPLOADS)
def test_a_bad_upload_is_refused_with_its_code(client: httpx.Client, tmp_path: Path,
                                               case: str) -> None:
    write, content_type, status, code = UPLOADS[case]
    body = assert_problem(create_job(client, write(tmp_path), content_type), status, code)
    assert body["instance"] == "/v1/jobs"
    assert str(tmp_path) not in body["detail"] and "/tmp" not in body["detail"]


@pytest.mark.usefixtures("leaves_nothing")
def test_a_request_without_a_file_is_refused(client: httpx.Client) -> None:
    assert_problem(client.post("/v1/jobs", data={"steps": "5"}), 400, "no_file")
    assert_problem(client.post("/v1/jobs"), 400, "no_file")


@pytest.mark.usefixtures("leaves_nothing")
def test_a_declared_type_that_contradicts_the_content_is_refused(
        client: httpx.Client, kodak_crop: Path) -> None:
    body = assert_problem(create_job(client, kodak_crop, "audio/wav"), 415,
                          "content_type_mismatch")
    assert "image" in body["detail"]


@pytest.mark.usefixtures("leaves_nothing")
@pytest.mark.parametrize("options", [
    {"preset": "bogus"}, {"steps": "0"}, {"steps": "ten"}, {"lr": "-1"}, {"experts": "1"},
    {"experts": "1000"}, {"model": "transformer"}, {"activation": "relu"}, {"protocol": "weird"},
    {"stepz": "5"}, {"model": "siren", "experts": "4"},
])
def test_an_invalid_option_is_refused(client: httpx.Client, kodak_crop: Path,
                                      options: dict[str, str]) -> None:
    assert_problem(create_job(client, kodak_crop, **options), 422, "invalid_option")


@pytest.mark.usefixtures("leaves_nothing")
@pytest.mark.parametrize(("field", "value", "why"), [
    ("time_budget_s", "-1", "greater than 0"), ("time_budget_s", "0", "greater than 0"),
    ("time_budget_s", "inf", "finite"), ("time_budget_s", "100000", "NEXP_TIME_LIMIT_S"),
    ("target_psnr", "500", "less than or equal to 200"), ("target_psnr", "0.5", "greater than"),
    ("top_k", "0", "greater than or equal to 1"), ("top_k", "5", "top_k must be 1 to K = 4"),
])
def test_a_bad_budget_target_or_top_k_is_refused_before_queueing(
        client: httpx.Client, kodak_crop: Path, field: str, value: str, why: str) -> None:
    body = assert_problem(create_job(client, kodak_crop, **{field: value}), 422, "invalid_option")
    assert why in body["detail"], body


@pytest.mark.usefixtures("leaves_nothing")
def test_a_protocol_the_kind_does_not_declare_is_refused(client: httpx.Client,
                                                         tmp_path: Path) -> None:
    """The image kind's "paper" is a choice of the form, but not for audio: its loader says so."""
    clip = bach_clip(tmp_path / "clip.wav", 0.1)
    body = assert_problem(create_job(client, clip, protocol="paper"), 422, "invalid_option")
    assert "'paper'" in body["detail"] and "audio" in body["detail"], body


@pytest.mark.usefixtures("leaves_nothing")
def test_a_target_psnr_for_a_shape_is_refused(client: httpx.Client, tmp_path: Path) -> None:
    cloud = sphere_points(tmp_path / "sphere.xyz", 2000)
    body = assert_problem(create_job(client, cloud, target_psnr="30"), 422, "invalid_option")
    assert "image and audio" in body["detail"]


@pytest.mark.usefixtures("leaves_nothing")
def test_steps_over_the_cap_are_refused(client: httpx.Client, kodak_crop: Path) -> None:
    body = assert_problem(create_job(client, kodak_crop, steps=5001), 422, "over_limit")
    assert "NEXP_MAX_STEPS" in body["detail"]


@pytest.mark.usefixtures("leaves_nothing")
def test_a_body_over_the_cap_is_refused(client: httpx.Client, tmp_path: Path) -> None:
    big = _write(tmp_path / "big.png", PNG_MAGIC + bytes(1 << 20))
    assert_problem(create_job(client, big), 413, "body_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: cut off while streaming
        boundary = b"--x\r\nContent-Disposition: form-data; name=file; filename=big.png\r\n\r\n"
        yield boundary
        for _ in range(40):
            yield bytes(64 << 10)

    response = client.post("/v1/jobs", content=chunks(),
                           headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert_problem(response, 413, "body_too_large")


@pytest.mark.usefixtures("leaves_nothing")
def test_a_body_over_the_cap_is_refused_before_it_is_sent(service: Service) -> None:
    """The answer comes from the headers alone: the server reads none of the 100 MB."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as conn:
        conn.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000000\r\n"
                     b"Content-Type: multipart/form-data; boundary=x\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):  # the server closes the connection after answering
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"application/problem+json" in answer and b"body_too_large" in answer


def test_unknown_jobs_are_404(client: httpx.Client) -> None:
    for path in ("", "/reconstruction", "/metrics", "/weights", "/events", "/mesh"):
        assert_problem(client.get(f"/v1/jobs/no-such-job{path}"), 404, "job_not_found")
    assert_problem(client.post("/v1/jobs/no-such-job/cancel"), 404, "job_not_found")
    assert_problem(client.post("/v1/jobs/no-such-job/query", json={"coords": [[0, 0]]}), 404,
                   "job_not_found")
    assert_problem(client.get("/v1/nothing-here"), 404, "not_found")


def test_outputs_of_an_unfinished_job_are_409_and_wrong_outputs_422(
        client: httpx.Client, kodak_crop: Path) -> None:
    job = submit(client, kodak_crop, steps=5000)
    try:
        for output in ("reconstruction", "experts", "metrics", "weights"):
            body = assert_problem(client.get(job["urls"][output]), 409, "job_not_ready")
            assert job["id"] in body["detail"]
        assert_problem(client.post(job["urls"]["query"], json={"coords": [[0, 0]]}), 409,
                       "job_not_ready")
        assert_problem(client.get(f"/v1/jobs/{job['id']}/mesh"), 422, "output_not_available")
    finally:
        client.post(job["urls"]["cancel"])
    wait_status(client, job["id"], "canceled", timeout=60)


def test_queries_with_bad_options_are_422(client: httpx.Client, kodak_crop: Path) -> None:
    job = submit(client, kodak_crop, steps=5)
    wait_status(client, job["id"], "succeeded")
    cases = [
        ("reconstruction", {"width": 300, "height": 300}, "over_limit"),
        ("reconstruction", {"width": 0}, "invalid_option"),
        ("reconstruction", {"sample_rate": 8000}, "invalid_option"),
        ("experts", {"format": "gif"}, "invalid_option"),
    ]
    for output, query, code in cases:
        assert_problem(client.get(job["urls"][output], params=query), 422, code)
    for body in ({"coords": [[0, 0, 0]]}, {"coords": []}, {"coords": "all"}, {}):
        assert_problem(client.post(job["urls"]["query"], json=body), 422, "invalid_option")
    assert_problem(client.post(job["urls"]["query"], content=b"[NaN]",
                               headers={"Content-Type": "application/json"}), 422,
                   "invalid_option")
    assert_problem(client.post(job["urls"]["cancel"]), 409, "job_finished")
