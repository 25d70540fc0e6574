"""The package layering the README's layout table promises, checked on real imports."""

import subprocess
import sys


def loaded_after(module: str) -> set[str]:
    """Modules a fresh interpreter holds after importing `module`."""
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_api_process_does_not_load_the_fit_path() -> None:
    loaded = loaded_after("api.main")
    assert "model.fit" not in loaded
    assert "worker.runner" not in loaded


def test_the_model_knows_nothing_of_the_service() -> None:
    loaded = loaded_after("model.fit")
    assert not {m for m in loaded if m.split(".")[0] in ("api", "service", "worker", "celery")}
