"""Connection-level limits uvicorn does not have: a deadline for a request's headers.

uvicorn times out an idle keep-alive connection, but a client that opens a connection and sends its headers slowly
(or never) holds it — and a graceful shutdown — for as long as it likes. ``with_header_timeout`` wraps uvicorn's
HTTP protocol class (httptools or h11, whichever it picked) so a connection must deliver each request's headers
within the deadline, counted from the connection's start or the previous response's end; otherwise it is closed.
The body has its own deadline in ``service.uploads`` (a 408 problem, since by then there is a request to answer).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol


def with_header_timeout(timeout_s: float, base: type[asyncio.Protocol] = AutoHTTPProtocol) -> type[asyncio.Protocol]:
    """``base`` with a header deadline of ``timeout_s`` per request (pass as ``uvicorn.Config(http=...)``)."""

    class HeaderDeadlineProtocol(base):  # type: ignore[misc,valid-type]
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = self.loop.call_later(timeout_s, self._headers_overdue)

        def _headers_overdue(self) -> None:
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                return  # a request is being answered: its headers came in time
            if not self.transport.is_closing():
                self.transport.close()

    HeaderDeadlineProtocol.__name__ = f"HeaderDeadline{base.__name__}"
    return HeaderDeadlineProtocol
