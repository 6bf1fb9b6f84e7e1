"""bench/peers without TorchServe or PyTriton: each system's requests and answers, the shared
handler against a real facegen server's PNGs, the process-tree readings and the ratios."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from bench.loadgen import RequestSpec
from bench.peers import procs, protocol
from bench.peers.counters import parse_triton_metrics
from bench.peers.handler import FaceHandler, read_stats
from bench.peers.report import PeerCell, medians, ratios, render
from facegen_core.artifact import ModelStore
from tests.service.live import LiveService

SEEDS = range(16)


def test_each_system_request_carries_the_seed() -> None:
    fg = protocol.spec(protocol.FACEGEN).request_kwargs(42)
    assert fg["json"]["seed"] == 42 and fg["json"]["n"] == 1 and fg["json"]["format"] == "png"
    ts = protocol.spec(protocol.TORCHSERVE)
    assert ts.path == "/predictions/faces" and ts.request_kwargs(42)["content"] == b"42"
    pt = protocol.spec(protocol.PYTRITON)
    body = pt.request_kwargs(7)["json"]
    assert pt.path == "/v2/models/faces/infer"
    assert body["inputs"] == [{"name": "seed", "shape": [1, 1], "datatype": "INT64", "data": [7]}]
    assert body["outputs"] == [{"name": "png", "parameters": {"binary_data": True}}]
    assert pt.request_kwargs(8)["json"]["inputs"][0]["data"] == [8]  # a fresh body per request
    # The load generator's child processes rebuild the spec from JSON.
    for s in (ts, pt):
        assert RequestSpec.from_json(json.loads(json.dumps(s.to_json()))) == s
    with pytest.raises(ValueError, match="Unknown system"):
        protocol.spec("ray")


def triton_answer(outputs: list[tuple[str, list[bytes]]]) -> tuple[bytes, dict[str, str]]:
    """A KServe v2 response with binary data, built by hand: JSON header, then each output's
    BYTES elements (uint32 LE length + bytes)."""
    blobs = [b"".join(struct.pack("<I", len(e)) + e for e in elems) for _, elems in outputs]
    header = {
        "model_name": "faces",
        "outputs": [
            {
                "name": name,
                "datatype": "BYTES",
                "shape": [len(elems), 1],
                "parameters": {"binary_data_size": len(blob)},
            }
            for (name, elems), blob in zip(outputs, blobs, strict=True)
        ],
    }
    head = json.dumps(header).encode()
    return head + b"".join(blobs), {"inference-header-content-length": str(len(head))}


def test_triton_binary_answer_is_parsed_to_the_png_elements() -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00tail\x00"  # NUL bytes, trailing too, must survive
    body, headers = triton_answer([("other", [b"xyz"]), ("png", [png, b"second"])])
    assert protocol.parse_triton(body, headers) == [png, b"second"]
    one, one_headers = triton_answer([("png", [png])])
    r = httpx.Response(200, content=one, headers=one_headers)
    assert protocol.png_from(protocol.PYTRITON, r) == png
    with pytest.raises(ValueError, match="Inference-Header-Content-Length"):
        protocol.parse_triton(b'{"error": "x"}', {})
    with pytest.raises(RuntimeError, match="HTTP 400"):
        protocol.png_from(protocol.TORCHSERVE, httpx.Response(400, text="bad seed"))


def test_triton_metrics_give_calls_and_rows() -> None:
    text = "\n".join(
        [
            "# TYPE nv_inference_exec_count counter",
            'nv_inference_exec_count{model="faces",version="1"} 4',
            'nv_inference_exec_count{model="other",version="1"} 99',
            "# TYPE nv_inference_request_success counter",
            'nv_inference_request_success{model="faces",version="1"} 10',
            "",
        ]
    )
    assert parse_triton_metrics(text) == (4.0, 10.0)
    assert parse_triton_metrics("# TYPE x counter\nx 1\n") is None


@pytest.fixture(scope="module")
def facegen_1row(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """A real facegen server on the tiny model with the CPU default of 1-row passes."""
    service = LiveService(
        tiny_store, tmp_path_factory.mktemp("peers") / "service.log", {"FACEGEN_CHUNK_ROWS": "1"}
    )
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The live server's torch thread count, restored afterwards."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("one_thread")
def test_per_row_handler_makes_facegens_pngs(
    facegen_1row: LiveService, tiny_store: Path, tmp_path: Path
) -> None:
    served = [
        httpx.post(f"{facegen_1row.url}/generate", json={"seed": s, "n": 1}, timeout=60).content
        for s in SEEDS
    ]
    stats = tmp_path / "stats.bin"
    handler = FaceHandler(ModelStore(tiny_store).resolve(), "per-row", 1, torch_threads=1, stats_path=stats)
    assert read_stats(tmp_path / "absent") is None
    assert read_stats(stats) == (0.0, 0.0)
    # Two batches of different sizes: a seed's face must not depend on its batch.
    made = handler.handle(list(SEEDS[:5])) + handler.handle(list(SEEDS[5:]))
    for s, ours, theirs in zip(SEEDS, served, made, strict=True):
        assert np.array_equal(pixels(ours), pixels(theirs)), f"seed {s}"
        assert ours == theirs, f"seed {s}: same pixels, different PNG bytes"
    assert read_stats(stats) == (2.0, 16.0)
    # Batched mode decodes the 16 rows in one pass: the same faces up to float rounding.
    batched = FaceHandler(ModelStore(tiny_store).resolve(), "batched", 1, torch_threads=1).handle(list(SEEDS))
    diff = max(
        int(np.abs(pixels(a).astype(int) - pixels(b)).max()) for a, b in zip(served, batched, strict=True)
    )
    assert diff <= 1


def test_handler_refuses_an_unknown_mode(tiny_store: Path) -> None:
    with pytest.raises(ValueError, match="Unknown peer mode"):
        FaceHandler(ModelStore(tiny_store).resolve(), "fast")


def test_process_tree_counts_children() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert child.pid in procs.tree(os.getpid())
        assert procs.tree_rss_mib(os.getpid()) > 0 and procs.tree_cpu_seconds(os.getpid()) > 0
    finally:
        child.kill()
        child.wait()
    assert child.pid not in procs.tree(os.getpid())


def cell(system: str, rnd: int, rps: float, p99: float) -> PeerCell:
    return PeerCell(system, rnd, 64, 100, 0, rps, p99 / 2, p99, 8.0, 5.0, 300.0)


def test_medians_over_rounds_and_ratios() -> None:
    cells = [cell("facegen", r, rps, 100) for r, rps in enumerate((100, 300, 200))]
    cells += [cell("torchserve", r, rps, 50) for r, rps in enumerate((400, 100, 50))]
    med = medians(cells)
    assert med["facegen"][64]["requests_per_s"] == 200 and med["torchserve"][64]["requests_per_s"] == 100
    assert med["facegen"][64]["rounds"] == 3
    r = ratios(med)["torchserve"][64]
    assert r["requests_per_s"] == pytest.approx(2.0) and r["p99_ms"] == pytest.approx(2.0)
    meta = {"peer_mode": "per-row", "rounds": 3, "cpu_count": 2, "model": "m", "torch_threads": 2,
            "labels": {"torchserve": "TorchServe"}}  # fmt: skip
    table = render(meta, med)
    assert "| TorchServe | 64 | 2.00 | 2.00 | 1.00 |" in table


def test_peers_switch_has_its_own_help_and_says_what_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.cli import main

    with pytest.raises(SystemExit) as exit_help:
        main(["--peers", "--help"])
    assert exit_help.value.code == 0 and "--peer-mode" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_bad:
        main(["--peers", "--peer-systems", "ray"])
    assert exit_bad.value.code == 2 and "unknown peer 'ray'" in capsys.readouterr().err


def test_preflight_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from bench.peers import run

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match=r"missing TorchServe .*PyTriton \(pip install -e '\.\[peers\]'\)"):
        run.preflight(["facegen", "torchserve", "pytriton"])
    run.preflight(["facegen"])  # facegen alone needs nothing more


class FakeContext:
    """What TorchServe hands a module-level handler: the model's YAML config, response types."""

    def __init__(self, handler_config: dict[str, object]) -> None:
        self.model_yaml_config = {"handler": handler_config}
        self.content_types: dict[int, str] = {}

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.content_types[idx] = value


@pytest.mark.usefixtures("one_thread")
def test_torchserve_entry_point_and_its_config(
    tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from bench.peers import torchserve, ts_entry
    from bench.peers.server import PeerOptions

    artifact = ModelStore(tiny_store).resolve()
    opts = PeerOptions(artifact, "per-row", png_level=1, torch_threads=1)
    config = yaml.safe_load(torchserve.model_config_yaml(opts, tmp_path / "stats.bin"))
    assert {k: config[k] for k in ("minWorkers", "maxWorkers", "batchSize", "maxBatchDelay")} == {
        "minWorkers": 1, "maxWorkers": 1, "batchSize": 64, "maxBatchDelay": 5
    }  # fmt: skip
    assert Path(config["handler"]["artifact"]) == artifact.resolve()

    ctx = FakeContext(config["handler"])
    monkeypatch.setattr(ts_entry, "_handler", None)  # a fresh worker (restored afterwards)
    assert ts_entry.handle(None, ctx) is None  # TorchServe's load call: the artifact is loaded
    # One dynamic batch of two requests; TorchServe passes bodies as bytearray under "body" or "data".
    pngs = ts_entry.handle([{"body": bytearray(b"3")}, {"data": b" 4\n"}], ctx)
    assert pngs == FaceHandler(artifact, "per-row", 1, torch_threads=1).handle([3, 4])
    assert ctx.content_types == {0: "image/png", 1: "image/png"}
    assert read_stats(tmp_path / "stats.bin") == (1.0, 2.0)


@pytest.mark.usefixtures("one_thread")
def test_pytriton_infer_function_returns_one_png_per_row(tiny_store: Path) -> None:
    from bench.peers.pytriton import infer_function

    handler = FaceHandler(ModelStore(tiny_store).resolve(), "per-row", 1, torch_threads=1)
    out = infer_function(handler)(seed=np.array([[5], [6], [7]], dtype=np.int64))["png"]
    assert out.shape == (3, 1) and out.dtype == object
    assert list(out[:, 0]) == handler.handle([5, 6, 7])


def test_torchserve_with_workers_counts_every_worker(tmp_path: Path) -> None:
    """Several TorchServe workers each count in their own file (stats.PID); the counters sum
    them, and the model config asks for that many workers."""
    import asyncio

    import yaml

    from bench.peers import torchserve
    from bench.peers.counters import torchserve_counters
    from bench.peers.handler import STATS
    from bench.peers.server import PeerOptions

    opts = PeerOptions(tmp_path, "per-row", png_level=1, torch_threads=1, workers=2)
    config = yaml.safe_load(torchserve.model_config_yaml(opts, tmp_path / "stats.bin"))
    assert (config["minWorkers"], config["maxWorkers"], config["handler"]["workers"]) == (2, 2, 2)
    read = torchserve_counters(tmp_path / "stats.bin")
    assert asyncio.run(read()) is None  # no worker has counted yet
    (tmp_path / "stats.bin.101").write_bytes(STATS.pack(3, 40))
    (tmp_path / "stats.bin.102").write_bytes(STATS.pack(2, 9))
    assert asyncio.run(read()) == (5.0, 49.0)
