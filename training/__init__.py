"""PRD Inspect's offline half: data, the PRD model, training, evaluation and export to an ONNX bundle.

Importing the package is cheap on purpose (no torch, no onnxruntime): ``training.data``, ``training.metrics`` and
``training.synthetic`` only need numpy and OpenCV, so data checks and metric code run anywhere. The command line is
``python -m training {fit,evaluate,ablate,export}``.
"""
