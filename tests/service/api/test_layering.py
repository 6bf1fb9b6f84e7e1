"""The HTTP layer (service/api) leaves tensors to the model side: no module of it imports torch
(service/latents.py and service/runner.py do the tensor work)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

API = Path(__file__).resolve().parents[3] / "service" / "api"
MODULES = sorted(API.rglob("*.py"))


def imported_modules(source: str) -> set[str]:
    """Every module an ``import`` or ``from ... import`` names, at any depth of the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_scan_sees_imports_at_any_depth() -> None:
    source = "import numpy\nif True:\n    def f():\n        from torch import nn\n"
    assert imported_modules(source) == {"numpy", "torch"}
    assert imported_modules("import torch.nn.functional as F") == {"torch.nn.functional"}


def test_the_api_package_has_modules() -> None:
    assert len(MODULES) >= 10 and API / "routes" / "interpolate.py" in MODULES


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(API)))
def test_no_api_module_imports_torch(path: Path) -> None:
    torch = {m for m in imported_modules(path.read_text()) if m == "torch" or m.startswith("torch.")}
    assert not torch, f"{path} imports {sorted(torch)}: move the tensor work to service/latents.py"
