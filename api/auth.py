"""API keys on /v1: `Authorization: Bearer <key>`, checked before the app reads the body.

An ASGI middleware, not a route dependency: FastAPI parses (and spools) a whole multipart upload
before any dependency runs, so a dependency would let anyone without a key make the server
write NEXP_MAX_UPLOAD_BYTES per request. The key's id lands in the request state, where
`api.deps.get_owner` reads it. /healthz, /readyz, /metrics, the docs and the page stay open.

With no key ever created (and NEXP_REQUIRE_KEYS unset) auth is off: a single user on this
machine, whose jobs have no owner. `python -m api` then serves 127.0.0.1 only (api.__main__).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import ApiError, InvalidApiKey, MissingApiKey, database_errors, problem_response
from worker import keys
from worker.context import Context

PROTECTED = "/v1/"
# RFC 6750 section 3: a 401 names the scheme the client should use.
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="nexp"'}


def authenticate(ctx: Context, authorization: str | None) -> str | None:
    """The id of the key in an Authorization header; None while auth is off. Raises a 401, or
    a 503 while the database is away."""
    with database_errors(), ctx.sessions() as session:
        if not authorization:
            if ctx.settings.require_keys or keys.configured(session):
                raise MissingApiKey("send an API key as `Authorization: Bearer <key>` "
                                    "(`nexp keys create` makes one)", headers=CHALLENGE)
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            raise InvalidApiKey(f"the Authorization scheme is {scheme!r}; use `Bearer <key>`",
                                headers=CHALLENGE)
        key = keys.find(session, token.strip())
        if key is None:
            raise InvalidApiKey("this is not an API key of this service", headers=CHALLENGE)
        if key.revoked_at is not None:
            raise InvalidApiKey(f"API key {key.id} was revoked", headers=CHALLENGE)
        return key.id


class ApiKeyAuth:
    def __init__(self, app: ASGIApp, context: Callable[[], Context]) -> None:
        self.app = app
        self.context = context  # read per request: the context exists once the app started

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED):
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization")
        try:
            owner = await run_in_threadpool(authenticate, self.context(), header)
        except ApiError as e:
            # Connection: close, as for a 413: the client may still be sending a body nobody reads.
            headers = {**(e.headers or {}), "Connection": "close"}
            response = problem_response(e.status, e.code, e.title, e.detail, scope["path"], headers)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["owner"] = owner
        await self.app(scope, receive, send)
