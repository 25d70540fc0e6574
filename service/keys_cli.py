"""`nexp keys`: make, list and revoke the service's API keys, in its database (NEXP_* settings).

    nexp keys create --name ci     # prints the token, once: only its hash is kept
    nexp keys list
    nexp keys revoke 3f9c0a1b2d4e

The token is the only line on stdout, so `TOKEN=$(nexp keys create --name ci)` works.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, NoReturn

import typer
from sqlalchemy.orm import Session

from service import keys
from service.context import prepare_database
from service.db import make_engine, make_sessions
from service.settings import get_settings

NAME_MAX = 100  # the column's width (service.keys.ApiKey.name)

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@contextmanager
def database() -> Iterator[Session]:
    """A session on the service's database, its tables made if this is the first use."""
    settings = get_settings()
    prepare_database(settings)
    engine = make_engine(settings.database)
    try:
        with make_sessions(engine)() as session:
            yield session
    finally:
        engine.dispose()


@app.command()
def create(name: Annotated[str, typer.Option(help="Who or what holds the key.")]) -> None:
    """Make a key and print its token (shown this once; the service keeps only a hash)."""
    if not 0 < len(name.strip()) <= NAME_MAX:
        fail(f"--name must be 1 to {NAME_MAX} characters")
    with database() as session:
        key, token = keys.create(session, name)
    typer.echo(f"key {key.id} ({key.name}) created; its token, shown only now:", err=True)
    typer.echo(token)


@app.command("list")
def list_keys() -> None:
    """Every key: id, name, created, revoked."""
    with database() as session:
        for key in keys.listing(session):
            revoked = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
            typer.echo(f"{key.id}  {key.name}  created {key.created_at:%Y-%m-%d %H:%M}  {revoked}")


@app.command()
def revoke(key_id: Annotated[str, typer.Argument(help="The id `nexp keys list` shows.")]) -> None:
    """Revoke a key: its requests get 401 from now on. Its jobs stay until they expire."""
    with database() as session:
        key = keys.revoke(session, key_id)
    if key is None:
        fail(f"no key {key_id!r} (nexp keys list shows them)")
    typer.echo(f"key {key.id} ({key.name}) revoked")
