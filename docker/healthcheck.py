"""Container health probe: exit 0 when the service answers GET /readyz with 200, else 1.

The service is ready only once its model is loaded and warmed up, so an orchestrator that
routes by this probe never sends a request to a replica that would make it wait for the load.
Standard library only: the slim image has no curl. The URL defaults to the service's own port
on loopback; FACEGEN_HEALTHCHECK_URL overrides it.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def probe(url: str, timeout: float) -> tuple[bool, str]:
    # An empty ProxyHandler: a proxy set in the container's environment must not see loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status == 200, f"HTTP {response.status}"
    except urllib.error.HTTPError as e:  # 503 while the model loads
        return False, f"HTTP {e.code}"
    except (urllib.error.URLError, OSError) as e:
        return False, str(getattr(e, "reason", e))


def main() -> int:
    port = os.environ.get("FACEGEN_PORT", "8000")
    url = os.environ.get("FACEGEN_HEALTHCHECK_URL", f"http://127.0.0.1:{port}/readyz")
    ready, detail = probe(url, timeout=float(os.environ.get("FACEGEN_HEALTHCHECK_TIMEOUT", "4")))
    if not ready:
        print(f"facegen is not ready: GET {url} gave {detail}.", file=sys.stderr)
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main())
