"""API keys: created and revoked with `nexp keys`, stored only as hashes.

A token is `nexp_<id>_<secret>`: the id (not secret) finds the row, and the SHA-256 of the whole
token is compared with the stored hash in constant time. The secret is 256 random bits, so a
plain hash is enough: slow KDFs (bcrypt, scrypt, argon2) exist to make guessing low-entropy
passwords expensive, and no amount of hashing speed makes 2^256 guesses feasible. A fast hash
also keeps checking a key on every request cheap.

Auth is on once any key row exists, revoked or not (or NEXP_REQUIRE_KEYS is set): revoking the
last key locks the service instead of opening it to everyone.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime

from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from service.jobs import Base, utcnow

SECRET_BYTES = 32  # 256 bits: see the module docstring for why no slow KDF is needed
TOKEN = re.compile(r"nexp_(?P<id>[0-9a-f]{12})_[A-Za-z0-9_-]{43}")


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    hash: Mapped[str] = mapped_column(String(64))
    """SHA-256 (hex) of the token; the token itself is shown once and never stored."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(session: Session, name: str) -> tuple[ApiKey, str]:
    """A new key and its token: the only time the token exists outside its holder."""
    key_id = secrets.token_hex(6)
    token = f"nexp_{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
    key = ApiKey(id=key_id, name=name, hash=digest(token))
    session.add(key)
    session.commit()
    return key, token


def revoke(session: Session, key_id: str) -> ApiKey | None:
    """Mark the key revoked (once: a second revoke keeps the first time); None if unknown."""
    key = session.get(ApiKey, key_id)
    if key is not None and key.revoked_at is None:
        key.revoked_at = utcnow()
        session.commit()
    return key


def find(session: Session, token: str) -> ApiKey | None:
    """The key this token belongs to, revoked or not; None for anything else."""
    match = TOKEN.fullmatch(token)
    key = session.get(ApiKey, match["id"]) if match else None
    if key is None or not hmac.compare_digest(key.hash, digest(token)):
        return None
    return key


def configured(session: Session) -> bool:
    """Whether any key was ever created (see the module docstring)."""
    return session.scalar(select(ApiKey.id).limit(1)) is not None


def listing(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))
