"""Replicas behind a real nginx, watched by a real Prometheus, under load, through faults.

    python scripts/failover.py                          # the bundled model, 3 replicas
    python scripts/failover.py --model-store DIR --out report.json

Starts ``--replicas`` ``python -m service`` processes on loopback ports, nginx
(deploy/nginx/nginx.conf.template) in front of them and Prometheus scraping each every second,
then runs a bounded closed-loop load (``--concurrency`` clients, each sending seeded
``POST /generate`` of ``--rows`` faces through nginx, one after another). During the load:

1. ``--kill-at`` s: replica 0 gets SIGKILL (a crash: its connections reset, its port refuses);
2. ``--restart-at`` s: replica 1 is restarted gracefully: SIGTERM (it drains for
   ``--drain-delay`` s with /readyz 503, finishes its requests, exits), then started again;
3. once replica 1 is ready again, replica 0 is started again; the load stops ``--settle`` s after
   it is ready.

The report (JSON on stdout, and ``--out``) counts the client requests that failed (any answer
but 200, or a transport error), the requests nginx retried on another replica, latency
percentiles over the whole run and over the fault window (the kill until replica 0 is back),
and Prometheus' view of each target (its health transitions, from /api/v1/targets). Exit status
1 when a request failed. Everything binds to 127.0.0.1; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
NGINX_TEMPLATE = ROOT / "deploy" / "nginx" / "nginx.conf.template"
HOST = "127.0.0.1"  # loopback only: the load generator never targets another host


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_for(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before {url} answered.")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout_s:.0f} s.")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class Replica:
    """One `python -m service` on a fixed loopback port (kept across restarts, as nginx knows it)."""

    def __init__(self, index: int, args: argparse.Namespace, workdir: Path) -> None:
        self.index, self.port, self.args, self.workdir = index, free_port(), args, workdir
        self.url = f"http://{HOST}:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGEN_")}
        env.update(
            FACEGEN_HOST=HOST,
            FACEGEN_PORT=str(self.port),
            FACEGEN_MODEL_STORE=str(self.args.model_store),
            FACEGEN_DEVICE="cpu",
            FACEGEN_TORCH_THREADS="1",
            FACEGEN_DRAIN_DELAY_S=str(self.args.drain_delay),
            FACEGEN_WARMUP_BATCH_SIZES="[1]",
            OMP_NUM_THREADS="1",
            PYTHONUNBUFFERED="1",
        )
        if self.args.model_name:
            env["FACEGEN_MODEL_NAME"] = self.args.model_name
        self.starts += 1
        log = open(self.workdir / f"replica{self.index}.{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def wait_ready(self, timeout_s: float) -> None:
        wait_for(f"{self.url}/readyz", timeout_s, self.proc)


@dataclass
class Load:
    """A closed-loop load through nginx: each client sends its next request when one answers."""

    url: str
    concurrency: int
    rows: int
    records: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, t0: float) -> None:
        assert httpx.URL(self.url).host == HOST, "the load generator targets loopback only"
        for c in range(self.concurrency):
            thread = threading.Thread(target=self._client, args=(c, t0), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _client(self, c: int, t0: float) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            k = 0
            while not self._stop.is_set():
                seed = c * 1_000_000 + k
                k += 1
                start = time.monotonic()
                rec: dict[str, Any] = {"start": start - t0, "seed": seed}
                try:
                    r = client.post("/generate", json={"n": self.rows, "seed": seed})
                    rec.update(status=r.status_code, upstream=r.headers.get("x-upstream", ""))
                    if r.status_code != 200:
                        rec["error"] = r.text[:200]
                except httpx.HTTPError as e:
                    rec.update(status=0, error=f"{type(e).__name__}: {e}")
                rec["latency_s"] = time.monotonic() - start
                self.records.append(rec)


class TargetWatch:
    """Polls Prometheus' /api/v1/targets; keeps each facegen target's health transitions."""

    def __init__(self, prometheus_url: str, t0: float) -> None:
        self.url, self.t0 = prometheus_url, t0
        self.transitions: dict[str, list[tuple[float, str]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            try:
                targets = httpx.get(f"{self.url}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
            except (httpx.HTTPError, KeyError, ValueError):
                continue
            for t in targets:
                if t["labels"].get("job") != "facegen":
                    continue
                seen = self.transitions.setdefault(t["labels"]["instance"], [])
                if not seen or seen[-1][1] != t["health"]:
                    seen.append((round(time.monotonic() - self.t0, 2), t["health"]))


def wait_targets_up(prometheus_url: str, n: int, timeout_s: float) -> None:
    """Until Prometheus has scraped all n facegen targets successfully (the baseline)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            targets = httpx.get(f"{prometheus_url}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
            if sum(t["health"] == "up" for t in targets if t["labels"].get("job") == "facegen") == n:
                return
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"Prometheus did not see {n} facegen targets up within {timeout_s:.0f} s.")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_nginx(replicas: list[Replica], workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    prefix = workdir / "nginx"
    prefix.mkdir()
    servers = "\n        ".join(f"server {HOST}:{r.port} max_fails=1 fail_timeout=10s;" for r in replicas)
    conf = NGINX_TEMPLATE.read_text()
    for key, value in {"@PREFIX@": str(prefix), "@LISTEN@": f"{HOST}:{port}", "@SERVERS@": servers}.items():
        conf = conf.replace(key, value)
    (prefix / "nginx.conf").write_text(conf)
    subprocess.run([nginx, "-t", "-q", "-p", str(prefix), "-c", str(prefix / "nginx.conf")], check=True)
    log = open(prefix / "stderr.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")], stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    return proc, f"http://{HOST}:{port}"


def start_prometheus(replicas: list[Replica], workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    prom = workdir / "prometheus"
    prom.mkdir()
    targets = ", ".join(f'"{HOST}:{r.port}"' for r in replicas)
    (prom / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: facegen\n    scrape_timeout: 1s\n    static_configs: [{{targets: [{targets}]}}]\n"
    )
    log = open(prom / "prometheus.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={prom / 'prometheus.yml'}",
            f"--storage.tsdb.path={prom / 'data'}",
            f"--web.listen-address={HOST}:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return proc, f"http://{HOST}:{port}"


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    replicas = [Replica(i, args, workdir) for i in range(args.replicas)]
    procs: list[subprocess.Popen[bytes] | None] = []
    try:
        for r in replicas:
            r.start()
        for r in replicas:
            r.wait_ready(args.start_timeout)
        nginx, lb_url = start_nginx(replicas, workdir)
        procs.append(nginx)
        prometheus, prom_url = start_prometheus(replicas, workdir)
        procs.append(prometheus)
        wait_for(f"{lb_url}/readyz", 30, nginx)
        wait_for(f"{prom_url}/-/ready", 60, prometheus)
        wait_targets_up(prom_url, len(replicas), 60)

        t0 = time.monotonic()
        events: list[tuple[float, str]] = []

        def event(what: str) -> None:
            events.append((round(time.monotonic() - t0, 2), what))
            print(f"[{events[-1][0]:7.2f} s] {what}", file=sys.stderr)

        watch = TargetWatch(prom_url, t0)
        watch.start()
        load = Load(lb_url, args.concurrency, args.rows)
        load.start(t0)
        event("load started")
        victim, restarted = replicas[0], replicas[1 % len(replicas)]
        time.sleep(max(0.0, args.kill_at - (time.monotonic() - t0)))
        assert victim.proc is not None
        victim.proc.kill()
        victim.proc.wait()
        event(f"SIGKILL replica 0 ({victim.url})")
        kill_t = events[-1][0]
        time.sleep(max(0.0, args.restart_at - (time.monotonic() - t0)))
        assert restarted.proc is not None
        restarted.proc.send_signal(signal.SIGTERM)
        event(f"SIGTERM replica {restarted.index} ({restarted.url})")
        restarted.proc.wait(timeout=120)
        event(f"replica {restarted.index} exited with {restarted.proc.returncode} after draining")
        restarted.start()
        restarted.wait_ready(args.start_timeout)
        event(f"replica {restarted.index} ready again")
        victim.start()
        victim.wait_ready(args.start_timeout)
        event("replica 0 ready again")
        back_t = events[-1][0]
        time.sleep(args.settle)
        load.stop()
        event("load stopped")
        # Prometheus' next scrapes of the restarted replicas.
        time.sleep(3)
        watch.stop()
        return report(args, load.records, events, watch.transitions, (kill_t, back_t), replicas)
    finally:
        for p in procs:
            stop(p)
        for r in replicas:
            stop(r.proc)


def report(
    args: argparse.Namespace,
    records: list[dict[str, Any]],
    events: list[tuple[float, str]],
    transitions: dict[str, list[tuple[float, str]]],
    fault: tuple[float, float],
    replicas: list[Replica],
) -> dict[str, Any]:
    ok = [r for r in records if r["status"] == 200]
    failed = [r for r in records if r["status"] != 200]
    in_fault = [r["latency_s"] for r in ok if fault[0] <= r["start"] <= fault[1]]
    before = [r["latency_s"] for r in ok if r["start"] < fault[0]]
    duration = max((r["start"] + r["latency_s"] for r in records), default=0.0)

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 1)

    return {
        "replicas": args.replicas,
        "model_store": str(args.model_store),
        "concurrency": args.concurrency,
        "rows_per_request": args.rows,
        "requests": len(records),
        "failed": len(failed),
        "failures": failed[:20],
        "retried_by_nginx": sum(1 for r in ok if "," in r.get("upstream", "")),
        "faces_per_s": round(len(ok) * args.rows / duration, 1) if duration else None,
        "p50_ms": ms(percentile([r["latency_s"] for r in ok], 0.5)),
        "p99_ms": ms(percentile([r["latency_s"] for r in ok], 0.99)),
        "p99_before_fault_ms": ms(percentile(before, 0.99)),
        "fault_window_s": [fault[0], fault[1]],
        "requests_in_fault_window": len(in_fault),
        "p50_fault_ms": ms(percentile(in_fault, 0.5)),
        "p99_fault_ms": ms(percentile(in_fault, 0.99)),
        "max_fault_ms": ms(max(in_fault, default=None)),
        "events": events,
        "victim": replicas[0].url.removeprefix("http://"),
        "restarted": replicas[1].url.removeprefix("http://"),
        "prometheus_targets": {
            inst: [f"{t:.2f}s {h}" for t, h in seen] for inst, seen in sorted(transitions.items())
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--replicas", type=int, default=3, help="replicas behind nginx (≥ 2)")
    p.add_argument("--model-store", type=Path, default=ROOT / "model_store", help="FACEGEN_MODEL_STORE")
    p.add_argument("--model-name", default=None, help="FACEGEN_MODEL_NAME (default: the store's)")
    p.add_argument("--concurrency", type=int, default=4, help="load clients, each one request at a time")
    p.add_argument("--rows", type=int, default=4, help="faces per POST /generate")
    p.add_argument("--kill-at", type=float, default=5.0, help="seconds into the load: SIGKILL replica 0")
    p.add_argument("--restart-at", type=float, default=9.0, help="seconds into the load: SIGTERM replica 1")
    p.add_argument("--drain-delay", type=float, default=2.0, help="FACEGEN_DRAIN_DELAY_S of each replica")
    p.add_argument("--settle", type=float, default=3.0, help="seconds of load after replica 0 is back")
    p.add_argument(
        "--start-timeout", type=float, default=180.0, help="seconds a replica may take to be ready"
    )
    p.add_argument("--workdir", type=Path, default=None, help="logs and configs (default: a temp dir)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    args = p.parse_args(argv)
    if args.replicas < 2:
        p.error("--replicas must be at least 2 (one is killed, another restarted).")
    for tool in ("nginx", "prometheus"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            p.error(f"{tool} is not installed (Debian package {tool}; scripts/system-deps.sh).")
    if args.workdir is None:
        args.workdir = Path(tempfile.mkdtemp(prefix="facegen-failover-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    result = run(args, args.workdir)
    result["workdir"] = str(args.workdir)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
