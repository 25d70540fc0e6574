"""Sending webhook deliveries: a loop in every API process (docs/service.md#webhooks says why here).

Each sweep leases the deliveries that are due (service.webhooks.claim_due) and sends each in a
task of its own, so a slow or dead receiver holds up only its own delivery, never a fit (which
only wrote a row) nor another receiver's events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlsplit

import httpx
from fastapi.concurrency import run_in_threadpool

from api.schemas import job_public
from api.services import Services
from service import webhooks
from service.jobs import Job
from service.settings import Settings

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 64  # sends at once per API process; the rest wait for the next sweep
USER_AGENT = "nexp-webhooks/0.1"


def render_job(job: Job) -> str:
    """The body: the job as GET /v1/jobs/{id} returns it."""
    return job_public(job).model_dump_json()


async def deliver_forever(services: Services) -> None:
    settings = services.ctx.settings
    sending: set[asyncio.Task[None]] = set()
    # No proxies from the environment, no redirects: the address checked is the one reached.
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as http:
        while True:
            try:
                due = await run_in_threadpool(webhooks.claim_due, services.ctx,
                                              MAX_IN_FLIGHT - len(sending))
                for delivery_id in due:
                    task = asyncio.create_task(deliver(services, http, delivery_id))
                    sending.add(task)
                    task.add_done_callback(sending.discard)
            except Exception:  # the database is away: the next sweep finds the same deliveries
                log.exception("webhook sweep failed")
            await asyncio.sleep(settings.webhook_poll_s)


async def deliver(services: Services, http: httpx.AsyncClient, delivery_id: str) -> None:
    """One attempt at one delivery, and its outcome recorded."""
    try:
        outgoing = await run_in_threadpool(webhooks.prepare, services.ctx, delivery_id, render_job)
        if outgoing is None:
            return
        outcome = await send(http, outgoing, services.ctx.settings)
        if not outcome.delivered:
            log.info("webhook %s not delivered: %s", delivery_id, outcome.error or outcome.status_code)
        await run_in_threadpool(webhooks.record, services.ctx, delivery_id, outcome)
    except Exception:  # its lease runs out and a later sweep tries again
        log.exception("webhook %s: sending failed", delivery_id)


async def send(http: httpx.AsyncClient, outgoing: webhooks.Outgoing, settings: Settings) -> webhooks.Outcome:
    try:
        addresses = await run_in_threadpool(webhooks.resolve, outgoing.url,
                                            settings.webhook_allow_private)
    except webhooks.WebhookNotAllowed as e:
        return webhooks.Outcome(error=str(e))
    url, host, extensions = pinned(outgoing.url, addresses[0])
    headers = webhooks.signed_headers(settings.webhook_secret, outgoing.id, int(time.time()),
                                      outgoing.body) | {"host": host, "user-agent": USER_AGENT}
    try:
        # One limit for the whole exchange: a receiver trickling bytes times out too.
        async with asyncio.timeout(settings.webhook_timeout_s), http.stream(
                "POST", url, content=outgoing.body, headers=headers, extensions=extensions) as answer:
            return webhooks.Outcome(status_code=answer.status_code)  # its body is never read
    except TimeoutError:
        return webhooks.Outcome(error=f"no answer within {settings.webhook_timeout_s:g} s")
    except httpx.HTTPError as e:
        return webhooks.Outcome(error=f"{type(e).__name__}: {e}")


def pinned(url: str, address: str) -> tuple[httpx.URL, str, dict[str, str]]:
    """The URL aimed at the checked address, the Host header naming the original host, and for
    https the name to present and verify the certificate against (a second DNS lookup could
    answer a private address: DNS rebinding)."""
    parts = urlsplit(url)
    extensions = {"sni_hostname": parts.hostname or ""} if parts.scheme == "https" else {}
    return httpx.URL(url).copy_with(host=address), parts.netloc, extensions
