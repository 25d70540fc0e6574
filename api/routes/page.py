"""The web page at `/` and the API docs at `/docs`: static files, plus three.js and Swagger UI
from web/node_modules.

No templates and no build step: the page talks to the same /v1 API as any other client.
three.js and Swagger UI come from the npm registry through web/package-lock.json (`make install`
runs `npm ci`), never from a CDN (FastAPI's default /docs loads Swagger UI from one), so both work
on machines without internet access.

Neither page has an inline script, so their Content-Security-Policy (api.middleware) allows
scripts from this server only: /docs starts Swagger UI from static/docs.js rather than FastAPI's
inline snippet, and three.js's addons are served with their bare `three` import spelt out rather
than resolved by an import map (an inline script too).
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parents[1] / "static"
NODE_MODULES = Path(__file__).resolve().parents[2] / "web" / "node_modules"

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@router.get("/docs")
def docs() -> FileResponse:
    return FileResponse(STATIC / "docs.html")


THREE_ADDONS = NODE_MODULES / "three" / "examples" / "jsm"
THREE_MODULE_URL = "/vendor/three/build/three.module.js"
BARE_THREE_IMPORT = re.compile(r"""from\s*(['"])three\1""")


@router.get("/vendor/three-addons/{path:path}")
def three_addon(path: str) -> Response:
    """An addon module (OrbitControls...) importing three.js by its URL instead of its bare name."""
    file = (THREE_ADDONS / path).resolve()
    if file.suffix != ".js" or not file.is_relative_to(THREE_ADDONS) or not file.is_file():
        raise HTTPException(404, f"no three.js addon {path!r}")
    source = BARE_THREE_IMPORT.sub(f'from "{THREE_MODULE_URL}"', file.read_text(encoding="utf-8"))
    return Response(source, media_type="text/javascript")


def install(app: FastAPI) -> None:
    """The page's routes, and its static folders mounted on the app itself (a Mount inside an
    included router is dropped by older FastAPI releases)."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # check_dir=False: the API still starts before `npm ci` has run; only the 3D viewer, the
    # docs page and the page's accessibility test (axe-core, which the page never loads) need these.
    for name, package in (("three", "three"), ("swagger-ui", "swagger-ui-dist"), ("axe-core", "axe-core")):
        app.mount(f"/vendor/{name}", StaticFiles(directory=NODE_MODULES / package, check_dir=False),
                  name=name)
