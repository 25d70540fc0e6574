"""ASGI middleware: a cap on request bodies, and a request id for the logs.

FastAPI sets no upload limit and spools a whole multipart body to disk before the route runs.
BodySizeLimit answers 413 from the Content-Length header without reading a byte, and cuts a
body without one (chunked) off as soon as it passes the cap, whatever the app was doing with it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import BodyTooLarge, problem_response
from worker import logs


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: Callable[[], int]) -> None:
        self.app = app
        self.max_bytes = max_bytes  # read per request: the settings exist once the app started

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes()
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await reject(limit, scope, receive, send)
            return
        received = 0
        exceeded = responded = False

        async def capped_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                exceeded = True
                raise BodyTooLarge(detail(limit))
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal responded
            if exceeded:
                return  # the app's answer to a body cut short (a parse error) is replaced below
            responded = True
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not responded:
            await reject(limit, scope, receive, send)


def detail(limit: int) -> str:
    return f"the request body is over the {limit:,}-byte cap (NEXP_MAX_UPLOAD_BYTES)"


async def reject(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
    response = problem_response(BodyTooLarge.status, BodyTooLarge.code, BodyTooLarge.title,
                                detail(limit), scope["path"], {"Connection": "close"})
    await response(scope, receive, send)


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
