"""Signed webhooks: the signature (three ways), the address check, the retry schedule, and a real
receiver on 127.0.0.1 getting events from real fits."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nexp_client import Client, WebhookVerificationError, verify_webhook
from standardwebhooks.webhooks import Webhook

from service import webhooks
from service.settings import Settings
from tests.utils.app import serve, settings
from tests.utils.service import Service, assert_problem, create_job
from tests.utils.webhooks import SECRET, Received, receiver

BODY = b'{"id": "0123", "status": "succeeded"}'


def signed(timestamp: int | None = None) -> dict[str, str]:
    return webhooks.signed_headers(SECRET, "msg_1", timestamp or int(time.time()), BODY)


def test_a_signature_verifies_three_ways() -> None:
    headers = signed()
    assert verify_webhook(headers, BODY, SECRET)["id"] == "0123"
    Webhook(SECRET).verify(BODY, headers)  # the Standard Webhooks reference library
    # By hand, as the spec says: HMAC-SHA256 of "id.timestamp.body" under the decoded secret.
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    content = f"msg_1.{headers['webhook-timestamp']}.".encode() + BODY
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"


@pytest.mark.parametrize("tamper", ["body", "secret", "stale", "future", "missing"])
def test_verify_refuses_what_the_service_did_not_sign_now(tamper: str) -> None:
    headers, body, secret = signed(), BODY, SECRET
    if tamper == "body":
        body = BODY.replace(b"succeeded", b"failed")
    elif tamper == "secret":
        secret = "whsec_" + base64.b64encode(b"another secret, 24 bytes!").decode()
    elif tamper in ("stale", "future"):
        headers = signed(int(time.time()) + (-600 if tamper == "stale" else 600))
    else:
        del headers["webhook-signature"]
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers, body, secret)


def resolving_to(monkeypatch: pytest.MonkeyPatch, *addresses: str) -> None:
    """getaddrinfo answers `addresses`: no connection is ever made to them."""
    def fake(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses]
    monkeypatch.setattr(webhooks.socket, "getaddrinfo", fake)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1",
                                     "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1", "fe80::1",
                                     "fd00:ec2::254", "::ffff:127.0.0.1", "224.0.0.1"])
def test_private_and_metadata_addresses_are_refused(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    resolving_to(monkeypatch, "93.184.215.14", address)  # one bad answer is enough
    with pytest.raises(webhooks.WebhookNotAllowed, match="private"):
        webhooks.resolve("https://hooks.example.com/x", allow_private=False)
    assert address in webhooks.resolve("https://hooks.example.com/x", allow_private=True)


def test_a_public_address_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    resolving_to(monkeypatch, "93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")
    assert len(webhooks.resolve("https://hooks.example.com/x", allow_private=False)) == 2


def test_retries_back_off_for_about_an_hour() -> None:
    config = Settings(webhook_retry_s=5, webhook_retry_for_s=3600)
    created = now = datetime(2026, 1, 1, tzinfo=UTC)
    waits = []
    attempts = 0
    while (retry := webhooks.next_attempt(created, attempts + 1, now, config)) is not None:
        attempts += 1
        waits.append((retry - now).total_seconds())
        now = retry
    assert waits[:4] == [5, 10, 20, 40] and now - created == timedelta(hours=1)
    assert attempts < 15


def test_a_private_webhook_is_refused_at_create_unless_allowed(
        tmp_path: Path, kodak_crop: Path, live: Service) -> None:
    config = settings(tmp_path, webhook_secret=SECRET, broker_url=live.env["NEXP_BROKER_URL"])
    with serve(config) as client:
        response = create_job(client, kodak_crop, steps=5, webhook="http://127.0.0.1:9/hook")  # type: ignore[arg-type]
        assert_problem(response, 422, "webhook_not_allowed")


@pytest.mark.parametrize("fields", [
    {"webhook": "ftp://127.0.0.1/hook"},
    {"webhook": "http:///no-host"},
    {"webhook": "http://user:pw@127.0.0.1/hook"},
    {"webhook": "http://127.0.0.1/hook", "webhook_events": "finished"},
    {"webhook_events": "start"},
])
def test_bad_webhook_fields_are_422(live: Service, kodak_crop: Path, fields: dict[str, str]) -> None:
    with live.client() as client:
        response = create_job(client, kodak_crop, steps=5, **fields)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


def deliveries(nexp: Client, job_id: str, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    """The job's deliveries once `count` of them are no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        found: list[dict[str, Any]] = nexp.job(job_id).data["webhook"]["deliveries"]
        if sum(d["status"] != "pending" for d in found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def events(received: list[Received]) -> list[str]:
    return [json.loads(r.body)["status"] for r in received]


def test_a_receiver_gets_completed_signed(nexp: Client, kodak_crop: Path) -> None:
    with receiver() as hook:
        job = nexp.fit(kodak_crop, steps=5, webhook=hook.url).wait(timeout=180)
        (request,) = hook.wait_for(1)
    body = Webhook(SECRET).verify(request.body, request.headers)
    assert body["id"] == job.id and body["status"] == "succeeded"
    assert verify_webhook(request.headers, request.body, SECRET)["metrics"] == job.data["metrics"]
    (delivery,) = deliveries(nexp, job.id, 1)
    assert delivery["event"] == "completed" and delivery["status"] == "delivered"
    assert delivery["id"] == request.headers["webhook-id"] and delivery["last_status_code"] == 200


def test_a_receiver_answering_500_twice_gets_it_three_times(nexp: Client, kodak_crop: Path) -> None:
    with receiver(answer=lambda n: 500 if n < 2 else 200) as hook:
        job = nexp.fit(kodak_crop, steps=5, seed=1, webhook=hook.url).wait(timeout=180)
        received = hook.wait_for(3)
        time.sleep(1)  # nothing more comes once it was taken
    assert len(received) == 3
    assert len({r.headers["webhook-id"] for r in received}) == 1  # one message, sent three times
    assert len({r.body for r in received}) == 1
    assert received[2].at - received[1].at >= received[1].at - received[0].at > 0.2  # backing off
    (delivery,) = deliveries(nexp, job.id, 1)
    assert delivery["status"] == "delivered" and delivery["attempts"] == 3


def test_events_are_filtered(nexp: Client, kodak_crop: Path) -> None:
    with receiver() as hook:
        job = nexp.fit(kodak_crop, steps=300, seed=2, webhook=hook.url,
                       webhook_events=["start", "progress"]).wait(timeout=180)
        time.sleep(1)
    kinds = [d["event"] for d in deliveries(nexp, job.id, 0)]
    assert kinds[0] == "start" and "progress" in kinds and "completed" not in kinds
    assert set(events(hook.requests)) == {"running"}
    progress_times = [r.at for r in hook.requests[1:]]
    assert all(b - a >= 0.5 for a, b in zip(progress_times, progress_times[1:], strict=False))


def test_a_receiver_that_never_answers_does_not_slow_the_fit(nexp: Client, kodak_crop: Path) -> None:
    started = time.monotonic()
    nexp.fit(kodak_crop, steps=5, seed=4).wait(timeout=180)
    alone = time.monotonic() - started
    with receiver(delay_s=30) as hook:
        started = time.monotonic()
        job = nexp.fit(kodak_crop, steps=5, seed=5, webhook=hook.url,
                       webhook_events=["start", "progress", "completed"]).wait(timeout=180)
        with_hook = time.monotonic() - started
        (delivery, *_) = deliveries(nexp, job.id, 1, timeout=10)
    assert with_hook < alone + 3, (alone, with_hook)
    assert delivery["attempts"] >= 1 and "no answer" in (delivery["last_error"] or "")

