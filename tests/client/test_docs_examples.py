"""The Python examples of docs/client.md and the README's client section run as written against
a real service (FACEGEN_URL points the clients at it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.service.live import LiveService

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
DOC_BLOCKS = BLOCK.findall((ROOT / "docs" / "client.md").read_text())
README_BLOCKS = BLOCK.findall((ROOT / "README.md").read_text().split("## Python client", 1)[1])


@pytest.mark.parametrize("code", DOC_BLOCKS + README_BLOCKS, ids=lambda c: c.split("\n")[1][:40])
def test_example_runs(
    code: str, service: LiveService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FACEGEN_URL", service.url)
    code = code.replace('Client("http://127.0.0.1:8000")', "Client()")  # the README names the default URL
    exec(compile(code, "<example>", "exec"), {"__name__": "__example__"})


def test_the_docs_hold_the_examples() -> None:
    assert len(DOC_BLOCKS) >= 4 and len(README_BLOCKS) >= 1
