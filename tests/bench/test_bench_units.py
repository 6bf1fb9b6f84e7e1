"""The bench's arithmetic on made-up numbers: metrics deltas, windows, percentiles, targets."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.ceiling import RawResult
from bench.loadgen import RequestSpec, Sample
from bench.profile import categorise, summarize
from bench.report import CellResult, Report, render
from bench.scrape import mean_rows_per_call, parse_batch_counters
from bench.stats import CellStats
from bench.stats import summarize as summarize_cell
from bench.threads import cpu_by_group, group_of

METRICS = """# HELP facegen_batch_size Rows per model call.
# TYPE facegen_batch_size histogram
facegen_batch_size_bucket{le="1.0",op="decode"} 2.0
facegen_batch_size_bucket{le="+Inf",op="decode"} 5.0
facegen_batch_size_count{op="decode"} %d
facegen_batch_size_sum{op="decode"} %d
facegen_batch_size_count{op="encode"} 3.0
facegen_batch_size_sum{op="encode"} 3.0
facegen_requests_total{route="/generate"} 7.0
"""


def test_mean_rows_per_call_is_the_delta_of_sum_over_count() -> None:
    before = parse_batch_counters(METRICS % (5, 40))
    after = parse_batch_counters(METRICS % (9, 200))
    assert before.available and before.rows["decode"] == 40 and before.calls["decode"] == 5
    rows = mean_rows_per_call(before, after)
    assert rows["decode"] == pytest.approx((200 - 40) / (9 - 5))
    assert rows["encode"] is None  # no encode call in between


def test_missing_metric_gives_none() -> None:
    empty = parse_batch_counters("# nothing here\n")
    assert not empty.available
    assert mean_rows_per_call(empty, empty) == {"decode": None, "encode": None}


def test_summarize_counts_only_requests_finishing_in_the_window() -> None:
    samples = [
        Sample(0.0, 0.5, 200, 4),  # finished before the window: ignored
        *[Sample(1.0 + i / 100, 1.0 + i / 100 + (i + 1) / 1000, 200, 4) for i in range(100)],
        Sample(1.5, 1.6, 503, 0),
        Sample(2.5, 3.5, 200, 4),  # finished after the window: ignored
    ]
    st = summarize_cell(samples, t0=1.0, t1=3.0)
    assert st.requests == 100 and st.errors == 1
    assert st.requests_per_s == pytest.approx(50.0)
    assert st.images_per_s == pytest.approx(200.0)
    # Latencies are 1..100 ms: numpy's linear percentiles of that ramp.
    assert st.p50_ms == pytest.approx(50.5)
    assert st.p99_ms == pytest.approx(99.01)
    assert st.max_ms == pytest.approx(100.0)
    assert st.errors_by_status == {"503": 1}


def test_request_spec_gives_each_request_fresh_seeds_and_round_trips() -> None:
    spec = RequestSpec(
        "/interpolate",
        16,
        {"start": {"seed": 0}, "end": {"seed": 0}, "steps": 16},
        ("start.seed", "end.seed"),
    )
    body = spec.request_kwargs(1000)["json"]
    assert body["start"]["seed"] == 1000 and body["end"]["seed"] == 1001
    assert spec.json_body == {"start": {"seed": 0}, "end": {"seed": 0}, "steps": 16}  # not mutated
    up = RequestSpec(
        "/reconstruct", 1, files=(("image", "f.jpg", b"\xff\xd8", "image/jpeg"),), form={"format": "png"}
    )
    assert RequestSpec.from_json(up.to_json()) == up
    assert up.request_kwargs(0)["files"] == [("image", ("f.jpg", b"\xff\xd8", "image/jpeg"))]


def _raw(batch: int, ips: float, ms: float) -> RawResult:
    return RawResult(batch, batch, 5, ips, ms, 1000.0 / ips, 0.5)


def _cell(server: str, workload: str, conc: int, ips: float, p99: float, rows: float) -> CellResult:
    st = CellStats(10.0, int(ips * 10), ips, ips, p99 / 2, p99, p99, p99 / 2, p99, 0, {})
    return CellResult(
        server, workload, workload, conc, "decode", st, {"decode": rows, "encode": None}, 1.8, 0.1
    )


def test_targets_pass_and_miss_on_the_issue_thresholds() -> None:
    # Raw gain 100/20 = 5x. Served gain 90/20 = 4.5x >= 0.8·5 = 4 (PASS); 90 >= 0.7·100 (PASS);
    # p99 at concurrency 1 is 45 ms > 2 × 20 ms (MISS).
    report = Report(meta={}, ceiling={"batch_1": _raw(1, 20.0, 20.0), "batch_max": _raw(64, 100.0, 640.0)})
    report.cells = [
        _cell("off", "gen1", 64, 20.0, 3000.0, 1.0),
        _cell("on", "gen1", 64, 90.0, 900.0, 60.0),
        _cell("on", "gen1", 1, 19.0, 45.0, 1.0),
    ]
    t1, t2, t3 = report.targets()
    assert (t1.passed, t1.value, t1.threshold) == (True, pytest.approx(4.5), pytest.approx(4.0))
    assert (t2.passed, t2.value) == (True, pytest.approx(0.9))
    assert (t3.passed, t3.value, t3.threshold) == (False, 45.0, 40.0)
    ratios = {(r["workload"], r["concurrency"]): r for r in report.ratios()}
    assert ratios[("gen1", 64)]["on_over_off"] == pytest.approx(4.5)
    assert ratios[("gen1", 1)]["on_over_off"] is None  # no batching-off cell to compare with
    text = render_meta(report)
    assert "PASS  T1" in text and "MISS  T3" in text


def render_meta(report: Report) -> str:
    report.meta = {
        "mode": "test",
        "model": "m",
        "device": "cpu",
        "precision": "fp32",
        "torch_threads": 1,
        "cpu_count": 2,
        "png": "png",
    }
    return render(report)


def test_targets_say_not_measured_when_cells_are_missing() -> None:
    report = Report(meta={}, ceiling={"batch_1": _raw(1, 20.0, 20.0), "batch_max": _raw(64, 100.0, 640.0)})
    assert [t.passed for t in report.targets()] == [None, None, None]


def test_profile_categories_prefer_the_model_over_the_thread_pool(tmp_path: Path) -> None:
    model = ["run (threading.py:1)", "forward (torch/nn/modules/conv.py:10)"]
    png = [
        "handle (service/app.py:3)",
        "encode_png (service/imaging.py:90)",
        "_save (PIL/PngImagePlugin.py:1)",
    ]
    loop = ["run_forever (asyncio/base_events.py:600)", "_run_once (asyncio/base_events.py:1900)"]
    assert categorise(model) == "model forward (torch)"
    assert categorise(png).startswith("PNG")
    assert categorise(loop) == "event loop (uvloop/asyncio)"
    raw = tmp_path / "p.txt"
    raw.write_text(f"{';'.join(model)} 6\n{';'.join(png)} 3\n{';'.join(loop)} 1\n")
    text = summarize(raw)
    assert "10 samples" in text and "60.0%  model forward (torch)" in text


def test_thread_cpu_groups_by_python_thread_name() -> None:
    before = {1: 10.0, 2: 5.0, 3: 1.0}
    after = {1: 10.5, 2: 7.0, 3: 1.25, 4: 0.5, 5: 0.125}  # 4 and 5 started inside the window
    names = {1: "MainThread", 2: "facegen-model_0", 3: "AnyIO worker thread", 4: "AnyIO worker thread"}
    by = cpu_by_group(before, after, names)
    assert by == {
        "model thread (torch forward)": 2.0,
        "anyio workers (PNG encode, upload decode)": 0.75,
        "event loop (HTTP, framework, batcher, JSON)": 0.5,
        "native threads (torch OpenMP pool, libuv)": 0.125,  # tid 5 has no Python name
    }
    assert list(by) == sorted(by, key=lambda g: -by[g])  # biggest first
    assert group_of("worker-x") == "other Python thread (worker-x)"
