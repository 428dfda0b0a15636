"""``python -m service.bench``: raw ONNX Runtime vs the batching service vs an unbatched service, on one bundle.

Everything runs on this machine and talks over 127.0.0.1 only. Each measurement cell is bounded by ``--seconds``
and ``--max-requests``, so the whole run takes about (batch sizes + 2 × concurrencies) × seconds plus two server
starts.
"""
