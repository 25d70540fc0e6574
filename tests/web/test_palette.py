"""The page names experts by the colours the API paints them with (api/static/colors.js), so it
must know the API's palette exactly: a colour it does not know is an expert it cannot name."""

from __future__ import annotations

import json
import re
from pathlib import Path

from model.render import _PALETTE

COLORS_JS = Path(__file__).resolve().parents[2] / "api" / "static" / "colors.js"


def test_the_page_knows_the_api_palette() -> None:
    source = COLORS_JS.read_text(encoding="utf-8")
    listed = re.search(r"export const PALETTE = (\[.*?\]);", source, re.DOTALL)
    assert listed, "PALETTE not found in colors.js"
    assert json.loads(re.sub(r",\s*\]$", "]", listed.group(1))) == _PALETTE.tolist()
