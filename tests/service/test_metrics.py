"""/metrics exposes every metric of the contract (model_store/CONTRACT.md) with its labels."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.images import png
from tests.fixtures.tiny_bundle import square_image
from tests.service.harness import run, serving, settings_for

CONTRACT = {
    "prd_http_requests": ("counter", {"route", "method", "status_class"}),
    "prd_http_request_duration_seconds": ("histogram", {"route", "method"}),
    "prd_images_scored": ("counter", {"category", "verdict"}),
    "prd_anomaly_score_normalized": ("histogram", {"category"}),
    "prd_batch_size": ("histogram", set()),
    "prd_queue_depth": ("gauge", set()),
    "prd_queue_wait_seconds": ("histogram", set()),
    "prd_inference_seconds": ("histogram", set()),
    "prd_rejected_requests": ("counter", {"reason"}),
    "prd_decode_errors": ("counter", {"kind"}),
    "prd_model_info": ("gauge", {"name", "version", "provider"}),  # an Info metric is exposed as a gauge of 1
    "prd_model_ready": ("gauge", set()),
}


def test_metrics_endpoint_exposes_every_contract_metric_with_its_labels(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            await h.score(("a.png", png(square_image(32, 8))))
            response = await h.client.get("/metrics")
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
            families = {f.name: f for f in text_string_to_metric_families(response.text)}
            for name, (kind, labels) in CONTRACT.items():
                assert name in families, name
                family = families[name]
                assert family.type == kind, name
                for sample in family.samples:
                    if not sample.name.endswith("_created"):
                        assert labels <= set(sample.labels) <= labels | {"le"}, (name, sample.labels)
            text = response.text
            assert 'prd_http_requests_total{method="POST",route="/score",status_class="2xx"} 1.0' in text
            assert 'prd_model_info{name="tiny",provider="CPUExecutionProvider",version="1"} 1.0' in text
            assert 'prd_anomaly_score_normalized_bucket{category="alpha",le="0.5"}' in text
            assert "prd_model_ready 1.0" in text
            assert 'prd_rejected_requests_total{reason="queue_full"} 0.0' in text  # every reason exists from the start

    run(scenario())
