"""``torchrun --nproc-per-node 2 -m training fit``: two CPU processes (gloo) train one model, as README shows.

The command is the real launcher on generated data at tiny sizes. Rank 0 alone writes the run folder, which is an
ordinary run: ``--resume`` continues it exactly (also across processes) and ``export`` makes a bundle of it.
How close two processes come to one is measured, not asserted, by docs/research/ddp_seed_spread.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tests.training.test_engine_cli import TINY  # noqa: E402
from training.cli import main  # noqa: E402
from training.distributed import World  # noqa: E402
from training.model import load_run  # noqa: E402
from training.synthetic import make_synthetic_dataset  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]
PROCESSES = 2


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("data"), n_train=8, n_test_good=3, n_test_defect=3, size=64)


def torchrun_fit(data: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc-per-node 2 -m training fit`` (loopback rendezvous), one thread per process."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={PROCESSES}"]
    command += ["-m", "training", "fit", "--data", str(data), "--out", str(out), "--device", "cpu", *TINY, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _weights(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=False)["model"]


def test_torchrun_trains_one_model_that_resumes_exactly_and_exports(dataset: Path, tmp_path: Path) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    result = torchrun_fit(dataset, straight, "--epochs", "2")
    assert result.stdout.count("trained:") == 1  # rank 0 alone reports, and writes
    assert json.loads((straight / "training_data.json").read_text())["processes"] == PROCESSES
    assert [json.loads(line)["epoch"] for line in (straight / "log.jsonl").read_text().splitlines()] == [0, 1]
    torchrun_fit(dataset, split, "--epochs", "1")
    torchrun_fit(dataset, split, "--epochs", "2", "--resume")
    a, b = _weights(straight), _weights(split)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # An ordinary run folder: loads on one process and exports as any other.
    assert load_run(straight).categories == ["texture_a", "texture_b"]
    store = tmp_path / "store"
    assert main(["export", str(straight), "--store", str(store), "--name", "prd", "--target-far", "0.2"]) == 0
    assert (store / "prd" / "1" / "model.onnx").is_file()


def test_a_run_on_one_process_is_unchanged_by_the_distributed_code(dataset: Path, tmp_path: Path) -> None:
    """Outside torchrun there is no process group and every collective is the identity."""
    assert World().main and not World().distributed and World(rank=1, size=3).shard(10) == (3, 6)
    assert main(["fit", "--data", str(dataset), "--out", str(tmp_path / "one"), "--epochs", "1", *TINY]) == 0
    assert json.loads((tmp_path / "one" / "training_data.json").read_text())["processes"] == 1
