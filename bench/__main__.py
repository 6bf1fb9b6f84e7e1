"""``python -m bench --help``: see bench/cli.py and docs/bench.md."""

import sys

from bench.cli import main

sys.exit(main())
