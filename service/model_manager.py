"""Which model is in service: first load, hot reload (``POST /models/reload``, SIGHUP) and readiness.

A reload builds the new model completely — bundle checks, session, warm-up — in a worker thread while the old
one keeps serving, then swaps one reference. Requests hold the model they started with (the batcher never mixes
models in one batch), so in-flight requests finish on the old session, which is freed when the last one is done.
A bundle that cannot be served — refused by its checks, a version folder whose manifest names another version,
unreadable files, a session or warm-up that fails — leaves the current model in place and says why: at start-up
``/readyz`` stays 503 with the reason (paths relative to the store, since anyone may read it), on reload a 409.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from model_store.bundle import Bundle, BundleError, load_bundle
from service.config import Settings
from service.errors import ModelUnavailable, NotReady
from service.metrics import ServiceMetrics
from service.runtime import OnnxModel, open_model

logger = logging.getLogger("service.model_manager")

ModelLoader = Callable[[Bundle, Settings], OnnxModel]
"""Opens a verified bundle; ``runtime.open_model`` in service, a wrapper in tests (e.g. to hold a batch)."""


@dataclass(frozen=True)
class SwapResult:
    previous: OnnxModel | None
    current: OnnxModel
    changed: bool


class ModelManager:
    """Holds the model in service and the reason when there is none."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics, loader: ModelLoader | None = None) -> None:
        self._settings = settings
        self._metrics = metrics
        self._loader = loader or open_model
        self._lock = asyncio.Lock()
        self.current: OnnxModel | None = None
        self.not_ready_reason = "the model is loading and warming up"

    def require(self) -> OnnxModel:
        """The model in service, or ``NotReady`` with the reason."""
        model = self.current
        if model is None:
            raise NotReady(self.not_ready_reason, headers={"Retry-After": "5"})
        return model

    def _build(self, version: str) -> OnnxModel:
        """Blocking: verify bundle, open session, warm up (runs in a worker thread)."""
        settings = self._settings
        bundle = load_bundle(settings.model_store, settings.model_name, version)
        if bundle.directory.name != str(bundle.manifest.version):
            message = (
                f"{bundle.directory}: the folder is version {bundle.directory.name} but its manifest says version "
                f"{bundle.manifest.version}; rename the folder or fix the manifest"
            )
            raise BundleError(message)
        current = self.current
        if current is not None and _same_bundle(current.bundle, bundle):
            return current
        model = self._loader(bundle, settings)
        model.warm_up(settings.warmup_runs)
        return model

    async def load(self, version: str | None = None) -> SwapResult:
        """Load ``version`` (default: the configured one), warm it and swap it in; ``ModelUnavailable`` if it cannot."""
        wanted = version or self._settings.model_version
        async with self._lock:
            previous = self.current
            try:
                model = await asyncio.to_thread(self._build, wanted)
            except Exception as exc:  # BundleError, OSError, an ONNX Runtime error in warm-up: all "cannot serve"
                reason = str(exc) if isinstance(exc, BundleError) else f"{exc.__class__.__name__}: {exc}"
                if not isinstance(exc, BundleError):
                    logger.warning("loading %s version %s failed", self._settings.model_name, wanted, exc_info=exc)
                if previous is None:
                    self.not_ready_reason = f"no model could be loaded: {self._relative(reason)}"
                    self._metrics.model_ready.set(0)
                kept = f"; still serving {previous.manifest.name} v{previous.manifest.version}" if previous else ""
                raise ModelUnavailable(f"{reason}{kept}") from exc
            self.current = model
            self._metrics.set_model(model.manifest.name, model.manifest.version, model.provider)
        changed = model is not previous
        if changed:
            logger.info(
                "serving %s v%s on %s (%s)",
                model.manifest.name,
                model.manifest.version,
                model.provider,
                model.bundle.directory,
            )
        return SwapResult(previous=previous, current=model, changed=changed)

    def _relative(self, reason: str) -> str:
        """``reason`` with the store's absolute path left out (``/readyz`` is open to anonymous callers)."""
        store = self._settings.model_store
        for prefix in {str(store.resolve()), str(store.absolute()), str(store)}:
            reason = reason.replace(prefix.rstrip("/") + "/", "")
        return reason

    async def load_initial(self) -> None:
        """First load at startup; failure leaves the service up but not ready, with the reason in ``/readyz``."""
        try:
            await self.load()
        except ModelUnavailable as exc:
            logger.error("model not loaded: %s", exc.detail)


def _same_bundle(a: Bundle, b: Bundle) -> bool:
    return a.directory.resolve() == b.directory.resolve() and a.manifest == b.manifest
