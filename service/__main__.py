"""``python -m service``: serve with uvicorn, configured by ``PRD_*`` environment variables.

SIGTERM/SIGINT first take the service out of rotation (``/readyz`` 503, new ``/score`` requests 503
``shutting_down``), then uvicorn stops accepting connections and waits for requests in flight (at most
``PRD_DRAIN_TIMEOUT_S``); the lifespan then answers what is still queued and exits. SIGHUP reloads the model.
"""

from __future__ import annotations

import logging
from types import FrameType

import uvicorn

from service.app import create_app
from service.config import Settings
from service.state import ServiceState


class DrainingServer(uvicorn.Server):
    """uvicorn, plus: the app stops taking new work the moment the exit signal arrives."""

    def __init__(self, config: uvicorn.Config, state: ServiceState) -> None:
        super().__init__(config)
        self._state = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._state.begin_drain()
        super().handle_exit(sig, frame)


def main() -> None:
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=int(settings.drain_timeout_s),
        limit_concurrency=settings.limit_concurrency,
        lifespan="on",
    )
    DrainingServer(config, app.state.prd).run()


if __name__ == "__main__":
    main()
