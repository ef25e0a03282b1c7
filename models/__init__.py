"""Shipped default models (small ONNX files) and their model cards."""
