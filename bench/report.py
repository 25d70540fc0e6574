"""Tables, JSON results and the RESULTS.md snippet: every number printed is also saved."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

BENCH = Path(__file__).resolve().parent
RESULTS_DIR = BENCH / "results"
RESULTS_MD = BENCH / "RESULTS.md"


@dataclass
class Section:
    """One bench section's outcome: markdown for people, data for machines."""

    name: str
    markdown: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def add(self, text: str) -> None:
        self.markdown.append(text)
        print(text, flush=True)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A markdown table; floats get 3 significant decimals unless already formatted."""
    def cell(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python -m", _module(), *sys.argv[1:]]),
    }


def _module() -> str:
    """The `python -m` name that ran: bench (its __main__) or bench.gpu."""
    script = Path(sys.argv[0])
    return "bench" if script.name == "__main__.py" else f"bench.{script.stem}"


def save(section: Section, record: bool, folder: Path = RESULTS_DIR) -> Path:
    """Write <folder>/<section>.json (+ .md); with `record`, replace the section in RESULTS.md."""
    folder.mkdir(parents=True, exist_ok=True)
    info = machine()
    path = folder / f"{section.name}.json"
    path.write_text(json.dumps({"machine": info, **section.data}, indent=2, default=str) + "\n")
    header = (
        f"Measured {info['date']} on {info['cpu']} ({info['cores']} cores, "
        f"{info['torch_threads']} torch threads{', ' + info['gpu'] if info['gpu'] else ''}), "
        f"torch {info['torch']}, with `{info['command']}`.\n"
    )
    snippet = header + "\n" + "\n".join(section.markdown)
    (folder / f"{section.name}.md").write_text(snippet)
    if record:
        _record(section.name, snippet)
    return path


def _record(name: str, snippet: str) -> None:
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{snippet.rstrip()}\n{end}"
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS_MD.write_text(text)
