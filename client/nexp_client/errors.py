"""The client's exceptions: one for every error answer, one for a job that did not succeed."""

from __future__ import annotations

from typing import Any

import httpx


class ApiError(Exception):
    """The service answered 4xx or 5xx; its application/problem+json body, as attributes."""

    def __init__(self, status: int, code: str, title: str, detail: str,
                 body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {detail or title}")
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.body = body or {}
        """The whole problem, extension members included (a quota's `limit`...)."""

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:  # not JSON: a proxy's error page
            body = None
        if not isinstance(body, dict):
            return cls(response.status_code, "http_error", response.reason_phrase, response.text[:500])
        return cls(response.status_code, str(body.get("code", "http_error")),
                   str(body.get("title", response.reason_phrase)), str(body.get("detail", "")), body)


class JobFailed(Exception):
    """`Job.wait` found the job failed (its error's `code`: invalid_signal, out_of_memory...) or
    canceled (`code` "canceled")."""

    def __init__(self, code: str, detail: str, job: dict[str, Any]) -> None:
        super().__init__(f"job {job.get('id')} {job.get('status')}: {code}: {detail}")
        self.code = code
        self.detail = detail
        self.job = job
