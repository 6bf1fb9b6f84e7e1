"""The playground and the docs pages over plain HTTP (no browser; test_playground.py drives
chromium): what is served, that nothing points at another host, and that the pages are not
API operations."""

from __future__ import annotations

import re

import httpx
import pytest

from service.api.routes.pages import REDOC_LOGO_URL
from tests.service.inproc import InProcessService

# Any absolute URL in a served page or asset that the browser would load on its own.
LOADED_URL = re.compile(r"""(?:src|href)\s*=\s*["'](https?:)?//""", re.IGNORECASE)


def test_playground_page_and_its_files(client: httpx.Client) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "img-src 'self' data: blob:" in csp
    for asset, kind in (
        ("static/playground.js", "javascript"),
        ("static/playground.css", "text/css"),
        ("static/favicon.svg", "image/svg+xml"),
    ):
        assert asset in page
        a = client.get("/" + asset)
        assert a.status_code == 200 and kind in a.headers["content-type"], (asset, a.headers)
    assert not LOADED_URL.search(page)
    assert "cdn" not in client.get("/static/playground.js").text.lower()


@pytest.mark.parametrize(
    ("path", "assets"),
    [
        ("/docs", ["/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"]),
        ("/redoc", ["/docs-assets/redoc.standalone.js"]),
    ],
)
def test_docs_pages_load_their_assets_from_the_service(
    client: httpx.Client, path: str, assets: list[str]
) -> None:
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert not LOADED_URL.search(r.text), r.text
    assert "fonts.googleapis.com" not in r.text and "cdn.jsdelivr.net" not in r.text
    for asset in assets:
        assert f'"{asset}"' in r.text
        a = client.get(asset)
        assert a.status_code == 200 and len(a.content) > 100_000, asset


@pytest.mark.parametrize(
    ("path", "urls"),
    [
        (
            "/docs",
            ["/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css", "/static/favicon.svg"],
        ),
        ("/redoc", ["/docs-assets/redoc.standalone.js", "/static/favicon.svg"]),
    ],
)
def test_docs_pages_behind_a_path_prefix_ask_for_the_prefixed_urls(
    app_service: InProcessService, path: str, urls: list[str]
) -> None:
    """Behind a reverse proxy that serves the app under /faces (ASGI root_path)."""
    with app_service.client(root_path="/faces") as c:
        r = c.get(path)
    assert r.status_code == 200
    for url in [*urls, "/openapi.json"]:
        assert f"/faces{url}" in r.text, url


def test_redoc_bundle_is_served_without_its_cdn_logo(client: httpx.Client) -> None:
    js = client.get("/docs-assets/redoc.standalone.js").content
    assert REDOC_LOGO_URL not in js and b"data:image/svg+xml," in js


def test_pages_are_not_api_operations(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/generate" in paths
    assert not {"/", "/docs", "/redoc", "/docs/oauth2-redirect"} & set(paths)


def test_missing_static_file_is_a_problem_json_404(client: httpx.Client) -> None:
    r = client.get("/static/nope.js")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
