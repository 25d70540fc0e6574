"""service.db: a database made by an older version gets the columns declared since."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy

from service import jobs
from service.settings import Settings
from tests.utils.jobs import add_job, context


def test_columns_added_since_a_table_was_made_are_added(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    engine = sqlalchemy.create_engine(settings.database)
    with engine.begin() as conn:  # the jobs table as it was before owners and stored bytes
        conn.execute(sqlalchemy.text(
            "CREATE TABLE jobs (id VARCHAR(32) PRIMARY KEY, kind VARCHAR(16), status VARCHAR(16), "
            "filename VARCHAR(255), input_key VARCHAR(255), options JSON, progress JSON, "
            "metrics JSON, error JSON, attempts INTEGER, cancel_requested BOOLEAN, "
            "worker VARCHAR(255), heartbeat_at DATETIME, idempotency_key VARCHAR(255) UNIQUE, "
            "request_hash VARCHAR(64), created_at DATETIME, updated_at DATETIME, "
            "started_at DATETIME, finished_at DATETIME)"))
        conn.execute(sqlalchemy.text("INSERT INTO jobs (id, kind, status, filename, input_key, "
                                     "options) VALUES ('old', 'image', 'succeeded', 'a.png', "
                                     "'jobs/old/input.png', '{}')"))
    engine.dispose()

    ctx = context(settings)  # prepare_database, as the API and the worker do at start
    try:
        indexes = {i["name"] for i in sqlalchemy.inspect(ctx.engine).get_indexes("jobs")}
        assert "ix_jobs_owner" in indexes
        with ctx.sessions() as session:
            old = jobs.get(session, "old")
            assert old is not None and old.owner is None and old.stored_bytes == 0
            assert old.snapshot_bytes == 0 and old.resumed_from_step is None
            assert old.snapshot_step is None and old.history is None and old.stages is None
            add_job(session, owner="3f9c0a1b2d4e", stored_bytes=10, snapshot_bytes=5)
            assert jobs.stored_bytes(session, "3f9c0a1b2d4e") == 15  # a snapshot counts too
        context(settings).engine.dispose()  # a second start finds nothing to add
    finally:
        ctx.engine.dispose()
