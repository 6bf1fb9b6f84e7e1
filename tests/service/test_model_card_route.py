"""GET /models/{name}/card on the real server: the card written at export, any model of the
store, 404 problem+json (saying how to write one) when there is none or it was changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx

from tests.service.live import assert_problem, tiny_artifact
from training.model_card import CARD_FILE, write_card


def test_card_is_served_as_markdown(client: httpx.Client, tiny_store: Path) -> None:
    path = tiny_artifact(tiny_store, name="carded", seed=3)  # not the loaded model
    try:
        write_card(path)
        r = client.get("/models/carded/card")
        assert r.status_code == 200 and r.headers["content-type"] == "text/markdown; charset=utf-8"
        assert r.content == (path / CARD_FILE).read_bytes() and r.text.startswith("# Model card: carded v1")
        assert client.get("/models/carded/card", params={"version": 1}).text == r.text
        (path / CARD_FILE).write_text("# edited after export")
        body = assert_problem(client.get("/models/carded/card"), 404)
        assert "sha256" in body["detail"] and "training.model_card" in body["detail"]

    finally:  # the session's store holds only "tiny" for the other tests (test_api lists it)
        shutil.rmtree(path.parent)


def test_no_card_no_model_no_version_are_404s(client: httpx.Client) -> None:
    body = assert_problem(client.get("/models/tiny/card"), 404)  # exported without a card
    assert body["type"] == "/problems/not-found" and "python -m training.model_card" in body["detail"]
    assert "No model named 'nobody'" in assert_problem(client.get("/models/nobody/card"), 404)["detail"]
    assert "no version 9" in assert_problem(client.get("/models/tiny/card?version=9"), 404)["detail"]
    assert_problem(client.get("/models/..%2F..%2Fetc/card"), 404)
    assert_problem(client.get("/models/tiny/card?version=zero"), 422, "version")
