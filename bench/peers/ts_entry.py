"""TorchServe's handler for the bench's peer run: the module-level entry point ``handle``.

torch-model-archiver copies this file into the model archive (``--handler``); there is no
serialized model file. The artifact directory and the handler's options come from the
``handler:`` section of the model's config YAML (``--config-file``, read by TorchServe into
``context.model_yaml_config``). The first call (``data`` None) loads the artifact. TorchServe
gives ``handle`` the requests of one dynamic batch; each body is a seed as decimal text, and
each answer is that seed's PNG bytes.
"""

from __future__ import annotations

import os
from typing import Any

from bench.peers.handler import FaceHandler

_handler: FaceHandler | None = None


def _seed(request: dict[str, Any]) -> int:
    body = request.get("body") if request.get("body") is not None else request.get("data")
    if isinstance(body, bytes | bytearray):
        body = body.decode()
    return int(str(body).strip())


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[bytes] | None:
    global _handler
    if _handler is None:
        opts = (context.model_yaml_config or {}).get("handler", {})
        stats = opts.get("stats_path")
        if stats and int(opts.get("workers", 1)) > 1:  # one counter file per worker process
            stats = f"{stats}.{os.getpid()}"
        _handler = FaceHandler(
            opts["artifact"],
            opts.get("mode", "per-row"),
            int(opts.get("png_level", 1)),
            int(opts.get("torch_threads", 0)) or None,
            stats,
        )
    if data is None:
        return None
    pngs = _handler.handle([_seed(r) for r in data])
    for i in range(len(pngs)):
        context.set_response_content_type(i, "image/png")
    return pngs
