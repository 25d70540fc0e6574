"""Database connections: SQLite on one machine, PostgreSQL (or any SQLAlchemy URL) on many."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event, inspect, make_url, text
from sqlalchemy.exc import DatabaseError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.schema import CreateColumn

SQLITE_BUSY_TIMEOUT_MS = 30_000  # the API and a worker write at once: wait for the lock, not fail


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # pre_ping: a PostgreSQL restart must not surface as errors on the next requests.
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(connection: Any, _record: object) -> None:
    cursor = connection.cursor()
    # WAL lets the API read job rows while a worker writes progress.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def unavailable(error: BaseException) -> bool:
    """Whether a database error means the database is away for now (down, restarting,
    unreachable, locked, or every pooled connection busy), so the same work succeeds later; any
    other database error is a bug or bad data, and retrying it would only repeat it."""
    if isinstance(error, DBAPIError):
        return isinstance(error, OperationalError | InterfaceError) or error.connection_invalidated
    return isinstance(error, PoolTimeout)


def make_sessions(engine: Engine) -> sessionmaker[Session]:
    # Rows are read after commit to build responses: keep their loaded values.
    return sessionmaker(engine, expire_on_commit=False)


def create_tables(engine: Engine, metadata: MetaData) -> None:
    """Create missing tables and columns. The API and a worker may start together on a fresh
    database: the loser of that race sees a duplicate-table error, and a second pass finds the
    tables there."""
    try:
        metadata.create_all(engine)
        add_missing_columns(engine, metadata)
    except DatabaseError:
        metadata.create_all(engine)
        add_missing_columns(engine, metadata)


def add_missing_columns(engine: Engine, metadata: MetaData) -> None:
    """ALTER TABLE ADD the columns (and their indexes) declared since a table was created:
    create_all makes missing tables only. Such columns are nullable or have a server default,
    so the rows already there get a value."""
    inspector = inspect(engine)
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        missing = {column.name for column in table.columns} - present
        if not missing:
            continue
        with engine.begin() as connection:
            for name in sorted(missing):
                ddl = CreateColumn(table.columns[name]).compile(dialect=engine.dialect)
                connection.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {ddl}"))
            for index in table.indexes:
                if missing & {column.name for column in index.columns}:
                    index.create(connection)
