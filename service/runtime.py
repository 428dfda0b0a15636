"""The bundle in service: its graph opened with the configured providers (``model_store.session``, the wrapper
training runs too) and its scoring rule's planner, with the operator's similarity floor when one is set.

Provider choice: the requested list (``PRD_PROVIDERS``, CUDA then CPU by default) filtered to what this
onnxruntime build has; CPU is always appended as the last resort, and a session that fails to open with the
requested list is opened again on CPU alone. ``provider`` is what really runs and is what we report.

Workers (``inference_plan``): on CPU two runs go at once by default, each on a session of its own with half the
cores. One run spread over all the cores waits, at every operator, for its slowest thread; when the HTTP layer
(uploads, decoding, answers, refusals) takes one core for a moment, the whole run stalls, so under load the graph
loses about as much time as the HTTP layer uses. Two half-width runs lose only the preempted one's share
(docs/reliability.md has the figures). A lone image with both workers idle (a single camera posting one part at a
time) would get half the cores, so it runs on a third session with all of them. A GPU runs one
at a time anyway: one worker there.
"""

from __future__ import annotations

import logging
import math
import os
import queue
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_store.bundle import Bundle, BundleError, verify_graph_io
from model_store.manifest import Manifest
from model_store.outputs import GraphOutputs
from model_store.planner import Planner
from model_store.session import CPU, GraphSession, available_providers, session_options
from service.config import Settings

logger = logging.getLogger("service.runtime")


def choose_providers(requested: tuple[str, ...], available: list[str]) -> list[str]:
    """Requested providers this build has, in order, CPU last; unknown names are logged, not fatal."""
    chosen = [name for name in requested if name in available and name != CPU]
    missing = [name for name in requested if name not in available]
    if missing:
        logger.warning("execution providers %s not in this onnxruntime build (has %s)", missing, available)
    return [*chosen, CPU]


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a container's ``--cpus``)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = cgroup.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


@dataclass(frozen=True)
class InferencePlan:
    """``workers`` ONNX Runtime runs at once, each on a session of its own with ``threads`` intra-op threads
    (0: ONNX Runtime's choice) and at most ``batch`` graph inputs; a lone input with every worker idle runs on a
    session with ``alone_threads`` threads (0: no such session, it takes a worker's)."""

    workers: int
    threads: int
    batch: int
    alone_threads: int = 0


def inference_plan(settings: Settings, available: list[str] | None = None, cores: int | None = None) -> InferencePlan:
    """The settings' workers and threads with 0 resolved — on CPU (nothing faster requested and present) two
    workers sharing the usable cores (and all of them for a lone input), on a GPU one worker with ONNX Runtime's
    own thread choice — and the batch shared out: ``max_batch_size`` inputs in inference at once, so each worker's
    runs take its share (at least one). Memory and a batch's time stay those of one full batch."""
    have = available_providers() if available is None else available
    on_cpu = not any(name in have and name != CPU for name in settings.provider_names)
    cores = cores or usable_cores()
    workers = settings.inference_workers or (min(2, cores) if on_cpu else 1)
    threads = settings.intra_op_threads
    if threads == 0 and on_cpu and workers > 1:
        threads = max(1, cores // workers)
    alone_threads = workers * threads if on_cpu and workers > 1 and threads > 0 else 0
    batch = max(1, settings.max_batch_size // workers)
    return InferencePlan(workers=workers, threads=threads, batch=batch, alone_threads=alone_threads)


class OnnxModel:
    """A bundle opened for serving: one session per inference worker, so ``predict`` may be called from that many
    threads at once (each call borrows an idle session), and optionally a session for lone inputs."""

    def __init__(
        self,
        bundle: Bundle,
        sessions: list[GraphSession],
        requested: list[str],
        planner: Planner,
        plan: InferencePlan,
        alone: GraphSession | None = None,
    ) -> None:
        self.bundle = bundle
        self.plan = plan
        """How this model runs: its sessions (one per worker) and the largest batch one of them takes."""
        self.sessions = tuple(sessions)
        self.session = sessions[0]
        self.requested_providers = requested
        self.providers = self.session.providers
        self.provider = self.session.provider
        self.planner = planner
        """The bundle's scoring rule (``PRD_RECOGNITION_MIN_SIMILARITY`` replaces its floor when set)."""
        self.alone_session = alone
        """Runs a lone input on every core while no worker is busy (``predict(..., alone=True)``)."""
        self._idle: queue.SimpleQueue[GraphSession] = queue.SimpleQueue()
        for session in self.sessions:
            self._idle.put(session)

    @property
    def manifest(self) -> Manifest:
        return self.bundle.manifest

    @property
    def input_size(self) -> int:
        return self.manifest.input.height

    def infer(self, batch: np.ndarray, alone: bool = False) -> GraphOutputs:
        """One ONNX Runtime run on a uint8 (N,S,S,3) batch: ``alone`` (no other run in progress) on the lone-input
        session when there is one, else on an idle worker session (waits for one if all are busy)."""
        if alone and self.alone_session is not None:
            return self.alone_session.run(batch)
        session = self._idle.get()
        try:
            return session.run(batch)
        finally:
            self._idle.put(session)

    def predict(self, batch: np.ndarray, alone: bool = False) -> list[GraphOutputs]:
        """One run, handed back per input (the batcher answers each request its own rows)."""
        return self.infer(batch, alone).rows()

    def warm_up(self, runs: int) -> None:
        """Run zeros at batch 1 and at the largest batch a worker takes on every session (allocates their arenas;
        the lone-input session at batch 1 only), checking output shapes on the way."""
        size = self.input_size
        sizes = [(session, sorted({1, self.plan.batch})) for session in self.sessions]
        if self.alone_session is not None:
            sizes.append((self.alone_session, [1]))
        for session, batch_sizes in sizes:
            for batch_size in batch_sizes:
                for _ in range(max(1, runs)):
                    out = session.run(np.zeros((batch_size, size, size, 3), dtype=np.uint8))
                    self._check_shapes(out, batch_size)

    def _check_shapes(self, out: GraphOutputs, n: int) -> None:
        size, n_categories = self.input_size, len(self.manifest.categories)
        expected = {"score": (n,), "anomaly_map": (n, size, size), "category_similarity": (n, n_categories)}
        actual = {
            "score": out.score.shape,
            "anomaly_map": out.anomaly_map.shape,
            "category_similarity": out.category_similarity.shape,
        }
        wrong = {name: shape for name, shape in actual.items() if tuple(shape) != expected[name]}
        if wrong:
            message = (
                f"{self.bundle.onnx_path}: outputs {wrong} do not match the manifest (expected {expected}; "
                f"input {size}x{size}, {n_categories} categories)"
            )
            raise BundleError(message)


def open_model(bundle: Bundle, settings: Settings) -> OnnxModel:
    """Open the bundle's graph once per inference worker with the best available provider; any failure is a
    ``BundleError`` naming the file."""
    requested = choose_providers(settings.provider_names, available_providers())
    attempts = [requested] if requested == [CPU] else [requested, [CPU]]
    plan = inference_plan(settings)
    errors: list[str] = []
    for providers in attempts:
        try:
            session = _session(bundle, providers, plan.threads, settings)
            break
        except BundleError as exc:
            errors.append(f"{providers}: {exc}")
            logger.warning("cannot open %s with %s: %s", bundle.onnx_path, providers, exc)
    else:
        raise BundleError(f"{bundle.onnx_path}: ONNX Runtime cannot load the graph ({'; '.join(errors)})")
    verify_graph_io(bundle, session.input_names, session.input_types, session.output_names)
    others = [_session(bundle, session.providers, plan.threads, settings) for _ in range(plan.workers - 1)]
    alone = _session(bundle, session.providers, plan.alone_threads, settings) if plan.alone_threads else None
    planner = bundle.manifest.planner(settings.recognition_min_similarity)
    model = OnnxModel(bundle, [session, *others], requested, planner, plan, alone)
    if model.provider != requested[0]:
        logger.warning("%s runs on %s (requested %s)", bundle.onnx_path, model.provider, requested)
    return model


def _session(bundle: Bundle, providers: list[str], threads: int, settings: Settings) -> GraphSession:
    """The bundle's graph on ``providers`` with ``threads`` intra-op threads and the settings' other options."""
    options = session_options(threads, settings.inter_op_threads, settings.intra_op_spinning)
    return GraphSession(bundle.onnx_path, providers, options, settings.cuda_device_id, bundle.manifest.outputs)
