"""One prepared GPU run: GPU tests, training, export, serving benchmark, in one command.

A GPU is lent to a session only now and then, for 15 minutes of device time in all (one
command at most 10 minutes, 64 MiB of working tree, 8 files of at most 16 MiB back), so
this script is rehearsed on CPU in the default test suite (tests/scripts) and costs a lucky
session a single call. Stages, each with its own budget and each recorded in
``$OUT/summary.json`` as it ends (so a run killed at its limit still reports what it did):

1. ``env``: torch, CUDA, the GPU (nvidia-smi).
2. ``tests``: ``pytest -m gpu tests/gpu`` (runner determinism, autocast, CUDA graphs, NCCL).
3. ``train``: ``python -m training`` on the carried face packs (.device_data/*.facepack.zip,
   made by scripts/gpu_prepare.sh), the whole uint8 set resident on the GPU, bf16 autocast,
   channels_last, for --train-minutes; exported with fp16 weights so the artifact comes back
   under 16 MiB. nvidia-smi samples the GPU's utilisation meanwhile. ``--arm SUFFIX=FLAGS``
   (repeatable) trains other recipes alongside on the same GPU (an A/B at equal device time).
   With ``--encoder-minutes M``, arm A's encoder then trains alone against its frozen decoder
   on every pack (``stage_encoder``), and that export is what the bench serves.
4. ``bench``: ``python -m bench`` against ``python -m service`` serving that artifact on the
   device: /generate n = 1 and n = 64 at several concurrencies (p50/p99, faces/s, rows per
   model call, the load generator's CPU).
5. ``refine``: ``python -m bench.refine`` on the bundled store: what ``refine=N`` costs a request
   on the device, and a single face's latency beside a long refinement (docs/refine.md).

Files in $OUT (the device tool returns at most 8): summary.json, run.log (every stage's
output, the GPU tests' too), gpu_util.csv, bench.json, refine.json, and NAME-VERSION.tar per trained
arm and one more for the encoder stage's export (the artifact folder and its train_log.jsonl;
unpack into model_store/NAME/).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class Run:
    """The summary, rewritten after every stage, and a log every stage's output is appended to."""

    def __init__(self, out: Path, args: argparse.Namespace) -> None:
        self.out = out
        self.log = out / "run.log"
        self.summary: dict[str, Any] = {"args": vars(args) | {"out": str(out)}, "stages": {}}
        self.t0 = time.monotonic()
        self.save()

    def save(self) -> None:
        self.summary["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=2, default=str) + "\n")

    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.1f}s] {text}"
        print(line, flush=True)
        with open(self.log, "a") as f:
            f.write(line + "\n")

    def stage(self, name: str, record: dict[str, Any]) -> None:
        self.summary["stages"][name] = record
        self.save()
        self.say(
            f"stage {name}: {'ok' if record.get('ok') else 'FAILED'} {json.dumps(record, default=str)[:400]}"
        )

    def sh(
        self, cmd: list[str], timeout: float, env: dict[str, str] | None = None, tee: Path | None = None
    ) -> tuple[int, float]:
        """Run ``cmd``, its output appended to run.log (and copied to ``tee``); (rc, seconds).
        rc 124 when it ran past ``timeout``: its whole process group is killed (a server the
        bench started too)."""
        self.say("$ " + shlex.join(cmd))
        started = time.monotonic()
        capture = self.out / ".stage-output"
        with open(capture, "wb") as sink:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
            rc = wait_or_kill(proc, timeout)
        text = capture.read_bytes()
        capture.unlink()
        with open(self.log, "ab") as log:
            log.write(text)
        if tee is not None:
            tee.write_bytes(text)
        return rc, round(time.monotonic() - started, 1)


def wait_or_kill(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """The exit status, or 124 after killing the process group at ``timeout`` seconds."""
    try:
        return proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
        return 124


def stage_env(run: Run, device: str) -> None:
    import torch

    rec: dict[str, Any] = {
        "ok": True,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cpu_count": os.cpu_count(),
    }
    if torch.cuda.is_available():
        rec["gpu"] = torch.cuda.get_device_name(0)
        rec["cuda"] = torch.version.cuda
        rec["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
        run.say(smi.stdout)
    if device == "cuda" and not torch.cuda.is_available():
        rec["ok"] = False
        rec["error"] = "--device cuda, but torch sees no GPU"
    run.stage("env", rec)


def stage_tests(run: Run, timeout: float) -> None:
    out = run.out / ".pytest.txt"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/gpu", "-q", "-rs", "-p", "no:cacheprovider"]
    rc, secs = run.sh(cmd, timeout, tee=out)
    lines = out.read_text(errors="replace").strip().splitlines() if out.exists() else []
    out.unlink(missing_ok=True)  # its text is in run.log: the 8 files that come back are precious
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    # pytest exits 5 when every test was deselected or none collected; skips are rc 0.
    rec = {"ok": rc == 0, "rc": rc, "seconds": secs, "result": lines[-1] if lines else "", "failed": failed}
    run.stage("tests", rec)


def pack_settings(packs: list[Path]) -> dict[str, Any]:
    """The crop and size the packs were made with (all must agree): the model is trained for them."""
    metas = []
    for p in packs:
        with zipfile.ZipFile(p) as zf:
            metas.append(json.loads(zf.read("facepack.json")))
    keys = {(m["crop"], m["image_size"], m["channels"]) for m in metas}
    if len(keys) != 1:
        raise SystemExit(f"The face packs disagree on crop/size/channels: {sorted(keys)}.")
    crop, size, channels = keys.pop()
    return {"crop": crop, "image_size": size, "channels": channels, "faces": sum(m["count"] for m in metas)}


def training_cmd(
    args: argparse.Namespace,
    packs: list[Path],
    crop: str,
    name: str,
    run_dir: Path,
    minutes: float,
    flags: list[str],
) -> list[str]:
    """``python -m training`` on the packs, exporting NAME's next version into --store."""
    return [
        sys.executable, "-m", "training",
        "--data", ",".join(str(p) for p in packs),
        "--config", args.config,
        "--crop", crop,
        "--batch-size", str(args.batch_size),
        "--max-minutes", str(minutes),
        "--weights-dtype", "fp16",
        "--store", str(args.store),
        "--name", name,
        "--run-dir", str(run_dir),
        "--cache-dir", "",
        "--device", args.device,
        "--no-progress",
        "--log-every", str(args.log_every),
        "--checkpoint-every", "0",
        *flags,
    ]  # fmt: skip


def train_cmd(
    args: argparse.Namespace, packs: list[Path], crop: str, name: str, extra: list[str]
) -> list[str]:
    """An arm of the train stage: the whole VAE-GAN, --train-flags, then the arm's own flags."""
    return training_cmd(
        args, packs, crop, name, args.runs / name, args.train_minutes, [*args.train_flags, *extra]
    )


# The encoder stage's recipe: faces64 v2's encoder run (model_store/faces64/TRAINING.md): the
# pixel term per pixel over the photo's pixels, Adam's β1 0.9, a fine-tuning learning rate; and
# the encoder's BatchNorm frozen at the trained arm's statistics (the --encoder-bn A/B there).
ENCODER_FLAGS = (
    "--train-part", "encoder", "--encoder-bn", "frozen", "--pixel-pool", "1", "--beta1", "0.9",
    "--lr-enc", "1e-4",
)  # fmt: skip


def encoder_cmd(
    args: argparse.Namespace, packs: list[Path], crop: str, name: str, artifact: Path
) -> list[str]:
    """The encoder stage: ``artifact``'s encoder trained alone against its frozen decoder."""
    flags = [*ENCODER_FLAGS, "--init-from", str(artifact), *args.encoder_flags]
    return training_cmd(args, packs, crop, name, args.runs / f"{name}-encoder", args.encoder_minutes, flags)


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def training_figures(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Images/s over the run after its first logged interval (which holds start-up costs)."""
    if len(records) < 2:
        return {"log_records": len(records)}
    a, b = records[0], records[-1]
    rate = (b["images_seen"] - a["images_seen"]) / max(1e-9, b["wall_time_s"] - a["wall_time_s"])
    last = {k: v for k, v in b.items() if isinstance(v, float | int)}
    return {"steps": b["step"], "images_seen": b["images_seen"], "images_per_s": round(rate, 1), "last": last}


def gpu_monitor(path: Path) -> subprocess.Popen[bytes] | None:
    """nvidia-smi sampling the GPU every second into ``path`` (None without nvidia-smi)."""
    if not shutil.which("nvidia-smi"):
        return None
    query = "timestamp,utilization.gpu,memory.used,power.draw"
    with open(path, "wb") as sink:  # the child keeps its own handle
        return subprocess.Popen(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits", "-lms", "1000"],
            stdout=sink,
            stderr=subprocess.DEVNULL,
        )


def utilisation(path: Path) -> dict[str, Any]:
    vals = []
    mem = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        parts = [p.strip() for p in line.split(",")]
        try:
            vals.append(float(parts[1]))
            mem.append(float(parts[2]))
        except (IndexError, ValueError):
            continue
    busy = vals[5:] or vals  # the first seconds are data loading
    if not busy:
        return {}
    return {
        "gpu_util_mean_pct": round(sum(busy) / len(busy), 1),
        "gpu_util_samples": len(busy),
        "gpu_memory_max_mib": max(mem),
    }


def stage_train(run: Run, args: argparse.Namespace, packs: list[Path]) -> list[tuple[str, Path]]:
    """Train (and export) arm A, and arm B alongside when asked; returns (name, artifact dir)."""
    settings = pack_settings(packs)
    arms: list[tuple[str, list[str]]] = [(args.name, [])]
    for spec in args.arm:
        suffix, _, flags = spec.partition("=")
        arms.append((f"{args.name}-{suffix}", shlex.split(flags)))
    # The arms share the machine's cores: each gets its share for its CPU-side work (export's
    # picture drawing, data decoding), so they do not oversubscribe each other.
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // len(arms)))}
    monitor = gpu_monitor(run.out / "gpu_util.csv")
    procs = []
    started = time.monotonic()
    for name, extra in arms:
        cmd = train_cmd(args, packs, settings["crop"], name, extra)
        run.say("$ " + shlex.join(cmd))
        with open(run.out / f"train-{name}.out", "wb") as log:  # the child keeps its own handle
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        procs.append((name, proc))
    timeout = args.train_minutes * 60 + args.train_slack_s
    exported: list[tuple[str, Path]] = []
    for name, proc in procs:
        rc = wait_or_kill(proc, started + timeout - time.monotonic())
        out_file = run.out / f"train-{name}.out"
        with open(run.log, "a") as f:
            f.write(out_file.read_text(errors="replace")[-6000:])
        out_file.unlink()
        records = read_log(args.runs / name / "train_log.jsonl")
        rec: dict[str, Any] = {"ok": rc == 0, "rc": rc, "arm": name, **settings, **training_figures(records)}
        rec["seconds"] = round(time.monotonic() - started, 1)
        artifact = latest_version(args.store, name)
        if rc == 0 and artifact is not None:
            rec["artifact"] = str(artifact)
            exported.append((name, artifact))
        else:
            rec["ok"] = False
        run.stage(f"train:{name}", rec)
    if monitor is not None:
        monitor.terminate()
        monitor.wait()
        run.summary["stages"][f"train:{args.name}"].update(utilisation(run.out / "gpu_util.csv"))
        run.save()
    return exported


def latest_version(store: Path, name: str) -> Path | None:
    """STORE/NAME/VERSION of the newest version exported there, or None."""
    folder = store / name
    versions = sorted(folder.glob("[0-9]*"), key=lambda p: int(p.name)) if folder.is_dir() else []
    return versions[-1] if versions else None


def stage_encoder(
    run: Run, args: argparse.Namespace, packs: list[Path], name: str, artifact: Path
) -> Path | None:
    """Arm A's encoder trained on alone (``--train-part encoder``, training/encoder_step.py)
    against arm A's frozen decoder, on every pack of --encoder-data, for --encoder-minutes;
    exported as NAME's next version, which is returned (None when it failed).

    Why a stage of its own: the decoder trains on CelebA alone (aligned FairFace frames are
    half black fill, which the whole VAE-GAN would learn to draw), while the encoder must
    understand every face users send, and learns FairFace's over the photo's pixels only. Its
    samples are arm A's bit for bit: the decoder and the latent prior are not touched."""
    settings = pack_settings(packs)
    cmd = encoder_cmd(args, packs, settings["crop"], name, artifact)
    rc, secs = run.sh(cmd, args.encoder_minutes * 60 + args.train_slack_s)
    records = read_log(args.runs / f"{name}-encoder" / "train_log.jsonl")
    rec: dict[str, Any] = {"ok": rc == 0, "rc": rc, "seconds": secs, "init_from": str(artifact)}
    rec |= {**settings, **training_figures(records)}
    newest = latest_version(args.store, name)
    if rc != 0 or newest is None or newest == artifact:
        rec["ok"] = False
        newest = None
    else:
        rec["artifact"] = str(newest)
    run.stage("encoder", rec)
    return newest


def stage_bench(run: Run, args: argparse.Namespace, name: str, artifact: Path) -> None:
    cmd = [
        sys.executable, "-m", "bench",
        "--model-store", str(args.store),
        "--model-name", name,
        "--model-version", artifact.name,
        "--device", args.device,
        "--precision", args.bench_precision,
        "--max-batch-size", str(args.bench_max_batch),
        "--max-queue-rows", str(64 * 512),
        "--workloads", args.bench_workloads,
        "--concurrency", args.bench_concurrency,
        "--servers", "on",
        "--client-procs", str(args.client_procs),
        "--out", str(run.out / "bench.json"),
        *(["--smoke"] if args.rehearsal else ["--short", "--duration", str(args.bench_duration)]),
    ]  # fmt: skip
    rc, secs = run.sh(cmd, args.bench_timeout_s)
    rec: dict[str, Any] = {"ok": rc == 0, "rc": rc, "seconds": secs}
    bench = run.out / "bench.json"
    if bench.is_file():
        cells = json.loads(bench.read_text()).get("cells", [])
        rec["cells"] = [
            {
                "workload": c.get("workload"),
                "concurrency": c.get("concurrency"),
                "images_per_s": round((c.get("stats") or {}).get("images_per_s") or 0, 1),
                "p50_ms": (c.get("stats") or {}).get("p50_ms"),
                "p99_ms": (c.get("stats") or {}).get("p99_ms"),
                "errors": (c.get("stats") or {}).get("errors"),
                "rows_per_call": c.get("rows_per_call"),
                "client_cpu_cores": c.get("client_cpu_cores"),
                "server_cpu_cores": c.get("server_cpu_cores"),
            }
            for c in cells
        ]
    run.stage("bench", rec)


def stage_refine(run: Run, args: argparse.Namespace) -> None:
    """``python -m bench.refine`` on the bundled store (what users serve): what refine=N costs a
    request on this device, and a single face's latency beside a long refinement (docs/refine.md)."""
    small = ["--steps", "0", "5", "--repeats", "1", "--busy-steps", "20", "--faces", "2", "--threads", "1"]
    cmd = [
        sys.executable, "-m", "bench.refine",
        "--device", args.device,
        "--precision", args.bench_precision,
        "--json", str(run.out / "refine.json"),
        *(small if args.rehearsal else ["--steps", "0", "25", "50", "100", "200", "--busy-steps", "1000"]),
    ]  # fmt: skip
    rc, secs = run.sh(cmd, args.refine_timeout_s)
    rec: dict[str, Any] = {"ok": rc == 0, "rc": rc, "seconds": secs}
    out = run.out / "refine.json"
    if out.is_file():
        m = json.loads(out.read_text())
        rec |= {k: m.get(k) for k in ("reconstruct", "generate_idle_ms", "generate_during_refine_ms")}
    run.stage("refine", rec)


def pack_artifact(run: Run, name: str, artifact: Path, train_log: Path) -> None:
    """NAME-VERSION.tar: the artifact folder VERSION/ and, beside it, the run's train_log.jsonl."""
    tar = run.out / f"{name}-{artifact.name}.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(artifact, arcname=artifact.name)
        if train_log.is_file():
            tf.add(train_log, arcname="train_log.jsonl")
    run.summary.setdefault("artifacts", {})[tar.stem] = {"tar": tar.name, "bytes": tar.stat().st_size}
    run.save()


def find_packs(spec: str) -> list[Path]:
    """Comma-separated packs, or every *.facepack.zip in a folder; [] when any named pack is
    missing (the stage then fails with a message rather than a traceback)."""
    if "," in spec or spec.endswith(".zip"):
        packs = [Path(p) for p in spec.split(",")]
        return packs if all(p.is_file() for p in packs) else []
    return sorted(Path(spec).glob("*.facepack.zip"))


def rehearsal_packs(args: argparse.Namespace) -> list[Path]:
    """Synthetic faces at the tiny config's size, packed as the real data is (CPU rehearsal)."""
    from facegen_core.config import ModelConfig
    from training.data import synthetic_faces
    from training.facepack import write_facepack

    cfg = ModelConfig.tiny()
    ds = synthetic_faces(96, cfg.image_size, cfg.channels, seed=0)
    path = args.runs / "rehearsal" / "synthetic.facepack.zip"
    # Crop "align", as the real packs: the run must pass it through to the model config.
    write_facepack(ds.images, "synthetic", "align", path)
    return [path]


# The next GPU run, decided beforehand (docs/gpu_run.md, "The next run"), so that a session that
# draws a GPU spends none of its 15 minutes choosing: `scripts/gpu_run.sh --preset next`. Flags
# given after it win. What it does: the whole VAE-GAN from scratch on CelebA at the default
# recipe (--pixel-pool 4, the last GPU A/B's winner) for 1.4× v1's steps, then that encoder alone
# on CelebA and FairFace; GPU tests and the refine bench fill the rest of one device call. Not a
# warm start from faces64 v2: on CPU, both warm starts measured so far ended worse than v2
# (model_store/faces64/TRAINING.md). The bench stage (measured on the first run) is left out.
PRESETS: dict[str, list[str]] = {
    "next": [
        "--stages", "env,tests,train,refine",
        "--tests-timeout-s", "30",  # 23 s on 2026-11-30
        "--train-minutes", "5",
        "--train-slack-s", "45",  # data and export took ~20 s on 2026-11-30
        "--encoder-minutes", "1",
        "--refine-timeout-s", "60",
    ],
}  # fmt: skip

DEVICE_CALL_LIMIT_S = 600  # the device tool's longest command
ENV_STAGE_S = 30  # python, torch and nvidia-smi


def worst_case_s(args: argparse.Namespace) -> float:
    """The longest the stages asked for can run, every budget spent: what must fit in a call."""
    stages = set(args.stages.split(","))
    budgets = {
        "env": ENV_STAGE_S,
        "tests": args.tests_timeout_s,
        "train": args.train_minutes * 60 + args.train_slack_s,
        "bench": args.bench_timeout_s,
        "refine": args.refine_timeout_s,
    }
    total = sum(b for name, b in budgets.items() if name in stages)
    if "train" in stages and args.encoder_minutes > 0:
        total += args.encoder_minutes * 60 + args.train_slack_s
    return total


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(PRESETS), default=None)
    known, rest = pre.parse_known_args(argv)
    # The preset's flags first: flags given after it override them.
    argv = [*PRESETS[known.preset], *rest] if known.preset else rest
    p = argparse.ArgumentParser(prog="scripts/gpu_run.sh", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="A decided set of flags (PRESETS in this file; 'next': the next GPU run). Flags after it win.",
    )
    p.add_argument("--out", type=Path, required=True, help="Where every result goes ($OUT on the device).")
    p.add_argument("--device", default="cuda", help="cuda on the GPU machine; cpu for the rehearsal.")
    p.add_argument(
        "--rehearsal", action="store_true", help="Tiny config, synthetic pack, smoke bench (CPU, CI)."
    )
    p.add_argument(
        "--data",
        default=".device_data/celeba-10k.facepack.zip",
        help="The train stage's packs: comma-separated, or a folder of *.facepack.zip. CelebA alone by "
        "default: the VAE-GAN would learn to draw the black fill of aligned FairFace frames.",
    )
    p.add_argument(
        "--encoder-data",
        default=".device_data",
        help="The encoder stage's packs (every pack by default: it counts the photo's pixels only).",
    )
    p.add_argument(
        "--encoder-minutes",
        type=float,
        default=0.0,
        help="After the train stage, train arm A's encoder alone for this long (0 = no encoder stage).",
    )
    p.add_argument(
        "--encoder-flags", default="", help="Extra flags for the encoder stage's python -m training."
    )
    p.add_argument("--stages", default="env,tests,train,bench,refine", help="Which stages to run.")
    p.add_argument("--tests-timeout-s", type=float, default=150.0, help="Budget of the GPU tests.")
    p.add_argument("--train-minutes", type=float, default=4.0, help="Training time budget (--max-minutes).")
    p.add_argument("--train-slack-s", type=float, default=150.0, help="Data loading + export beyond it.")
    p.add_argument("--config", default="default", help="Model config preset (default width on the GPU).")
    p.add_argument("--batch-size", type=int, default=256, help="Training batch.")
    p.add_argument("--log-every", type=int, default=100, help="Steps between training log records.")
    p.add_argument("--name", default="faces64", help="Model name of the artifact.")
    p.add_argument("--train-flags", default="", help="Extra flags for python -m training (arm A and B).")
    p.add_argument(
        "--arm",
        action="append",
        default=[],
        metavar="SUFFIX=FLAGS",
        help="Train another recipe alongside, named NAME-SUFFIX, with these extra flags (repeatable): "
        "an A/B at equal device time.",
    )
    p.add_argument(
        "--bench-precision", default="fp16", choices=("fp32", "fp16", "bf16"), help="Serving autocast."
    )
    p.add_argument("--bench-max-batch", type=int, default=256, help="FACEGEN_MAX_BATCH_SIZE of the server.")
    p.add_argument("--bench-workloads", default="gen1,gen64", help="Bench workloads.")
    p.add_argument("--bench-concurrency", default="1,16,64", help="Concurrencies of every workload.")
    p.add_argument("--bench-duration", type=float, default=8.0, help="Seconds per measured cell.")
    p.add_argument("--bench-timeout-s", type=float, default=200.0, help="Budget of the whole bench stage.")
    p.add_argument("--client-procs", type=int, default=6, help="Load-generator processes.")
    p.add_argument("--refine-timeout-s", type=float, default=120.0, help="Budget of the refine stage.")
    p.add_argument("--store", type=Path, default=Path("/tmp/facegen-gpu/store"), help="Model store written.")
    p.add_argument("--runs", type=Path, default=Path("/tmp/facegen-gpu/runs"), help="Training run folders.")
    args = p.parse_args(argv)
    args.preset = known.preset
    args.train_flags = shlex.split(args.train_flags)
    args.encoder_flags = shlex.split(args.encoder_flags)
    if args.rehearsal:
        args.config = "tiny"
        args.batch_size = min(args.batch_size, 16)
        args.log_every = 1
        args.bench_precision = "fp32"
        args.bench_max_batch = min(args.bench_max_batch, 64)
        args.bench_workloads = "gen1"
        args.bench_concurrency = "1"
        args.client_procs = 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for d in (args.store, args.runs):
        d.mkdir(parents=True, exist_ok=True)
    run = Run(args.out, args)
    run.summary["worst_case_s"] = worst_case_s(args)
    if run.summary["worst_case_s"] > DEVICE_CALL_LIMIT_S:
        run.say(
            f"warning: the stages' budgets add up to {run.summary['worst_case_s']:.0f} s, over the "
            f"device tool's {DEVICE_CALL_LIMIT_S} s a call: a slow stage may be cut off"
        )
    stages = set(args.stages.split(","))
    if "env" in stages:
        stage_env(run, args.device)
    if "tests" in stages:
        stage_tests(run, args.tests_timeout_s)
    exported: list[tuple[str, Path]] = []
    if "train" in stages:
        packs = rehearsal_packs(args) if args.rehearsal else find_packs(args.data)
        if not packs:
            run.stage(
                "train", {"ok": False, "error": f"no face packs at {args.data}; run scripts/gpu_prepare.sh"}
            )
        else:
            exported = stage_train(run, args, packs)
        for name, artifact in exported:
            pack_artifact(run, name, artifact, args.runs / name / "train_log.jsonl")
    if "train" in stages and exported and args.encoder_minutes > 0:
        name = exported[0][0]
        enc_packs = rehearsal_packs(args) if args.rehearsal else find_packs(args.encoder_data)
        encoded = None
        if enc_packs:
            encoded = stage_encoder(run, args, enc_packs, *exported[0])
        else:
            run.stage("encoder", {"ok": False, "error": f"no face packs at {args.encoder_data}"})
        if encoded is not None:
            pack_artifact(run, name, encoded, args.runs / f"{name}-encoder" / "train_log.jsonl")
            exported[0] = (name, encoded)  # the bench serves what would ship
    if "bench" in stages and exported:
        stage_bench(run, args, *exported[0])
    if "refine" in stages:
        stage_refine(run, args)
    ok = all(s.get("ok") for s in run.summary["stages"].values())
    run.summary["ok"] = ok
    run.save()
    run.say(f"done: {'all stages ok' if ok else 'some stages FAILED'}; {run.out / 'summary.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
