"""Headless chromium driven over the DevTools protocol (a small client on ``websockets``, no selenium), and the
review page's flow: load it, type the API key, pick images, read the verdicts it shows.

Chromium listens on 127.0.0.1 only, runs with a throw-away profile and is stopped (process group) on exit, also
when the test fails. Every wait is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from tests.ops.live import background, wait_for
from tests.ops.support import free_port

PATIENCE_S = 60.0


class Page:
    """One browser tab: send DevTools commands, evaluate JavaScript, wait for what the page shows."""

    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        """Events received while waiting for answers (console messages, log entries, ...)."""

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        self._socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv(timeout=PATIENCE_S))
            if message.get("id") != self._next_id:
                self.events.append(message)
                continue
            if "error" in message:
                raise AssertionError(f"DevTools {method}: {message['error']}")
            return message["result"]

    def evaluate(self, expression: str) -> Any:
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in answer:
            raise AssertionError(f"{expression}\n→ {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout: float = PATIENCE_S) -> Any:
        """Poll ``expression`` until it is truthy; its value, or a failure naming ``what`` and the page's status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        status = self.evaluate("document.getElementById('status')?.textContent")
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; page status: {status!r}")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'", url)

    def set_files(self, selector: str, paths: Sequence[Path]) -> None:
        """Choose files in an ``<input type=file>`` as a user would (the page gets its ``change`` event)."""
        root = self.call("DOM.getDocument")["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.call("DOM.setFileInputFiles", nodeId=node, files=[str(path.resolve()) for path in paths])

    def screenshot(self, width: int, height: int) -> bytes:
        """PNG of the page at ``width`` CSS pixels, ``height`` tall at most."""
        page_height = int(self.evaluate("document.documentElement.scrollHeight"))
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=min(height, page_height),
            deviceScaleFactor=1,
            mobile=False,
        )
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def errors(self) -> list[str]:
        """Error-level log entries (a refused external asset, a failed script) seen so far."""
        entries = [event["params"]["entry"] for event in self.events if event.get("method") == "Log.entryAdded"]
        return [f"{entry.get('source')}: {entry.get('text')}" for entry in entries if entry.get("level") == "error"]


@contextlib.contextmanager
def headless_chromium(binary: str, workdir: Path) -> Iterator[Page]:
    """A headless chromium with one tab, its DevTools protocol on a loopback port; yield the tab."""
    port = free_port()
    command = [
        binary,
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where chromium's sandbox cannot start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--remote-debugging-address=127.0.0.1",
        f"--remote-debugging-port={port}",
        f"--user-data-dir={workdir / 'chromium-profile'}",
        "about:blank",
    ]
    log = workdir / "chromium.log"
    devtools = f"http://127.0.0.1:{port}"
    with background(command, log) as process:

        def listening() -> bool:
            assert process.poll() is None, f"chromium exited with {process.returncode}"
            return httpx.get(f"{devtools}/json/version", timeout=2).status_code == 200

        wait_for(listening, 30, "chromium's DevTools endpoint", log)
        targets = httpx.get(f"{devtools}/json/list", timeout=5).json()
        tab = next(target for target in targets if target["type"] == "page")
        with connect(tab["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as socket:
            page = Page(socket)
            page.call("Page.enable")
            page.call("Log.enable")
            yield page


def score_on_review_page(page: Page, url: str, images: Sequence[Path], api_key: str | None = None) -> list[str]:
    """Open the review page at ``url``, type ``api_key`` if given, pick ``images``; the verdicts it shows."""
    page.open(f"{url}/")
    if api_key is not None:
        page.wait_for("document.getElementById('model').textContent === 'API key needed'", "the page to ask a key")
        page.evaluate(
            f"(() => {{ const key = document.getElementById('key'); key.value = {json.dumps(api_key)};"
            " key.dispatchEvent(new Event('change')); })()"
        )
    page.wait_for("/ v\\d+/.test(document.getElementById('model').textContent)", "the model's name on the page")
    page.set_files("#files", images)
    count = len(images)
    shown = f"document.querySelectorAll('.result .verdict').length === {count}"
    page.wait_for(f"{shown} || document.getElementById('status').classList.contains('error')", f"{count} verdicts")
    assert page.evaluate(shown), page.evaluate("document.getElementById('status').textContent")
    page.wait_for("[...document.images].every((img) => img.complete && img.naturalWidth > 0)", "the heatmaps")
    return page.evaluate("[...document.querySelectorAll('.result .verdict')].map((node) => node.textContent)")
