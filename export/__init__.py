"""Export of trained PyTorch models to self-describing ONNX files."""
