"""`nexp keys` as an operator runs it: the installed console script, in a subprocess, on the
service's database (NEXP_DATA_DIR)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy

NEXP = Path(sys.executable).parent / "nexp"  # [project.scripts]: model's CLI + service.keys_cli


def nexp(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert NEXP.is_file(), f"{NEXP} is missing: `make install` installs the console script"
    return subprocess.run([str(NEXP), "keys", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NEXP_DATA_DIR": str(data)})


def key_rows(data: Path) -> list[dict[str, object]]:
    engine = sqlalchemy.create_engine(f"sqlite:///{data / 'jobs.sqlite3'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sqlalchemy.text("SELECT * FROM api_keys")).mappings().all()
    finally:
        engine.dispose()
    return [dict(row) for row in rows]


def test_create_prints_the_token_once_and_revoke_ends_it(tmp_path: Path) -> None:
    created = nexp(tmp_path, "create", "--name", "ci")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()  # the only line on stdout: TOKEN=$(nexp keys create ...)
    assert token.startswith("nexp_") and "\n" not in token
    row, = key_rows(tmp_path)
    assert row["name"] == "ci" and row["revoked_at"] is None
    assert row["hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(row) and f"key {row['id']} (ci) created" in created.stderr

    revoked = nexp(tmp_path, "revoke", str(row["id"]))
    assert revoked.returncode == 0 and f"key {row['id']} (ci) revoked" in revoked.stdout
    assert key_rows(tmp_path)[0]["revoked_at"] is not None
