"""The int8 probe's memory cut: a graph's memories cut to their first K entries score as a memory of those K."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnxruntime = pytest.importorskip("onnxruntime")

from torch import nn  # noqa: E402

from tests.research.probes import load_probe  # noqa: E402
from training.memory import PatchMemory  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.filterwarnings("ignore::DeprecationWarning")]  # the legacy exporter
probe = load_probe("int8_probe")
cut_memory = probe.cut_memory


class _Map(nn.Module):
    def __init__(self, memory: PatchMemory) -> None:
        super().__init__()
        self.memory = memory

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
        return self.memory([fine, coarse], bank)


class _Model(nn.Module):
    """Exports the memory under ``/anomaly_map/memory/``, with its chunk loop, as ``PRDModel`` does."""

    def __init__(self, memory: PatchMemory) -> None:
        super().__init__()
        self.anomaly_map = _Map(memory)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
        return self.anomaly_map(fine, coarse, bank)


def _memory(entries: torch.Tensor) -> PatchMemory:
    memory = PatchMemory(entries.shape[1], entries.shape[2], chunk_entries=1024, banks=entries.shape[0])
    memory.set_entries(entries)
    return memory


Inputs = tuple[torch.Tensor, torch.Tensor]


def _exported_memory(tmp_path: Path, entries_per_bank: int) -> tuple[torch.Tensor, Inputs, torch.Tensor, Path]:
    """Two banks of random entries exported as ``PRDModel`` exports its memory; (entries, inputs, bank, graph)."""
    generator = torch.Generator().manual_seed(0)
    entries = torch.randn(2, entries_per_bank, 6, generator=generator)
    inputs = (torch.randn(2, 2, 8, 8, generator=generator), torch.randn(2, 4, 4, 4, generator=generator))
    bank = torch.tensor([1, 0])
    graph = tmp_path / "memory.onnx"
    torch.onnx.export(
        _Model(_memory(entries)), (*inputs, bank), str(graph), input_names=["fine", "coarse", "bank"], dynamo=False
    )
    return entries, inputs, bank, graph


def _run(graph: Path, inputs: Inputs, bank: torch.Tensor) -> np.ndarray:
    feed = {"fine": inputs[0].numpy(), "coarse": inputs[1].numpy(), "bank": bank.numpy()}
    [distances] = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).run(None, feed)
    return distances


@pytest.mark.parametrize("kept", [1024, 1500, 2048])
def test_cut_memory_scores_as_the_memory_of_its_first_entries(tmp_path: Path, kept: int) -> None:
    entries, inputs, bank, graph = _exported_memory(tmp_path, 3072)
    got = _run(cut_memory(graph, kept, tmp_path / f"cut{kept}.onnx"), inputs, bank)
    with torch.no_grad():
        expected = _memory(entries[:, :kept].contiguous())([*inputs], bank).numpy()
        full = _memory(entries)([*inputs], bank).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert (got >= full - 1e-4).all() and not np.allclose(got, full)  # fewer entries: no nearer neighbour


def test_pq_of_at_most_256_distinct_rows_is_exact() -> None:
    rng = np.random.default_rng(0)
    distinct = rng.standard_normal((200, 12)).astype(np.float32)
    entries = distinct[rng.integers(0, 200, size=1000)]
    np.testing.assert_array_equal(probe.pq_reconstruct(entries, 3), entries)


def test_pq_reconstruction_uses_at_most_256_codes_per_subspace_and_loses_less_with_more() -> None:
    entries = np.random.default_rng(1).standard_normal((1024, 8)).astype(np.float32)
    errors = []
    for subspaces in (2, 4):
        rebuilt = probe.pq_reconstruct(entries, subspaces)
        width = 8 // subspaces
        for s in range(subspaces):
            assert len(np.unique(rebuilt[:, s * width : (s + 1) * width], axis=0)) <= 256
        errors.append(float(((rebuilt - entries) ** 2).sum()))
    assert 0 < errors[1] < errors[0]
    np.testing.assert_array_equal(probe.pq_reconstruct(entries, 4), probe.pq_reconstruct(entries, 4))  # seeded


def test_pq_memory_scores_as_the_memory_of_the_reconstructed_entries(tmp_path: Path) -> None:
    entries, inputs, bank, graph = _exported_memory(tmp_path, 2048)
    got = _run(probe.pq_memory(graph, 3, tmp_path / "pq3.onnx"), inputs, bank)
    rebuilt = torch.from_numpy(np.stack([probe.pq_reconstruct(b, 3) for b in entries.numpy()]))
    with torch.no_grad():
        expected = _memory(rebuilt)([*inputs], bank).numpy()
        full = _memory(entries)([*inputs], bank).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(got, full)
