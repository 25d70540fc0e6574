"""A small tmpfs: a real file system that fills up (ENOSPC) or turns read-only (EROFS).

Mounting needs CAP_SYS_ADMIN (root in a container that allows it); elsewhere the test that asks
for one is skipped. chmod cannot stand in for a read-only disk here: root writes regardless.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@contextmanager
def tmpfs(folder: Path, size_bytes: int) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    try:
        mounted = _mount("-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs", str(folder))
    except FileNotFoundError:
        pytest.skip("no mount command on this machine")
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): needs CAP_SYS_ADMIN")
    try:
        yield folder
    finally:
        # Lazy: detached now even if a process still has a file open there.
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def remount(folder: Path, mode: str) -> None:
    """mode "ro" or "rw": every write to the mount fails (EROFS), or works again."""
    done = _mount("-o", f"remount,{mode}", str(folder))
    assert done.returncode == 0, done.stderr
