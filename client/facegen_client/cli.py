"""``facegen-client``: bulk generation, and encoding/reconstructing folders of photos.

    facegen-client generate --n 2000 --out faces/ [--seed-start 0] [--temperature 1] \\
        [--attributes '{"Smiling": 1}'] [--concurrency 8] [--batch 16] [--format png|jpeg]
    facegen-client encode PHOTOS/ --out latents/ [--format npy|safetensors]
    facegen-client reconstruct PHOTOS/ --out recon/ [--format npy|safetensors]

``--url`` (default $FACEGEN_URL or http://127.0.0.1:8000) and ``--api-key`` (default
$FACEGEN_API_KEY) apply to every command. Exit status: 0 done, 1 some faces failed (rerun to
resume), 2 bad arguments or an error before any work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from facegen_client._api import RetryPolicy
from facegen_client.aio import AsyncClient
from facegen_client.bulk import generate_bulk
from facegen_client.client import Client
from facegen_client.errors import FacegenError
from facegen_client.folder import encode_folder


def _attributes(text: str) -> dict[str, float]:
    """'{"Smiling": 1}' or 'Smiling=1,Male=-0.5'."""
    text = text.strip()
    if text.startswith("{"):
        value = json.loads(text)
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError("--attributes must be a JSON object")
        return {str(k): float(v) for k, v in value.items()}
    out: dict[str, float] = {}
    for part in filter(None, text.split(",")):
        name, sep, amount = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--attributes: {part!r} is not NAME=AMOUNT")
        out[name.strip()] = float(amount)
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facegen-client", description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("--url", default=None, help="the service (default $FACEGEN_URL or http://127.0.0.1:8000)")
    p.add_argument("--api-key", default=None, help="sent as Authorization: Bearer (default $FACEGEN_API_KEY)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP request (default 120)")
    p.add_argument(
        "--max-retry-s", type=float, default=300.0, help="give up on 503/429 after this long (default 300)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="N seeded faces + labels.csv + datasheet.md (resumable)")
    g.add_argument("--n", type=int, required=True, help="number of faces")
    g.add_argument("--out", required=True, help="output folder (rerun with the same arguments to resume)")
    g.add_argument("--seed-start", type=int, default=0, help="seed of the first face (default 0)")
    g.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    g.add_argument(
        "--attributes",
        type=_attributes,
        default=None,
        help="attribute amounts, '{\"Smiling\": 1}' or Smiling=1,Male=-0.5 (models with attributes)",
    )
    g.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="requests in flight (default 8: with --batch 16, two full batches of 64 rows)",
    )
    g.add_argument("--batch", type=int, default=16, help="faces per request, 1-64 (default 16)")
    g.add_argument("--format", choices=["png", "jpeg"], default="png", help="image format (default png)")
    for name, what in (("encode", "latents"), ("reconstruct", "latents and reconstructions")):
        e = sub.add_parser(name, help=f"a folder of photos -> {what} + index.csv")
        e.add_argument("folder", help="folder of photos (searched recursively)")
        e.add_argument("--out", required=True, help="output folder")
        e.add_argument("--format", choices=["npy", "safetensors"], default="npy", help="latent file format")
        e.add_argument("--batch", type=int, default=16, help="photos per request, 1-64 (default 16)")
        e.add_argument(
            "--align",
            choices=["auto", "true", "false"],
            default="auto",
            help="face alignment (auto: the model's default)",
        )
        e.add_argument(
            "--refine",
            type=int,
            default=0,
            help="refine each latent this many steps to fit its photo (the server's refine; default 0)",
        )
    return p


async def _generate(args: argparse.Namespace, retry: RetryPolicy) -> int:
    async with AsyncClient(args.url, api_key=args.api_key, timeout=args.timeout, retry=retry) as client:
        result = await generate_bulk(
            client,
            args.n,
            args.out,
            seed_start=args.seed_start,
            temperature=args.temperature,
            attributes=args.attributes,
            concurrency=args.concurrency,
            batch=args.batch,
            fmt=args.format,
            progress=not args.quiet,
        )
    print(
        f"{result.model}/{result.version}: {result.written} faces written in {result.seconds:.1f} s "
        f"({result.faces_per_s:.1f} faces/s), {result.skipped} already there and verified, "
        f"{len(result.failed)} requests failed -> {result.out}",
        file=sys.stderr,
    )
    for first, err in result.failed[:5]:
        print(f"  seeds from {first}: {err}", file=sys.stderr)
    return 1 if result.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    retry = RetryPolicy(max_retry_s=args.max_retry_s)
    try:
        if args.command == "generate":
            return asyncio.run(_generate(args, retry))
        align = {"auto": None, "true": True, "false": False}[args.align]
        with Client(args.url, api_key=args.api_key, timeout=args.timeout, retry=retry) as client:
            r = encode_folder(
                client,
                args.folder,
                args.out,
                fmt=args.format,
                reconstruct=args.command == "reconstruct",
                batch=args.batch,
                align=align,
                progress=not args.quiet,
                refine=args.refine,
            )
        print(f"{r.ok} photos encoded, {r.failed} refused (see index.csv) -> {args.out}", file=sys.stderr)
        return 1 if r.failed else 0
    except (FacegenError, ValueError, OSError) as e:
        print(f"facegen-client: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
