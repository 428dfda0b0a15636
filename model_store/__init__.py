"""Versioned model bundles (``<name>/<version>/{model.onnx, manifest.json}``) and the torch-free code that reads them.

Both halves import this package: training writes bundles that validate against ``manifest.Manifest`` and resizes
images with ``preprocess``; the service loads bundles with ``bundle.load_bundle`` and decodes uploads with
``preprocess``. Nothing here imports torch or onnxruntime.
"""
