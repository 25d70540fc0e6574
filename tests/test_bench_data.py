"""bench.data: `python -m bench.data fetch` from a local HTTP server (a stand-in for the public
sources) and from a local folder, checksums enforced; a benchmark without its data says how to
get it. The files served are tests/data's whole published ones, under their real checksums."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import bench.data
from bench.data import FETCH_COMMAND, FILES, bench_data, main
from tests.utils.data import DATA, KODIM19, SPOT

REPO = Path(__file__).resolve().parents[1]
WHOLE = tuple(f for f in FILES if (DATA / f.path) in (KODIM19, SPOT))


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data folder, and a registry of the files tests/data holds whole."""
    folder = tmp_path / "bench-data"
    monkeypatch.setattr(bench.data, "data_root", lambda: folder)
    monkeypatch.setattr(bench.data, "FILES", WHOLE)
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):  # 127.0.0.1 is asked directly
        monkeypatch.delenv(proxy, raising=False)
    return folder


@contextmanager
def serving(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server of `folder` on a free port: its base URL and the paths asked for."""
    requested: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)

        def do_GET(self) -> None:
            requested.append(self.path)
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", requested
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def tampered_copy(dest: Path) -> Path:
    """tests/data's whole files, kodim19.png with one byte more."""
    for file in WHOLE:
        (dest / file.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DATA / file.path, dest / file.path)
    with (dest / "images" / "kodak" / "kodim19.png").open("ab") as png:
        png.write(b"\0")
    return dest


def test_fetch_downloads_each_file_once(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with serving(DATA) as (url, requested):
        main(["fetch", "--base-url", url])
        assert sorted(requested) == ["/images/kodak/kodim19.png", "/meshes/spot.obj"]
        main(["fetch", "--base-url", url])  # everything is there with its checksum: no request
        assert len(requested) == 2
    for file in WHOLE:
        assert (root / file.path).read_bytes() == (DATA / file.path).read_bytes()
    assert f"2 files in {root}, each matching its SHA-256" in capsys.readouterr().out


def test_a_download_whose_checksum_differs_is_refused(root: Path, tmp_path: Path) -> None:
    with serving(tampered_copy(tmp_path / "mirror")) as (url, _), pytest.raises(SystemExit) as refused:
        main(["fetch", "--base-url", url])
    assert "does not match the known hash" in str(refused.value)
    assert str(refused.value).startswith(FETCH_COMMAND)
    assert list((root / "images" / "kodak").iterdir()) == []  # not even a partial download


def test_a_changed_file_in_the_data_folder_is_fetched_again(root: Path) -> None:
    stale = root / "meshes" / "spot.obj"
    stale.parent.mkdir(parents=True)
    stale.write_text("o not spot\n")
    with serving(DATA) as (url, requested):
        main(["fetch", "--base-url", url])
    assert "/meshes/spot.obj" in requested
    assert stale.read_bytes() == SPOT.read_bytes()


def test_fetch_from_a_local_folder_checks_checksums_too(root: Path, tmp_path: Path) -> None:
    main(["fetch", "--from", str(DATA)])
    assert (root / "meshes" / "spot.obj").read_bytes() == SPOT.read_bytes()
    shutil.rmtree(root)
    with pytest.raises(SystemExit, match="does not match the known hash"):
        main(["fetch", "--from", str(tampered_copy(tmp_path / "copy"))])
    assert not (root / "images" / "kodak" / "kodim19.png").exists()


def test_a_missing_source_file_is_one_line(root: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="No such file"):
        main(["fetch", "--from", str(tmp_path / "nowhere")])


def test_missing_data_names_the_fetch_command(root: Path) -> None:
    with pytest.raises(SystemExit) as missing:
        bench_data("images", "kodak")
    assert f"`{FETCH_COMMAND}` fills {root}" in str(missing.value)


def test_a_benchmark_without_its_data_exits_with_one_line(tmp_path: Path) -> None:
    """Through the setting, as a fresh clone runs it."""
    run = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "bench", "sdf", "--steps", "1", "--results", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "NEXP_BENCH_DATA_DIR": str(tmp_path / "none")},
    )
    assert run.returncode == 1
    assert run.stderr.strip() == (f"{tmp_path / 'none' / 'meshes'} not found: `{FETCH_COMMAND}` fills "
                                  f"{tmp_path / 'none'} (NEXP_BENCH_DATA_DIR names another folder)")
