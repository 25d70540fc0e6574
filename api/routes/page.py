"""The web page at `/` and the API docs at `/docs`: static files, plus three.js and Swagger UI
from web/node_modules.

No templates and no build step: the page talks to the same /v1 API as any other client.
three.js and Swagger UI come from the npm registry through web/package-lock.json (`make install`
runs `npm ci`), never from a CDN (FastAPI's default /docs loads Swagger UI from one), so both work
on machines without internet access.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parents[1] / "static"
NODE_MODULES = Path(__file__).resolve().parents[2] / "web" / "node_modules"

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@router.get("/docs")
def docs(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url, title=f"{request.app.title} - API docs",
        swagger_js_url="/vendor/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url="/vendor/swagger-ui/swagger-ui.css",
        swagger_favicon_url="/vendor/swagger-ui/favicon-32x32.png",
    )


def install(app: FastAPI) -> None:
    """The page's routes, and its static folders mounted on the app itself (a Mount inside an
    included router is dropped by older FastAPI releases)."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # check_dir=False: the API still starts before `npm ci` has run; only the 3D viewer and the
    # docs page need these.
    for name, package in (("three", "three"), ("swagger-ui", "swagger-ui-dist")):
        app.mount(f"/vendor/{name}", StaticFiles(directory=NODE_MODULES / package, check_dir=False),
                  name=name)
