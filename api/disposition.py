"""Content-Disposition headers that any client can use and none can be fooled by.

A download name comes from the client that uploaded it, so it may hold path separators, control
characters or a right-to-left override (U+202E) that makes `photo\u202egnp.exe` read as
`photoexe.png`. RFC 6266: `filename*` carries the cleaned name in UTF-8; the plain `filename=`
beside it is an ASCII fallback for clients that ignore `filename*` (`curl -OJ` among them).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal
from urllib.parse import quote

# Unicode categories never shown as themselves: controls (NUL, ESC...), format characters (the
# bidi overrides, zero-width joiners), surrogates, and line and paragraph separators.
HIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}
PATH_SEPARATORS = "/\\"
ASCII_UNSAFE = re.compile(r"[^A-Za-z0-9._ ()+-]")
FALLBACK = "download"


def clean_filename(name: str) -> str:
    """One visible path component: separators and hidden characters become `_`."""
    kept = "".join(
        "_" if c in PATH_SEPARATORS or unicodedata.category(c) in HIDDEN_CATEGORIES else c
        for c in name
    )
    return kept.strip(" .") or FALLBACK


def ascii_filename(name: str) -> str:
    """The name in plain ASCII (accents dropped, anything else `_`), safe inside quotes."""
    decomposed = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return ASCII_UNSAFE.sub("_", decomposed).strip(" .") or FALLBACK


def content_disposition(disposition: Literal["inline", "attachment"], filename: str) -> str:
    name = clean_filename(filename)
    return f"{disposition}; filename=\"{ascii_filename(name)}\"; filename*=UTF-8''{quote(name, safe='')}"
