"""``python -m training [flags]`` trains then exports; ``python -m training export ...`` exports."""

from __future__ import annotations

import sys

from training import distributed as ddp
from training.cli import export_parser, parse_train_args
from training.export import export_run
from training.train import train


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:
        a = export_parser().parse_args(argv[1:])
        print(
            export_run(
                a.checkpoint, a.store, a.name, data=a.data, weights_dtype=a.weights_dtype, device=a.device
            )
        )
        return 0
    args = parse_train_args(argv)
    run_dir = train(args)
    info = ddp.init_distributed(args.device)
    if args.export and info.is_main:
        path = export_run(
            run_dir, args.store, args.name, weights_dtype=args.weights_dtype, device=str(info.device)
        )
        print(f"exported {path}")
    ddp.shutdown(info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
