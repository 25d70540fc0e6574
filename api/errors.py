"""Every 4xx and 5xx is an RFC 9457 problem (application/problem+json) with a machine `code`.

Routes raise an `ApiError` subclass; one handler writes it. FastAPI's own errors (validation,
unknown routes) and unexpected exceptions go through the same writer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from service.db import unavailable

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
DATABASE_RETRY_AFTER_S = 5  # a database restart or fail-over takes seconds


class Problem(BaseModel):
    """The body of every error response."""

    type: str = Field(description="urn:nexp:problem:<code>")
    title: str = Field(description="A short summary, the same for every problem of this code.")
    status: int
    code: str = Field(description="Stable machine-readable reason, e.g. `job_not_found`.")
    detail: str = Field(description="What went wrong with this request, for a human.")
    instance: str | None = Field(None, description="The path the problem came from.")


def problem_response(status: int, code: str, title: str, detail: str, instance: str | None = None,
                     headers: Mapping[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = {"type": f"urn:nexp:problem:{code}", "title": title, "status": status, "code": code,
            "detail": detail, "instance": instance, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


class ApiError(Exception):
    """An error response. Subclasses fix status, code and title; each raise gives the detail."""

    status = 500
    code = "internal"
    title = "Internal error"

    def __init__(self, detail: str, *, status: int | None = None, code: str | None = None,
                 title: str | None = None, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status or self.status
        self.code = code or self.code
        self.title = title or self.title
        self.headers = headers
        self.extra = extra
        """Extension members of the problem body (RFC 9457 section 3.2)."""


class NoFile(ApiError):
    status, code, title = 400, "no_file", "No file was uploaded"


class BodyTooLarge(ApiError):
    status, code, title = 413, "body_too_large", "The request body is over the size cap"


class BodyTimeout(ApiError):
    status, code, title = 408, "body_timeout", "The request body stopped arriving"


class TruncatedBody(ApiError):
    status, code, title = 400, "truncated_body", "The request body ended early"


class HostNotAllowed(ApiError):
    status, code, title = 403, "host_not_allowed", "This server does not answer for that Host"


class CrossSiteRequest(ApiError):
    status, code, title = 403, "cross_site_request", "Another site's page may not change jobs here"


class InvalidUpload(ApiError):
    """The upload is not a usable signal; status and code come from the model's SignalError."""

    status, code, title = 422, "invalid_signal", "The upload is not a usable signal"


class ContentTypeMismatch(ApiError):
    status, code, title = 415, "content_type_mismatch", "The declared type is not the content's"


class InvalidOption(ApiError):
    status, code, title = 422, "invalid_option", "An option is invalid"


class OverLimit(ApiError):
    status, code, title = 422, "over_limit", "An option is over the service's cap"


class OutputNotAvailable(ApiError):
    status, code, title = 422, "output_not_available", "This kind of job has no such output"


class IdempotencyKeyReused(ApiError):
    status, code, title = 422, "idempotency_key_reused", "The key was used for another request"


class JobNotFound(ApiError):
    status, code, title = 404, "job_not_found", "No such job"


class JobNotReady(ApiError):
    status, code, title = 409, "job_not_ready", "The job has not succeeded"


class WebhookNotAllowed(ApiError):
    status, code, title = 422, "webhook_not_allowed", "The service will not send to that webhook"


class JobFinished(ApiError):
    status, code, title = 409, "job_finished", "The job has already finished"


class BrokerUnavailable(ApiError):
    status, code, title = 503, "broker_unavailable", "The job queue is not reachable"


class DatabaseUnavailable(ApiError):
    status, code, title = 503, "database_unavailable", "The job database is not reachable"


class StorageUnavailable(ApiError):
    status, code, title = 503, "storage_unavailable", "The artifact store did not take the upload"


class NotReady(ApiError):
    status, code, title = 503, "not_ready", "A dependency of the service is not reachable"


class MissingApiKey(ApiError):
    status, code, title = 401, "missing_api_key", "An API key is required"


class InvalidApiKey(ApiError):
    status, code, title = 401, "invalid_api_key", "The API key is not valid"


class QuotaExceeded(ApiError):
    """The problem body names the `quota` and its `limit`; Retry-After says when to retry."""

    status, code, title = 429, "quota_exceeded", "A quota of this API key is used up"


class QueueFull(ApiError):
    status, code, title = 503, "queue_full", "Too many jobs are waiting for a worker"


class TooManyRenders(ApiError):
    """Retry-After says when to try again."""

    status, code, title = 429, "too_many_renders", "This API key has too many renders in progress"


class RenderTimeout(ApiError):
    status, code, title = 503, "render_timeout", "The render ran past its time limit"


class ClientDisconnected(ApiError):
    """Never read: the client has gone. It names the outcome in the request metrics, with
    nginx's code for it."""

    status, code, title = 499, "client_disconnected", "The client closed the connection"


# Codes for errors FastAPI and Starlette raise themselves.
HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
              406: "not_acceptable", 413: "body_too_large", 415: "unsupported_media_type"}


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return problem_response(exc.status, exc.code, exc.title, exc.detail, request.url.path,
                            exc.headers, **exc.extra)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"field": ".".join(str(p) for p in e["loc"][1:]) or e["loc"][0], "message": e["msg"]}
              for e in exc.errors()]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem_response(InvalidOption.status, InvalidOption.code, InvalidOption.title, detail,
                            request.url.path, errors=errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    title = code.replace("_", " ").capitalize()
    return problem_response(exc.status_code, code, title, str(exc.detail), request.url.path,
                            exc.headers)


def database_unavailable(exc: SQLAlchemyError) -> DatabaseUnavailable:
    # The client learns only that the database is away: the error names hosts and SQL.
    log.warning("the database is away: %s", str(exc).splitlines()[0])
    return DatabaseUnavailable("the job database is not answering; try again shortly",
                               headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)})


@contextmanager
def database_errors() -> Iterator[None]:
    """A database that is away becomes a 503, in code that runs outside the routes
    (middleware), whose errors no exception handler sees."""
    try:
        yield
    except SQLAlchemyError as e:
        if not unavailable(e):
            raise
        raise database_unavailable(e) from e


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SQLAlchemyError)
    if not unavailable(exc):
        return await _unexpected(request, exc)
    return await _api_error(request, database_unavailable(exc))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, ApiError.code, ApiError.title,
                            "an unexpected error occurred; it has been logged", request.url.path)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(SQLAlchemyError, _database_error)
    app.add_exception_handler(Exception, _unexpected)


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a route's error statuses."""
    schema = {"$ref": "#/components/schemas/Problem"}  # added to the components by api.main
    return {
        status: {"content": {PROBLEM_JSON: {"schema": schema}}, "description": DESCRIPTIONS[status]}
        for status in statuses
    }


DESCRIPTIONS = {
    400: "Bad request: no file (`no_file`), a body that cannot be parsed (`bad_request`) or "
         "that ended early (`truncated_body`)",
    401: "No API key, or not a valid one (`missing_api_key`, `invalid_api_key`)",
    403: "A foreign Host while auth is off (`host_not_allowed`), or a write from another "
         "site's page (`cross_site_request`)",
    404: "Unknown job (`job_not_found`)",
    408: "The body stopped arriving for NEXP_BODY_TIMEOUT_S (`body_timeout`)",
    409: "The job is in the wrong state (`job_not_ready`, `job_finished`)",
    413: "Too large: the body (`body_too_large`) or the signal (`too_large`, `too_long`...)",
    415: "Unknown or mislabelled content (`unsupported_type`, `content_type_mismatch`)",
    422: "Invalid content or options (`undecodable`, `invalid_option`, `over_limit`...)",
    429: "A quota of the API key is used up (`quota_exceeded`), or it has too many renders in "
         "progress (`too_many_renders`); see Retry-After",
    503: "A dependency is down or the queue is full (`broker_unavailable`, "
         "`database_unavailable`, `storage_unavailable`, `not_ready`, "
         "`queue_full`; see Retry-After), or a render ran past NEXP_RENDER_TIMEOUT_S "
         "(`render_timeout`)",
}
