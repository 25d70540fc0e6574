"""API keys on /v1: `Authorization: Bearer <key>`, checked before the app reads the body.

An ASGI middleware, not a route dependency: FastAPI parses (and spools) a whole multipart upload
before any dependency runs, so a dependency would let anyone without a key make the server
write NEXP_MAX_UPLOAD_BYTES per request. The key's id lands in the request state, where
`api.deps.get_owner` reads it. /healthz, /readyz, /metrics, the docs, the page and
/v1/options (the fit options, as the OpenAPI schema lists them) stay open.

With no key ever created (and NEXP_REQUIRE_KEYS unset) auth is off: a single user on this
machine, whose jobs have no owner. `python -m api` then serves 127.0.0.1 only (api.__main__), and
the browser is the threat: any page the user visits may send requests to localhost. So while auth
is off /v1 answers only a loopback Host (localhost, 127.0.0.1, [::1], plus NEXP_ALLOWED_HOSTS),
which defeats DNS rebinding (a foreign name resolving to 127.0.0.1); and, auth on or off, a write
that another site's page sends (a foreign Origin, or Sec-Fetch-Site: cross-site) is refused
unless NEXP_CORS_ORIGINS lets that origin in.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import (
    ApiError,
    CrossSiteRequest,
    HostNotAllowed,
    InvalidApiKey,
    MissingApiKey,
    database_errors,
    problem_response,
)
from service import keys
from service.context import Context
from service.settings import Settings

PROTECTED = "/v1/"
OPEN = frozenset({"/v1/options", "/v1/kinds"})  # what the open /openapi.json says: the page needs them
# RFC 6750 section 3: a 401 names the scheme the client should use.
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="nexp"'}
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
READS = ("GET", "HEAD", "OPTIONS")  # a foreign page cannot read their answers without CORS


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


def check_host(headers: Headers, settings: Settings) -> None:
    """While auth is off: refuse a Host that is not this machine's loopback (DNS rebinding)."""
    host = headers.get("host", "")
    name = urlsplit(f"//{host}").hostname or ""
    if name not in LOOPBACK_HOSTS and name not in (h.lower() for h in settings.allowed_hosts):
        raise HostNotAllowed(f"this server answers {', '.join(LOOPBACK_HOSTS)} while it has no API "
                             f"keys, not {host!r} (NEXP_ALLOWED_HOSTS adds a name)")


def check_site(method: str, headers: Headers, settings: Settings) -> None:
    """Refuse a write sent by another site's page, unless NEXP_CORS_ORIGINS lets it in."""
    origin = headers.get("origin")
    if method in READS or (origin is not None and origin in settings.cors_origins):
        return
    foreign_origin = origin is not None and urlsplit(origin).netloc.lower() != headers.get("host", "").lower()
    if foreign_origin or headers.get("sec-fetch-site") == "cross-site":
        raise CrossSiteRequest(f"a page of {origin or 'another site'} may not change jobs here "
                               "(NEXP_CORS_ORIGINS lets an origin in)")


class ApiKeyAuth:
    def __init__(self, app: ASGIApp, context: Callable[[], Context]) -> None:
        self.app = app
        self.context = context  # read per request: the context exists once the app started

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED) or scope["path"] in OPEN:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        ctx = self.context()
        try:
            owner = await run_in_threadpool(authenticate, ctx, headers.get("authorization"))
            if owner is None:
                check_host(headers, ctx.settings)
            check_site(scope["method"], headers, ctx.settings)
        except ApiError as e:
            # Connection: close, as for a 413: the client may still be sending a body nobody reads.
            closing = {**(e.headers or {}), "Connection": "close"}
            response = problem_response(e.status, e.code, e.title, e.detail, scope["path"], closing)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["owner"] = owner
        await self.app(scope, receive, send)
