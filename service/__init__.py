"""PRD Inspect scoring service: FastAPI on ONNX Runtime (no torch). Start with ``python -m service``."""
