"""The web page at `/`: static HTML, CSS and ES modules, plus three.js from web/node_modules.

No templates and no build step: the page talks to the same /v1 API as any other client.
three.js comes from the npm registry through web/package-lock.json (`make install` runs
`npm ci`), never from a CDN, so the page works on machines without internet access.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parents[1] / "static"
THREE = Path(__file__).resolve().parents[2] / "web" / "node_modules" / "three"

router = APIRouter(include_in_schema=False)
router.mount("/static", StaticFiles(directory=STATIC), name="static")
# check_dir=False: the API still starts before `npm ci` has run; only the 3D viewer needs it.
router.mount("/vendor/three", StaticFiles(directory=THREE, check_dir=False), name="three")


@router.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html")
