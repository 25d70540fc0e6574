"""Webhooks: Standard Webhooks signatures, the address check against server-side request forgery,
and the outbox of owed deliveries (service.jobs.WebhookDelivery) with its retry schedule.

Events are recorded by whoever changes the job (service.jobs), in the same transaction; the API
processes send them (api.webhooks). See docs/service.md#webhooks for why there.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import or_, select, update

from service import jobs
from service.context import Context
from service.jobs import Delivery, Job, WebhookDelivery
from service.settings import Settings

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
SCHEMES = ("http", "https")
MAX_URL_CHARS = 2048
ERROR_CHARS = 255  # WebhookDelivery.last_error's column
LEASE_MARGIN_S = 30.0  # past a send's time limit before another API process may take it over


class WebhookNotAllowed(ValueError):
    """The URL is not one the service will send to (a private address, not resolvable...)."""


def signing_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret: the decoded part, as the spec has it."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "id.timestamp.body">` (Standard Webhooks)."""
    digest = hmac.new(signing_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest.digest()).decode()}"


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, msg_id, timestamp, body),
        "content-type": "application/json",
    }


def check_url(url: str) -> str:
    """`url` if it is an absolute http(s) URL with a host; raises WebhookNotAllowed otherwise."""
    parts = urlsplit(url)
    if len(url) > MAX_URL_CHARS or parts.scheme not in SCHEMES or not parts.hostname:
        raise WebhookNotAllowed(f"webhook {url[:100]!r} is not an http:// or https:// URL with a host "
                                f"(of at most {MAX_URL_CHARS} characters)")
    if parts.username or parts.password:
        raise WebhookNotAllowed("a webhook URL may not carry credentials: the signature "
                                "authenticates the service to the receiver")
    return url


def public_address(address: str) -> bool:
    """Whether an IP address is on the public internet: not loopback, private, link-local (the
    cloud metadata service's 169.254.169.254 included), shared, reserved or multicast."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 scope id names an interface
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
    return ip.is_global and not ip.is_multicast


def resolve(url: str, allow_private: bool) -> list[str]:
    """The addresses `url`'s host resolves to, each one allowed; raises WebhookNotAllowed.

    Checked at create and again before every send (DNS may change in between); a sender then
    connects to one of these addresses, not to the name, so the answer checked is the one used.
    """
    parts = urlsplit(check_url(url))
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise WebhookNotAllowed(f"the webhook's host {parts.hostname!r} does not resolve ({e})") from e
    addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
    refused = [address for address in addresses if not public_address(address)]
    if refused and not allow_private:
        raise WebhookNotAllowed(f"the webhook's host {parts.hostname!r} resolves to {refused[0]}, a "
                                "loopback, private, link-local or metadata address (allowed only with "
                                "NEXP_WEBHOOK_ALLOW_PRIVATE=true)")
    return addresses


@dataclass(frozen=True)
class Outgoing:
    """One attempt at a delivery, ready to send."""

    id: str
    url: str
    body: bytes


@dataclass(frozen=True)
class Outcome:
    status_code: int | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def claim_due(ctx: Context, limit: int, now: datetime | None = None) -> list[str]:
    """Ids of up to `limit` deliveries due now, leased to this process for one send: another
    API process running the same sweep skips them until the lease ends (a crash mid-send)."""
    now = now or jobs.utcnow()
    lease = now + timedelta(seconds=ctx.settings.webhook_timeout_s + LEASE_MARGIN_S)
    free = or_(WebhookDelivery.leased_until.is_(None), WebhookDelivery.leased_until < now)
    with ctx.sessions() as session:
        due = session.scalars(
            select(WebhookDelivery.id)
            .where(WebhookDelivery.status == Delivery.PENDING, WebhookDelivery.next_attempt_at <= now, free)
            .order_by(WebhookDelivery.next_attempt_at).limit(limit)
        ).all()
        claimed = [delivery_id for delivery_id in due if session.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == delivery_id, free)
            .values(leased_until=lease).execution_options(synchronize_session=False)
        ).rowcount]  # type: ignore[attr-defined]
        session.commit()
    return claimed


def prepare(ctx: Context, delivery_id: str, render: Callable[[Job], str]) -> Outgoing | None:
    """The attempt to make, its body the job as `render` writes it, fixed at the first attempt
    so that retries send the same bytes; None when the job (or the delivery) is gone.

    A progress event not yet sent when its job has ended is dropped: its body would be the
    ended job, news of an end the receiver may not have asked for (that is `completed`)."""
    with ctx.sessions() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        job = jobs.get(session, delivery.job_id) if delivery is not None else None
        if delivery is None or job is None:
            return None
        if delivery.body is None:
            if delivery.event == "progress" and job.status in jobs.TERMINAL:
                session.delete(delivery)
                session.commit()
                return None
            delivery.body = render(job)
            session.commit()
        return Outgoing(delivery.id, job.options["webhook"], delivery.body.encode())


def record(ctx: Context, delivery_id: str, outcome: Outcome, now: datetime | None = None) -> None:
    """Write how an attempt went: delivered, or due again after the backoff, or given up."""
    now = now or jobs.utcnow()
    with ctx.sessions() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None:
            return  # its job was deleted meanwhile
        delivery.attempts += 1
        delivery.leased_until = None
        delivery.last_status_code = outcome.status_code
        delivery.last_error = outcome.error[:ERROR_CHARS] if outcome.error else None
        if outcome.delivered:
            delivery.status, delivery.delivered_at = Delivery.DELIVERED, now
        else:
            retry_at = next_attempt(delivery.created_at, delivery.attempts, now, ctx.settings)
            if retry_at is None:
                delivery.status = Delivery.FAILED
            else:
                delivery.next_attempt_at = retry_at
        session.commit()


def next_attempt(created_at: datetime, attempts: int, now: datetime,
                 settings: Settings) -> datetime | None:
    """When to try again after `attempts` failures: waits doubling from NEXP_WEBHOOK_RETRY_S, the
    last one cut short to end NEXP_WEBHOOK_RETRY_FOR_S after the event; None past that."""
    deadline = created_at + timedelta(seconds=settings.webhook_retry_for_s)
    if now >= deadline:
        return None
    wait = timedelta(seconds=settings.webhook_retry_s * 2 ** (attempts - 1))
    return min(now + wait, deadline)
