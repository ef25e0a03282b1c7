"""Inference runtime: ONNX model, metadata contract, self-check, tiling, TIFF/zarr I/O, predict.

No torch, no scipy (docs/ARCHITECTURE.md)."""
