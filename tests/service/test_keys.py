"""service.keys: tokens, their hashes, revocation, and when auth is on."""

from __future__ import annotations

import hashlib

from service import keys
from service.context import Context


def test_a_token_finds_its_key_and_nothing_else_does(ctx: Context) -> None:
    with ctx.sessions() as session:
        assert not keys.configured(session)
        key, token = keys.create(session, "ci")
        assert keys.TOKEN.fullmatch(token) and token.split("_")[1] == key.id
        assert key.hash == hashlib.sha256(token.encode()).hexdigest()
        assert keys.find(session, token) == key
        other = "A" if token[-1] != "A" else "B"
        for wrong in (token[:-1] + other, token + "x", f"nexp_{key.id}", "", key.hash):
            assert keys.find(session, wrong) is None, wrong


def test_revoking_is_once_and_the_last_key_revoked_keeps_auth_on(ctx: Context) -> None:
    with ctx.sessions() as session:
        key, token = keys.create(session, "ci")
        first = keys.revoke(session, key.id)
        assert first is not None and first.revoked_at is not None
        when = first.revoked_at
        assert (again := keys.revoke(session, key.id)) and again.revoked_at == when
        assert keys.revoke(session, "000000000000") is None
        found = keys.find(session, token)
        assert found is not None and found.revoked_at is not None  # api.auth answers 401
        assert keys.configured(session)  # locked, not opened to everyone
        assert [k.id for k in keys.listing(session)] == [key.id]
