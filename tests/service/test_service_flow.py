"""The service under concurrency: real batching, queue-full 503, drain on shutdown, hot reload, disconnects."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.fixtures.images import png
from tests.fixtures.tiny_bundle import make_tiny_bundle, square_image
from tests.service.harness import Gate, gated_loader, run, serving, settings_for, until

IMAGE = ("part.png", png(square_image(32, 8)))


def test_concurrent_requests_are_scored_in_one_batch(store: Path) -> None:
    gate = Gate()

    async def scenario() -> None:
        settings = settings_for(store, max_batch_size=8, batch_window_ms=5000)
        async with serving(settings, loader=gated_loader(gate)) as h:
            # Hold the first run in the model so the other requests arrive while it runs, whatever the machine's
            # load: then they must leave together, as one run, when it returns.
            first, rest = await h.hold_one_and_queue(gate, IMAGE, queued=7)
            gate.open()
            responses = [await first, *await asyncio.gather(*rest)]
            assert [r.status_code for r in responses] == [200] * 8
            assert gate.batches == [1, 7]
            assert h.metric("prd_batch_size_count") == 2
            assert h.metric("prd_batch_size_sum") == 8
            assert h.metric("prd_images_scored_total", category="alpha", verdict="anomalous") == 8

    run(scenario())


def test_two_inference_workers_run_two_requests_at_once_with_the_same_answers(store: Path) -> None:
    gate = Gate()

    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            alone = (await h.score(IMAGE)).json()["results"]
        settings = settings_for(store, inference_workers=2, max_batch_size=8, batch_window_ms=0)
        async with serving(settings, loader=gated_loader(gate)) as h:
            assert h.state.batcher.workers == 2 and h.state.batcher.max_batch_size == 4  # 8 shared by two
            inference = (await h.client.get("/models")).json()["inference"]
            assert inference == {"workers": 2, "threads_per_worker": 1, "batch_per_worker": 4, "alone_threads": 2}
            gate.close()
            first = asyncio.ensure_future(h.score(IMAGE))
            await until(lambda: len(gate.batches) == 1, "first request held in the model")
            second = asyncio.ensure_future(h.score(IMAGE))
            await until(lambda: len(gate.batches) == 2, "second request in the model beside it, not queued")
            gate.open()
            answers = [(await first).json()["results"], (await second).json()["results"]]
            assert answers == [alone, alone]

    run(scenario())


def test_full_queue_answers_503_with_retry_after_at_once(store: Path) -> None:
    gate = Gate()

    async def scenario() -> None:
        settings = settings_for(store, max_batch_size=1, batch_window_ms=0, queue_limit=2, max_files=2)
        async with serving(settings, loader=gated_loader(gate)) as h:
            running, queued = await h.hold_one_and_queue(gate, IMAGE, queued=2)  # the queue limit is 2: full
            refused = await h.score(IMAGE)
            assert refused.status_code == 503
            assert refused.headers["content-type"] == "application/problem+json"
            assert int(refused.headers["retry-after"]) >= 1
            assert h.metric("prd_rejected_requests_total", reason="queue_full") == 1
            gate.open()
            assert [r.status_code for r in await asyncio.gather(running, *queued)] == [200, 200, 200]

    run(scenario())


def test_shutdown_answers_requests_in_flight_and_refuses_new_ones(store: Path) -> None:
    gate = Gate()

    async def scenario() -> None:
        async with serving(settings_for(store, max_batch_size=2, batch_window_ms=0), loader=gated_loader(gate)) as h:
            gate.close()
            in_flight = [asyncio.ensure_future(h.score(IMAGE)) for _ in range(5)]
            await until(lambda: sum(gate.batches) + h.state.batcher.depth == 5, "one batch held, the rest queued")
            stopping = asyncio.ensure_future(h.state.stop())  # what the lifespan does on SIGTERM, after intake stops
            await until(lambda: h.state.draining, "drain begun")
            late = await h.score(IMAGE)
            assert late.status_code == 503 and late.json()["type"].endswith("shutting-down")
            assert (await h.client.get("/readyz")).status_code == 503
            gate.open()
            assert [r.status_code for r in await asyncio.gather(*in_flight)] == [200] * 5
            await stopping
            assert h.metric("prd_rejected_requests_total", reason="shutting_down") == 1
            assert h.metric("prd_model_ready") == 0

    run(scenario())


def test_reload_swaps_model_without_failing_request_in_flight(store: Path) -> None:
    gate = Gate()

    async def scenario() -> None:
        async with serving(settings_for(store, batch_window_ms=0), loader=gated_loader(gate, versions=[1])) as h:
            gate.close()
            old = asyncio.ensure_future(h.score(IMAGE))
            await until(gate.entered.is_set, "v1 batch in flight")
            make_tiny_bundle(store, version=2, thresholds={"alpha": 0.95})
            reload = await h.client.post("/models/reload")
            assert reload.status_code == 200, reload.text
            assert reload.json() == {
                "changed": True,
                "previous": {"name": "tiny", "version": 1},
                "current": {"name": "tiny", "version": 2},
                "provider": "CPUExecutionProvider",
            }
            new = asyncio.ensure_future(h.score(IMAGE))  # queued behind the held v1 batch (one inference thread)
            gate.open()
            answered, fresh = await asyncio.gather(old, new)
            assert answered.status_code == 200 and answered.json()["model"]["version"] == 1
            assert fresh.json()["model"]["version"] == 2 and fresh.json()["results"][0]["is_anomalous"] is False
            again = await h.client.post("/models/reload")
            assert again.json()["changed"] is False
            assert h.metric("prd_model_info", name="tiny", version="2", provider="CPUExecutionProvider") == 1

    run(scenario())


def test_reload_to_a_broken_bundle_keeps_serving_the_current_one(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            bad = make_tiny_bundle(store, version=2)
            (bad / "model.onnx").write_bytes(b"not a graph")
            response = await h.client.post("/models/reload")
            assert response.status_code == 409
            assert "model.onnx" in response.json()["detail"] and "still serving tiny v1" in response.json()["detail"]
            assert (await h.score(IMAGE)).json()["model"]["version"] == 1

    run(scenario())


def test_service_without_model_is_alive_not_ready_then_loads_on_reload(tmp_path: Path) -> None:
    store = tmp_path / "empty-store"

    async def scenario() -> None:
        async with serving(settings_for(store), ready=False) as h:
            await until(lambda: "no model could be loaded" in h.state.manager.not_ready_reason, "first load failed")
            assert (await h.client.get("/healthz")).status_code == 200
            ready = await h.client.get("/readyz")
            assert ready.status_code == 503 and "no versions of model 'tiny'" in ready.json()["reason"]
            refused = await h.score(IMAGE)
            assert refused.status_code == 503 and refused.json()["type"].endswith("not-ready")
            assert h.metric("prd_rejected_requests_total", reason="not_ready") == 1
            make_tiny_bundle(store)
            assert (await h.client.post("/models/reload")).status_code == 200
            assert (await h.client.get("/readyz")).json()["model"] == {"name": "tiny", "version": 1}

    run(scenario())


def test_disconnected_client_costs_no_inference(store: Path) -> None:
    """Drives the ASGI app by hand to disconnect while the request waits in the queue."""
    gate = Gate()
    boundary = "b0undary"
    name, data = IMAGE
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'.encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )

    async def scenario() -> None:
        async with serving(settings_for(store, max_batch_size=1, batch_window_ms=0), loader=gated_loader(gate)) as h:
            gate.close()
            holder = asyncio.ensure_future(h.score(IMAGE))
            await until(gate.entered.is_set, "a batch held in the model")
            gone = asyncio.Event()
            sent: list[dict[str, Any]] = []
            messages = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive() -> dict[str, Any]:
                if messages:
                    return messages.pop(0)
                await gone.wait()
                return {"type": "http.disconnect"}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            scope = {
                "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                "path": "/score", "raw_path": b"/score", "root_path": "", "query_string": b"",
                "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
                            (b"content-length", str(len(body)).encode())],
                "client": ("127.0.0.1", 1), "server": ("prd.test", 80), "state": {},
            }  # fmt: skip
            request = asyncio.ensure_future(h.app(scope, receive, send))
            await until(lambda: h.state.batcher.depth == 1, "request queued")
            gone.set()
            await request
            gate.open()
            assert (await holder).status_code == 200
            assert gate.batches == [1]  # only the held request ever reached the model
            assert sent[0]["status"] == 499

    run(scenario())
