"""Checking that a webhook request came from the service (Standard Webhooks signatures)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

TOLERANCE_S = 5 * 60  # the spec's suggestion: an older (or future) timestamp may be a replay


class WebhookVerificationError(Exception):
    """The request is not one the service signed, or it is too old."""


def verify_webhook(headers: Mapping[str, str], body: bytes | str, secret: str,
                   tolerance_s: float = TOLERANCE_S, now: float | None = None) -> dict[str, Any]:
    """The job the webhook carries, once its signature and timestamp check out.

    `headers` as received (any case), `body` the raw bytes (not re-serialised JSON), `secret`
    the service's NEXP_WEBHOOK_SECRET (`whsec_...`). Raises WebhookVerificationError otherwise.
    """
    lower = {name.lower(): value for name, value in headers.items()}
    try:
        msg_id, timestamp, signatures = (lower["webhook-id"], lower["webhook-timestamp"],
                                         lower["webhook-signature"])
        sent_at = int(timestamp)
    except (KeyError, ValueError) as e:
        raise WebhookVerificationError(f"missing or malformed webhook header: {e}") from e
    if abs((time.time() if now is None else now) - sent_at) > tolerance_s:
        raise WebhookVerificationError(f"timestamp {sent_at} is more than {tolerance_s:g} s away")
    raw = body.encode() if isinstance(body, str) else body
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(
        hmac.new(key, f"{msg_id}.{sent_at}.".encode() + raw, hashlib.sha256).digest()).decode()
    # The header may list several signatures (during a secret rotation), space-separated.
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            job: dict[str, Any] = json.loads(raw)
            return job
    raise WebhookVerificationError("no signature matches")
