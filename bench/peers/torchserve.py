"""TorchServe around ``FaceHandler``: a model archive without a serialized model, and a server.

``torch-model-archiver --handler bench/peers/ts_entry.py --config-file model-config.yaml``
packs the entry point and the model config; the YAML carries TorchServe's documented
batching settings (``batchSize`` 64, ``maxBatchDelay`` 5 ms), one worker (facegen has one
model thread; two workers of two torch threads each would oversubscribe two cores), and,
under ``handler:``, the artifact's path and the handler's options. ``torchserve --foreground``
then serves it with the inference, management and metrics APIs on free loopback ports and
token authorization off (the bench is the only client).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.peers.protocol import MODEL, TORCHSERVE
from bench.peers.server import PeerOptions, PeerProcess
from bench.server import free_port

ENTRY = Path(__file__).with_name("ts_entry.py")


def model_config_yaml(opts: PeerOptions, stats_path: Path) -> str:
    return "\n".join(
        [
            f"minWorkers: {opts.workers}",
            f"maxWorkers: {opts.workers}",
            f"batchSize: {opts.max_batch_size}",
            f"maxBatchDelay: {round(opts.max_delay_ms)}",  # milliseconds (an integer)
            "responseTimeout: 120",
            "handler:",
            f"  artifact: {str(opts.artifact.resolve())!r}",
            f"  mode: {opts.mode}",
            f"  png_level: {opts.png_level}",
            f"  torch_threads: {opts.torch_threads}",
            f"  stats_path: {str(stats_path)!r}",
            f"  workers: {opts.workers}",
            "",
        ]
    )


def bin_path(name: str) -> str:
    """A console script of this interpreter's environment (the venv need not be activated)."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed; pip install -e '.[peers]' (docs/bench.md, Peers).")
    return found


def build_archive(opts: PeerOptions, workdir: Path) -> Path:
    """``workdir/model-store/faces`` (an unpacked archive) from this file's entry point."""
    store = workdir / "model-store"
    store.mkdir(parents=True, exist_ok=True)
    config = workdir / "model-config.yaml"
    config.write_text(model_config_yaml(opts, workdir / "handler-stats.bin"))
    subprocess.run(
        [
            bin_path("torch-model-archiver"),
            "--model-name", MODEL,
            "--version", "1.0",
            "--handler", str(ENTRY),
            "--config-file", str(config),
            "--export-path", str(store),
            "--archive-format", "no-archive",
            "--force",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return store


def server(opts: PeerOptions, workdir: Path, env: dict[str, str]) -> tuple[PeerProcess, str, Path]:
    """(the unstarted server, its metrics URL, the handler's stats file)."""
    store = build_archive(opts, workdir)
    ports = [free_port() for _ in range(5)]
    props = workdir / "config.properties"
    props.write_text(
        "\n".join(
            [
                f"inference_address=http://127.0.0.1:{ports[0]}",
                f"management_address=http://127.0.0.1:{ports[1]}",
                f"metrics_address=http://127.0.0.1:{ports[2]}",
                # Its own gRPC ports and worker socket numbers (/tmp/.ts.sock.PORT), so two
                # TorchServes (or another program on 7070/9000) can run side by side.
                f"grpc_inference_port={ports[3]}",
                f"grpc_management_port={ports[4]}",
                f"initial_worker_port={20000 + ports[0] % 20000}",
                "metrics_mode=prometheus",
                "disable_token_authorization=true",
                "enable_model_api=false",
                "install_py_dep_per_model=false",
                f"model_store={store}",
                f"load_models={MODEL}",
                "",
            ]
        )
    )
    cmd = [bin_path("torchserve"), "--start", "--foreground", "--ncs", "--ts-config", str(props)]
    # The workers are started by Java from PATH's python: make it this interpreter's.
    path = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # TorchServe refuses to start while its pid file (in TMPDIR) names a live server: each
    # instance gets its own TMPDIR, so a run can serve two configurations side by side.
    tmp = workdir / "tmp"
    tmp.mkdir(exist_ok=True)
    proc_env = {**env, "PATH": path, "TMPDIR": str(tmp)}
    proc = PeerProcess(TORCHSERVE, cmd, proc_env, f"http://127.0.0.1:{ports[0]}", cwd=workdir)
    return proc, f"http://127.0.0.1:{ports[2]}", workdir / "handler-stats.bin"
