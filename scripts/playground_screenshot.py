"""Screenshots of the playground and /docs for the README, from a running service.

    FACEGEN_PORT=8731 .venv/bin/python -m service &          # the bundled faces64 model
    .venv/bin/python scripts/playground_screenshot.py --url http://127.0.0.1:8731

Drives Debian's chromium through Playwright, as tests/service/test_playground.py does: a grid
from a seed, two faces selected (the morph paused on its middle frame), a photo uploaded (its
latent refined by the Fit menu's --refine steps); then
the same page on a phone-sized screen, and /docs. Writes PNGs into --out, and prints how long
each step took in the browser (figures, not targets).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]


def stage(
    page: Page, url: str, seed: int, n: int, photo: Path, picks: tuple[int, int], refine: int = 0
) -> dict[str, float]:
    """Grid, upload, two picks, morph paused mid-way; returns what each step took (ms, wall clock
    in the browser: the service's work, the transfer and the page's decoding together)."""
    took: dict[str, float] = {}
    t0 = time.perf_counter()
    page.goto(f"{url}/?seed={seed}&n={n}&t=0.9")
    page.wait_for_function(f"() => document.querySelectorAll('#grid .face img').length === {n}")
    took[f"page load to a grid of {n} faces"] = 1000 * (time.perf_counter() - t0)
    if refine:
        page.select_option("#refine", str(refine))  # the Fit menu: refine the photo's latent
    t0 = time.perf_counter()
    page.set_input_files("#photo", str(photo))
    page.wait_for_selector("#upload-result:not([hidden])")
    took[f"upload to crop + reconstruction shown (refine {refine})"] = 1000 * (time.perf_counter() - t0)
    page.locator("#grid .face").nth(picks[0]).click()
    t0 = time.perf_counter()
    page.locator("#grid .face").nth(picks[1]).click()
    page.wait_for_selector("#morph-frame[src^='data:image/png']")
    took["second pick to the morph playing (16 frames)"] = 1000 * (time.perf_counter() - t0)
    page.fill("#morph-scrub", "7")  # pauses on the middle frame
    page.wait_for_function(
        "() => [...document.images].every(i => !i.getAttribute('src') || (i.complete && i.naturalWidth > 0))"
    )
    took["bytes of the page's own files (html, css, js, icon)"] = page.evaluate(
        "() => performance.getEntriesByType('resource').filter(e => e.name.includes('/static/'))"
        ".reduce((s, e) => s + e.encodedBodySize, 0)"
        " + performance.getEntriesByType('navigation')[0].encodedBodySize"
    )
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="Base URL of a running service.")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="Folder for the PNGs.")
    parser.add_argument("--seed", type=int, default=2026, help="First seed of the grid.")
    parser.add_argument(
        "--photo",
        type=Path,
        default=ROOT / "tests" / "service" / "data" / "fairface_train_24.jpg",
        help="Photo to upload (default: the FairFace test photo, CC BY 4.0).",
    )
    parser.add_argument(
        "--refine", type=int, default=50, help="The Fit menu's steps for the upload (0: encoder)."
    )
    parser.add_argument("--chromium", default=shutil.which("chromium"), help="The browser executable.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)
        for what, value in stage(page, args.url, args.seed, 16, args.photo, (0, 5), args.refine).items():
            print(f"desktop: {what}: {value:,.0f}")
        page.screenshot(path=str(args.out / "playground.png"), full_page=True)
        phone = browser.new_page(
            viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True
        )
        phone.set_default_timeout(60_000)
        for what, value in stage(phone, args.url, args.seed, 9, args.photo, (0, 5), args.refine).items():
            print(f"phone: {what}: {value:,.0f}")
        phone.evaluate("window.scrollTo(0, 0)")
        phone.screenshot(path=str(args.out / "playground-phone.png"))
        docs = browser.new_page(viewport={"width": 1280, "height": 900})
        docs.set_default_timeout(60_000)
        docs.goto(f"{args.url}/docs")
        docs.wait_for_selector(".opblock-summary-path")
        docs.screenshot(path=str(args.out / "docs.png"))
        browser.close()
    for name in ("playground.png", "playground-phone.png", "docs.png"):
        print(args.out / name, (args.out / name).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
