"""Every malformed file of tests/utils/corpus through `nexp fit`: exit status 2, one line on
stderr starting "error:", no traceback, and no output folder."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from model.cli import app
from tests.utils.corpus import CORPUS

# A file the loader wrongly accepted would fail in seconds, not after minutes of pretraining.
FAST = ["--model", "siren", "--steps", "1"]
# In a real process too, one file of each kind: those whose bugs showed as the process's output
# (a numpy warning on stderr while sniffing text; a lying WAV header that loaded, trained and
# ended in a traceback), and a bomb. The rest run in this process: a subprocess each would cost
# seconds of importing torch on 2 busy cores.
IN_A_PROCESS = ["png decompression bomb", "wav at 1 GHz", "obj of comments only"]


def assert_refused(exit_code: int, stderr: str, out: Path) -> None:
    assert exit_code == 2, stderr
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    assert not out.exists()


@pytest.mark.parametrize("name", CORPUS)
def test_nexp_fit_refuses_it_in_one_line(tmp_path: Path, name: str) -> None:
    path, out = CORPUS[name].write(tmp_path), tmp_path / "out"
    with warnings.catch_warnings(record=True) as caught:
        # What a terminal would show: a warning is a second line on stderr.
        warnings.simplefilter("always")
        result = CliRunner().invoke(app, ["fit", str(path), "--out", str(out), *FAST])
    assert_refused(result.exit_code, result.stderr, out)
    shown = [f"{w.category.__name__}: {w.message}" for w in caught
             if not issubclass(w.category, DeprecationWarning | PendingDeprecationWarning)]
    assert not shown


@pytest.mark.parametrize("name", IN_A_PROCESS)
def test_the_nexp_process_refuses_it_in_one_line(tmp_path: Path, name: str) -> None:
    path, out = CORPUS[name].write(tmp_path), tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "model.cli", "fit", str(path), "--out", str(out),
                          *FAST], capture_output=True, text=True, timeout=120)
    assert_refused(run.returncode, run.stderr, out)
