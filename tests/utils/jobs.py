"""Job rows for tests that talk to the database without the API."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from service import jobs
from service.context import Context, prepare_database
from service.settings import Settings


def context(settings: Settings) -> Context:
    """A context on settings' database, with the jobs table made."""
    prepare_database(settings)
    return Context.build(settings)


def add_job(session: Session, **fields: Any) -> jobs.Job:
    """A queued image job; `fields` override any column."""
    job_id = jobs.new_job_id()
    values: dict[str, Any] = {
        "id": job_id, "kind": "image", "status": jobs.Status.QUEUED, "filename": "photo.png",
        "input_key": f"jobs/{job_id}/input.png", "options": {"preset": "fast", "steps": 5},
        **fields,
    }
    return jobs.add(session, jobs.Job(**values))
