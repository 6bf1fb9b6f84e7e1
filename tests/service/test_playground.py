"""The browser playground at `/` and the offline `/docs` and `/redoc`, in a real browser.

Debian's `chromium` (scripts/system-deps.sh installs it), driven by Playwright's Python client
pointed at that executable (Playwright never downloads a browser here), against the real
`python -m service` on the tiny test artifact (conftest's `live`). Every test also fails on a
console error, an uncaught page error, or any request to a host other than the service (the
pages must work with no network). Skips when chromium or playwright is absent.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.service.live import png_pixels

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install .[dev])"
)
CHROMIUM = os.environ.get("FACEGEN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (scripts/system-deps.sh)", allow_module_level=True)

FACE_JPG = Path(__file__).parent / "data" / "fairface_train_24.jpg"
SIDE = 32  # the tiny model's image size
TIMEOUT_MS = 60_000  # a shared 2-core machine: generous, never a speed assertion
PHONE = {"width": 390, "height": 844}  # an iPhone 12-14's CSS viewport
SCREENSHOTS = os.environ.get("FACEGEN_TEST_SCREENSHOTS")  # a folder to keep the screenshots in (CI)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


class PageWatch:
    """Console errors, uncaught exceptions and requests that left the service's host."""

    def __init__(self, page: Any, base_url: str) -> None:
        self.errors: list[str] = []
        self.foreign: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

        def route(r: Any) -> None:
            if r.request.url.startswith(base_url) or r.request.url.startswith(("data:", "blob:")):
                r.fallback()
            else:  # a CDN, a font, a validator: refuse, and fail the test below
                self.foreign.append(r.request.url)
                r.abort()

        page.route("**/*", route)


@pytest.fixture
def watched(browser: Any, base_url: str) -> Iterator[tuple[Any, PageWatch]]:
    """A desktop-sized page, and what it logged and requested (checked when the test ends)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    watch = PageWatch(pg, base_url)
    try:
        yield pg, watch
        assert watch.foreign == [], f"requests left the service: {watch.foreign}"
        assert watch.errors == [], f"browser console errors: {watch.errors}"
    finally:
        context.close()


@pytest.fixture
def page(watched: tuple[Any, PageWatch]) -> Any:
    return watched[0]


def data_url_pixels(src: str) -> np.ndarray:
    head, b64 = src.split(",", 1)
    assert head == "data:image/png;base64", head
    return png_pixels(base64.b64decode(b64))


def open_playground(page: Any, base_url: str, query: str = "?seed=5&n=4") -> None:
    page.goto(base_url + "/" + query)
    page.wait_for_function("() => document.querySelectorAll('#grid .face img').length === 4")
    wait_decoded(page, "#grid .face img")


def wait_decoded(page: Any, selector: str) -> None:
    page.wait_for_function(
        "s => [...document.querySelectorAll(s)].every(i => i.complete && i.naturalWidth > 0)", arg=selector
    )


def grid_srcs(page: Any) -> list[str]:
    return page.eval_on_selector_all("#grid .face img", "imgs => imgs.map(i => i.src)")


def test_page_loads_and_generate_shows_the_seeds_faces(
    page: Any, base_url: str, live_client: httpx.Client
) -> None:
    open_playground(page, base_url)
    assert "tiny v1" in page.inner_text("#model")
    page.fill("#seed", "11")
    page.click("#generate")
    page.wait_for_function("() => document.querySelector('#grid .face .tag').textContent === '11'")
    wait_decoded(page, "#grid .face img")
    sizes = page.eval_on_selector_all(
        "#grid .face img", "imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])"
    )
    assert sizes == [[SIDE, SIDE]] * 4
    # Tile i is exactly the service's face for seed 11 + i.
    for i, src in enumerate(grid_srcs(page)):
        r = live_client.post("/generate", json={"seed": 11 + i})
        assert np.array_equal(data_url_pixels(src), png_pixels(r.content)), f"tile {i}"
    assert "seed=11" in page.url

    before = grid_srcs(page)
    page.click("#new-seed")
    page.wait_for_function("s => document.querySelector('#grid .face img').src !== s", arg=before[0])
    assert page.input_value("#seed") != "11"


def test_temperature_slider_changes_the_faces(page: Any, base_url: str, live_client: httpx.Client) -> None:
    open_playground(page, base_url)
    before = grid_srcs(page)
    page.fill("#temperature", "0.3")  # a range input: sets the value, fires input and change
    page.wait_for_function("s => document.querySelector('#grid .face img').src !== s", arg=before[0])
    assert page.inner_text("#temperature-value") == "0.30"
    r = live_client.post("/generate", json={"seed": 5, "temperature": 0.3})
    assert np.array_equal(data_url_pixels(grid_srcs(page)[0]), png_pixels(r.content))


def test_two_clicked_faces_morph(page: Any, base_url: str) -> None:
    open_playground(page, base_url)
    tiles = page.locator("#grid .face")
    tiles.nth(0).click()
    assert page.is_hidden("#morph")
    tiles.nth(3).click()
    assert tiles.nth(0).get_attribute("aria-pressed") == "true"
    page.wait_for_selector("#morph-frame[src^='data:image/png']")
    assert page.get_attribute("#morph-scrub", "max") == "15"  # 16 frames
    # Scrubbing pauses the animation; the ends are the two faces (latent ends decode to them).
    ends = [data_url_pixels(s).astype(int) for s in grid_srcs(page)[0:4:3]]
    for frame, end in ((0, ends[0]), (15, ends[1])):
        page.fill("#morph-scrub", str(frame))
        page.wait_for_function(f"() => document.querySelector('#morph-frame').dataset.frame === '{frame}'")
        shown = data_url_pixels(page.get_attribute("#morph-frame", "src") or "")
        assert np.abs(shown.astype(int) - end).max() <= 1, f"frame {frame}"
    last = page.eval_on_selector("#morph-frame", "i => i.src")
    page.fill("#morph-scrub", "7")
    page.wait_for_function("s => document.querySelector('#morph-frame').src !== s", arg=last)
    assert page.inner_text("#morph-play") == "Play"
    # A third click replaces the oldest selection and morphs again.
    tiles.nth(1).click()
    assert tiles.nth(0).get_attribute("aria-pressed") == "false"


def test_upload_shows_the_crop_and_reconstruction(
    page: Any, base_url: str, live_client: httpx.Client
) -> None:
    open_playground(page, base_url)
    page.set_input_files("#photo", str(FACE_JPG))
    page.wait_for_selector("#upload-result:not([hidden])")
    wait_decoded(page, "#upload-result img")
    assert page.eval_on_selector("#recon", "i => [i.naturalWidth, i.naturalHeight]") == [SIDE, SIDE]
    assert page.eval_on_selector("#crop", "i => [i.naturalWidth, i.naturalHeight]") == [SIDE, SIDE]
    # The tiny model has a fixed crop: nothing aligned, and the page says so.
    assert "fixed crop" in page.inner_text("#face-info")
    r = live_client.post("/reconstruct", files={"image": ("face.jpg", FACE_JPG.read_bytes(), "image/jpeg")})
    shown = data_url_pixels(page.get_attribute("#recon", "src") or "")
    assert np.array_equal(shown, png_pixels(r.content))
    # The reconstruction is a face like the others: select it and a grid face, and they morph.
    page.click("#recon-button")
    page.locator("#grid .face").nth(0).click()
    page.wait_for_selector("#morph:not([hidden]) #morph-frame[src^='data:image/png']")


def test_upload_with_refinement_shows_the_refined_reconstruction(
    page: Any, base_url: str, live_client: httpx.Client
) -> None:
    open_playground(page, base_url)
    page.wait_for_selector("#refine-label:not([hidden])")  # the live server allows refinement
    page.select_option("#refine", "25")
    page.set_input_files("#photo", str(FACE_JPG))
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('refined 25')")
    wait_decoded(page, "#upload-result img")
    photo = {"image": ("face.jpg", FACE_JPG.read_bytes(), "image/jpeg")}
    refined = live_client.post("/reconstruct", files=photo, data={"refine": "25"})
    plain = live_client.post("/reconstruct", files=photo)
    shown = data_url_pixels(page.get_attribute("#recon", "src") or "")
    assert np.array_equal(shown, png_pixels(refined.content))
    assert not np.array_equal(shown, png_pixels(plain.content))


def test_upload_aligned_by_its_face_draws_the_face_found(
    page: Any, base_url: str, live_client: httpx.Client
) -> None:
    photo = {"image": ("face.jpg", FACE_JPG.read_bytes(), "image/jpeg")}
    r = live_client.post("/reconstruct", files=photo, data={"align": "true", "format": "json"})
    if r.status_code == 503:
        pytest.skip(f"face alignment is unavailable here: {r.json()['detail']}")
    face = r.json()["faces"][0]
    open_playground(page, base_url)
    page.select_option("#align", "true")
    page.set_input_files("#photo", str(FACE_JPG))
    page.wait_for_selector("#face-overlay rect")
    assert "Face found" in page.inner_text("#face-info")
    box = page.eval_on_selector(
        "#face-overlay rect", "r => ['x', 'y', 'width', 'height'].map(k => Number(r.getAttribute(k)))"
    )
    left, top, right, bottom = face["box"]
    assert np.allclose(box, [left, top, right - left, bottom - top])
    dots = page.eval_on_selector_all(
        "#face-overlay circle", "cs => cs.map(c => [+c.getAttribute('cx'), +c.getAttribute('cy')])"
    )
    assert np.allclose(dots, list(face["landmarks"].values()))
    assert page.get_attribute("#face-overlay", "viewBox") == "0 0 96 96"  # the photo's own pixels


def test_a_refused_upload_shows_the_servers_problem_detail(
    watched: tuple[Any, PageWatch], base_url: str
) -> None:
    page, watch = watched
    open_playground(page, base_url)
    with page.expect_console_message(lambda m: m.type == "error") as message:
        page.set_input_files(
            "#photo", {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a photo"}
        )
    # Chromium logs every 4xx fetch as a console error: that one is expected, and nothing else.
    assert message.value.text.startswith("Failed to load resource: the server responded with a status of 4")
    watch.errors.remove(message.value.text)
    page.wait_for_selector("#status.error")
    assert "image" in page.inner_text("#status").lower()  # the problem+json `detail`, not a bare status
    assert page.is_hidden("#upload-result")


def test_sliders_are_hidden_for_a_model_without_attributes(
    page: Any, base_url: str, live_client: httpx.Client
) -> None:
    models = live_client.get("/models").json()
    if models["loaded"].get("attributes"):
        pytest.skip("the served model has attributes")
    open_playground(page, base_url)
    page.locator("#grid .face").nth(0).click()
    assert page.locator("#selection img").count() == 1
    assert page.is_hidden("#edit")


def test_attribute_slider_edits_the_selected_face(
    page: Any, base_url: str, live_client: httpx.Client
) -> None:
    """Against the real POST /edit when the served model lists attributes. The tiny artifact
    has none in this branch (issue 13a adds them): then the browser is handed an `attributes`
    list in GET /models, and /edit is answered by the real /decode of a shifted latent, so
    the page's side of the contract (request body, image shown) is what is tested."""
    live_attributes = live_client.get("/models").json()["loaded"].get("attributes") or []
    edits: list[dict[str, Any]] = []
    if not live_attributes:

        def models_with_attributes(route: Any) -> None:
            body = route.fetch().json()
            body["loaded"]["attributes"] = ["Smiling", "Eyeglasses"]
            route.fulfill(json=body)

        def edit_stand_in(route: Any) -> None:
            body = json.loads(route.request.post_data or "{}")
            edits.append(body)
            shifted = [x + body["attributes"]["Smiling"] for x in body["latent"]]
            r = live_client.post("/decode", json={"latents": [shifted]})
            route.fulfill(status=200, body=r.content, content_type="image/png")

        page.route(base_url + "/models", models_with_attributes)
        page.route(base_url + "/edit", edit_stand_in)
    open_playground(page, base_url)
    name = (live_attributes or ["Smiling"])[0]
    page.locator("#grid .face").nth(2).click()
    page.wait_for_selector("#edit:not([hidden])")
    original = page.get_attribute("#edited", "src")
    page.fill(f"#sliders input[data-attribute='{name}']", "1.5")
    page.wait_for_function("s => document.querySelector('#edited').src !== s", arg=original)
    wait_decoded(page, "#edited")
    assert page.get_attribute("#edited", "src", timeout=TIMEOUT_MS).startswith("blob:")
    if not live_attributes:
        face_latent = live_client.post("/generate", json={"seed": 7, "format": "json"}).json()["latents"][0]
        assert edits[-1] == {"latent": face_latent, "attributes": {"Smiling": 1.5}}
    page.click("#edit-reset")
    assert page.get_attribute("#edited", "src") == original


def test_phone_screen_fits_without_sideways_scrolling(browser: Any, base_url: str, tmp_path: Path) -> None:
    context = browser.new_context(viewport=PHONE, device_scale_factor=3, is_mobile=True, has_touch=True)
    try:
        pg = context.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        watch = PageWatch(pg, base_url)
        open_playground(pg, base_url)
        assert pg.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        pg.locator("#grid .face").nth(0).tap()
        pg.locator("#grid .face").nth(1).tap()
        pg.wait_for_selector("#morph-frame[src^='data:image/png']")
        box = pg.locator("#grid .face").nth(0).bounding_box()
        assert box is not None and box["width"] >= 44  # a comfortable touch target (Apple HIG: 44 pt)
        assert screenshot(pg, tmp_path, "playground-phone.png").shape[1] == PHONE["width"] * 3
        assert watch.errors == [] and watch.foreign == []
    finally:
        context.close()


def screenshot(page: Any, tmp_path: Path, name: str) -> np.ndarray:
    folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name), full_page=True)
    return png_pixels((folder / name).read_bytes())


def test_docs_render_operations_offline(page: Any, base_url: str, tmp_path: Path) -> None:
    page.goto(base_url + "/docs")
    page.wait_for_selector(".opblock-summary-path")
    paths = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent)")
    assert {"/generate", "/decode", "/encode", "/reconstruct", "/interpolate", "/models"} <= set(paths)
    assert "/" not in paths and "/docs" not in paths  # the pages are not API operations
    assert screenshot(page, tmp_path, "docs.png").shape[1] == 1280


def test_docs_try_it_out_shows_a_generated_face(page: Any, base_url: str) -> None:
    page.goto(base_url + "/docs")
    page.locator(".opblock-summary-path", has_text="/generate").click()
    op = page.locator(".opblock", has=page.locator(".opblock-summary-path", has_text="/generate"))
    op.locator("button.execute").click()  # try-it-out is on: the example body {"n": 4, "seed": 42, ...}
    op.locator(".live-responses-table .response-col_status", has_text="200").wait_for()
    face = op.locator(".live-responses-table img")
    face.wait_for()
    page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=face.element_handle())


def test_redoc_renders_operations_offline(page: Any, base_url: str) -> None:
    page.goto(base_url + "/redoc")
    page.locator("h2", has_text="Sample faces from seeds").wait_for()
    assert page.locator("h2", has_text="Reconstruct photos").count() == 1
