"""ASGI middleware: rules on request bodies, security headers, CORS, and a request id.

FastAPI sets no body limit, reads a whole JSON body on the event loop and spools a whole
multipart body to disk before the route runs, and waits as long as a client likes for it.
BodyGuard enforces, before the app sees a byte:
- a cap per route (uploads: NEXP_MAX_UPLOAD_BYTES; queries: from NEXP_MAX_QUERY_POINTS; anything
  else: 64 KiB), answered 413 from Content-Length without reading, or as soon as a chunked body
  passes it;
- a read timeout: a body that sends nothing for NEXP_BODY_TIMEOUT_S gets 408 and the connection
  is closed, so slow clients cannot hold connections open;
- a complete multipart body: without its closing boundary python-multipart quietly drops the
  last field (a trailing `steps=5` vanished), so such a body is a 400.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable

from python_multipart.multipart import parse_options_header
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import (
    ApiError,
    BodyTimeout,
    BodyTooLarge,
    TruncatedBody,
    problem_response,
)
from api.schemas import query_body_bytes
from service import logs
from service.settings import Settings

SMALL_BODY_BYTES = 64 * 1024  # cancel, delete and the like carry no body worth more
QUERY_PATH = re.compile(r"/v1/jobs/[^/]+/query")


def body_cap(method: str, path: str, settings: Settings) -> tuple[int, str]:
    """The most bytes a request may send, and what sets that cap (for the 413's detail)."""
    if method == "POST" and path == "/v1/jobs":
        return settings.max_upload_bytes, "NEXP_MAX_UPLOAD_BYTES"
    if method == "POST" and QUERY_PATH.fullmatch(path):
        return query_body_bytes(settings.max_query_points), "NEXP_MAX_QUERY_POINTS"
    return SMALL_BODY_BYTES, "the cap for requests that carry no upload"


class ClosingBoundary:
    """Watches a multipart body stream for its close delimiter, across chunk boundaries."""

    def __init__(self, content_type: str) -> None:
        media_type, params = parse_options_header(content_type)
        boundary = params.get(b"boundary") if media_type == b"multipart/form-data" else None
        self.delimiter = b"--" + boundary + b"--" if boundary else b""
        self.tail = b"\r\n"  # the delimiter may open the body, with no line break before it
        self.seen = not self.delimiter  # nothing to watch: not multipart

    def feed(self, chunk: bytes) -> None:
        if self.seen:
            return
        window = self.tail + chunk
        self.seen = b"\r\n" + self.delimiter in window
        self.tail = window[-(len(self.delimiter) + 1):]


class BodyGuard:
    def __init__(self, app: ASGIApp, settings: Callable[[], Settings]) -> None:
        self.app = app
        self.settings = settings  # read per request: the settings exist once the app started

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = self.settings()
        limit, source = body_cap(scope["method"], scope["path"], settings)
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await reject(BodyTooLarge(too_large(limit, source)), scope, receive, send)
            return
        boundary = ClosingBoundary(headers.get("content-type", ""))
        received = 0
        body_done = responded = False
        failure: ApiError | None = None

        def fail(error: ApiError) -> ApiError:
            nonlocal failure
            failure = error
            return error

        async def guarded_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # from here on the app only listens for a disconnect: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), settings.body_timeout_s)
            except TimeoutError:
                raise fail(BodyTimeout(f"no part of the body arrived for {settings.body_timeout_s:g} s "
                                       "(NEXP_BODY_TIMEOUT_S)")) from None
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                raise fail(BodyTooLarge(too_large(limit, source)))
            boundary.feed(chunk)
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            if body_done and message["type"] == "http.request" and not boundary.seen:
                raise fail(TruncatedBody("the multipart body ended without its closing boundary; "
                                         "nothing was kept, send the whole request again"))
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal responded
            if failure is not None:
                return  # the app's answer to a body cut short (a parse error) is replaced below
            responded = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if failure is None:
                raise
        if failure is not None and not responded:
            await reject(failure, scope, receive, send)


def too_large(limit: int, source: str) -> str:
    return f"the request body is over the {limit:,}-byte cap ({source})"


async def reject(error: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
    # Connection: close: the client may still be sending a body nobody reads.
    response = problem_response(error.status, error.code, error.title, error.detail, scope["path"],
                                {"Connection": "close"})
    await response(scope, receive, send)


# The page and Swagger UI load scripts from this server only, no inline script; styles may be
# inline (Swagger UI's React sets style attributes); images and audio may be data: or blob: URLs
# (renders drawn in the page). No framing: the page keeps an API key in sessionStorage.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
                               "media-src 'self' blob:; connect-src 'self'; worker-src 'self' blob:; "
                               "object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class SecurityHeaders:
    """SECURITY_HEADERS on every response: pages, docs, API answers and errors alike."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Cors:
    """Starlette's CORSMiddleware for NEXP_CORS_ORIGINS, or nothing when none are set: CORS is
    closed by default. Built on the first request, once the app's settings exist."""

    def __init__(self, app: ASGIApp, settings: Callable[[], Settings]) -> None:
        self.app = app
        self.settings = settings
        self.inner: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.inner is None:
            origins = self.settings().cors_origins
            self.inner = CORSMiddleware(
                self.app, allow_origins=origins, allow_methods=["GET", "POST", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
                expose_headers=["Location", "Retry-After", "X-Request-ID"],
            ) if origins else self.app
        await self.inner(scope, receive, send)


REQUEST_ID_HEADER = "x-request-id"
# A caller's own id is kept when it looks like an id (a proxy's, a client's), else one is made.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestId:
    """Gives each request an id: the caller's X-Request-ID, or a new one. It is echoed in the
    response's X-Request-ID and put on every log line written while serving the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        # Not reset afterwards: uvicorn serves each request in an asyncio task of its own (a copy
        # of the context), and its error line for an exception that escaped the app, written
        # after this returns, should carry the id too.
        logs.begin(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)
