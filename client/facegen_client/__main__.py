"""``python -m facegen_client``: the same as the ``facegen-client`` command."""

import sys

from facegen_client.cli import main

sys.exit(main())
