"""The pages a person opens in a browser: the playground at `/`, and the API docs at `/docs`
and `/redoc`, all served from files on this machine (nothing is fetched from a CDN).

The playground is plain HTML, CSS and JS in ``service/static/`` (no build step). Swagger UI
and ReDoc come from the ``fastapi-offline`` wheel, which ships exactly the three files FastAPI's
own doc pages load from jsDelivr (swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js);
we serve them with FastAPI's own page templates, so the pages are FastAPI's, only offline.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
STATIC_URL = "/static"
FAVICON_URL = f"{STATIC_URL}/favicon.svg"
DOCS_ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
DOCS_ASSETS_URL = "/docs-assets"
DOCS_URL, REDOC_URL, OAUTH2_REDIRECT_URL = "/docs", "/redoc", "/docs/oauth2-redirect"
# validatorUrl None: Swagger UI would otherwise send the schema to validator.swagger.io.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None, "tryItOutEnabled": True}

# ReDoc 2 always shows "API docs by Redocly" with its logo from cdn.redoc.ly (no option turns it
# off): the one network request the vendored files make. Served with that URL swapped for an
# inline SVG, so the page never reaches out (tests/service/test_playground.py checks).
REDOC_LOGO_URL = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
LOCAL_LOGO = b"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 1 1'/%3E"

# The playground loads only its own files and calls only this server: the browser enforces it.
PLAYGROUND_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'self'"
)

router = APIRouter(include_in_schema=False)


def mount_static(app: FastAPI) -> None:
    """The playground's files and the docs' vendored assets (FastAPI routers cannot hold mounts)."""
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")


@cache
def _redoc_js() -> bytes:
    return (DOCS_ASSETS_DIR / "redoc.standalone.js").read_bytes().replace(REDOC_LOGO_URL, LOCAL_LOGO)


@router.get(f"{DOCS_ASSETS_URL}/redoc.standalone.js")
async def redoc_js() -> Response:
    """Matched before the assets mount (routes come first), so this copy is the one served."""
    return Response(_redoc_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=3600"})


@router.get("/")
async def playground() -> FileResponse:
    return FileResponse(
        STATIC_DIR / "index.html", media_type="text/html", headers={"Content-Security-Policy": PLAYGROUND_CSP}
    )


def _here(request: Request, path: str) -> str:
    """``path`` of this service as the browser must ask for it (under a proxy's root_path too)."""
    return f"{request.scope.get('root_path', '')}{path}"


# The two doc pages are FastAPI's templates, given this service's schema, title and local files.
@router.get(DOCS_URL)
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=_here(request, request.app.openapi_url),
        title=f"{request.app.title} - Swagger UI",
        oauth2_redirect_url=_here(request, OAUTH2_REDIRECT_URL),
        swagger_js_url=_here(request, f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js"),
        swagger_css_url=_here(request, f"{DOCS_ASSETS_URL}/swagger-ui.css"),
        swagger_favicon_url=_here(request, FAVICON_URL),
        swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
    )


@router.get(OAUTH2_REDIRECT_URL)
async def swagger_ui_oauth2_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get(REDOC_URL)
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(
        openapi_url=_here(request, request.app.openapi_url),
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=_here(request, f"{DOCS_ASSETS_URL}/redoc.standalone.js"),
        redoc_favicon_url=_here(request, FAVICON_URL),
        with_google_fonts=False,  # fonts.googleapis.com is a CDN too
    )
