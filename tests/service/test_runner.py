"""The model worker without HTTP: loading, failure reporting, and batch-independent outputs."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from facegen_core.latent import noise_for_seeds
from service import runner as runner_mod
from service.refining import start_rows, unfinished
from service.runner import ModelRunner
from service.settings import Settings
from tests.service.live import tiny_artifact


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runner_store")
    tiny_artifact(root)
    return root


def runner_for(store: Path, **kw: object) -> ModelRunner:
    settings = Settings(model_store=store, device="cpu", warmup_batch_sizes=(1, 3), **kw)  # type: ignore[arg-type]
    runner = ModelRunner(settings)
    runner.load()
    return runner


@pytest.fixture(scope="module")
def runner(store: Path) -> ModelRunner:
    """Passes of 8 rows: the case where batch-independence is not true by construction."""
    torch.set_num_threads(1)
    r = runner_for(store, chunk_rows=8)
    assert r.ready, r.reason
    return r


def test_loads_the_default_model_and_reports_it(runner: ModelRunner) -> None:
    info = runner.info
    assert info is not None and (info.name, info.version, info.latent_dim, info.image_size) == (
        "tiny",
        1,
        8,
        32,
    )
    assert len(info.sha256) == 64 and info.manifest["note"] == "service test model"
    assert runner.state == "ready" and "warmed up" in runner.reason


def test_decode_output_shape_and_range(runner: ModelRunner) -> None:
    z = noise_for_seeds(0, 5, 8).numpy()
    faces = runner.decode(z)
    assert faces.shape == (5, 32, 32, 3) and faces.dtype == np.uint8
    assert faces.std() > 1.0  # not a constant image


def test_a_rows_output_does_not_depend_on_its_batch(runner: ModelRunner) -> None:
    """The determinism promise: decode(z) alone == decode(z) anywhere in any batch, bit for bit.

    Checked on the floats the decoder produces (before uint8 rounding, which hides most
    differences), for batches of every size from 1 to 64 at every position.
    """
    assert runner._artifact is not None
    decoder = runner._artifact.decoder
    z = noise_for_seeds(1000, 64, 8)
    with torch.inference_mode():
        alone = torch.cat([runner._chunked(decoder, z[i : i + 1]) for i in range(64)])
        together = runner._chunked(decoder, z)
        assert torch.equal(alone, together)
        for size in (2, 3, 7, 9, 16, 33):
            for start in (0, 64 - size):
                assert torch.equal(
                    runner._chunked(decoder, z[start : start + size]), alone[start : start + size]
                )
        shuffled = torch.randperm(64, generator=torch.Generator().manual_seed(0))
        assert torch.equal(runner._chunked(decoder, z[shuffled]), alone[shuffled])
    # And what the API returns (uint8): a grid's face == the same seed alone.
    np.testing.assert_array_equal(runner.decode(z.numpy())[17], runner.decode(z[17:18].numpy())[0])


def test_encode_is_batch_independent_too(runner: ModelRunner) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    stats = runner.encode(images)
    assert stats.shape == (12, 2, 8) and stats.dtype == np.float32 and np.isfinite(stats).all()
    for i in (0, 5, 11):
        np.testing.assert_array_equal(runner.encode(images[i : i + 1])[0], stats[i])


def test_chunk_rows_setting(store: Path, runner: ModelRunner) -> None:
    r = runner_for(store, chunk_rows=3)
    assert r.chunk_rows == 3 and runner_for(store).chunk_rows == 1
    z = noise_for_seeds(5, 7, 8).numpy()
    np.testing.assert_array_equal(r.decode(z), runner.decode(z))  # 3+3+1(+2 padding) == 7(+1)
    assert Settings(max_batch_size=16).effective_chunk_rows("cuda") == 16
    assert Settings(max_batch_size=4).effective_chunk_rows("cpu") == 1


def test_a_corrupt_artifact_fails_with_the_reason(store: Path, tmp_path: Path) -> None:
    bad = tmp_path / "store"
    shutil.copytree(store, bad)
    weights = bad / "tiny" / "1" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    r = runner_for(bad)
    assert r.state == "failed" and not r.ready and r.info is None
    assert "Checksum mismatch" in r.reason and "model.safetensors" in r.reason
    with pytest.raises(RuntimeError, match="not loaded"):
        r.decode(np.zeros((1, 8), np.float32))


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"model_name": "nope"}, "No model named 'nope'"),
        ({"model_version": 9}, "has no version 9"),
    ],
)
def test_missing_model_or_version_fails_with_the_reason(
    store: Path, kw: dict[str, object], needle: str
) -> None:
    r = runner_for(store, **kw)
    assert r.state == "failed" and needle in r.reason


def test_an_empty_store_fails_with_the_reason(tmp_path: Path) -> None:
    r = runner_for(tmp_path)
    assert r.state == "failed" and "holds no models" in r.reason


def test_decoder_memory_format_setting(store: Path, runner: ModelRunner) -> None:
    """auto lays the decoder out channels-last on CPU (measured faster: bench.layout) and leaves
    the encoder NCHW; either layout keeps a row's pixels independent of its batch, the layouts
    agree to rounding, and the ETag fingerprint tells them apart (their floats differ)."""
    assert Settings().effective_decoder_memory_format("cpu") == "channels_last"
    assert Settings().effective_decoder_memory_format("cuda") == "contiguous"
    assert runner.decoder_memory_format == "channels_last" and runner._artifact is not None
    assert runner._artifact.decoder.to_image.weight.is_contiguous(memory_format=torch.channels_last)
    assert not runner._artifact.encoder.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    nchw = runner_for(store, chunk_rows=8, decoder_memory_format="contiguous")
    assert nchw.ready and nchw.decoder_memory_format == "contiguous", nchw.reason
    assert nchw._artifact is not None and nchw._artifact.decoder.to_image.weight.is_contiguous()
    z = noise_for_seeds(11, 13, 8).numpy()
    for r in (runner, nchw):
        faces = r.decode(z)
        np.testing.assert_array_equal(faces[5], r.decode(z[5:6])[0])
    diff = np.abs(runner.decode(z).astype(int) - nchw.decode(z).astype(int))
    assert diff.max() <= 1
    assert nchw.fingerprint != runner.fingerprint
    with pytest.raises(ValueError):
        Settings(decoder_memory_format="nhwc")  # type: ignore[arg-type]


def test_the_cuda_graphs_setting_is_harmless_on_cpu(
    store: Path, runner: ModelRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FACEGEN_CUDA_GRAPHS (default on) is ignored on CPU: nothing is captured, the runner is
    ready, and its pixels and statistics are those of the graphs-off runner."""
    monkeypatch.setenv("FACEGEN_CUDA_GRAPHS", "false")
    assert Settings().cuda_graphs is False
    monkeypatch.delenv("FACEGEN_CUDA_GRAPHS")
    assert Settings().cuda_graphs is True
    on = runner_for(store, chunk_rows=8, cuda_graphs=True)
    off = runner_for(store, chunk_rows=8, cuda_graphs=False)
    for r in (on, off):
        assert r.ready and not r.cuda_graphs and not r._graphs, r.reason
    z = noise_for_seeds(7, 11, 8).numpy()
    faces = on.decode(z)
    np.testing.assert_array_equal(faces, off.decode(z))
    np.testing.assert_array_equal(faces, runner.decode(z))
    np.testing.assert_array_equal(on.encode(faces), off.encode(faces))


def test_row_threads_compute_the_same_bits_as_the_model_thread(store: Path, runner: ModelRunner) -> None:
    """A call of several passes runs them on lane threads of one torch thread each; the floats
    must be those of the same passes on the model thread (checked at warm-up, and here)."""
    laned = runner_for(store, chunk_rows=8, row_threads=2)
    assert laned.ready and laned.row_threads == 2 and laned._lanes is not None
    z = noise_for_seeds(77, 37, 8).numpy()  # 5 passes of 8 rows (the last one padded)
    np.testing.assert_array_equal(laned.decode(z), runner.decode(z))
    assert any(t.name.startswith("facegen-rows") for t in threading.enumerate())
    images = np.random.default_rng(3).integers(0, 256, (19, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(laned.encode(images), runner.encode(images))
    assert laned._lanes is not None
    assert runner_for(store, row_threads=1)._lanes is None
    laned.shutdown()


def test_refinement_on_row_lanes_gives_each_row_what_it_gets_alone(store: Path) -> None:
    """Refinement's gradient passes run on the lanes too (1-row passes, one torch thread each);
    a row refined among others must get the floats it gets alone, on the model thread."""
    threads = torch.get_num_threads()
    laned = runner_for(store, chunk_rows=1, row_threads=2, torch_threads=2)
    assert laned.ready and laned._lanes is not None, laned.reason
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    z0 = rng.standard_normal((3, 8)).astype(np.float32)
    together = start_rows(images, z0, 4)
    while (left := unfinished(together)).any():
        together[left] = laned.refine(together[left])
    for i in range(3):
        alone = laned.refine(start_rows(images[i : i + 1], z0[i : i + 1], 4))
        while unfinished(alone).any():
            alone = laned.refine(alone)
        np.testing.assert_array_equal(alone["z"][0], together["z"][i])
    assert not np.array_equal(together["z"], z0)
    laned.shutdown()
    torch.set_num_threads(threads)


def test_a_refinement_slice_steps_only_the_rows_that_fit_and_the_result_is_the_same(store: Path) -> None:
    """With a slice shorter than one pass, a call steps one pass of rows (the first) and returns
    the others untouched; resubmitting until done gives each row what it gets alone."""
    r = runner_for(store, chunk_rows=1, refine_slice_ms=0.001)
    assert r.ready and r._refine_pass_s > 0, r.reason  # measured by the warm-up step
    rng = np.random.default_rng(9)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    z0 = rng.standard_normal((3, 8)).astype(np.float32)
    rows = r.refine(start_rows(images, z0, 3))
    assert rows["done"].tolist() == [1, 0, 0]
    np.testing.assert_array_equal(rows["z"][1:], z0[1:])
    calls = 1
    while (left := unfinished(rows)).any():
        rows[left] = r.refine(rows[left])
        calls += 1
    assert calls == 9  # 3 rows × 3 steps, one row-step per call
    for i in range(3):
        alone = start_rows(images[i : i + 1], z0[i : i + 1], 3)
        while unfinished(alone).any():
            alone = r.refine(alone)
        np.testing.assert_array_equal(alone["z"][0], rows["z"][i])


def test_row_threads_turn_off_when_they_would_change_the_floats(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If a lane's pass differs from the model thread's by one rounding, warm-up says so and
    serves without lanes: the determinism promise outranks the speed."""
    real = runner_mod._run_passes

    def off_by_a_rounding(*args: Any) -> list[torch.Tensor]:
        return [out + 1e-6 for out in real(*args)]

    monkeypatch.setattr(runner_mod, "_run_passes", off_by_a_rounding)
    r = runner_for(store, row_threads=2)
    assert r.ready and r.row_threads == 1 and r._lanes is None
    z = noise_for_seeds(5, 4, 8).numpy()
    np.testing.assert_array_equal(r.decode(z), np.concatenate([r.decode(z[i : i + 1]) for i in range(4)]))


def test_row_threads_setting() -> None:
    assert Settings().effective_row_threads("cpu", 2) == 2
    assert Settings(row_threads=3).effective_row_threads("cpu", 2) == 3
    assert Settings(row_threads=3).effective_row_threads("cuda", 2) == 1
    assert Settings().effective_row_threads("cpu", 1) == 1
