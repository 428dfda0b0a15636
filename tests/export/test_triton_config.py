"""config.pbtxt is checked against a hand-written subset of Triton's ModelConfig schema (Triton cannot run here)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("google.protobuf")

from model_store.batching import BATCH_WINDOW_MS, MAX_BATCH_SIZE, BatchPolicy  # noqa: E402
from model_store.bundle import DEFAULT_STORE, MANIFEST_FILE, read_manifest, resolve_version  # noqa: E402
from model_store.manifest import FORMAT_VERSION, GLOBAL_KEY, Manifest  # noqa: E402
from model_store.planner import ScoringRule  # noqa: E402
from model_store.triton import CONFIG_FILE, TritonConfigError, check_config, render_config, write_config  # noqa: E402

CALIBRATION = dict(
    n_images=5, source="validation/good", score_mean=0.2, score_std=0.02, score_lo=0.2, threshold=0.3,
    false_alarm_rate=0.0, map_lo=0.05, map_hi=0.5,
)  # fmt: skip


def _manifest(size: int = 64, categories: tuple[str, ...] = ("a", "b", "c")) -> Manifest:
    per_category = {key: CALIBRATION for key in (*categories, GLOBAL_KEY)}
    return Manifest(
        format_version=FORMAT_VERSION, name="prd", version=1, created_at="2026-01-01T00:00:00+00:00",
        onnx={"sha256": "0" * 64, "opset": 17}, input={"height": size, "width": size}, categories=list(categories),
        scoring=ScoringRule.squash(size),
        calibration={"target_false_alarm_rate": 0.01, "per_category": per_category}, teacher="efficientnet_lite0",
    )  # fmt: skip


def test_rendered_config_parses_and_describes_the_graph() -> None:
    manifest = _manifest()
    config = check_config(render_config(manifest), manifest)
    assert (config.name, config.platform, config.max_batch_size) == ("prd", "onnxruntime_onnx", 16)
    assert [(i.name, list(i.dims)) for i in config.input] == [("image", [64, 64, 3])]  # no batch dim
    assert [(o.name, list(o.dims)) for o in config.output] == [
        ("score", [1]),
        ("anomaly_map", [1, 64, 64]),
        ("category_similarity", [3]),
    ]
    assert config.output[0].HasField("reshape") and list(config.output[0].reshape.shape) == []
    assert config.dynamic_batching.max_queue_delay_microseconds == round(BATCH_WINDOW_MS * 1000)
    assert config.instance_group[0].count == 1
    assert config.version_policy.latest.num_versions == 1


def test_triton_batches_as_the_service_does_by_default() -> None:
    """The service's own defaults (its Settings) are the ones Triton's config is rendered with."""
    settings = pytest.importorskip("service.config").Settings(_env_file=None)
    assert (settings.max_batch_size, settings.batch_window_ms) == (MAX_BATCH_SIZE, BATCH_WINDOW_MS)
    config = check_config(render_config(_manifest()), _manifest())
    assert config.max_batch_size == settings.max_batch_size
    assert config.dynamic_batching.max_queue_delay_microseconds == round(settings.batch_window_ms * 1000)


def test_written_config_takes_the_services_batch_settings_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    """An export run with PRD_MAX_BATCH_SIZE / PRD_BATCH_WINDOW_MS set writes the batching the service runs with."""
    monkeypatch.setenv("PRD_MAX_BATCH_SIZE", "32")
    monkeypatch.setenv("PRD_BATCH_WINDOW_MS", "2.5")
    settings = pytest.importorskip("service.config").Settings(_env_file=None)
    manifest = _manifest()
    (tmp_path / "prd" / "1").mkdir(parents=True)
    (tmp_path / "prd" / "1" / MANIFEST_FILE).write_text(manifest.model_dump_json())
    config = check_config(write_config(tmp_path, "prd").read_text(), manifest)
    assert (config.max_batch_size, config.dynamic_batching.max_queue_delay_microseconds) == (32, 2500)
    assert (settings.max_batch_size, settings.batch_window_ms) == (32, 2.5)


def test_batch_settings_out_of_the_services_range_are_refused() -> None:
    with pytest.raises(ValueError, match="PRD_MAX_BATCH_SIZE"):
        BatchPolicy.from_env({"PRD_MAX_BATCH_SIZE": "0"})
    with pytest.raises(ValueError, match="not a number"):
        BatchPolicy.from_env({"PRD_BATCH_WINDOW_MS": "soon"})


def test_shipped_config_is_the_one_the_defaults_render() -> None:
    directory = resolve_version(DEFAULT_STORE, "prd", "latest")
    manifest = read_manifest(directory / MANIFEST_FILE)
    assert (DEFAULT_STORE / "prd" / CONFIG_FILE).read_text() == render_config(manifest)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda t: t.replace("max_batch_size", "max_batch"), r'has no field named "max_batch"'),
        (lambda t: t.replace("TYPE_UINT8", "TYPE_UINT7"), r"TYPE_UINT7"),
        (lambda t: t.replace("dims: [ 64, 64, 3 ]", 'dims: [ "64", 64, 3 ]'), r"dims"),
        (lambda t: t.replace("TYPE_UINT8", "TYPE_FP32"), r"one TYPE_UINT8 input 'image'"),
        (lambda t: t.replace("dims: [ 64, 64, 3 ]", "dims: [ -1, 64, 64, 3 ]"), r"dims \[64, 64, 3\]"),
        (lambda t: t.replace('platform: "onnxruntime_onnx"', 'platform: "tensorrt_plan"'), r"platform"),
        (lambda t: t.replace(" reshape: { shape: [ ] }", ""), r"output 'score': needs reshape"),
        (lambda t: t.replace("dims: [ 3 ]", "dims: [ 4 ]"), r"output 'category_similarity': want TYPE_FP32 dims \[3\]"),
        (lambda t: t.replace("dynamic_batching { max_queue_delay_microseconds: 5000 }", ""), r"dynamic_batching"),
        (lambda t: t.replace('name: "prd"', 'name: "other"', 1), r"name 'other' != manifest name 'prd'"),
        (lambda t: t.replace("max_batch_size: 16", "max_batch_size: 0"), r"max_batch_size 0 must be >= 1"),
        (lambda t: t.replace("count: 1", "count: 0"), r"instance_group"),
    ],
)
def test_config_that_triton_would_refuse_is_rejected(edit, problem: str) -> None:
    manifest = _manifest()
    with pytest.raises(TritonConfigError, match=problem):
        check_config(edit(render_config(manifest)), manifest, where="prd/config.pbtxt")


def test_config_for_another_bundle_is_rejected() -> None:
    with pytest.raises(TritonConfigError, match=r"config\.pbtxt: input .* dims \[32, 32, 3\]"):
        check_config(render_config(_manifest(size=64)), _manifest(size=32))


@pytest.mark.torch
def test_export_keeps_the_store_a_valid_triton_repository(store: Path) -> None:
    pytest.importorskip("torch")
    from model_store.bundle import load_bundle

    bundle = load_bundle(store, "prd")
    check_config((store / "prd" / CONFIG_FILE).read_text(), bundle.manifest, where=store / "prd" / CONFIG_FILE)
    # Triton's layout: <repo>/<model>/config.pbtxt beside <version>/model.onnx
    assert (store / "prd" / "1" / "model.onnx").is_file()
