"""``python -m service``: serve with uvicorn, configured by ``PRD_*`` environment variables.

SIGTERM/SIGINT first take the service out of rotation (``/readyz`` 503, new ``/score`` requests 503
``shutting_down``), then uvicorn stops accepting connections and waits for requests in flight. Those still
unfinished after ``PRD_DRAIN_TIMEOUT_S`` are answered 503 ``shutting_down`` by the app itself; uvicorn's own
deadline (which would cut them off with a bare 500) is set a little later, only as a backstop. The lifespan then
answers what is still queued and exits. SIGHUP reloads the model.

Slow clients: a connection must send each request's headers within ``PRD_HEADER_TIMEOUT_S``
(``service.connections``), its body within ``PRD_BODY_TIMEOUT_S`` (408), and at most ``PRD_LIMIT_CONCURRENCY``
connections are served at once (uvicorn answers 503 beyond).
"""

from __future__ import annotations

import logging
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from service.app import create_app
from service.config import Settings, settings_error_lines
from service.connections import with_header_timeout
from service.state import ServiceState
from service.text import cut

BACKSTOP_S = 2.0
"""Seconds after the drain timeout before uvicorn cancels what is left: time to send the 503s."""


class DrainingServer(uvicorn.Server):
    """uvicorn, plus: the app stops taking new work the moment the exit signal arrives."""

    def __init__(self, config: uvicorn.Config, state: ServiceState) -> None:
        super().__init__(config)
        self._state = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._state.begin_drain(expire_after_s=self._state.settings.drain_timeout_s)
        super().handle_exit(sig, frame)


def build_config(settings: Settings, app: FastAPI) -> uvicorn.Config:
    """uvicorn's configuration from the settings: drain backstop, header deadline, connection limit."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=settings.drain_timeout_s + BACKSTOP_S,  # type: ignore[arg-type]  # a float works
        limit_concurrency=settings.limit_concurrency,
        http=with_header_timeout(settings.header_timeout_s),
        lifespan="on",
    )


class CutLongArguments(logging.Filter):
    """Cuts long arguments of a log record (uvicorn's access log quotes the whole path and query string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(cut(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


def load_settings() -> Settings:
    """``Settings()`` from the environment; a bad value exits 2 with one line per variable, not a traceback."""
    try:
        return Settings()
    except ValidationError as exc:
        for line in settings_error_lines(exc):
            print(line, file=sys.stderr)
        raise SystemExit(2) from None


def main() -> None:
    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    config = build_config(settings, app)  # configures uvicorn's loggers
    logging.getLogger("uvicorn.access").addFilter(CutLongArguments())
    DrainingServer(config, app.state.prd).run()


if __name__ == "__main__":
    main()
