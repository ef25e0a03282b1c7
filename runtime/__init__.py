"""Inference runtime: ONNX model, metadata contract, tiling, TIFF I/O and the CLI. No torch."""
