"""Container health probe: exit 0 when the scorer answers ``GET /healthz`` with 200, else 1.

Used by the images' HEALTHCHECK and by docker-compose.yml, and run by tests/ops against a live service, so the probe
the orchestrator relies on is exercised. Standard library only (the slim images have no curl). The port comes from
``PRD_PORT`` like the service's own; an optional argument names another path (e.g. ``/readyz``).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def probe(path: str = "/healthz", timeout: float = 3.0) -> bool:
    """True when http://127.0.0.1:$PRD_PORT<path> answers 200 within ``timeout`` seconds."""
    url = f"http://127.0.0.1:{os.environ.get('PRD_PORT', '8000')}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


if __name__ == "__main__":
    sys.exit(0 if probe(*sys.argv[1:2]) else 1)
