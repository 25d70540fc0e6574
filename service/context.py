"""What one process of the service holds: its settings, database sessions and artifact storage."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

# Importing keys and quotas adds their tables to Base.metadata: prepare_database makes them all.
from service import keys, quotas  # noqa: F401
from service.db import create_tables, make_engine, make_sessions
from service.jobs import Base
from service.settings import Settings, get_settings
from service.storage import Storage, make_storage


@dataclass(frozen=True)
class Context:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    storage: Storage

    @classmethod
    def build(cls, settings: Settings) -> Context:
        engine = make_engine(settings.database)
        return cls(settings, engine, make_sessions(engine), make_storage(settings))


def prepare_database(settings: Settings) -> None:
    engine = make_engine(settings.database)
    try:
        create_tables(engine, Base.metadata)
    finally:
        engine.dispose()


def use_torch_threads(settings: Settings) -> None:
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)


@lru_cache(maxsize=1)
def context() -> Context:
    """The worker process's context, built on first use (in the pool child that runs a job)."""
    return Context.build(get_settings())


def reset_after_fork() -> None:
    """In a new pool child: forget the parent's pooled connections without closing them (they
    still belong to the parent, SQLAlchemy's "using connection pools with multiprocessing")."""
    if context.cache_info().currsize:
        context().engine.dispose(close=False)
        context.cache_clear()
    use_torch_threads(get_settings())
